//! Adoption of a pod that cri-dockerd (or the kubelet's old dockershim) created: the shim's
//! record is rebuilt from what those left behind, namely the Kubernetes names and labels on
//! the Docker containers and the sandbox checkpoint under cri-dockerd's root directory. After
//! that the pod is served like any other. Its existing containers keep their logs as
//! cri-dockerd arranged them (the kubelet's log path is a symlink to Docker's own log file),
//! so no CRI log is written over them. Containers created later are dockpod's in every way.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::ContainerInspectResponse;
use dockpod_proto::cri::{
    ContainerConfig, ContainerMetadata, ContainerState, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PortMapping, Protocol,
};
use dockpod_proto::labels;
use serde::Deserialize;

use crate::cni::{Attachment, Cni, CRI_DOCKERD_LOOPBACK};
use crate::docker::{now_ns, parse_time, Engine};
use crate::error::{Error, Result};
use dockpod_proto::pod_record::{ContainerRecord, PodRecord};

/// cri-dockerd's sandbox checkpoint (`<root>/sandbox/<sandbox id>`), schema `v1`. Its
/// checksum is a hash of Go's printed form of the data and is not checked: the file is only
/// read once, for facts Docker's labels lack.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Checkpoint {
    pub version: String,
    pub name: String,
    pub namespace: String,
    pub data: Option<CheckpointData>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CheckpointData {
    pub port_mappings: Vec<CheckpointPort>,
    pub host_network: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CheckpointPort {
    pub protocol: Option<String>,
    pub container_port: Option<i32>,
    pub host_port: Option<i32>,
    pub host_ip: Option<String>,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes =
            std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
            Error::FailedPrecondition(format!(
                "sandbox checkpoint {} is corrupt: {e}",
                path.display()
            ))
        })?;
        if checkpoint.version != "v1" {
            return Err(Error::FailedPrecondition(format!(
                "sandbox checkpoint {} has schema {:?}; only v1 is known",
                path.display(),
                checkpoint.version
            )));
        }
        Ok(checkpoint)
    }

    fn port_mappings(&self) -> Vec<PortMapping> {
        let ports = self
            .data
            .as_ref()
            .map(|d| d.port_mappings.as_slice())
            .unwrap_or_default();
        ports
            .iter()
            .map(|p| PortMapping {
                // cri-dockerd writes Kubernetes' `TCP`, `UDP`, `SCTP`.
                protocol: match p
                    .protocol
                    .as_deref()
                    .map(str::to_ascii_uppercase)
                    .as_deref()
                {
                    Some("UDP") => Protocol::Udp as i32,
                    Some("SCTP") => Protocol::Sctp as i32,
                    _ => Protocol::Tcp as i32,
                },
                container_port: p.container_port.unwrap_or(0),
                host_port: p.host_port.unwrap_or(0),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
            .collect()
    }
}

/// What the container's `k8s_` name says, the record cri-dockerd itself reads its pods'
/// metadata from.
fn kube_name(inspect: &ContainerInspectResponse) -> Option<labels::KubeName> {
    inspect.name.as_deref().and_then(labels::parse_name)
}

fn docker_labels(inspect: &ContainerInspectResponse) -> HashMap<String, String> {
    inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

fn created(inspect: &ContainerInspectResponse) -> i64 {
    inspect
        .created
        .as_deref()
        .map(parse_time)
        .unwrap_or_else(now_ns)
}

/// The pod's record rebuilt from Docker and the checkpoint at `checkpoint` (if any).
pub async fn record(
    engine: &Engine,
    shim_id: &str,
    sandbox_id: &str,
    checkpoint: Option<&Path>,
    cni: Option<&Cni>,
) -> Result<PodRecord> {
    let sandbox = engine
        .inspect(sandbox_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("sandbox container {sandbox_id} not found")))?;
    let l = docker_labels(&sandbox);
    if l.get(labels::DOCKER_TYPE).map(String::as_str) != Some(labels::TYPE_SANDBOX) {
        return Err(Error::FailedPrecondition(format!(
            "container {sandbox_id} is not a pod sandbox"
        )));
    }
    if l.contains_key(labels::INSTANCE) {
        return Err(Error::FailedPrecondition(format!(
            "sandbox {sandbox_id} belongs to a dockpod instance, not to cri-dockerd"
        )));
    }
    let checkpoint_path = checkpoint.filter(|p| p.exists());
    let checkpoint = checkpoint_path.map(Checkpoint::load).transpose()?;
    let label = |key: &str| l.get(key).cloned().unwrap_or_default();
    let host_network = checkpoint
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .is_some_and(|d| d.host_network)
        || sandbox
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host");
    let (pod_labels, annotations) = labels::split_labels(&l);
    let metadata = match kube_name(&sandbox) {
        Some(n) => PodSandboxMetadata {
            name: n.pod,
            namespace: n.namespace,
            uid: n.uid,
            attempt: n.attempt,
        },
        None => PodSandboxMetadata {
            name: label(labels::POD_NAME),
            namespace: label(labels::POD_NAMESPACE),
            uid: label(labels::POD_UID),
            attempt: 0,
        },
    };
    let mut config = PodSandboxConfig {
        metadata: Some(metadata),
        hostname: sandbox
            .config
            .as_ref()
            .and_then(|c| c.hostname.clone())
            .unwrap_or_default(),
        labels: pod_labels,
        annotations,
        port_mappings: checkpoint
            .as_ref()
            .map(Checkpoint::port_mappings)
            .unwrap_or_default(),
        ..Default::default()
    };
    if host_network {
        config.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let running = sandbox
        .state
        .as_ref()
        .and_then(|s| s.running)
        .unwrap_or(false);
    let attachment = match cni {
        Some(cni) if !host_network => pod_attachment(cni, sandbox_id).await?,
        _ => None,
    };
    let mut ips = crate::docker::pod_ips(&sandbox);
    if ips.is_empty() {
        ips = attachment.as_ref().map(Attachment::ips).unwrap_or_default();
    }
    let mut record = PodRecord {
        shim_id: shim_id.to_string(),
        sandbox_id: sandbox_id.to_string(),
        created_at: created(&sandbox),
        ready: running,
        ips,
        network: attachment.map(|a| a.network_name).unwrap_or_default(),
        adopted: true,
        cri_dockerd_checkpoint: checkpoint_path
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        ..Default::default()
    };
    let members = engine
        .list_labelled(&[format!("{}={sandbox_id}", labels::SANDBOX_ID)])
        .await?;
    for member in members {
        let Some(id) = member.id else { continue };
        let Some(inspect) = engine.inspect(&id).await? else {
            continue;
        };
        let c = container(&inspect);
        if config.log_directory.is_empty() {
            // The kubelet's layout: <log directory>/<container>/<attempt>.log
            if let Some(dir) = Path::new(&c.log_path).parent().and_then(Path::parent) {
                config.log_directory = dir.display().to_string();
            }
        }
        record.containers.insert(id, c);
    }
    record.config = config;
    Ok(record)
}

/// One of the pod's containers, as its name, labels and Docker's inspection describe it, in
/// the state that inspection found. The pod's name, namespace and UID
/// are added to its labels from the name where cri-dockerd's caller set none, as dockpod
/// labels every container of its own (clients such as crictl show the pod from them).
fn container(inspect: &ContainerInspectResponse) -> ContainerRecord {
    let l = docker_labels(inspect);
    let (mut container_labels, annotations) = labels::split_labels(&l);
    let name = kube_name(inspect);
    if let Some(n) = &name {
        for (key, value) in [
            (labels::POD_NAME, &n.pod),
            (labels::POD_NAMESPACE, &n.namespace),
            (labels::POD_UID, &n.uid),
        ] {
            container_labels
                .entry(key.to_string())
                .or_insert_with(|| value.clone());
        }
    }
    let docker_config = inspect.config.clone().unwrap_or_default();
    let mut record = ContainerRecord {
        id: inspect.id.clone().unwrap_or_default(),
        config: ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name
                    .as_ref()
                    .map(|n| n.container.clone())
                    .unwrap_or_else(|| l.get(labels::CONTAINER_NAME).cloned().unwrap_or_default()),
                attempt: name.as_ref().map_or(0, |n| n.attempt),
            }),
            image: Some(ImageSpec {
                image: docker_config.image.clone().unwrap_or_default(),
                ..Default::default()
            }),
            command: docker_config.entrypoint.clone().unwrap_or_default(),
            args: docker_config.cmd.clone().unwrap_or_default(),
            working_dir: docker_config.working_dir.clone().unwrap_or_default(),
            labels: container_labels,
            annotations,
            tty: docker_config.tty.unwrap_or(false),
            stdin: docker_config.open_stdin.unwrap_or(false),
            stdin_once: docker_config.stdin_once.unwrap_or(false),
            ..Default::default()
        },
        image_id: inspect.image.clone().unwrap_or_default(),
        log_path: l.get(labels::LOG_PATH).cloned().unwrap_or_default(),
        created_at: created(inspect),
        state: ContainerState::ContainerCreated as i32,
        docker_log: true,
        ..Default::default()
    };
    // The state is Docker's, as this very inspection read it: a status answered before the
    // shim's first refresh must not call a running container created (the kubelet would
    // start it again).
    record.observe(&crate::docker::observe(Some(inspect)));
    record
}

