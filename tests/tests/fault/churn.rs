//! Churn: twenty pods (CNI-networked, one container each) are created, stopped and removed in
//! a loop for minutes while the front and the shims are killed (SIGKILL) at random moments,
//! so that every operation is cut at some point. The pods are driven as the kubelet drives
//! them: every call has a deadline and is retried, and after a failure the runtime's lists
//! decide what exists. At the end Docker and the runtime's records must agree exactly, with
//! no leftover container, shim, socket, CNI address, veth or iptables rule.
//!
//! `DOCKPOD_CHURN_SECS` sets how long the killing goes on (150 s by default);
//! `DOCKPOD_CHURN_SEED` replays a run (each run prints its seed).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cni::CniNet;
use dockpod_tests::cri::*;
use dockpod_tests::docker::instance_containers;
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::Channel;

const PODS: usize = 20;
/// The kubelet's own deadline for a runtime call is 2 minutes; a call cut by a kill fails at
/// once, so this only bounds a call into a front that is being restarted.
const CALL: Duration = Duration::from_secs(30);
/// The pause between a failed call and its retry.
const RETRY: Duration = Duration::from_millis(200);
/// After the killing stops, how long the lanes may take to bring their pods to a steady
/// state, and the node to settle: generous for a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(300);

type Client = RuntimeServiceClient<Channel>;

/// A small xorshift generator: the test needs reproducible choices, not good randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn call<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    // Failures are expected while things are killed; they are printed (shown only when the
    // test fails) because a lane that never comes back is explained by its last ones.
    match tokio::time::timeout(CALL, fut).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        Ok(Err(status)) => {
            eprintln!("churn: {:?}: {}", status.code(), status.message());
            None
        }
        Err(_) => {
            eprintln!("churn: a call timed out after {CALL:?}");
            None
        }
    }
}

/// The lane's pods are told apart by this label.
fn lane_label(lane: usize, cycle: u64) -> (String, String) {
    ("churn".to_string(), format!("{lane}-{cycle}"))
}

async fn pods_labelled(rt: &Client, label: &(String, String)) -> Option<Vec<PodSandbox>> {
    let filter = PodSandboxFilter {
        label_selector: [label.clone()].into(),
        ..Default::default()
    };
    call(rt.clone().list_pod_sandbox(ListPodSandboxRequest {
        filter: Some(filter),
    }))
    .await
    .map(|r| r.items)
}

/// Stops and removes `id`, retrying until the runtime says it is gone.
async fn tear_down(rt: &Client, id: &str) {
    loop {
        let stopped = call(rt.clone().stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        }))
        .await
        .is_some();
        if stopped
            && call(rt.clone().remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }))
            .await
            .is_some()
        {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// A ready sandbox for the lane's pod of this cycle, as the kubelet gets one: RunPodSandbox,
/// and after a failure whatever the runtime lists for the pod (a ready one is used, one that
/// is not is removed and the next attempt made).
async fn ensure_pod(
    rt: &Client,
    config: &mut PodSandboxConfig,
    label: &(String, String),
) -> String {
    loop {
        let run = call(rt.clone().run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        }))
        .await;
        if let Some(r) = run {
            return r.pod_sandbox_id;
        }
        tokio::time::sleep(RETRY).await;
        let Some(listed) = pods_labelled(rt, label).await else {
            continue;
        };
        let ready = listed
            .iter()
            .find(|p| p.state == PodSandboxState::SandboxReady as i32)
            .map(|p| p.id.clone());
        // Like the kubelet, one sandbox per pod: any other is stopped and removed.
        for pod in listed.iter().filter(|p| Some(&p.id) != ready.as_ref()) {
            tear_down(rt, &pod.id).await;
            if let Some(meta) = config.metadata.as_mut() {
                meta.attempt = meta
                    .attempt
                    .max(pod.metadata.as_ref().map_or(0, |m| m.attempt))
                    + 1;
            }
        }
        if let Some(id) = ready {
            return id;
        }
    }
}

/// A running container `app` in the pod, made as the kubelet makes one.
async fn ensure_container(rt: &Client, sandbox: &str, pod: &PodSandboxConfig) -> String {
    let mut config = container_config("app", &["sleep", "3600"]);
    loop {
        let created = call(rt.clone().create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(pod.clone()),
        }))
        .await
        .map(|r| r.container_id);
        let listed = match created {
            Some(id) => Some(vec![(id, ContainerState::ContainerCreated as i32)]),
            None => {
                tokio::time::sleep(RETRY).await;
                call(rt.clone().list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        pod_sandbox_id: sandbox.to_string(),
                        ..Default::default()
                    }),
                }))
                .await
                .map(|r| r.containers.into_iter().map(|c| (c.id, c.state)).collect())
            }
        };
        for (id, state) in listed.unwrap_or_default() {
            if state == ContainerState::ContainerRunning as i32 {
                return id;
            }
            if state == ContainerState::ContainerCreated as i32 {
                if call(rt.clone().start_container(StartContainerRequest {
                    container_id: id.clone(),
                }))
                .await
                .is_some()
                {
                    return id;
                }
                // The start was cut: the next round sees whether it happened.
                continue;
            }
            let _ = call(rt.clone().remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            }))
            .await;
            if let Some(meta) = config.metadata.as_mut() {
                meta.attempt += 1;
            }
        }
    }
}

