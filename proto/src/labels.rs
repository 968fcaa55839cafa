//! Docker names and labels of the Kubernetes convention (the ones cri-dockerd and the old
//! dockershim use, so a node can switch runtimes and keep its pods), plus dockpod's own label
//! saying which dockpod instance owns a container.

/// `podsandbox` or `container`.
pub const DOCKER_TYPE: &str = "io.kubernetes.docker.type";
pub const TYPE_SANDBOX: &str = "podsandbox";
pub const TYPE_CONTAINER: &str = "container";
pub const SANDBOX_ID: &str = "io.kubernetes.sandbox.id";
pub const LOG_PATH: &str = "io.kubernetes.container.logpath";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// CRI annotations are stored as labels with this prefix.
pub const ANNOTATION_PREFIX: &str = "annotation.";
/// The dockpod instance (its `--root-directory` identity) that created the container.
pub const INSTANCE: &str = "io.dockpod.instance";
/// The shim that supervises a sandbox (its state directory name).
pub const SHIM_ID: &str = "io.dockpod.shim";

/// Name of a sandbox container: `k8s_POD_<pod>_<namespace>_<uid>_<attempt>`.
pub fn sandbox_name(pod: &str, namespace: &str, uid: &str, attempt: u32) -> String {
    format!("k8s_POD_{pod}_{namespace}_{uid}_{attempt}")
}

/// Name of an application container: `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`.
pub fn container_name(
    container: &str,
    pod: &str,
    namespace: &str,
    uid: &str,
    attempt: u32,
) -> String {
    format!("k8s_{container}_{pod}_{namespace}_{uid}_{attempt}")
}

/// What a Kubernetes container name says: `container` is `POD` for a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeName {
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

/// Parses a name made by [`sandbox_name`] or [`container_name`] (or by cri-dockerd, which
/// appends `_<random>` after Docker's name-conflict bug), with or without Docker's leading
/// `/`. Kubernetes names and UIDs hold no `_`, so the parts split cleanly.
pub fn parse_name(name: &str) -> Option<KubeName> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let parts: Vec<&str> = name.split('_').collect();
    if !(parts.len() == 6 || parts.len() == 7) || parts[0] != "k8s" {
        return None;
    }
    Some(KubeName {
        container: parts[1].to_string(),
        pod: parts[2].to_string(),
        namespace: parts[3].to_string(),
        uid: parts[4].to_string(),
        attempt: parts[5].parse().ok()?,
    })
}

/// Splits a label map into the CRI's labels and annotations (`annotation.` prefix), leaving
/// out the keys the runtime itself sets.
pub fn split_labels(
    docker: &std::collections::HashMap<String, String>,
) -> (
    std::collections::HashMap<String, String>,
    std::collections::HashMap<String, String>,
) {
    let mut labels = std::collections::HashMap::new();
    let mut annotations = std::collections::HashMap::new();
    for (k, v) in docker {
        if let Some(a) = k.strip_prefix(ANNOTATION_PREFIX) {
            annotations.insert(a.to_string(), v.clone());
        } else if !is_internal(k) {
            labels.insert(k.clone(), v.clone());
        }
    }
    (labels, annotations)
}

/// Keys the runtime sets for its own bookkeeping; never reported back as the pod's labels.
pub fn is_internal(key: &str) -> bool {
    matches!(
        key,
        DOCKER_TYPE | SANDBOX_ID | LOG_PATH | INSTANCE | SHIM_ID | CONTAINER_NAME
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kubernetes_convention() {
        assert_eq!(
            sandbox_name("web", "default", "u1", 0),
            "k8s_POD_web_default_u1_0"
        );
        assert_eq!(
            container_name("app", "web", "default", "u1", 2),
            "k8s_app_web_default_u1_2"
        );
    }

    #[test]
    fn names_parse_back_as_cri_dockerd_parses_them() {
        let parsed = parse_name("/k8s_app_web_default_u1_2").expect("parses");
        assert_eq!(
            parsed,
            KubeName {
                container: "app".into(),
                pod: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 2
            }
        );
        let sandbox = parse_name("k8s_POD_web_default_u1_0_1a2b3c4d").expect("random suffix");
        assert_eq!((sandbox.container.as_str(), sandbox.attempt), ("POD", 0));
        assert_eq!(parse_name("k8s_app_web_default_u1_x"), None);
        assert_eq!(parse_name("web_app_web_default_u1_0"), None);
        assert_eq!(parse_name("k8s_app_web_u1_0"), None);
        assert_eq!(parse_name("/nginx"), None);
    }

    #[test]
    fn splits_annotations_and_hides_internal_keys() {
        let docker = std::collections::HashMap::from([
            ("app".to_string(), "web".to_string()),
            ("annotation.note".to_string(), "x".to_string()),
            (INSTANCE.to_string(), "abc".to_string()),
            (POD_NAME.to_string(), "web".to_string()),
        ]);
        let (labels, annotations) = split_labels(&docker);
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get(POD_NAME).map(String::as_str), Some("web"));
        assert!(!labels.contains_key(INSTANCE));
        assert_eq!(annotations.get("note").map(String::as_str), Some("x"));
    }
}
