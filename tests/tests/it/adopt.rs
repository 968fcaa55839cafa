//! Adoption of cri-dockerd's pods: a pod made directly through the Docker API with
//! cri-dockerd's names, labels, log symlink and sandbox checkpoint (and, for a CNI pod, the
//! reference plugins run and cached as cri-dockerd's libcni does) is left alone by a front
//! without `--adopt-cri-dockerd`, and gets a shim from one with it: status, logs, exec and
//! removal then work through dockpod.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use dockpod_proto::cri::*;
use dockpod_tests::cni::CniNet;
use dockpod_tests::cri::*;
use dockpod_tests::docker::{docker, PAUSE_IMAGE, TOOL_IMAGE};
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;

const SECS: Duration = Duration::from_secs(60);

/// A front with `--adopt-cri-dockerd` adopts every foreign pod on the dockerd, so the tests
/// that make such pods take turns: neither adopts the other's.
static ADOPTION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    host_port: u16,
    /// What the CNI chain returned, for a CNI pod.
    cni_result: Option<serde_json::Value>,
}

/// What cri-dockerd (v0.3) makes for a pod with one container: the sandbox and the container
/// with its names and the labels it sets, the log path as a symlink to Docker's own log, and
/// the sandbox checkpoint under its root directory.
///
/// Without `net` the pod is what the kubelet asks for on a host-port pod: the kubelet's
/// `io.kubernetes.pod.*` labels on both containers. With `net` it is what `crictl runp`
/// asks for on a CNI node: no pod labels at all (the `k8s_` names are the only record of the
/// pod's identity), Docker network `none`, and the network set up through libcni.
async fn make_legacy_pod(
    made: &mut Made,
    root: &Path,
    logs: &Path,
    net: Option<&CniNet>,
) -> LegacyPod {
    let docker = docker().await;
    let name = dockpod_tests::unique("legacy");
    let namespace = "dockpod-test".to_string();
    let uid = format!("uid-{name}");
    let pod_labels = |kind: &str| {
        let mut l = HashMap::from([
            ("io.kubernetes.docker.type".to_string(), kind.to_string()),
            ("app".to_string(), "legacy".to_string()),
            (
                "annotation.kubernetes.io/config.source".to_string(),
                "api".to_string(),
            ),
        ]);
        if net.is_none() {
            l.insert("io.kubernetes.pod.name".to_string(), name.clone());
            l.insert("io.kubernetes.pod.namespace".to_string(), namespace.clone());
            l.insert("io.kubernetes.pod.uid".to_string(), uid.clone());
        }
        l
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
    let mut sandbox_labels = pod_labels("podsandbox");
    // cri-dockerd names the sandbox's container for the kubelet's summary API.
    sandbox_labels.insert("io.kubernetes.container.name".into(), "POD".into());
    let sandbox = create(
        sandbox_name,
        ContainerCreateBody {
            image: Some(PAUSE_IMAGE.into()),
            labels: Some(sandbox_labels),
            hostname: Some(name.clone()),
            host_config: Some(HostConfig {
                ipc_mode: Some("shareable".into()),
                network_mode: net.map(|_| "none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    made.0.push(sandbox.clone());
    let host_port = net
        .map(|_| dockpod_tests::registry::free_port())
        .unwrap_or(0);
    let mut cni_result = None;
    if let Some(net) = net {
        let pid = docker
            .inspect_container(&sandbox, None)
            .await
            .expect("inspect sandbox")
            .state
            .and_then(|s| s.pid)
            .expect("sandbox pid");
        let ports = serde_json::json!([
            {"hostPort": host_port, "containerPort": 80, "protocol": "tcp", "hostIP": ""}
        ]);
        cni_result = Some(net.attach_as_cri_dockerd(&sandbox, pid, &name, &namespace, ports));
    }

    let log_path = logs.join("app/0.log");
    std::fs::create_dir_all(log_path.parent().expect("parent")).expect("log dir");
    let mut labels = pod_labels("container");
    labels.insert("io.kubernetes.sandbox.id".into(), sandbox.clone());
    if net.is_none() {
        labels.insert("io.kubernetes.container.name".into(), "app".into());
    }
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
    // As cri-dockerd's checkpoint manager writes it: Kubernetes' protocol names, the
    // checksum a number.
    let json = serde_json::json!({
        "version": "v1",
        "name": name,
        "namespace": namespace,
        "data": {"port_mappings": [{"protocol": "TCP", "container_port": 80, "host_port": host_port}]},
        "checksum": 2_943_014_621u64,
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
        host_port,
        cni_result,
    }
}

#[tokio::test]
async fn cri_dockerd_pods_are_adopted_only_when_asked() {
    let _turn = ADOPTION.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("cri-dockerd");
    let logs = dir.path().join("logs");
    let mut made = Made(Vec::new());
    let legacy = make_legacy_pod(&mut made, &root, &logs, None).await;
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

/// The address a CNI result gave the pod's interface.
fn result_ip(result: &serde_json::Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("an address in the CNI result")
        .to_string()
}

/// iptables NAT rules that name the sandbox (portmap's DNAT chains carry its ID).
fn nat_rules_of(sandbox: &str) -> Vec<String> {
    let out = std::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .expect("iptables -S");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(sandbox))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_cri_dockerd_cni_pod_is_adopted_from_its_names_and_libcnis_cache() {
    let _turn = ADOPTION.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("cri-dockerd");
    let logs = dir.path().join("logs");
    let net = CniNet::new();
    let mut made = Made(Vec::new());
    let legacy = make_legacy_pod(&mut made, &root, &logs, Some(&net)).await;
    let result = legacy.cni_result.clone().expect("CNI result");
    let ip = result_ip(&result);
    assert!(net.contains(&ip), "{ip} in {}", net.subnet);
    let libcni_files = |net: &CniNet| {
        let mut files: Vec<(String, Vec<u8>)> = net
            .cached()
            .into_iter()
            .map(|f| {
                let bytes = std::fs::read(net.libcni_results().join(&f)).expect("read cache");
                (f, bytes)
            })
            .collect();
        files.sort();
        files
    };
    let cached_before = libcni_files(&net);
    assert_eq!(cached_before.len(), 2, "loopback and pod network cached");
    let port = legacy.host_port.to_string();
    assert!(
        nat_rules_of(&legacy.sandbox)
            .iter()
            .any(|r| r.contains(&port)),
        "portmap's rules for host port {port}: {:?}",
        nat_rules_of(&legacy.sandbox)
    );

    let root_flag = root.display().to_string();
    let mut args = vec![
        "--adopt-cri-dockerd".to_string(),
        "--cri-dockerd-root-directory".into(),
        root_flag,
    ];
    args.extend(net.front_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut front = Front::start(&args).await;
    let mut rt = front.runtime();

    // Metadata from the k8s_ names, the IP from libcni's cached result.
    let pod = pod_status(&mut rt, &legacy.sandbox)
        .await
        .status
        .expect("status");
    let meta = pod.metadata.clone().expect("metadata");
    assert_eq!(
        (
            meta.name.as_str(),
            meta.namespace.as_str(),
            meta.uid.as_str()
        ),
        (
            legacy.name.as_str(),
            legacy.namespace.as_str(),
            legacy.uid.as_str()
        )
    );
    assert_eq!(
        pod.network.as_ref().map(|n| n.ip.as_str()),
        Some(ip.as_str())
    );
    let containers = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: legacy.sandbox.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    assert_eq!(containers.len(), 1, "{containers:?}");
    let app = &containers[0];
    assert_eq!(app.metadata.as_ref().map(|m| m.name.as_str()), Some("app"));
    // What crictl shows as the container's pod.
    assert_eq!(
        app.labels.get("io.kubernetes.pod.name").map(String::as_str),
        Some(legacy.name.as_str())
    );
    assert_eq!(
        app.labels
            .get("io.kubernetes.pod.namespace")
            .map(String::as_str),
        Some(legacy.namespace.as_str())
    );

    // Adoption and a restart of the front read libcni's cache and write nothing there.
    front.kill().await;
    front.restart().await;
    let mut rt = front.runtime();
    // Its outcome is judged below, from the verbose status that reports it.
    let _ = front.check_network(&legacy.sandbox);
    let verbose = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: legacy.sandbox.clone(),
            verbose: true,
        })
        .await
        .expect("verbose PodSandboxStatus")
        .into_inner();
    assert_eq!(
        verbose.status.and_then(|s| s.network).map(|n| n.ip),
        Some(ip.clone())
    );
    // CNI CHECK ran through the chain libcni recorded, to its end: it passes, or fails only
    // in portmap's IPv6 check, which portmap before plugins v1.2 runs on an IPv4-only pod
    // with host ports (containernetworking/plugins#819; Debian 12 ships v1.1.1).
    let info: serde_json::Value =
        serde_json::from_str(verbose.info.get("info").expect("verbose info")).expect("JSON");
    let check = info["cniCheck"].as_str().unwrap_or_default();
    assert!(
        check == "ok"
            || (check.starts_with("CNI plugin portmap CHECK failed")
                && check.contains("ipv6 dnat")),
        "{info}"
    );
    assert_eq!(info["cniResult"]["ips"], result["ips"], "{info}");
    assert_eq!(
        libcni_files(&net),
        cached_before,
        "libcni's cache untouched"
    );

    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: legacy.sandbox.clone(),
    })
    .await
    .expect("StopPodSandbox of the adopted CNI pod");
    // DEL ran through the chain libcni recorded: the address, the host port's rules and
    // (as libcni's own DEL does) the cache entries are gone.
    assert!(
        !net.allocated().contains(&ip),
        "{ip} still held: {:?}",
        net.allocated()
    );
    assert_eq!(nat_rules_of(&legacy.sandbox), Vec::<String>::new());
    assert_eq!(net.cached(), Vec::<String>::new());
    remove_pod(&mut rt, &legacy.sandbox).await;
    let docker = docker().await;
    for id in [&legacy.sandbox, &legacy.app] {
        assert!(
            docker.inspect_container(id, None).await.is_err(),
            "{id} removed"
        );
    }
    assert!(!legacy.checkpoint.exists());
    wait_until("the adopted pod's shim to exit", SECS, || async {
        front.shim_pids().is_empty().then_some(())
    })
    .await;
}