/// One pod's life over and over until `stop`; returns the last pod, left running.
async fn lane(
    rt: Client,
    lane: usize,
    logs: PathBuf,
    stop: Arc<AtomicBool>,
    cycles: Arc<AtomicU64>,
) -> (String, String) {
    let mut cycle = 0u64;
    loop {
        let label = lane_label(lane, cycle);
        let log_dir = logs.join(format!("{lane}-{cycle}"));
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let mut config = pod_config(&format!("churn{lane}"), &log_dir);
        config.labels.insert(label.0.clone(), label.1.clone());
        let sandbox = ensure_pod(&rt, &mut config, &label).await;
        let container = ensure_container(&rt, &sandbox, &config).await;
        if stop.load(Ordering::SeqCst) {
            return (sandbox, container);
        }
        tear_down(&rt, &sandbox).await;
        cycles.fetch_add(1, Ordering::Relaxed);
        cycle += 1;
    }
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    ids.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn pods_churned_while_the_front_and_shims_are_killed_leave_docker_and_records_in_step() {
    let _slot = crate::slot().await;
    let secs: u64 = std::env::var("DOCKPOD_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let seed: u64 = std::env::var("DOCKPOD_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("churn: {secs} s, DOCKPOD_CHURN_SEED={seed}");
    let net = CniNet::new();
    let args = net.front_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut front = Front::start(&args).await;
    let instance = front.instance_id();
    let logs = tempfile::tempdir().expect("logs");
    let rt = front.runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let lanes: Vec<_> = (0..PODS)
        .map(|i| {
            tokio::spawn(lane(
                rt.clone(),
                i,
                logs.path().to_path_buf(),
                stop.clone(),
                cycles.clone(),
            ))
        })
        .collect();

    // The killing.
    let mut rng = Rng(seed);
    let (mut front_kills, mut shim_kills) = (0, 0);
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(2200))).await;
        if rng.below(10) < 3 {
            front.kill().await;
            front_kills += 1;
            // Sometimes a shim dies too while no front watches.
            if rng.below(2) == 0 {
                let shims = front.shim_pids();
                if !shims.is_empty() {
                    let pid = shims[rng.below(shims.len() as u64) as usize];
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    shim_kills += 1;
                }
            }
            front.restart().await;
        } else {
            let shims = front.shim_pids();
            if !shims.is_empty() {
                let pid = shims[rng.below(shims.len() as u64) as usize];
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                shim_kills += 1;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let settling = Instant::now();
    eprintln!(
        "churn: {} pod cycles done with {front_kills} front and {shim_kills} shim kills",
        cycles.load(Ordering::Relaxed)
    );

    // Every lane brings its last pod to running.
    let mut pods = Vec::new();
    let mut containers = Vec::new();
    for lane in lanes {
        let (sandbox, container) = tokio::time::timeout(SETTLE, lane)
            .await
            .expect("a lane's pod came to running after the killing stopped")
            .expect("lane task");
        pods.push(sandbox);
        containers.push(container);
    }
    let (pods, containers) = (sorted(pods), sorted(containers));
    eprintln!("churn: lanes steady after {:?}", settling.elapsed());

    // The runtime's records and Docker agree exactly: nothing more, nothing less.
    let mut rt = front.runtime();
    let listed_pods = wait_until("the pod list to settle", SETTLE, || {
        let rt = rt.clone();
        let pods = pods.clone();
        async move {
            let listed = sorted(pod_ids(rt, PodSandboxFilter::default()).await);
            (listed == pods).then_some(listed)
        }
    })
    .await;
    assert_eq!(listed_pods.len(), PODS);
    let listed_containers = sorted(container_ids(rt.clone(), ContainerFilter::default()).await);
    assert_eq!(
        listed_containers, containers,
        "ListContainers holds the lanes' containers"
    );
    let docker_holds = wait_until("Docker to hold just the records", SETTLE, || {
        let instance = instance.clone();
        let expected = sorted(pods.iter().chain(&containers).cloned());
        async move {
            let held = sorted(instance_containers(&instance).await);
            (held == expected).then_some(held)
        }
    })
    .await;
    assert_eq!(docker_holds.len(), 2 * PODS);
    for id in &containers {
        assert_eq!(
            status(&mut rt, id).await.state,
            ContainerState::ContainerRunning as i32
        );
    }
    let addresses = wait_until("one address per pod", SETTLE, || async {
        (net.allocated().len() == PODS).then(|| net.allocated())
    })
    .await;
    for id in &pods {
        let ips = pod_ip(&pod_status(&mut rt, id).await);
        assert!(
            ips.iter().all(|ip| addresses.contains(ip)),
            "{id}: {ips:?} not in {addresses:?}"
        );
    }
    wait_until("one shim per pod", SETTLE, || async {
        (front.shim_pids().len() == PODS).then_some(())
    })
    .await;

    eprintln!(
        "churn: records and Docker agree after {:?}",
        settling.elapsed()
    );

    // Then everything goes, and nothing of it stays.
    futures_util::future::join_all(pods.iter().map(|id| tear_down(&rt, id))).await;
    wait_until("no container of the instance", SETTLE, || {
        let instance = instance.clone();
        async move {
            instance_containers(&instance)
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
    front.wait_shims_retired().await;
    eprintln!("churn: all removed after {:?}", settling.elapsed());
    assert!(
        net.allocated().is_empty(),
        "addresses left: {:?}",
        net.allocated()
    );
    wait_until("no veth on the test bridge", SETTLE, || async {
        net.veths().is_empty().then_some(())
    })
    .await;
    let rules = net.iptables_rules();
    assert!(rules.is_empty(), "iptables rules left: {rules:?}");
    drop(front);
}
