//! Operations cut in half: a shim killed after Docker acted on a call and before it heard
//! back (a crash, an upgrade, the front's SIGKILL of a late shim). The kubelet retries the
//! same call, with the same names; the retry must succeed and leave no orphan in Docker.

use std::time::Duration;

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::docker::instance_containers;
use dockpod_tests::docker_proxy::{DockerProxy, Fault, Gate};
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::Channel;

const SECS: Duration = Duration::from_secs(60);

async fn front_through(proxy: &DockerProxy) -> Front {
    Front::start(&["--docker-endpoint", &proxy.endpoint()]).await
}

/// Waits until Docker holds `n` containers of the front's instance.
async fn docker_holds(front: &Front, n: usize) {
    let instance = front.instance_id();
    wait_until(&format!("{n} containers in Docker"), SECS, || {
        let instance = instance.clone();
        async move { (instance_containers(&instance).await.len() == n).then_some(()) }
    })
    .await;
}

/// Waits until `n` calls, counted over the front's and every shim's log, have found the same
/// call running and wait for its outcome (`dockpod_proto::flights` says so at info level): a
/// retry sent is not yet a retry received, and one that arrives after the first run ended
/// meets the name that run took.
async fn retries_wait(front: &Front, n: usize) {
    const WAITING: &str = "the same call is running; waiting for its outcome";
    wait_until(&format!("{n} retries waiting"), SECS, || {
        let mut logs = front.log();
        for pod in dockpod_tests::list_dir(&front.root_dir().join("pods")) {
            let path = front
                .root_dir()
                .join("pods")
                .join(pod)
                .join(dockpod_proto::layout::SHIM_LOG);
            logs.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        async move { (logs.matches(WAITING).count() >= n).then_some(()) }
    })
    .await;
}

/// The containers ListContainers reports in pod `sandbox`.
async fn pod_containers(rt: RuntimeServiceClient<Channel>, sandbox: String) -> Vec<String> {
    let filter = ContainerFilter {
        pod_sandbox_id: sandbox,
        ..Default::default()
    };
    container_ids(rt, filter).await
}

/// The record of the front's only pod, as its shim saved it.
fn pod_state(front: &Front) -> serde_json::Value {
    let pods = dockpod_tests::list_dir(&front.root_dir().join("pods"));
    assert_eq!(pods.len(), 1, "one pod directory: {pods:?}");
    let dir = front.root_dir().join("pods").join(&pods[0]);
    let saved = dockpod_proto::state_journal::read(&dir)
        .expect("the pod's record")
        .expect("a saved record");
    serde_json::from_slice(&saved).expect("state JSON")
}

/// The pod's saved intents, as (key, action).
fn intents(front: &Front) -> Vec<(String, String)> {
    pod_state(front)["intents"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Docker holds exactly the containers `recorded` (in any order) for the front's instance.
async fn assert_docker_holds(front: &Front, mut recorded: Vec<String>) {
    let mut in_docker = instance_containers(&front.instance_id()).await;
    in_docker.sort();
    recorded.sort();
    assert_eq!(in_docker, recorded, "Docker holds what the record holds");
}

/// The one container the runtime lists in pod `sandbox`, once it lists exactly one.
async fn the_only_container(
    rt: &RuntimeServiceClient<tonic::transport::Channel>,
    sandbox: &str,
) -> String {
    wait_until("one container listed in the pod", SECS, || {
        let mut rt = rt.clone();
        let sandbox = sandbox.to_string();
        async move {
            let containers = rt
                .list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        pod_sandbox_id: sandbox,
                        ..Default::default()
                    }),
                })
                .await
                .ok()?
                .into_inner()
                .containers;
            (containers.len() == 1).then(|| containers[0].id.clone())
        }
    })
    .await
}

