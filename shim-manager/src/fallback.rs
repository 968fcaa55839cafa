//! Answers for a pod whose shim does not answer in time, read from Docker's labels: a list
//! call must never wait on one stuck shim. The view is coarser than the shim's (no exit
//! reasons), and it is only used until the shim answers again.

use std::collections::HashMap;

use bollard::models::ContainerSummary;
use dockpod_proto::cri::{
    Container, ContainerMetadata, ContainerState, ImageSpec, PodSandbox, PodSandboxMetadata,
    PodSandboxState,
};
use dockpod_proto::labels;

use crate::docker::Engine;
use crate::error::Result;

/// A pod as Docker's labels describe it.
#[derive(Debug, Default)]
pub struct PodView {
    pub pods: Vec<PodSandbox>,
    pub containers: Vec<Container>,
}

/// The sandbox and containers of the shim `shim_id`, as Docker knows them.
pub async fn pod_from_docker(engine: &Engine, shim_id: &str) -> Result<PodView> {
    let summaries = engine
        .list_labelled(&format!("{}={shim_id}", labels::SHIM_ID))
        .await?;
    let mut view = PodView::default();
    for s in summaries {
        let l = s.labels.clone().unwrap_or_default();
        match l.get(labels::DOCKER_TYPE).map(String::as_str) {
            Some(labels::TYPE_SANDBOX) => view.pods.push(sandbox(&s, &l)),
            Some(labels::TYPE_CONTAINER) => view.containers.push(container(&s, &l)),
            _ => {}
        }
    }
    Ok(view)
}

/// What the container's `k8s_` name says (cri-dockerd's pods may carry no pod labels).
fn kube_name(summary: &ContainerSummary) -> Option<labels::KubeName> {
    summary
        .names
        .as_ref()
        .and_then(|n| n.first())
        .and_then(|n| labels::parse_name(n))
}

fn running(summary: &ContainerSummary) -> bool {
    summary.state.as_ref().map(|s| s.to_string()).as_deref() == Some("running")
}

fn created_ns(summary: &ContainerSummary) -> i64 {
    summary.created.unwrap_or(0).saturating_mul(1_000_000_000)
}

fn sandbox(s: &ContainerSummary, l: &HashMap<String, String>) -> PodSandbox {
    let (user_labels, annotations) = labels::split_labels(l);
    let get = |k: &str| l.get(k).cloned().unwrap_or_default();
    let name = kube_name(s);
    let from_name = |part: fn(&labels::KubeName) -> &String, key: &str| {
        name.as_ref().map(part).cloned().unwrap_or_else(|| get(key))
    };
    PodSandbox {
        id: s.id.clone().unwrap_or_default(),
        metadata: Some(PodSandboxMetadata {
            name: from_name(|n| &n.pod, labels::POD_NAME),
            namespace: from_name(|n| &n.namespace, labels::POD_NAMESPACE),
            uid: from_name(|n| &n.uid, labels::POD_UID),
            attempt: name.as_ref().map_or(0, |n| n.attempt),
        }),
        state: if running(s) {
            PodSandboxState::SandboxReady
        } else {
            PodSandboxState::SandboxNotready
        } as i32,
        created_at: created_ns(s),
        labels: user_labels,
        annotations,
        runtime_handler: String::new(),
    }
}

fn container(s: &ContainerSummary, l: &HashMap<String, String>) -> Container {
    let (user_labels, annotations) = labels::split_labels(l);
    let state = match s.state.as_ref().map(|s| s.to_string()).as_deref() {
        Some("running") | Some("restarting") => ContainerState::ContainerRunning,
        Some("created") => ContainerState::ContainerCreated,
        Some("exited") | Some("dead") => ContainerState::ContainerExited,
        _ => ContainerState::ContainerUnknown,
    };
    let image_id = s.image_id.clone().unwrap_or_default();
    let name = kube_name(s);
    Container {
        id: s.id.clone().unwrap_or_default(),
        pod_sandbox_id: l.get(labels::SANDBOX_ID).cloned().unwrap_or_default(),
        metadata: Some(ContainerMetadata {
            attempt: name.as_ref().map_or(0, |n| n.attempt),
            name: name
                .map(|n| n.container)
                .unwrap_or_else(|| l.get(labels::CONTAINER_NAME).cloned().unwrap_or_default()),
        }),
        image: Some(ImageSpec {
            image: s.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        image_ref: image_id.clone(),
        image_id,
        state: state as i32,
        created_at: created_ns(s),
        labels: user_labels,
        annotations,
    }
}
