//! A Docker call stuck on one container (a hung `stop` or `remove` in dockerd) stalls that
//! container's operation and nothing else of the pod: the pod's other containers are
//! created, started, inspected, exec'ed into, stopped and removed meanwhile, and the status
//! calls and lists answer.

use std::future::Future;
use std::time::{Duration, Instant};

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::docker_proxy::{DockerProxy, Fault, Gate};
use dockpod_tests::front::Front;
use tonic::transport::Channel;

/// The stuck call is held until after every check, so any answer at all shows the check did
/// not wait behind it; the bound only keeps a failure from hanging the suite, and is loose
/// for a loaded 2-core machine. The time each call took is printed.
const ANSWER: Duration = Duration::from_secs(10);

async fn answers<T>(what: &str, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = tokio::time::timeout(ANSWER, call)
        .await
        .unwrap_or_else(|_| panic!("{what} waited behind the stuck Docker call"));
    println!("{what}: {:?} beside the stuck call", started.elapsed());
    out
}

/// Every call that must not wait behind a stuck operation on `stuck`, done on `other`.
async fn the_rest_of_the_pod_answers(
    rt: &RuntimeServiceClient<Channel>,
    sandbox: &str,
    pod: &PodSandboxConfig,
    stuck: &str,
    other: &str,
) {
    let mut rt = rt.clone();
    answers(
        "ContainerStatus of the stuck container",
        status(&mut rt, stuck),
    )
    .await;
    let s = answers("ContainerStatus", status(&mut rt, other)).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    let out = answers("ExecSync", exec(&mut rt, other, &["echo", "beside"])).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "beside");
    answers("PodSandboxStatus", pod_status(&mut rt, sandbox)).await;
    let listed = answers(
        "ListContainers",
        container_ids(rt.clone(), ContainerFilter::default()),
    )
    .await;
    assert!(listed.iter().any(|id| id == other), "{listed:?}");
    answers(
        "ListPodSandbox",
        pod_ids(rt.clone(), PodSandboxFilter::default()),
    )
    .await;
    let fresh = answers(
        "CreateContainer and StartContainer",
        run_container(
            &mut rt,
            sandbox,
            pod,
            container_config("fresh", &["sleep", "600"]),
        ),
    )
    .await;
    answers("StopContainer", async {
        rt.clone()
            .stop_container(StopContainerRequest {
                container_id: fresh.clone(),
                timeout: 0,
            })
            .await
            .expect("StopContainer beside the stuck call")
    })
    .await;
    answers("RemoveContainer", async {
        rt.clone()
            .remove_container(RemoveContainerRequest {
                container_id: fresh.clone(),
            })
            .await
            .expect("RemoveContainer beside the stuck call")
    })
    .await;
}

#[tokio::test]
async fn a_stuck_stop_or_remove_of_one_container_stalls_nothing_else_of_the_pod() {
    let proxy = DockerProxy::start();
    let front = Front::start(&["--docker-endpoint", &proxy.endpoint()]).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("stuck", logs.path());
    let sandbox = run_pod(&mut rt.clone(), &pod).await;
    let a = run_container(
        &mut rt.clone(),
        &sandbox,
        &pod,
        container_config("a", &["sleep", "3600"]),
    )
    .await;
    let b = run_container(
        &mut rt.clone(),
        &sandbox,
        &pod,
        container_config("b", &["sleep", "3600"]),
    )
    .await;

    // A's stop hangs in dockerd.
    let gate = Gate::new();
    proxy.once(
        "POST",
        &format!("/containers/{a}/stop"),
        Fault::Hold(gate.clone()),
    );
    let stop = tokio::spawn({
        let (mut rt, a) = (rt.clone(), a.clone());
        async move {
            rt.stop_container(StopContainerRequest {
                container_id: a,
                timeout: 30,
            })
            .await
        }
    });
    proxy
        .arrival("POST", &format!("/containers/{a}/stop"), ANSWER)
        .await;
    the_rest_of_the_pod_answers(&rt, &sandbox, &pod, &a, &b).await;
    assert!(
        !stop.is_finished(),
        "the stuck stop answered before its release"
    );
    gate.open();
    stop.await
        .expect("join")
        .expect("the stop, once Docker answers");
    assert_eq!(
        status(&mut rt.clone(), &a).await.state,
        ContainerState::ContainerExited as i32
    );

    // A's removal hangs in dockerd.
    let gate = Gate::new();
    proxy.once(
        "DELETE",
        &format!("/containers/{a}"),
        Fault::Hold(gate.clone()),
    );
    let remove = tokio::spawn({
        let (mut rt, a) = (rt.clone(), a.clone());
        async move {
            rt.remove_container(RemoveContainerRequest { container_id: a })
                .await
        }
    });
    proxy
        .arrival("DELETE", &format!("/containers/{a}"), ANSWER)
        .await;
    the_rest_of_the_pod_answers(&rt, &sandbox, &pod, &a, &b).await;
    assert!(
        !remove.is_finished(),
        "the stuck removal answered before its release"
    );
    gate.open();
    remove
        .await
        .expect("join")
        .expect("the removal, once Docker answers");
    let left = container_ids(rt.clone(), ContainerFilter::default()).await;
    assert!(!left.contains(&a), "{left:?}");
    remove_pod(&mut rt.clone(), &sandbox).await;
}
