//! The front's own calls against the real dockerd: Version, Status, RuntimeConfig,
//! UpdateRuntimeConfig, and `Unimplemented` for what is not built yet.

use std::time::Duration;

use dockpod_proto::cri::*;
use dockpod_tests::docker::docker;
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;
use tonic::Code;

fn condition<'a>(status: &'a StatusResponse, kind: &str) -> &'a RuntimeCondition {
    status
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {status:?}"))
}

#[tokio::test]
async fn version_names_docker_and_its_version() {
    let front = Front::start(&[]).await;
    let engine = docker().await.version().await.expect("docker version");
    let v = front
        .runtime()
        .version(VersionRequest::default())
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(v.runtime_name, "docker");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(Some(v.runtime_version), engine.version);
    assert_eq!(v.version, "0.1.0");
}

#[tokio::test]
async fn status_is_ready_with_docker_bridge_and_verbose_info() {
    let front = Front::start(&[]).await;
    let status = front
        .runtime()
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    assert!(condition(&status, "RuntimeReady").status, "{status:?}");
    assert!(condition(&status, "NetworkReady").status, "{status:?}");
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("info JSON");
    let instance = std::fs::read_to_string(front.root_dir().join("instance-id")).expect("id");
    assert_eq!(info["instance"], instance.trim());
    assert_eq!(info["networkPlugin"], "docker-bridge");
    assert_eq!(
        status.runtime_handlers.first().map(|h| h.name.as_str()),
        Some("")
    );
    // No feature is claimed that Docker cannot back: user namespaces of a pod's own and the
    // Strict supplemental-groups policy are refused, so both say no; recursive read-only
    // mounts are there where the engine (API 1.44) and the kernel (5.12) make them.
    let features = status
        .runtime_handlers
        .first()
        .and_then(|h| h.features)
        .expect("handler features");
    assert!(!features.user_namespaces, "{features:?}");
    let rro = dockpod_tests::docker::api_version()
        .await
        .recursive_read_only_binds()
        && dockpod_proto::engine_api::kernel_has_mount_setattr(
            &dockpod_proto::engine_api::kernel_release(),
        );
    assert_eq!(features.recursive_read_only_mounts, rro, "{features:?}");
    assert_eq!(
        status.features.map(|f| f.supplemental_groups_policy),
        Some(false)
    );
    let quiet = front
        .runtime()
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    assert!(quiet.info.is_empty());
}

#[tokio::test]
async fn status_reports_dockerd_not_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("unix://{}/no-docker.sock", dir.path().display());
    let front = Front::start(&["--docker-endpoint", &endpoint]).await;
    let status = front
        .runtime()
        .status(StatusRequest::default())
        .await
        .expect("Status")
        .into_inner();
    let runtime = condition(&status, "RuntimeReady");
    assert!(!runtime.status);
    assert_eq!(runtime.reason, "DockerDaemonNotReady");
    assert!(runtime.message.contains("no-docker.sock"), "{runtime:?}");
    let err = front
        .runtime()
        .version(VersionRequest::default())
        .await
        .expect_err("Version without dockerd");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn cni_network_becomes_ready_when_a_valid_config_appears() {
    let conf = tempfile::tempdir().expect("conf dir");
    let bin = tempfile::tempdir().expect("bin dir");
    std::fs::write(bin.path().join("bridge"), b"").expect("plugin file");
    let conf_dir = conf.path().display().to_string();
    let bin_dir = bin.path().display().to_string();
    let front = Front::start(&[
        "--network-plugin",
        "cni",
        "--cni-conf-dir",
        &conf_dir,
        "--cni-bin-dir",
        &bin_dir,
    ])
    .await;
    let network = |s: StatusResponse| condition(&s, "NetworkReady").clone();
    let status = front
        .runtime()
        .status(StatusRequest::default())
        .await
        .expect("Status");
    let not_ready = network(status.into_inner());
    assert!(!not_ready.status);
    assert_eq!(not_ready.reason, "NetworkPluginNotReady");
    assert!(not_ready.message.contains(&conf_dir), "{not_ready:?}");

    std::fs::write(conf.path().join("10-broken.conflist"), b"{").expect("write");
    let status = front
        .runtime()
        .status(StatusRequest::default())
        .await
        .expect("Status");
    let broken = network(status.into_inner());
    assert!(!broken.status);
    assert!(broken.message.contains("10-broken.conflist"), "{broken:?}");

    std::fs::write(
        conf.path().join("20-pods.conflist"),
        br#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"}]}"#,
    )
    .expect("write");
    let runtime = front.runtime();
    wait_until(
        "NetworkReady after adding a config",
        Duration::from_secs(10),
        || {
            let mut runtime = runtime.clone();
            async move {
                let s = runtime
                    .status(StatusRequest::default())
                    .await
                    .ok()?
                    .into_inner();
                condition(&s, "NetworkReady").status.then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn runtime_config_reports_dockers_cgroup_driver() {
    let front = Front::start(&[]).await;
    let info = docker().await.info().await.expect("docker info");
    let expected = match info.cgroup_driver.map(|d| d.to_string()).as_deref() {
        Some("systemd") => CgroupDriver::Systemd,
        _ => CgroupDriver::Cgroupfs,
    };
    let config = front
        .runtime()
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(config.linux.map(|l| l.cgroup_driver), Some(expected as i32));
    // The kubelet reads it once and relies on it: a restarted front says the same.
    let mut front = front;
    front.kill().await;
    front.restart().await;
    let again = front
        .runtime()
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .expect("RuntimeConfig after a restart")
        .into_inner();
    assert_eq!(again, config);
}

#[tokio::test]
async fn update_runtime_config_records_pod_cidr_across_restarts() {
    let mut front = Front::start(&[]).await;
    let request = |cidr: &str| UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.to_string(),
            }),
        }),
    };
    front
        .runtime()
        .update_runtime_config(request("10.244.3.0/24,fd00:10:244:3::/64"))
        .await
        .expect("UpdateRuntimeConfig");
    let err = front
        .runtime()
        .update_runtime_config(request("10.244.3.0/40"))
        .await
        .expect_err("bad CIDR");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("10.244.3.0/40"), "{err:?}");

    front.kill().await;
    front.restart().await;
    let status = front
        .runtime()
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).expect("info JSON");
    assert_eq!(info["podCIDR"], "10.244.3.0/24,fd00:10:244:3::/64");
}

#[tokio::test]
async fn checkpointing_is_unsupported() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let err = rt
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .expect_err("CheckpointContainer");
    assert_eq!(err.code(), Code::Unimplemented);
}
