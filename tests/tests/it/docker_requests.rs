//! Which Docker requests dockpod makes, seen by a proxy between it and dockerd: the calls the
//! kubelet makes every second answer from dockpod's own state.

use std::collections::BTreeMap;
use std::time::Duration;

use dockpod_tests::cri::*;
use dockpod_tests::docker_proxy::{DockerProxy, Seen};
use dockpod_tests::front::Front;
use dockpod_tests::metrics;
use futures_util::StreamExt;
use k8s_cri::v1::*;

const SECS: Duration = Duration::from_secs(60);
/// Pods made at once: enough to be quick, few enough not to pile up on a 2-core machine.
const AT_ONCE: usize = 8;

/// How often each kind of request was made, IDs left out.
fn summary(seen: &[Seen]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for s in seen {
        let path: Vec<&str> = s
            .path
            .split('/')
            .map(|segment| {
                if segment.len() == 64 && segment.chars().all(|c| c.is_ascii_hexdigit()) {
                    "{id}"
                } else {
                    segment
                }
            })
            .collect();
        *kinds
            .entry(format!("{} {}", s.method, path.join("/")))
            .or_default() += 1;
    }
    kinds
}

/// The front's own Docker calls, as its metrics count them.
async fn front_docker_calls(addr: &str) -> f64 {
    let body = metrics::scrape(addr).await;
    metrics::values(
        &metrics::samples(&body),
        "dockpod_docker_request_duration_seconds_count",
    )
    .iter()
    .sum()
}

#[tokio::test]
async fn lists_and_pod_status_with_fifty_pods_ask_docker_nothing() {
    let proxy = DockerProxy::start();
    let endpoint = proxy.endpoint();
    let front = Front::start(&[
        "--docker-endpoint",
        &endpoint,
        "--metrics-bind-addr",
        "127.0.0.1:0",
    ])
    .await;
    let addr = metrics::address(&front);
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pods: Vec<String> = futures_util::stream::iter(0..50)
        .map(|i| {
            let mut rt = rt.clone();
            // A log directory per pod, as the kubelet gives each.
            let mut pod = pod_config(&format!("quiet{i}"), &logs.path().join(i.to_string()));
            // The node's network: what is counted does not depend on it, and Docker 20.10's
            // libnetwork is slow to set up and tear down 50 bridge endpoints.
            host_network(&mut pod);
            async move {
                let id = run_pod(&mut rt, &pod).await;
                run_container(
                    &mut rt,
                    &id,
                    &pod,
                    container_config("sleeper", &["sleep", "3600"]),
                )
                .await;
                id
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;

    // What the pods' start set going (Docker's events for them, the shims' refreshes after
    // each) has run its course once no request arrived for a while.
    let deadline = std::time::Instant::now() + SECS;
    let mut last = (proxy.seen().len(), std::time::Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) {
        let seen = proxy.seen();
        if seen.len() != last.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "dockpod kept asking Docker: {:?}",
                summary(&seen[last.0..])
            );
            last = (seen.len(), std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = proxy.seen().len();
    let front_before = front_docker_calls(&addr).await;
    let mut rt = front.runtime();
    for _ in 0..3 {
        let sandboxes = rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
        assert_eq!(sandboxes.len(), 50);
        let containers = rt
            .list_containers(ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
        assert_eq!(containers.len(), 50);
        assert!(containers
            .iter()
            .all(|c| c.state == ContainerState::ContainerRunning as i32));
        for id in &pods {
            for verbose in [false, true] {
                let status = rt
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: id.clone(),
                        verbose,
                    })
                    .await
                    .expect("PodSandboxStatus")
                    .into_inner()
                    .status
                    .expect("a status");
                assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
            }
        }
    }
    let asked: Vec<Seen> = proxy.seen().split_off(before);
    assert!(
        asked.is_empty(),
        "Docker was asked {} times while listing: {:?}",
        asked.len(),
        summary(&asked)
    );
    assert_eq!(front_docker_calls(&addr).await, front_before);

    futures_util::stream::iter(&pods)
        .for_each_concurrent(AT_ONCE, |id| {
            let mut rt = rt.clone();
            async move { remove_pod(&mut rt, id).await }
        })
        .await;
    drop(front);
    // Everything the front and shims asked went through the proxy.
    assert!(proxy
        .seen()
        .iter()
        .any(|s| s.method == "POST" && s.path == "/containers/create"));
}