/// RunPodSandbox of `pod`, made in a task of its own so the test can cut it.
fn run_pod_in_background(
    rt: &RuntimeServiceClient<tonic::transport::Channel>,
    pod: &PodSandboxConfig,
) -> tokio::task::JoinHandle<Result<tonic::Response<RunPodSandboxResponse>, tonic::Status>> {
    let (mut rt, pod) = (rt.clone(), pod.clone());
    tokio::spawn(async move {
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod),
            runtime_handler: String::new(),
        })
        .await
    })
}

/// SIGKILLs the front's one shim.
fn kill_the_only_shim(front: &Front) {
    let shims = front.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    kill(Pid::from_raw(shims[0] as i32), Signal::SIGKILL).expect("kill the shim");
}

/// The kubelet's retry of RunPodSandbox for `pod`; Docker must then hold that sandbox alone.
async fn retried_sandbox(
    front: &Front,
    rt: &RuntimeServiceClient<tonic::transport::Channel>,
    pod: &PodSandboxConfig,
) -> String {
    let id = run_pod(&mut rt.clone(), pod).await;
    assert_eq!(
        instance_containers(&front.instance_id()).await,
        vec![id.clone()],
        "Docker holds the retried sandbox only"
    );
    id
}

#[tokio::test]
async fn create_container_cut_by_a_shim_crash_succeeds_when_retried() {
    let proxy = DockerProxy::start();
    let front = front_through(&proxy).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("cut-create", logs.path());
    let id = run_pod(&mut rt.clone(), &pod).await;
    let shim = shim_pid(&mut rt.clone(), &id).await;
    let config = container_config("app", &["sleep", "3600"]);

    // Docker creates the container; the shim never hears of it.
    let answer = Gate::new();
    proxy.once(
        "POST",
        "/containers/create",
        Fault::HoldAnswer(answer.clone()),
    );
    let call = tokio::spawn({
        let (mut rt, id, pod, config) = (rt.clone(), id.clone(), pod.clone(), config.clone());
        async move { create_container(&mut rt, &id, &pod, config).await }
    });
    docker_holds(&front, 2).await;
    // Intent before effect: the create was saved before Docker was asked.
    let saved = intents(&front);
    assert!(
        saved
            .iter()
            .any(|(name, action)| name.starts_with("k8s_app_") && action == "create"),
        "{saved:?}"
    );
    kill(Pid::from_raw(shim as i32), Signal::SIGKILL).expect("kill the shim");
    let cut = call.await.expect("join");
    assert!(cut.is_err(), "the cut call answered {cut:?}");
    answer.open();
    wait_new_shim(&rt, &id, shim, SECS).await;
    // Docker made the container, and the intent holds the record the create would have
    // made: the new shim records it as the cut call would have, and settles the intent.
    let made = wait_until("the cut create's container recorded", SECS, || {
        let listed = pod_containers(rt.clone(), id.clone());
        async move {
            let listed = listed.await;
            (listed.len() == 1).then(|| listed[0].clone())
        }
    })
    .await;
    docker_holds(&front, 2).await;
    wait_until("the intents settled", SECS, || async {
        intents(&front).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        status(&mut rt.clone(), &made).await.state,
        ContainerState::ContainerCreated as i32
    );

    let container = create_container(&mut rt.clone(), &id, &pod, config)
        .await
        .unwrap_or_else(|e| panic!("the kubelet's retry of CreateContainer: {e:?}"));
    assert_eq!(
        container, made,
        "the retry is answered with the container Docker made"
    );
    assert_docker_holds(&front, vec![id.clone(), container.clone()]).await;
    start(&mut rt.clone(), &container).await;
    assert_eq!(
        status(&mut rt.clone(), &container).await.state,
        ContainerState::ContainerRunning as i32
    );
    remove_pod(&mut rt.clone(), &id).await;
    assert!(instance_containers(&front.instance_id()).await.is_empty());
}

#[tokio::test]
async fn a_removal_cut_by_a_shim_crash_is_finished_by_the_next_shim() {
    let proxy = DockerProxy::start();
    let front = front_through(&proxy).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("cut-remove", logs.path());
    let id = run_pod(&mut rt.clone(), &pod).await;
    let container = run_container(
        &mut rt.clone(),
        &id,
        &pod,
        container_config("app", &["sleep", "3600"]),
    )
    .await;
    let shim = shim_pid(&mut rt.clone(), &id).await;

    // Docker removes the container; the shim never hears of it.
    let answer = Gate::new();
    proxy.once("DELETE", "/containers/*", Fault::HoldAnswer(answer.clone()));
    let call = tokio::spawn({
        let (mut rt, container) = (rt.clone(), container.clone());
        async move {
            rt.remove_container(RemoveContainerRequest {
                container_id: container,
            })
            .await
        }
    });
    docker_holds(&front, 1).await;
    assert_eq!(intents(&front), vec![(container.clone(), "remove".into())]);
    kill(Pid::from_raw(shim as i32), Signal::SIGKILL).expect("kill the shim");
    let cut = call.await.expect("join");
    assert!(cut.is_err(), "the cut call answered {cut:?}");
    answer.open();
    wait_new_shim(&rt, &id, shim, SECS).await;

    // Without a retry, the new shim finishes the removal: the container is gone from the
    // record (not listed as exited "outside of dockpod") and the intent is settled.
    wait_until("the cut removal finished", SECS, || {
        let listed = pod_containers(rt.clone(), id.clone());
        async move { listed.await.is_empty().then_some(()) }
    })
    .await;
    assert!(intents(&front).is_empty(), "{:?}", intents(&front));
    assert_docker_holds(&front, vec![id.clone()]).await;
    remove_pod(&mut rt.clone(), &id).await;
}

/// RunPodSandbox cut by the death of both its front and its shim after Docker made the
/// sandbox: the kubelet's retry, to the next front, succeeds with one sandbox in Docker, also
/// when it arrives while that front is still deleting what the cut run left.
#[tokio::test]
async fn a_run_pod_sandbox_cut_by_a_front_and_shim_kill_succeeds_when_retried() {
    let proxy = DockerProxy::start();
    let mut front = front_through(&proxy).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("cut-both", logs.path());

    let answer = Gate::new();
    proxy.once(
        "POST",
        "/containers/create",
        Fault::HoldAnswer(answer.clone()),
    );
    let call = run_pod_in_background(&rt, &pod);
    docker_holds(&front, 1).await;
    for shim in front.shim_pids() {
        kill(Pid::from_raw(shim as i32), Signal::SIGKILL).expect("kill the shim");
    }
    front.kill().await;
    answer.open();
    assert!(call.await.expect("join").is_err(), "its front died");
    // The next front gives the cut run's pod up; its deletion of the sandbox is held.
    let deletion = Gate::new();
    proxy.once("DELETE", "/containers/*", Fault::Hold(deletion.clone()));
    front.restart().await;

    let retry = run_pod_in_background(&front.runtime(), &pod);
    // The retry's own create met the name while the deletion was held.
    wait_until(
        "the retry's create and the held deletion at Docker",
        SECS,
        || {
            let seen = proxy.seen();
            let count = |method: &str, path: &dyn Fn(&str) -> bool| {
                seen.iter()
                    .filter(|s| s.method == method && path(&s.path))
                    .count()
            };
            let creates = count("POST", &|p| p == "/containers/create");
            let deletions = count("DELETE", &|p| p.starts_with("/containers/"));
            async move { (creates == 2 && deletions == 1).then_some(()) }
        },
    )
    .await;
    deletion.open();
    let sandbox = retry
        .await
        .expect("join")
        .expect("the retry")
        .into_inner()
        .pod_sandbox_id;
    let mut rt = front.runtime();
    assert_eq!(
        pod_ids(rt.clone(), Default::default()).await,
        vec![sandbox.clone()]
    );
    assert_docker_holds(&front, vec![sandbox.clone()]).await;
    remove_pod(&mut rt, &sandbox).await;
    assert!(instance_containers(&front.instance_id()).await.is_empty());
}

#[tokio::test]
async fn run_pod_sandbox_cut_by_a_shim_crash_succeeds_when_retried() {
    let proxy = DockerProxy::start();
    let front = front_through(&proxy).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("cut-run", logs.path());

    let answer = Gate::new();
    proxy.once(
        "POST",
        "/containers/create",
        Fault::HoldAnswer(answer.clone()),
    );
    let call = run_pod_in_background(&rt, &pod);
    docker_holds(&front, 1).await;
    kill_the_only_shim(&front);
    let cut = call.await.expect("join");
    assert!(cut.is_err(), "the cut call answered {cut:?}");
    answer.open();

    let id = retried_sandbox(&front, &rt, &pod).await;
    assert_eq!(
        pod_status(&mut rt.clone(), &id)
            .await
            .status
            .map(|s| s.state),
        Some(PodSandboxState::SandboxReady as i32)
    );
    remove_pod(&mut rt.clone(), &id).await;
    assert!(instance_containers(&front.instance_id()).await.is_empty());
}

/// Makes Docker finish the sandbox create of `pod` after its shim is dead and its pod cleaned
/// up: the create is held while the shim is killed, and let through once the cut call has
/// been answered and the pod's directory is gone. The clean-up listed the shim's containers
/// before Docker had made the sandbox, so no record or live shim stands for it. Other pods
/// of the front are left as they are.
async fn let_docker_make_a_sandbox_after_its_pod_is_given_up(
    front: &Front,
    proxy: &DockerProxy,
    rt: &RuntimeServiceClient<tonic::transport::Channel>,
    pod: &PodSandboxConfig,
) {
    let containers = instance_containers(&front.instance_id()).await;
    let pods = dockpod_tests::list_dir(&front.root_dir().join("pods"));
    let shims = front.shim_pids();
    let creates = || {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path == "/containers/create")
            .count()
    };
    let earlier = creates();
    let request = Gate::new();
    proxy.once("POST", "/containers/create", Fault::Hold(request.clone()));
    let call = run_pod_in_background(rt, pod);
    wait_until("the sandbox's create held", SECS, || {
        let arrived = creates() > earlier;
        async move { arrived.then_some(()) }
    })
    .await;
    let new: Vec<u32> = front
        .shim_pids()
        .into_iter()
        .filter(|pid| !shims.contains(pid))
        .collect();
    assert_eq!(new.len(), 1, "the cut pod's shim among {new:?}");
    kill(Pid::from_raw(new[0] as i32), Signal::SIGKILL).expect("kill the shim");
    // The front answers the cut call once the pod is cleaned up and its directory gone.
    let cut = call.await.expect("join");
    assert!(cut.is_err(), "the cut call answered {cut:?}");
    assert_eq!(
        dockpod_tests::list_dir(&front.root_dir().join("pods")),
        pods,
        "the given-up pod's directory stays"
    );
    assert_eq!(instance_containers(&front.instance_id()).await, containers);
    request.open();
}

