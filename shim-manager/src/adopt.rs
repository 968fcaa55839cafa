//! `--adopt-cri-dockerd`: when the front starts, every pod sandbox on this dockerd that no
//! dockpod instance created (cri-dockerd's, or the kubelet's old dockershim's: same names and
//! labels) gets a shim started with `--adopt`, which rebuilds the pod's record from Docker and
//! from cri-dockerd's sandbox checkpoint. From then on the pod is dockpod's like any other
//! and is found again from its state after a restart. This happens before the front serves,
//! so the kubelet never sees the node without those pods.

use std::path::Path;
use std::sync::Arc;

use dockpod_proto::labels;
use futures_util::future::join_all;

use crate::docker::Engine;
use crate::error::Result;
use crate::supervise::Supervisor;

/// Adopts every foreign sandbox not adopted yet; failures are logged per pod.
pub async fn adopt_cri_dockerd(
    supervisor: &Arc<Supervisor>,
    engine: &Engine,
    cri_dockerd_root: &Path,
) {
    let foreign = match foreign_sandboxes(supervisor, engine).await {
        Ok(foreign) => foreign,
        Err(e) => {
            tracing::error!(error = %e, "listing cri-dockerd's pods; none adopted");
            return;
        }
    };
    let adoptions = foreign.into_iter().map(|(sandbox, pod)| {
        let checkpoint = cri_dockerd_root.join("sandbox").join(&sandbox);
        async move {
            match supervisor
                .adopt_cri_dockerd_pod(&sandbox, &pod, &checkpoint)
                .await
            {
                Ok(()) => tracing::info!(%sandbox, %pod, "adopted cri-dockerd pod"),
                Err(e) => tracing::error!(%sandbox, %pod, error = %e, "adopting cri-dockerd pod"),
            }
        }
    });
    join_all(adoptions).await;
}

/// Sandboxes (ID, namespace/name) without any dockpod instance's label and not indexed yet.
async fn foreign_sandboxes(
    supervisor: &Supervisor,
    engine: &Engine,
) -> Result<Vec<(String, String)>> {
    let sandboxes = engine
        .list_labelled(&format!("{}={}", labels::DOCKER_TYPE, labels::TYPE_SANDBOX))
        .await?;
    Ok(sandboxes
        .into_iter()
        .filter_map(|s| {
            let l = s.labels.unwrap_or_default();
            let id = s.id?;
            if l.contains_key(labels::INSTANCE) || supervisor.registry().pod(&id).is_some() {
                return None;
            }
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            let display = match s
                .names
                .as_ref()
                .and_then(|n| n.first())
                .and_then(|n| labels::parse_name(n))
            {
                Some(n) => format!("{}/{}", n.namespace, n.pod),
                None => format!("{}/{}", get(labels::POD_NAMESPACE), get(labels::POD_NAME)),
            };
            Some((id, display))
        })
        .collect())
}
