//! `shim-manager inspect <pod>`: the shim's own view of one pod, as JSON. The pod is named by
//! sandbox ID (or a unique prefix), `name` or `namespace/name`.

use std::path::Path;

use dockpod_proto::shim::{InfoResponse, InspectRequest};

/// Whether `query` names the pod of `info`.
pub fn names(query: &str, info: &InfoResponse) -> bool {
    let full = format!("{}/{}", info.pod_namespace, info.pod_name);
    (!info.sandbox_id.is_empty() && info.sandbox_id.starts_with(query))
        || query == info.pod_name
        || query == full
}

pub async fn run(run_dir: &Path, query: &str) -> Result<String, String> {
    let socket = super::shim_of(run_dir, query).await?;
    let mut client =
        dockpod_proto::shim::shim_client::ShimClient::new(dockpod_proto::sockets::channel(&socket));
    client
        .inspect(InspectRequest {})
        .await
        .map(|r| r.into_inner().json)
        .map_err(|e| format!("{}: {}", socket.display(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_id_prefix_name_and_full_name() {
        let info = InfoResponse {
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            sandbox_id: "abcdef".into(),
            ..Default::default()
        };
        assert!(names("abc", &info));
        assert!(names("web", &info));
        assert!(names("default/web", &info));
        assert!(!names("other/web", &info));
        assert!(!names("xyz", &info));
    }
}