/// The kubelet's retry of a cut RunPodSandbox meets the name of the sandbox Docker made after
/// the pod was given up; the runtime's own sweep for strays is off here, so the retry is what
/// must resolve it.
#[tokio::test]
async fn a_sandbox_docker_made_after_its_pod_was_given_up_does_not_block_the_retry() {
    let proxy = DockerProxy::start();
    let front = Front::start(&[
        "--docker-endpoint",
        &proxy.endpoint(),
        "--stray-sweep-interval",
        "0",
    ])
    .await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("cut-late", logs.path());
    let_docker_make_a_sandbox_after_its_pod_is_given_up(&front, &proxy, &rt, &pod).await;
    docker_holds(&front, 1).await;

    let id = retried_sandbox(&front, &rt, &pod).await;
    remove_pod(&mut rt.clone(), &id).await;
    assert!(instance_containers(&front.instance_id()).await.is_empty());
}

/// When no retry comes (the pod was deleted meanwhile), nothing would ever list or remove the
/// sandbox Docker made after its pod was given up: the front's sweep removes it, and leaves
/// every container a pod holds.
#[tokio::test]
async fn a_sandbox_docker_made_after_its_pod_was_given_up_is_removed_without_a_retry() {
    let proxy = DockerProxy::start();
    // One sweep a second, so the test waits for seconds, not the default minute.
    let front = Front::start(&[
        "--docker-endpoint",
        &proxy.endpoint(),
        "--stray-sweep-interval",
        "1",
    ])
    .await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let neighbour = run_pod(&mut rt, &pod_config("cut-late-neighbour", logs.path())).await;
    let pod = pod_config("cut-late-deleted", logs.path());
    let_docker_make_a_sandbox_after_its_pod_is_given_up(&front, &proxy, &rt, &pod).await;

    // The warning names the stray: a sweep has run since Docker made it.
    let removal = "removing a container no pod holds";
    wait_until("the stray sandbox removed", SECS, || {
        let log = front.log();
        async move { log.contains(removal).then_some(()) }
    })
    .await;
    let log = front.log();
    let removed: Vec<&str> = log.lines().filter(|l| l.contains(removal)).collect();
    assert!(
        removed.iter().all(|l| !l.contains(&neighbour)),
        "{removed:?}"
    );
    docker_holds(&front, 1).await;
    assert_eq!(
        instance_containers(&front.instance_id()).await,
        vec![neighbour.clone()]
    );
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: neighbour.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(status.state(), PodSandboxState::SandboxReady);
    remove_pod(&mut rt, &neighbour).await;
    assert!(instance_containers(&front.instance_id()).await.is_empty());
}

