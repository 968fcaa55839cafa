//! Builders for CRI requests and small helpers over the front's client, so each test says
//! only what is particular to it.

use std::path::Path;
use std::time::Duration;

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use tonic::transport::Channel;

use crate::docker::TOOL_IMAGE;
use crate::wait::wait_until;

/// A pod with a unique name and UID in namespace `dockpod-test`, logging under `log_dir`.
pub fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    let name = crate::unique(name);
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            uid: format!("uid-{name}"),
            name,
            namespace: "dockpod-test".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        labels: [("dockpod-test".to_string(), "pod".to_string())].into(),
        annotations: [("dockpod.test/note".to_string(), "hello".to_string())].into(),
        ..Default::default()
    }
}

/// Makes the pod share the node's network namespace (hostNetwork).
pub fn host_network(config: &mut PodSandboxConfig) {
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

/// A container of the busybox tool image running `cmd`.
pub fn container_config(name: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: TOOL_IMAGE.to_string(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// A running pod of the test's own, with the log directory it keeps until dropped.
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    _logs: tempfile::TempDir,
}

/// Runs a pod named after `name` (see `pod_config`) with a log directory of its own.
pub async fn pod(rt: &mut RuntimeServiceClient<Channel>, name: &str) -> Pod {
    let logs = tempfile::tempdir().expect("log dir");
    let config = pod_config(name, logs.path());
    let id = run_pod(rt, &config).await;
    Pod {
        id,
        config,
        _logs: logs,
    }
}

pub async fn run_pod(rt: &mut RuntimeServiceClient<Channel>, config: &PodSandboxConfig) -> String {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("RunPodSandbox: {e:?}"))
    .into_inner()
    .pod_sandbox_id
}

/// CreateContainer, after making the container's log directory as the kubelet does
/// (`<pod log directory>/<container name>/`).
pub async fn create_container(
    rt: &mut RuntimeServiceClient<Channel>,
    sandbox_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    if !pod.log_directory.is_empty() {
        if let Some(dir) = Path::new(&config.log_path).parent() {
            // Best effort: a test that gives no usable directory gets the runtime's answer.
            let _ = std::fs::create_dir_all(Path::new(&pod.log_directory).join(dir));
        }
    }
    rt.create_container(CreateContainerRequest {
        pod_sandbox_id: sandbox_id.to_string(),
        config: Some(config),
        sandbox_config: Some(pod.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

pub async fn start(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.start_container(StartContainerRequest {
        container_id: id.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer {id}: {e:?}"));
}

/// Creates and starts a container.
pub async fn run_container(
    rt: &mut RuntimeServiceClient<Channel>,
    sandbox_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let id = create_container(rt, sandbox_id, pod, config)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e:?}"));
    start(rt, &id).await;
    id
}

pub async fn status(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    rt.container_status(ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    })
    .await
    .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e:?}"))
    .into_inner()
    .status
    .expect("status present")
}

pub async fn pod_status(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> PodSandboxStatusResponse {
    rt.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose: true,
    })
    .await
    .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e:?}"))
    .into_inner()
}

/// The shim PID a pod's verbose status reports.
pub async fn shim_pid(rt: &mut RuntimeServiceClient<Channel>, sandbox_id: &str) -> u32 {
    let status = pod_status(rt, sandbox_id).await;
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("JSON");
    info["shimPid"].as_u64().expect("shimPid") as u32
}

/// Waits until the pod answers from a shim other than `old` (the front has started a new
/// one) and returns the new shim's PID.
pub async fn wait_new_shim(
    rt: &RuntimeServiceClient<Channel>,
    sandbox_id: &str,
    old: u32,
    timeout: Duration,
) -> u32 {
    wait_until(&format!("a new shim for pod {sandbox_id}"), timeout, || {
        let mut rt = rt.clone();
        async move {
            let status = rt
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: sandbox_id.to_string(),
                    verbose: true,
                })
                .await
                .ok()?
                .into_inner();
            let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
            let pid = info["shimPid"].as_u64()? as u32;
            (pid != old).then_some(pid)
        }
    })
    .await
}

