//! Load: a hundred pods with two containers each live through their whole life in waves of
//! concurrent pods (run, create and start, list, exec, stop, remove) on a CNI network, within a
//! time bound; afterwards nothing of them is left: no Docker container, shim process, socket,
//! state directory, CNI address, veth or cached attachment, and the front holds no more file
//! descriptors than before.

use std::path::Path;
use std::time::{Duration, Instant};

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cni::CniNet;
use dockpod_tests::cri::*;
use dockpod_tests::docker::instance_containers;
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;
use futures_util::future::join_all;
use tonic::transport::Channel;

const PODS: usize = 100;
const WAVE: usize = 25;
/// The whole run's bound: far above what it takes here, far below CI's patience.
const BOUND: Duration = Duration::from_secs(600);
const SECS: Duration = Duration::from_secs(60);

fn fds(pid: u32) -> usize {
    dockpod_tests::list_dir(Path::new(&format!("/proc/{pid}/fd"))).len()
}

/// One pod's whole life, with its log directories made as the kubelet makes them.
async fn live(mut rt: RuntimeServiceClient<Channel>, name: String, logs: &Path) {
    let logs = logs.join(&name);
    for dir in ["server", "once"] {
        std::fs::create_dir_all(logs.join(dir)).expect("log directory");
    }
    let pod = pod_config(&name, &logs);
    let id = run_pod(&mut rt, &pod).await;
    let server = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("server", &["sleep", "3600"]),
    )
    .await;
    let once = run_container(&mut rt, &id, &pod, container_config("once", &["true"])).await;
    let listed = container_ids(
        rt.clone(),
        ContainerFilter {
            pod_sandbox_id: id.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut expected = vec![server.clone(), once.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    let out = exec(&mut rt, &server, &["echo", "alive"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alive");
    for c in [&server, &once] {
        rt.stop_container(StopContainerRequest {
            container_id: c.to_string(),
            timeout: 0,
        })
        .await
        .expect("StopContainer");
    }
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("StopPodSandbox");
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn a_hundred_pods_in_waves_leave_nothing_behind() {
    let _slot = crate::slot().await;
    let net = CniNet::new();
    let args = net.front_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let front = Front::start(&args).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pid = front.pid().expect("front pid");
    // One pod first, so what the front opens once and keeps (Docker connections) is counted.
    live(rt.clone(), "load-warmup".into(), logs.path()).await;
    let fds_before = fds(pid);

    let started = Instant::now();
    let run = async {
        for wave in 0..PODS / WAVE {
            let pods = (0..WAVE).map(|i| live(rt.clone(), format!("load{wave}-{i}"), logs.path()));
            join_all(pods).await;
            let left = pod_ids(rt.clone(), PodSandboxFilter::default()).await;
            assert!(left.is_empty(), "pods left after wave {wave}: {left:?}");
        }
    };
    tokio::time::timeout(BOUND, run)
        .await
        .unwrap_or_else(|_| panic!("{PODS} pods did not finish within {BOUND:?}"));
    eprintln!("{PODS} pods in waves of {WAVE}: {:?}", started.elapsed());

    let instance = front.instance_id();
    assert!(
        instance_containers(&instance).await.is_empty(),
        "Docker containers left"
    );
    front.wait_shims_retired().await;
    assert!(
        net.allocated().is_empty(),
        "addresses left: {:?}",
        net.allocated()
    );
    assert!(net.veths().is_empty(), "veths left: {:?}", net.veths());
    assert!(
        net.cached().is_empty(),
        "CNI cache left: {:?}",
        net.cached()
    );
    // Connections to shims that are gone close as their tasks notice; give them a moment.
    let settled = wait_until("the front's descriptors to settle", SECS, || async {
        let now = fds(pid);
        (now <= fds_before + 2).then_some(now)
    })
    .await;
    eprintln!("front descriptors: {fds_before} before, {settled} after");
}