#[tokio::test]
async fn create_container_given_up_by_its_caller_still_completes_and_is_recorded() {
    let proxy = DockerProxy::start();
    let front = front_through(&proxy).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("cut-cancel", logs.path());
    let id = run_pod(&mut rt.clone(), &pod).await;

    // The kubelet's deadline passes while Docker's answer is held back.
    let answer = Gate::new();
    proxy.once(
        "POST",
        "/containers/create",
        Fault::HoldAnswer(answer.clone()),
    );
    let mut request = tonic::Request::new(CreateContainerRequest {
        pod_sandbox_id: id.clone(),
        config: Some(container_config("app", &["sleep", "3600"])),
        sandbox_config: Some(pod.clone()),
    });
    request.set_timeout(Duration::from_millis(500));
    let given_up = rt.clone().create_container(request).await;
    assert!(given_up.is_err(), "the call answered {given_up:?}");
    answer.open();

    // The operation ran on: what Docker made, the record holds.
    let listed = the_only_container(&rt, &id).await;
    assert_docker_holds(&front, vec![id.clone(), listed]).await;
    remove_pod(&mut rt.clone(), &id).await;
    assert!(instance_containers(&front.instance_id()).await.is_empty());
}

/// A container whose create was answered to a front that died meanwhile is known to its
/// shim and to Docker, not to the front that started next (it indexed the pod before the
/// container existed): it is listed, and every call naming it reaches it.
#[tokio::test]
async fn a_container_created_while_the_front_restarted_is_reached_by_every_call() {
    let proxy = DockerProxy::start();
    let mut front = front_through(&proxy).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("cut-front", logs.path());
    let id = run_pod(&mut rt.clone(), &pod).await;

    let answer = Gate::new();
    proxy.once(
        "POST",
        "/containers/create",
        Fault::HoldAnswer(answer.clone()),
    );
    let create = tokio::spawn({
        let mut rt = rt.clone();
        let request = CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(container_config("app", &["sleep", "3600"])),
            sandbox_config: Some(pod.clone()),
        };
        async move { rt.create_container(request).await }
    });
    // The pod's own create is in the proxy's history: this waits for the next one.
    wait_until("the container's create at Docker", SECS, || async {
        let creates = proxy
            .seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path == "/containers/create")
            .count();
        (creates == 2).then_some(())
    })
    .await;
    front.kill().await;
    front.restart().await;
    answer.open();
    assert!(
        create.await.expect("the create task").is_err(),
        "its front died"
    );

    let mut rt = front.runtime();
    let container = the_only_container(&rt, &id).await;
    assert_eq!(
        status(&mut rt, &container).await.state,
        ContainerState::ContainerCreated as i32
    );
    start(&mut rt, &container).await;
    assert_eq!(
        status(&mut rt, &container).await.state,
        ContainerState::ContainerRunning as i32
    );
    remove_pod(&mut rt, &id).await;
    assert!(instance_containers(&front.instance_id()).await.is_empty());
}