/// Reads `events` (a GetContainerEvents stream) until `container`'s stopped event arrives;
/// `None` if it has not within `timeout`. Panics if the stream fails or ends first.
pub async fn wait_stopped_event(
    events: &mut tonic::Streaming<ContainerEventResponse>,
    container: &str,
    timeout: Duration,
) -> Option<ContainerEventResponse> {
    use futures_util::StreamExt;
    let wait = async {
        while let Some(event) = events.next().await {
            let event = event.expect("event stream");
            if event.container_id == container
                && event.container_event_type == ContainerEventType::ContainerStoppedEvent as i32
            {
                return event;
            }
        }
        panic!("the event stream ended");
    };
    tokio::time::timeout(timeout, wait).await.ok()
}

/// Waits until the container has exited and returns its status.
pub async fn wait_exited(
    rt: &RuntimeServiceClient<Channel>,
    id: &str,
    timeout: Duration,
) -> ContainerStatus {
    wait_until(&format!("container {id} to exit"), timeout, || {
        let mut rt = rt.clone();
        let id = id.to_string();
        async move {
            let s = status(&mut rt, &id).await;
            (s.state == ContainerState::ContainerExited as i32).then_some(s)
        }
    })
    .await
}

pub async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e:?}"));
}

/// Sorted IDs of the pods ListPodSandbox returns for `filter`.
pub async fn pod_ids(
    mut rt: RuntimeServiceClient<Channel>,
    filter: PodSandboxFilter,
) -> Vec<String> {
    let req = ListPodSandboxRequest {
        filter: Some(filter),
    };
    let items = rt
        .list_pod_sandbox(req)
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    let mut ids: Vec<String> = items.into_iter().map(|p| p.id).collect();
    ids.sort();
    ids
}

/// Sorted IDs of the containers ListContainers returns for `filter`.
pub async fn container_ids(
    mut rt: RuntimeServiceClient<Channel>,
    filter: ContainerFilter,
) -> Vec<String> {
    let req = ListContainersRequest {
        filter: Some(filter),
    };
    let items = rt
        .list_containers(req)
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    let mut ids: Vec<String> = items.into_iter().map(|c| c.id).collect();
    ids.sort();
    ids
}

/// Waits (at most `timeout`) until `script` exits 0 in the container, run by `sh -c` through
/// ExecSync: for a server in a pod to listen, a file to appear.
pub async fn wait_for_script(
    rt: &RuntimeServiceClient<Channel>,
    container: &str,
    script: &str,
    timeout: Duration,
) {
    wait_until(&format!("`{script}` to succeed"), timeout, || {
        let mut rt = rt.clone();
        let request = ExecSyncRequest {
            container_id: container.to_string(),
            cmd: vec!["sh".into(), "-c".into(), script.to_string()],
            timeout: 10,
        };
        async move {
            let r = rt.exec_sync(request).await.ok()?.into_inner();
            (r.exit_code == 0).then_some(())
        }
    })
    .await
}

/// Runs `cmd` in a container through ExecSync (30 s), panicking if the call fails.
pub async fn exec(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
) -> ExecSyncResponse {
    rt.exec_sync(ExecSyncRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 30,
    })
    .await
    .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e:?}"))
    .into_inner()
}

/// The pod's IPs as its status reports them, the primary first.
/// The streaming URL of an Exec of `cmd` in `container`.
pub async fn exec_url(
    rt: &mut RuntimeServiceClient<Channel>,
    container: &str,
    cmd: &[&str],
    stdin: bool,
    tty: bool,
) -> String {
    rt.exec(ExecRequest {
        container_id: container.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    })
    .await
    .unwrap_or_else(|e| panic!("Exec: {e:?}"))
    .into_inner()
    .url
}

pub fn pod_ip(status: &PodSandboxStatusResponse) -> Vec<String> {
    let network = status
        .status
        .as_ref()
        .and_then(|s| s.network.clone())
        .unwrap_or_default();
    std::iter::once(network.ip)
        .chain(network.additional_ips.into_iter().map(|p| p.ip))
        .filter(|ip| !ip.is_empty())
        .collect()
}