/// An adopted container's log path is cri-dockerd's symlink to Docker's log, which goes with
/// the container as cri-dockerd would remove it; a real file there is the kubelet's.
pub fn remove_docker_log_link(c: &ContainerRecord) {
    if !c.docker_log || c.log_path.is_empty() {
        return;
    }
    let path = std::path::Path::new(&c.log_path);
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(error = %e, path = %path.display(), "removing a container's log symlink");
        }
    }
}

/// Removes an adopted pod's cri-dockerd checkpoint (if it had one) with the pod: cri-dockerd
/// would otherwise list a pod that no longer exists.
pub fn remove_checkpoint(checkpoint: &str) {
    if checkpoint.is_empty() {
        return;
    }
    if let Err(e) = std::fs::remove_file(checkpoint) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, path = %checkpoint, "removing cri-dockerd's checkpoint");
        }
    }
}

/// The pod's own CNI attachment as libcni cached it for cri-dockerd (not its loopback one),
/// so that its DEL can run when the pod is removed and its IPs be reported.
async fn pod_attachment(cni: &Cni, sandbox_id: &str) -> Result<Option<Attachment>> {
    Ok(cni
        .libcni_attachments(sandbox_id)
        .await?
        .into_iter()
        .find(|a| a.network_name != CRI_DOCKERD_LOOPBACK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cri_dockerds_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("abc");
        std::fs::write(
            &path,
            br#"{"version":"v1","name":"web","namespace":"shop","data":{"port_mappings":[{"protocol":"UDP","container_port":53,"host_port":5353,"host_ip":"127.0.0.1"},{"container_port":80}],"host_network":true},"checksum":123}"#,
        )
        .expect("write");
        let c = Checkpoint::load(&path).expect("load");
        assert_eq!((c.name.as_str(), c.namespace.as_str()), ("web", "shop"));
        assert!(c.data.as_ref().is_some_and(|d| d.host_network));
        let ports = c.port_mappings();
        assert_eq!(ports[0].protocol, Protocol::Udp as i32);
        assert_eq!((ports[0].container_port, ports[0].host_port), (53, 5353));
        assert_eq!(ports[0].host_ip, "127.0.0.1");
        assert_eq!(ports[1].protocol, Protocol::Tcp as i32);

        std::fs::write(&path, br#"{"version":"v2","name":"web"}"#).expect("write");
        assert!(Checkpoint::load(&path).is_err());
        std::fs::write(&path, b"{").expect("write");
        assert!(Checkpoint::load(&path).is_err());
    }

    #[test]
    fn an_adopted_container_is_in_the_state_its_inspection_found() {
        let inspect = |state: serde_json::Value| -> ContainerInspectResponse {
            serde_json::from_value(serde_json::json!({
                "Id": "abc",
                "Name": "/k8s_app_web_shop_uid_0",
                "State": state,
                "Config": {"Labels": {}},
            }))
            .expect("inspection")
        };
        let running = container(&inspect(serde_json::json!({
            "Running": true,
            "StartedAt": "2026-12-06T04:17:36.651446221Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
        })));
        assert_eq!(running.state, ContainerState::ContainerRunning as i32);
        assert!(running.started_at > 0);
        let exited = container(&inspect(serde_json::json!({
            "Running": false,
            "ExitCode": 3,
            "StartedAt": "2026-12-06T04:17:36.651446221Z",
            "FinishedAt": "2026-12-06T04:17:36.656240981Z",
        })));
        assert_eq!(exited.state, ContainerState::ContainerExited as i32);
        assert_eq!(exited.exit_code, 3);
        let created = container(&inspect(serde_json::json!({
            "Running": false,
            "StartedAt": "0001-01-01T00:00:00Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
        })));
        assert_eq!(created.state, ContainerState::ContainerCreated as i32);
    }
}
