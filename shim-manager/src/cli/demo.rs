//! `shim-manager demo`: a short tour against a running server. It runs a pod whose busybox
//! container prints a greeting, shows the pod's shim in `ps`, runs an ExecSync, prints the
//! container's status and removes the pod again (also when a step fails).

use std::path::Path;
use std::time::Duration;

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use tonic::transport::Channel;

use crate::config::{PsOutput, PsSort};

const GREETING: &str = "Hello from dockpod";

pub async fn run(endpoint: &str, run_dir: &Path, image: &str) -> Result<(), String> {
    let socket =
        dockpod_proto::sockets::parse_unix_endpoint(endpoint).map_err(|e| e.to_string())?;
    let mut rt = RuntimeServiceClient::new(dockpod_proto::sockets::channel(&socket));
    let version = rt
        .version(VersionRequest::default())
        .await
        .map_err(|e| format!("no CRI server answers on {endpoint}: {}", e.message()))?
        .into_inner();
    println!(
        "CRI server on {endpoint}: {} {}",
        version.runtime_name, version.runtime_version
    );
    let logs = std::env::temp_dir().join(format!("dockpod-demo-{}", std::process::id()));
    std::fs::create_dir_all(logs.join("hello"))
        .map_err(|e| format!("creating {}: {e}", logs.display()))?;
    let pod = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("hello-{}", std::process::id()),
            namespace: "dockpod-demo".into(),
            uid: format!("demo-{}", std::process::id()),
            attempt: 0,
        }),
        log_directory: logs.display().to_string(),
        ..Default::default()
    };
    let sandbox = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    println!("\nRunPodSandbox -> {sandbox}");
    let result = tour(&mut rt, &sandbox, &pod, run_dir, image).await;
    let removed = rt
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .map_err(|e| format!("RemovePodSandbox: {}", e.message()));
    let _ = std::fs::remove_dir_all(&logs);
    result?;
    removed?;
    println!(
        "\nRemovePodSandbox {} -> done (its shim exits by itself)",
        &sandbox[..12.min(sandbox.len())]
    );
    Ok(())
}

async fn tour(
    rt: &mut RuntimeServiceClient<Channel>,
    sandbox: &str,
    pod: &PodSandboxConfig,
    run_dir: &Path,
    image: &str,
) -> Result<(), String> {
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "hello".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into()],
        args: vec![format!(
            "echo '{GREETING}' | tee /tmp/greeting; exec sleep 3600"
        )],
        log_path: "hello/0.log".into(),
        ..Default::default()
    };
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .map_err(|e| format!("CreateContainer: {}", e.message()))?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .map_err(|e| format!("StartContainer: {}", e.message()))?;
    println!("CreateContainer + StartContainer -> {id}");

    println!("\nshim-manager ps:");
    print!(
        "{}",
        super::ps::run(run_dir, PsOutput::Table, PsSort::Name).await
    );

    let mut greeting = String::new();
    for _ in 0..50 {
        let out = rt
            .exec_sync(ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["cat".into(), "/tmp/greeting".into()],
                timeout: 10,
            })
            .await
            .map_err(|e| format!("ExecSync: {}", e.message()))?
            .into_inner();
        greeting = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.exit_code == 0 && !greeting.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("\nExecSync cat /tmp/greeting -> {greeting:?}");

    let status = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .map_err(|e| format!("ContainerStatus: {}", e.message()))?
        .into_inner()
        .status
        .unwrap_or_default();
    println!("\nContainerStatus:");
    println!(
        "  state:      {:?}",
        ContainerState::try_from(status.state).unwrap_or(ContainerState::ContainerUnknown)
    );
    println!(
        "  image:      {} ({})",
        status.image.map(|i| i.image).unwrap_or_default(),
        status.image_ref
    );
    println!("  created_at: {}", status.created_at);
    println!("  started_at: {}", status.started_at);
    println!("  log_path:   {}", status.log_path);
    Ok(())
}
