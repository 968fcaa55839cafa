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
use k8s_cri::v1::ListContainersRequest;

use crate::error::{Error, Result};
use crate::pods::Pods;
use crate::registry::ShimHandle;

/// Adopts every foreign sandbox not adopted yet; failures are logged per pod.
pub async fn adopt_cri_dockerd(pods: &Arc<Pods>, cri_dockerd_root: &Path) {
    let foreign = match foreign_sandboxes(pods).await {
        Ok(foreign) => foreign,
        Err(e) => {
            tracing::error!(error = %e, "listing cri-dockerd's pods; none adopted");
            return;
        }
    };
    let adoptions = foreign.into_iter().map(|(sandbox, pod)| {
        let checkpoint = cri_dockerd_root.join("sandbox").join(&sandbox);
        async move {
            match adopt(pods, &sandbox, &pod, &checkpoint).await {
                Ok(()) => tracing::info!(%sandbox, %pod, "adopted cri-dockerd pod"),
                Err(e) => tracing::error!(%sandbox, %pod, error = %e, "adopting cri-dockerd pod"),
            }
        }
    });
    join_all(adoptions).await;
}

/// Sandboxes (ID, namespace/name) without any dockpod instance's label and not indexed yet.
async fn foreign_sandboxes(pods: &Pods) -> Result<Vec<(String, String)>> {
    let sandboxes = pods
        .engine
        .list_labelled(&format!("{}={}", labels::DOCKER_TYPE, labels::TYPE_SANDBOX))
        .await?;
    Ok(sandboxes
        .into_iter()
        .filter_map(|s| {
            let l = s.labels.unwrap_or_default();
            let id = s.id?;
            if l.contains_key(labels::INSTANCE) || pods.registry.pod(&id).is_some() {
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

async fn adopt(pods: &Arc<Pods>, sandbox: &str, display: &str, checkpoint: &Path) -> Result<()> {
    let mut args: Vec<std::ffi::OsString> = vec!["--adopt".into(), sandbox.into()];
    if checkpoint.exists() {
        args.push("--adopt-checkpoint".into());
        args.push(checkpoint.into());
    }
    let shim = pods.spawner.spawn_with(display, &args).await?;
    let shim = Arc::new(ShimHandle {
        sandbox_id: sandbox.to_string(),
        ..shim
    });
    let containers = shim
        .runtime()
        .list_containers(ListContainersRequest::default())
        .await
        .map_err(|s| {
            Error::FailedPrecondition(format!(
                "listing the adopted pod's containers: {}",
                s.message()
            ))
        })?
        .into_inner()
        .containers;
    for c in containers {
        pods.registry.insert_container(&c.id, sandbox);
    }
    pods.registry.insert_pod(shim.clone());
    pods.supervise(shim).await;
    Ok(())
}