/// The kubelet's retry of a call whose first run is still going (its deadline passed while
/// Docker's answer was held back) gets that run's outcome: one container, one sandbox, one
/// shim, not a second run racing the first for the same Docker name.
#[tokio::test]
async fn a_retry_while_the_first_run_goes_on_gets_its_outcome() {
    let proxy = DockerProxy::start();
    let front = front_through(&proxy).await;
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let pod = pod_config("cut-retry", logs.path());

    // RunPodSandbox, at the front.
    let answer = Gate::new();
    proxy.once(
        "POST",
        "/containers/create",
        Fault::HoldAnswer(answer.clone()),
    );
    let mut request = tonic::Request::new(RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: String::new(),
    });
    request.set_timeout(Duration::from_millis(500));
    let given_up = rt.clone().run_pod_sandbox(request).await;
    assert!(given_up.is_err(), "the call answered {given_up:?}");
    let retry = tokio::spawn({
        let (mut rt, pod) = (rt.clone(), pod.clone());
        async move { run_pod(&mut rt, &pod).await }
    });
    // The retry waits for the held run rather than creating anything of its own.
    docker_holds(&front, 1).await;
    retries_wait(&front, 1).await;
    answer.open();
    let sandbox = retry.await.expect("the retry of RunPodSandbox");
    assert_docker_holds(&front, vec![sandbox.clone()]).await;
    let pods = pod_ids(rt.clone(), PodSandboxFilter::default()).await;
    assert_eq!(pods, vec![sandbox.clone()]);
    assert_eq!(front.shim_pids().len(), 1, "one shim for the pod");

    // CreateContainer, at the pod's shim.
    let answer = Gate::new();
    proxy.once(
        "POST",
        "/containers/create",
        Fault::HoldAnswer(answer.clone()),
    );
    let config = container_config("app", &["sleep", "3600"]);
    let mut request = tonic::Request::new(CreateContainerRequest {
        pod_sandbox_id: sandbox.clone(),
        config: Some(config.clone()),
        sandbox_config: Some(pod.clone()),
    });
    request.set_timeout(Duration::from_millis(500));
    let given_up = rt.clone().create_container(request).await;
    assert!(given_up.is_err(), "the call answered {given_up:?}");
    let retry = tokio::spawn({
        let (mut rt, sandbox, pod) = (rt.clone(), sandbox.clone(), pod.clone());
        async move { create_container(&mut rt, &sandbox, &pod, config).await }
    });
    docker_holds(&front, 2).await;
    retries_wait(&front, 2).await;
    answer.open();
    let container = retry
        .await
        .expect("join")
        .expect("the retry of CreateContainer");
    assert_docker_holds(&front, vec![sandbox.clone(), container.clone()]).await;
    let creates = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path == "/containers/create")
        .count();
    assert_eq!(
        creates, 2,
        "one create for the sandbox, one for the container"
    );
    start(&mut rt.clone(), &container).await;
    remove_pod(&mut rt.clone(), &sandbox).await;
    assert!(instance_containers(&front.instance_id()).await.is_empty());
}
