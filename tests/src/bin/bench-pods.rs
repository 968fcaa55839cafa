//! Pod benchmark, from one run on this machine:
//! - every call of a pod's life through dockpod (a CNI network: bridge, firewall, portmap),
//!   one pod at a time, beside its floor: the same Docker requests made with bollard and the
//!   same CNI plugin chain run directly, no dockpod in between, interleaved pod by pod (each
//!   going first every other pod) so both see the same machine; medians and the ratio;
//! - ListPodSandbox and ListContainers latency with 10, 110 (the kubelet's default maximum)
//!   and 250 pods, and the CPU the front and every shim use while a client relists once a
//!   second, as the kubelet does;
//! - the memory of one idle pod shim (PSS and RSS, against the budget of 2 MiB and 6 MiB).
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-pods` (after `contrib/setup.sh`);
//! `BENCH_PODS` sets the number of pods taken through their life (40 by default),
//! `BENCH_LIST_PODS` the pod counts the lists are measured at (`10,110,250` by default).

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, StopContainerOptions};
use bollard::Docker;
use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cni::CniNet;
use dockpod_tests::cri::{container_config, create_container, pod_config, run_pod, start};
use dockpod_tests::docker::{docker, PAUSE_IMAGE, TOOL_IMAGE};
use dockpod_tests::front::Front;
use dockpod_tests::procs;
use tonic::transport::Channel;

/// The calls of a pod's life, in the order they are made.
const CALLS: [&str; 9] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "ContainerStatus (verbose)",
    "PodSandboxStatus (verbose)",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];
/// StopContainer's grace period, the same through dockpod and Docker (`sleep` is not PID 1
/// in a pod sharing the sandbox's PID namespace, so SIGTERM ends it at once).
const STOP_TIMEOUT: i64 = 2;

type Times = BTreeMap<&'static str, Vec<Duration>>;

/// Times `call` into `times[what]`.
async fn timed<T>(
    times: &mut Times,
    what: &'static str,
    call: impl std::future::Future<Output = T>,
) -> T {
    let t = Instant::now();
    let out = call.await;
    times.entry(what).or_default().push(t.elapsed());
    out
}

/// One pod's life through dockpod.
async fn dockpod_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    config: &PodSandboxConfig,
    times: &mut Times,
) {
    let pod = timed(times, CALLS[0], run_pod(rt, config)).await;
    let app = container_config("app", &["sleep", "3600"]);
    let c = timed(times, CALLS[1], create_container(rt, &pod, config, app))
        .await
        .expect("CreateContainer");
    timed(times, CALLS[2], start(rt, &c)).await;
    let mut r = rt.clone();
    timed(
        times,
        CALLS[3],
        r.container_status(ContainerStatusRequest {
            container_id: c.clone(),
            verbose: true,
        }),
    )
    .await
    .expect("ContainerStatus");
    timed(
        times,
        CALLS[4],
        r.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        }),
    )
    .await
    .expect("PodSandboxStatus");
    timed(
        times,
        CALLS[5],
        r.stop_container(StopContainerRequest {
            container_id: c.clone(),
            timeout: STOP_TIMEOUT,
        }),
    )
    .await
    .expect("StopContainer");
    timed(
        times,
        CALLS[6],
        r.remove_container(RemoveContainerRequest { container_id: c }),
    )
    .await
    .expect("RemoveContainer");
    timed(
        times,
        CALLS[7],
        r.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await
    .expect("StopPodSandbox");
    timed(
        times,
        CALLS[8],
        r.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        }),
    )
    .await
    .expect("RemovePodSandbox");
}

/// The same pod's life with no runtime: Docker's requests through bollard, the CNI chain run
/// directly.
async fn floor_pod(docker: &Docker, net: &CniNet, times: &mut Times) {
    let sandbox_name = dockpod_tests::unique("bench-floor-pod");
    let sandbox = timed(times, CALLS[0], async {
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(sandbox_name.clone()),
                    ..Default::default()
                }),
                ContainerCreateBody {
                    image: Some(PAUSE_IMAGE.into()),
                    host_config: Some(HostConfig {
                        network_mode: Some("none".into()),
                        ipc_mode: Some("shareable".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("docker create sandbox");
        docker
            .start_container(&created.id, None)
            .await
            .expect("docker start sandbox");
        let pid = docker
            .inspect_container(&created.id, None)
            .await
            .expect("docker inspect sandbox")
            .state
            .and_then(|s| s.pid)
            .expect("the sandbox's PID");
        let netns = format!("/proc/{pid}/ns/net");
        let added = net.add_directly(&created.id, &netns);
        (created.id, netns, added)
    })
    .await;
    let (sandbox, netns, added) = sandbox;
    let shared = format!("container:{sandbox}");
    let c = timed(
        times,
        CALLS[1],
        docker.create_container(
            Some(CreateContainerOptions {
                name: Some(dockpod_tests::unique("bench-floor-app")),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(TOOL_IMAGE.into()),
                entrypoint: Some(vec!["sleep".into(), "3600".into()]),
                host_config: Some(HostConfig {
                    network_mode: Some(shared.clone()),
                    ipc_mode: Some(shared.clone()),
                    pid_mode: Some(shared),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("docker create")
    .id;
    timed(times, CALLS[2], docker.start_container(&c, None))
        .await
        .expect("docker start");
    timed(times, CALLS[3], docker.inspect_container(&c, None))
        .await
        .expect("docker inspect");
    timed(times, CALLS[4], docker.inspect_container(&sandbox, None))
        .await
        .expect("docker inspect sandbox");
    let stop = || {
        Some(StopContainerOptions {
            t: Some(STOP_TIMEOUT as i32),
            ..Default::default()
        })
    };
    timed(times, CALLS[5], docker.stop_container(&c, stop()))
        .await
        .expect("docker stop");
    timed(times, CALLS[6], docker.remove_container(&c, None))
        .await
        .expect("docker rm");
    timed(times, CALLS[7], async {
        net.del_directly(&sandbox, &netns, &added);
        docker.stop_container(&sandbox, stop()).await
    })
    .await
    .expect("docker stop sandbox");
    timed(times, CALLS[8], docker.remove_container(&sandbox, None))
        .await
        .expect("docker rm sandbox");
}

fn median(v: &[Duration]) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).map_or(f64::NAN, |d| ms(*d))
}

/// Every call of a pod's life, through dockpod and at its floor.
async fn lifecycle() {
    let pods: usize = std::env::var("BENCH_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    if pods == 0 {
        return;
    }
    let net = CniNet::new();
    let args = net.front_args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--log-level", "warn"]);
    let front = Front::start(&args).await;
    let logs = tempfile::tempdir().expect("log dir");
    let docker = docker().await;
    let mut rt = front.runtime();
    let (mut through, mut floor) = (Times::new(), Times::new());
    for i in 0..pods {
        let config = pod_config(&format!("life{i}"), logs.path());
        // Each goes first every other pod: what one leaves Docker doing (a removal's clean-up,
        // say) then weighs on both alike.
        if i % 2 == 0 {
            dockpod_pod(&mut rt, &config, &mut through).await;
            floor_pod(&docker, &net, &mut floor).await;
        } else {
            floor_pod(&docker, &net, &mut floor).await;
            dockpod_pod(&mut rt, &config, &mut through).await;
        }
    }
    println!("a pod's life, {pods} pods one at a time (CNI: bridge, firewall, portmap); medians");
    println!(
        "{:<28} {:>10} {:>10} {:>8} {:>10}",
        "call", "dockpod", "floor", "ratio", "difference"
    );
    for call in CALLS {
        let (d, f) = (median(&through[call]), median(&floor[call]));
        println!(
            "{call:<28} {d:>7.1} ms {f:>7.1} ms {:>7.2}x {:>7.1} ms",
            d / f,
            d - f
        );
    }
}

/// Calls of each list timed at each pod count.
const LIST_CALLS: usize = 100;
/// How long the CPU of the front and the shims is measured while a client relists.
const CPU_WINDOW: Duration = Duration::from_secs(20);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and 95th percentile in milliseconds.
fn summary(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    (at(0.5), at(0.95))
}

fn row(what: &str, v: Vec<Duration>) {
    let n = v.len();
    let (p50, p95) = summary(v);
    println!("{what:<52} n={n:<4} median {p50:>8.1} ms   p95 {p95:>8.1} ms");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    lifecycle().await;
    lists_and_memory().await;
}

/// Both lists, timed; each must hold `pods` pods and as many containers.
async fn list_both(rt: &mut RuntimeServiceClient<Channel>, pods: usize) -> (Duration, Duration) {
    let t = Instant::now();
    let listed = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .len();
    let sandboxes = t.elapsed();
    assert_eq!(listed, pods);
    let t = Instant::now();
    let listed = rt
        .list_containers(ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .len();
    let containers = t.elapsed();
    assert_eq!(listed, pods);
    (sandboxes, containers)
}

/// The lists at each pod count, the CPU of a node relisting once a second, and one idle
/// shim's memory.
async fn lists_and_memory() {
    let counts: Vec<usize> = std::env::var("BENCH_LIST_PODS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 110, 250]);
    let front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();

    println!("dockpod lists (one client relisting once a second; CPU of the front and all shims over {CPU_WINDOW:?})");
    let mut pods = Vec::new();
    for count in counts {
        while pods.len() < count {
            let config = pod_config(&format!("bench{}", pods.len()), logs.path());
            let id = run_pod(&mut rt, &config).await;
            let c = create_container(
                &mut rt,
                &id,
                &config,
                container_config("app", &["sleep", "3600"]),
            )
            .await
            .expect("CreateContainer");
            start(&mut rt, &c).await;
            pods.push(id);
        }
        // What creating the pods set going has run its course.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (mut sandboxes, mut containers) = (Vec::new(), Vec::new());
        for _ in 0..LIST_CALLS {
            let (s, c) = list_both(&mut rt, count).await;
            sandboxes.push(s);
            containers.push(c);
        }
        let shims = front.shim_pids();
        let front_pid: Vec<u32> = front.pid().into_iter().collect();
        let before = (procs::cpu_time(&front_pid), procs::cpu_time(&shims));
        let started = Instant::now();
        while started.elapsed() < CPU_WINDOW {
            list_both(&mut rt, count).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let share = |used: Duration| 100.0 * used.as_secs_f64() / elapsed;
        let (front_used, shims_used) = (
            procs::cpu_time(&front_pid).saturating_sub(before.0),
            procs::cpu_time(&shims).saturating_sub(before.1),
        );
        row(&format!("ListPodSandbox with {count} pods"), sandboxes);
        row(&format!("ListContainers with {count} pods"), containers);
        println!(
            "CPU of the front and {} shims: {:.2} % of a core (front {:.2} %, shims {:.2} %)",
            shims.len(),
            share(front_used + shims_used),
            share(front_used),
            share(shims_used)
        );
    }

    // One idle shim: its pod has one running container and nothing has happened for a while.
    let shims = front.shim_pids();
    let mut mem: Vec<dockpod_proto::procfs::Memory> = shims
        .iter()
        .filter_map(|pid| dockpod_proto::procfs::memory(*pid).ok())
        .collect();
    mem.sort_by_key(|m| m.pss_bytes);
    let one = mem[mem.len() / 2];
    println!(
        "idle pod shim (median of {}): PSS {:.2} MiB (budget 2), RSS {:.2} MiB (budget 6)",
        mem.len(),
        one.pss_bytes as f64 / 1048576.0,
        one.rss_bytes as f64 / 1048576.0
    );

    for id in pods {
        let _ = rt
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await;
    }
}
