//! Adoption of cri-dockerd's pods: a pod made directly through the Docker API with
//! cri-dockerd's names, labels, log symlink and sandbox checkpoint is left alone by a front
//! without `--adopt-cri-dockerd`, and gets a shim from one with it: status, logs, exec and
//! removal then work through dockpod.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use dockpod_tests::cri::*;
use dockpod_tests::docker::{docker, PAUSE_IMAGE, TOOL_IMAGE};
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;
use k8s_cri::v1::*;

const SECS: Duration = Duration::from_secs(60);

/// Removes the containers the test made behind dockpod's back, also when it fails.
struct Made(Vec<String>);

impl Drop for Made {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.0);
        dockpod_tests::block_on_side(async move {
            let docker = docker().await;
            for id in ids.iter().rev() {
                let options = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = docker.remove_container(id, Some(options)).await;
            }
        });
    }
}

struct LegacyPod {
    sandbox: String,
    app: String,
    name: String,
    namespace: String,
    uid: String,
    log_path: PathBuf,
    checkpoint: PathBuf,
}

/// What cri-dockerd would have made for a pod with one container: the sandbox and the
/// container with its labels and names, the log path as a symlink to Docker's own log, and
/// the sandbox checkpoint under its root directory.
async fn make_legacy_pod(made: &mut Made, root: &Path, logs: &Path) -> LegacyPod {
    let docker = docker().await;
    let name = dockpod_tests::unique("legacy");
    let namespace = "dockpod-test".to_string();
    let uid = format!("uid-{name}");
    let pod_labels = |kind: &str| {
        HashMap::from([
            ("io.kubernetes.docker.type".to_string(), kind.to_string()),
            ("io.kubernetes.pod.name".to_string(), name.clone()),
            ("io.kubernetes.pod.namespace".to_string(), namespace.clone()),
            ("io.kubernetes.pod.uid".to_string(), uid.clone()),
            ("app".to_string(), "legacy".to_string()),
            (
                "annotation.kubernetes.io/config.source".to_string(),
                "api".to_string(),
            ),
        ])
    };
    let create = |docker_name: String, body: ContainerCreateBody| {
        let docker = docker.clone();
        async move {
            let options = CreateContainerOptions {
                name: Some(docker_name),
                ..Default::default()
            };
            let id = docker
                .create_container(Some(options), body)
                .await
                .expect("docker create")
                .id;
            if let Err(e) = docker.start_container(&id, None).await {
                let options = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = docker.remove_container(&id, Some(options)).await;
                panic!("docker start: {e}");
            }
            id
        }
    };
    let sandbox_name = format!("k8s_POD_{name}_{namespace}_{uid}_0");
    let sandbox = create(
        sandbox_name,
        ContainerCreateBody {
            image: Some(PAUSE_IMAGE.into()),
            labels: Some(pod_labels("podsandbox")),
            hostname: Some(name.clone()),
            host_config: Some(HostConfig {
                ipc_mode: Some("shareable".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    made.0.push(sandbox.clone());

    let log_path = logs.join("app/0.log");
    std::fs::create_dir_all(log_path.parent().expect("parent")).expect("log dir");
    let mut labels = pod_labels("container");
    labels.insert("io.kubernetes.sandbox.id".into(), sandbox.clone());
    labels.insert("io.kubernetes.container.name".into(), "app".into());
    labels.insert(
        "io.kubernetes.container.logpath".into(),
        log_path.display().to_string(),
    );
    let app = create(
        format!("k8s_app_{name}_{namespace}_{uid}_0"),
        ContainerCreateBody {
            image: Some(TOOL_IMAGE.into()),
            entrypoint: Some(vec!["sh".into(), "-c".into()]),
            cmd: Some(vec!["echo legacy-hello; exec sleep 3600".into()]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{sandbox}")),
                ipc_mode: Some(format!("container:{sandbox}")),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    made.0.push(app.clone());
    let docker_log = docker
        .inspect_container(&app, None)
        .await
        .expect("inspect")
        .log_path
        .expect("json-file log path");
    std::os::unix::fs::symlink(&docker_log, &log_path).expect("log symlink");

    let checkpoint = root.join("sandbox").join(&sandbox);
    std::fs::create_dir_all(checkpoint.parent().expect("parent")).expect("checkpoint dir");
    let json = serde_json::json!({
        "version": "v1",
        "name": name,
        "namespace": namespace,
        "data": {"port_mappings": [{"protocol": "tcp", "container_port": 80, "host_port": 0}]},
        "checksum": 0,
    });
    std::fs::write(&checkpoint, json.to_string()).expect("checkpoint");
    LegacyPod {
        sandbox,
        app,
        name,
        namespace,
        uid,
        log_path,
        checkpoint,
    }
}

#[tokio::test]
async fn cri_dockerd_pods_are_adopted_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("cri-dockerd");
    let logs = dir.path().join("logs");
    let mut made = Made(Vec::new());
    let legacy = make_legacy_pod(&mut made, &root, &logs).await;
    let root_flag = root.display().to_string();

    // Without the flag the pod is not dockpod's: not listed, not touched.
    let plain = Front::start(&["--cri-dockerd-root-directory", &root_flag]).await;
    let listed = pod_ids(plain.runtime(), PodSandboxFilter::default()).await;
    assert!(!listed.contains(&legacy.sandbox), "{listed:?}");
    drop(plain);
    assert!(legacy.checkpoint.exists());

    let front = Front::start(&[
        "--adopt-cri-dockerd",
        "--cri-dockerd-root-directory",
        &root_flag,
    ])
    .await;
    let mut rt = front.runtime();
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    let pod = pods
        .iter()
        .find(|p| p.id == legacy.sandbox)
        .unwrap_or_else(|| panic!("adopted pod missing from {pods:?}"));
    let meta = pod.metadata.clone().expect("metadata");
    assert_eq!(
        (
            meta.name.as_str(),
            meta.namespace.as_str(),
            meta.uid.as_str(),
            meta.attempt
        ),
        (
            legacy.name.as_str(),
            legacy.namespace.as_str(),
            legacy.uid.as_str(),
            0
        )
    );
    assert_eq!(pod.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("legacy"));
    assert_eq!(
        pod.annotations
            .get("kubernetes.io/config.source")
            .map(String::as_str),
        Some("api")
    );
    let sandbox_status = pod_status(&mut rt, &legacy.sandbox)
        .await
        .status
        .expect("status");
    assert_eq!(sandbox_status.state, PodSandboxState::SandboxReady as i32);

    let containers = container_ids(
        rt.clone(),
        ContainerFilter {
            pod_sandbox_id: legacy.sandbox.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(containers, vec![legacy.app.clone()]);
    let app = status(&mut rt, &legacy.app).await;
    assert_eq!(app.state, ContainerState::ContainerRunning as i32);
    assert_eq!(app.metadata.as_ref().map(|m| m.name.as_str()), Some("app"));
    assert_eq!(app.log_path, legacy.log_path.display().to_string());
    // The log stays where the kubelet reads it, in Docker's format as cri-dockerd left it.
    let log = std::fs::read_to_string(&legacy.log_path).expect("log through the symlink");
    assert!(log.contains("legacy-hello"), "{log}");

    let out = exec(&mut rt, &legacy.app, &["echo", "exec-in-adopted"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "exec-in-adopted"
    );
    assert_eq!(out.exit_code, 0);

    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: legacy.sandbox.clone(),
    })
    .await
    .expect("StopPodSandbox");
    wait_exited(&rt, &legacy.app, SECS).await;
    remove_pod(&mut rt, &legacy.sandbox).await;
    let docker = docker().await;
    for id in [&legacy.sandbox, &legacy.app] {
        assert!(
            docker.inspect_container(id, None).await.is_err(),
            "{id} removed"
        );
    }
    assert!(
        !legacy.checkpoint.exists(),
        "cri-dockerd's checkpoint removed"
    );
    assert!(
        std::fs::symlink_metadata(&legacy.log_path).is_err(),
        "cri-dockerd's log symlink removed"
    );
    wait_until("the adopted pod's shim to exit", SECS, || async {
        front.shim_pids().is_empty().then_some(())
    })
    .await;
}
