//! A pod as the CRI's lists show it (ListPodSandbox's sandbox, ListContainers' containers),
//! by one set of rules for the shim, which answers from its record, and the front, which
//! answers from the record the shim saved (the same `PodRecord`) without asking the shim.

use crate::cri::{Container, PodSandbox};
use crate::pod_record::PodRecord;

/// What a pod's state file lists.
#[derive(Debug, Clone, PartialEq)]
pub struct PodListing {
    pub pod: PodSandbox,
    pub containers: Vec<Container>,
}

impl PodListing {
    /// `None` for a pod without a sandbox yet (a RunPodSandbox that has not ended lists
    /// nothing, as its shim's own list does).
    pub fn parse(bytes: &[u8]) -> Result<Option<PodListing>, serde_json::Error> {
        let r: PodRecord = serde_json::from_slice(bytes)?;
        if r.sandbox_id.is_empty() {
            return Ok(None);
        }
        Ok(Some(PodListing {
            pod: r.to_cri(),
            containers: r
                .containers
                .values()
                .map(|c| c.to_cri(&r.sandbox_id))
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{ContainerConfig, ContainerState, PodSandboxConfig, PodSandboxState};
    use crate::pod_record::ContainerRecord;

    #[test]
    fn a_state_file_lists_its_sandbox_and_containers() {
        let mut pod = PodSandboxConfig::default();
        pod.labels.insert("app".into(), "web".into());
        let mut app = ContainerConfig {
            image: Some(crate::cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        app.labels.insert("tier".into(), "x".into());
        // As the shim saves it: its own fields around the CRI's, and fields this reader
        // does not know.
        let json = serde_json::json!({
            "shim_id": "s", "sandbox_id": "sb", "ready": true, "created_at": 5,
            "runtime_handler": "", "future": {"x": 1},
            "config": pod,
            "containers": {"c1": {
                "id": "c1", "image_id": "sha256:1", "state": 1, "created_at": 7,
                "log_path": "/l", "config": app,
            }},
        });
        let bytes = serde_json::to_vec(&json).expect("serialise");
        let listed = PodListing::parse(&bytes)
            .expect("parse")
            .expect("a sandbox");
        assert_eq!(listed.pod.id, "sb");
        assert_eq!(listed.pod.state, PodSandboxState::SandboxReady as i32);
        assert_eq!(
            listed.pod.labels.get("app").map(String::as_str),
            Some("web")
        );
        assert_eq!(listed.containers.len(), 1);
        let c = &listed.containers[0];
        assert_eq!((c.id.as_str(), c.pod_sandbox_id.as_str()), ("c1", "sb"));
        assert_eq!((c.state, c.created_at), (1, 7));
        assert_eq!(c.image.as_ref().map(|i| i.image.as_str()), Some("busybox"));
        assert_eq!(c.image_ref, "sha256:1");
        assert_eq!(c.labels.get("tier").map(String::as_str), Some("x"));
    }

    #[test]
    fn a_pod_without_a_sandbox_lists_nothing() {
        assert_eq!(
            PodListing::parse(br#"{"shim_id":"s"}"#).expect("parse"),
            None
        );
        assert!(PodListing::parse(b"{not json").is_err());
    }

    #[test]
    fn the_front_lists_from_the_saved_record_what_the_shim_lists() {
        let mut config = ContainerConfig {
            metadata: Some(crate::cri::ContainerMetadata {
                name: "app".into(),
                attempt: 2,
            }),
            image: Some(crate::cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        config.labels.insert("tier".into(), "x".into());
        let container = ContainerRecord {
            id: "c1".into(),
            config,
            image_id: "sha256:1".into(),
            state: ContainerState::ContainerExited as i32,
            created_at: 7,
            ..Default::default()
        };
        let mut pod = PodRecord {
            shim_id: "s".into(),
            sandbox_id: "sb".into(),
            created_at: 5,
            ready: true,
            ..Default::default()
        };
        pod.config.labels.insert("app".into(), "web".into());
        pod.containers.insert("c1".into(), container);
        let saved = serde_json::to_vec(&pod).expect("serialise");
        let listed = PodListing::parse(&saved)
            .expect("parse")
            .expect("a sandbox");
        assert_eq!(listed.pod, pod.to_cri());
        assert_eq!(listed.containers, vec![pod.containers["c1"].to_cri("sb")]);
    }
}
