//! Pod benchmark, from one run on this machine:
//! - every call of a pod's life through dockpod (a CNI chain: loopback, bridge, firewall, portmap),
//!   one pod at a time, beside its floor: the same Docker requests (the container bodies the
//!   shim's own `spec` builds) made with bollard, over connections kept between requests as
//!   dockpod keeps them, and the same CNI plugin chain run directly,
//!   no dockpod in between, interleaved pod by pod (each going first every other pod) so
//!   both see the same machine; medians and their ratio, and each pod's ratio to the floor's
//!   pod beside it (median and quartiles), which a slow spell of the machine moves less;
//! - what the runtime's hops cost apart from Docker's work: ContainerStatus through the front
//!   and the shim, and straight to the shim, beside a Docker inspection (on a connection of its
//!   own, as bollard makes each request, and on a kept one), back to back and after an idle
//!   pause, with how often the front and the shim were switched in per call through the
//!   front and the CPU they spent (`BENCH_HOPS=0` skips it);
//! - ListPodSandbox and ListContainers latency with 10, 110 (the kubelet's default maximum)
//!   and 250 pods, and the CPU the front and every shim use while a client relists once a
//!   second, as the kubelet does;
//! - bursts: 20 and 50 pods started at once (RunPodSandbox, CreateContainer, StartContainer
//!   each, with CNI), then torn down at once, against the parallel floor (the same Docker
//!   requests and CNI chains, all at once), alternating, after a round each not counted:
//!   median of the rounds' wall times, each round's ratio to the floor's round beside it,
//!   and where the time goes (the median of each phase of a pod's start and of its teardown,
//!   inside the burst);
//! - every idle shim's memory (PSS, private anonymous, RSS, threads) at each of those counts,
//!   and again after a log burst (20 000 lines from every container at once) has passed,
//!   against the budget of 1 MiB.
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-pods` (after `contrib/setup.sh`);
//! `BENCH_PODS` sets the number of pods taken through their life (40 by default),
//! `BENCH_BURSTS` the burst sizes (`20,50`; empty for none) and `BENCH_BURST_ROUNDS` their
//! rounds (5, after one not counted), `BENCH_LIST_PODS` the pod counts the lists are measured at (`10,110,250` by
//! default). `BENCH_CONTENTION=1` runs a steady writer beside all of it: 4 MiB direct writes,
//! each followed by `fdatasync`, on the filesystem of the state directories, as a node
//! pulling images and writing logs does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_proto::engine_api::ApiVersion;
use dockpod_tests::cni::CniNet;
use dockpod_tests::cri::{
    container_config, create_container, pod_config, remove_pod, run_pod, start,
};
use dockpod_tests::docker::{docker, docker_kept, PAUSE_IMAGE, TOOL_IMAGE};
use dockpod_tests::front::Front;
use dockpod_tests::procs;
use pod_shim::host::Host;
use pod_shim::spec::{self, Context};
use tonic::transport::Channel;

/// The calls of a pod's life, in the order the kubelet makes them: a pod's containers are
/// stopped before its sandbox, and removed (by its garbage collection) after it.
const CALLS: [&str; 9] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "ContainerStatus (verbose)",
    "PodSandboxStatus (verbose)",
    "StopContainer",
    "StopPodSandbox",
    "RemoveContainer",
    "RemovePodSandbox",
];
/// StopContainer's grace period, the same through dockpod and Docker (`sleep` is not PID 1
/// in a pod sharing the sandbox's PID namespace, so SIGTERM ends it at once).
const STOP_TIMEOUT: i64 = 2;

type Times = BTreeMap<&'static str, Vec<Duration>>;

/// The tool image's ID, which the kubelet creates containers with.
static TOOL_IMAGE_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Every pod's one container, through dockpod and at the floor alike, named as the kubelet
/// names it.
fn app_config() -> ContainerConfig {
    let id = TOOL_IMAGE_ID.get().expect("set by main");
    ContainerConfig {
        image: Some(ImageSpec {
            image: id.clone(),
            user_specified_image: TOOL_IMAGE.to_string(),
            ..Default::default()
        }),
        ..container_config("app", &["sleep", "3600"])
    }
}

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
    let app = app_config();
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
        r.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await
    .expect("StopPodSandbox");
    timed(
        times,
        CALLS[7],
        r.remove_container(RemoveContainerRequest { container_id: c }),
    )
    .await
    .expect("RemoveContainer");
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

/// What the floor asks of Docker: the sandbox and container bodies dockpod's shim sends for
/// the same pod and container (built by the shim's own `spec`, for a pod of the floor's
/// under an instance label of its own), so each call's ratio compares the same Docker work.
struct Floor {
    api: ApiVersion,
    host: Host,
    logs: PathBuf,
}

/// A pod of the floor's: its configuration and the shim ID its containers are labelled with.
struct FloorConfig {
    pod: PodSandboxConfig,
    shim_id: String,
}

impl Floor {
    async fn new(logs: &std::path::Path) -> Floor {
        Floor {
            api: dockpod_tests::docker::api_version().await,
            host: Host::detect(),
            logs: logs.to_path_buf(),
        }
    }

    fn pod(&self) -> FloorConfig {
        FloorConfig {
            pod: pod_config("floor", &self.logs),
            shim_id: dockpod_tests::unique("floor-shim"),
        }
    }

    fn ctx<'a>(&self, pod: &'a FloorConfig) -> Context<'a> {
        Context {
            instance: "dockpod-bench-floor",
            shim_id: &pod.shim_id,
            host: self.host,
            cni: true,
            api: self.api,
            runtime_handler: String::new(),
            cdi: false,
        }
    }

    fn sandbox(&self, pod: &FloorConfig) -> (String, ContainerCreateBody) {
        spec::sandbox(&self.ctx(pod), &pod.pod, PAUSE_IMAGE).expect("the sandbox's body")
    }

    fn container(&self, pod: &FloorConfig, sandbox: &str) -> (String, ContainerCreateBody) {
        let app = app_config();
        let image = TOOL_IMAGE_ID.get().expect("set by main");
        spec::container(&self.ctx(pod), sandbox, &pod.pod, &app, image)
            .expect("the container's body")
    }
}

/// The floor's RunPodSandbox: the sandbox container created and started, and its network
/// added by the CNI chain run directly (off the runtime's threads: libcni runs the plugins
/// as processes). Its ID, network namespace and the chain's result.
async fn floor_sandbox(
    docker: &Docker,
    net: &Arc<CniNet>,
    floor: &Floor,
    pod: &FloorConfig,
) -> (String, String, serde_json::Value) {
    let (name, body) = floor.sandbox(pod);
    let sandbox = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name),
                ..Default::default()
            }),
            body,
        )
        .await
        .expect("docker create sandbox")
        .id;
    docker
        .start_container(&sandbox, None)
        .await
        .expect("docker start sandbox");
    let pid = docker
        .inspect_container(&sandbox, None)
        .await
        .expect("docker inspect sandbox")
        .state
        .and_then(|s| s.pid)
        .expect("the sandbox's PID");
    let netns = format!("/proc/{pid}/ns/net");
    let (id, ns, net) = (sandbox.clone(), netns.clone(), net.clone());
    let added = tokio::task::spawn_blocking(move || net.add_directly(&id, &ns))
        .await
        .expect("CNI ADD");
    (sandbox, netns, added)
}

/// The floor's stops, with dockpod's grace period.
fn stop_options() -> Option<StopContainerOptions> {
    Some(StopContainerOptions {
        t: Some(STOP_TIMEOUT as i32),
        ..Default::default()
    })
}

/// A stop of a container that has stopped already: Docker's 304.
async fn stop_stopped(docker: &Docker, id: &str) {
    match docker.stop_container(id, stop_options()).await {
        Err(e) if !dockpod_proto::docker_errors::is_not_modified(&e) => {
            panic!("docker stop of a stopped container: {e}")
        }
        _ => {}
    }
}

/// The floor's removals ask what dockpod's (and cri-dockerd's) do: forced, with the
/// container's anonymous volumes.
fn removal() -> Option<RemoveContainerOptions> {
    Some(RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    })
}

/// The floor's CreateContainer: the pod's container in the sandbox's namespaces.
async fn floor_create(docker: &Docker, floor: &Floor, pod: &FloorConfig, sandbox: &str) -> String {
    let (name, body) = floor.container(pod, sandbox);
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name),
                ..Default::default()
            }),
            body,
        )
        .await
        .expect("docker create")
        .id
}

/// The same pod's life with no runtime: Docker's requests through bollard, the CNI chain run
/// directly.
async fn floor_pod(docker: &Docker, net: &Arc<CniNet>, floor: &Floor, times: &mut Times) {
    let pod = floor.pod();
    let (sandbox, netns, added) =
        timed(times, CALLS[0], floor_sandbox(docker, net, floor, &pod)).await;
    let c = timed(times, CALLS[1], floor_create(docker, floor, &pod, &sandbox)).await;
    timed(times, CALLS[2], docker.start_container(&c, None))
        .await
        .expect("docker start");
    timed(times, CALLS[3], docker.inspect_container(&c, None))
        .await
        .expect("docker inspect");
    timed(times, CALLS[4], docker.inspect_container(&sandbox, None))
        .await
        .expect("docker inspect sandbox");
    timed(times, CALLS[5], docker.stop_container(&c, stop_options()))
        .await
        .expect("docker stop");
    timed(times, CALLS[6], async {
        // StopPodSandbox stops every container of the pod that still runs: Docker answers
        // that this one does not.
        stop_stopped(docker, &c).await;
        net.del_directly(&sandbox, &netns, &added);
        docker.stop_container(&sandbox, stop_options()).await
    })
    .await
    .expect("docker stop sandbox");
    timed(times, CALLS[7], docker.remove_container(&c, removal()))
        .await
        .expect("docker rm");
    timed(
        times,
        CALLS[8],
        docker.remove_container(&sandbox, removal()),
    )
    .await
    .expect("docker rm sandbox");
}

fn median(v: &[Duration]) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).map_or(f64::NAN, |d| ms(*d))
}

/// A number from the environment; `default` when it is unset or no number.
fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// A quiet front on a CNI network of its own (loopback, bridge with host-local, firewall, portmap),
/// and the network, for the floor to run the same chain.
async fn cni_front() -> (Arc<CniNet>, Front) {
    let net = Arc::new(CniNet::new());
    let args = net.front_args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--log-level", "warn"]);
    let front = Front::start(&args).await;
    (net, front)
}

/// Every call of a pod's life, through dockpod and at its floor.
async fn lifecycle() {
    let pods = env_number("BENCH_PODS", 40);
    if pods == 0 {
        return;
    }
    let (net, front) = cni_front().await;
    let logs = tempfile::tempdir().expect("log dir");
    let docker = docker_kept().await;
    let at_floor = Floor::new(logs.path()).await;
    let mut rt = front.runtime();
    let (mut through, mut floor) = (Times::new(), Times::new());
    for i in 0..pods {
        let config = pod_config(&format!("life{i}"), logs.path());
        // Each goes first every other pod: what one leaves Docker doing (a removal's clean-up,
        // say) then weighs on both alike.
        if i % 2 == 0 {
            dockpod_pod(&mut rt, &config, &mut through).await;
            floor_pod(&docker, &net, &at_floor, &mut floor).await;
        } else {
            floor_pod(&docker, &net, &at_floor, &mut floor).await;
            dockpod_pod(&mut rt, &config, &mut through).await;
        }
    }
    println!("a pod's life, {pods} pods one at a time (CNI: loopback, bridge, firewall, portmap); medians");
    println!(
        "{:<28} {:>10} {:>10} {:>8} {:>10}   pods' ratios: median (quartiles)",
        "call", "dockpod", "floor", "ratio", "difference"
    );
    for call in CALLS {
        let (d, f) = (median(&through[call]), median(&floor[call]));
        let [mid, low, high] = paired_ratios(&through[call], &floor[call], [0.5, 0.25, 0.75]);
        println!(
            "{call:<28} {d:>7.1} ms {f:>7.1} ms {:>7.2}x {:>7.1} ms   {mid:.2}x ({low:.2}-{high:.2})",
            d / f,
            d - f
        );
    }
}

/// ContainerStatus calls timed per way and pace in `hops`.
const HOP_CALLS: usize = 200;
/// The pause before each call at the idle pace: longer than any spin of the processes
/// involved, so each call finds them asleep, as a lifecycle call does after Docker's work.
const HOP_IDLE: Duration = Duration::from_millis(10);

/// What the runtime's own hops cost, apart from Docker's work: ContainerStatus (answered
/// from the shim's memory) through the front and its shim, and straight to the shim's
/// socket, beside Docker's inspection of the same container; each back to back and after an
/// idle pause, alternating call by call.
async fn hops() {
    if env_number("BENCH_HOPS", 1) == 0 || env_number("BENCH_PODS", 40) == 0 {
        return;
    }
    let front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();
    let config = pod_config("hops", logs.path());
    let pod = run_pod(&mut rt, &config).await;
    let app = app_config();
    let c = create_container(&mut rt, &pod, &config, app)
        .await
        .expect("CreateContainer");
    let mut direct =
        RuntimeServiceClient::new(dockpod_proto::sockets::channel(&front.shim_socket()));
    let docker = docker().await;
    let kept = docker_kept().await;
    let request = || ContainerStatusRequest {
        container_id: c.clone(),
        verbose: false,
    };
    println!("one call's hops: ContainerStatus, {HOP_CALLS} calls each, alternating; medians");
    println!(
        "{:<28} {:>14} {:>14} {:>14} {:>14}",
        "pace", "front + shim", "shim alone", "docker inspect", "kept conn."
    );
    let front_pid = front.pid().into_iter().collect::<Vec<_>>();
    let shim_pids = front.shim_pids();
    // Per call through the front: how often the front and the shim were switched in, and
    // their CPU, counted around each call (outside its timing).
    let mut wakes = Vec::new();
    for (pace, pause) in [("back to back", None), ("after 10 ms idle", Some(HOP_IDLE))] {
        let mut times = Times::new();
        let mut woken = [0u64; 2];
        let mut cpu = [Duration::ZERO; 2];
        for _ in 0..HOP_CALLS {
            for way in ["front", "shim", "docker", "kept"] {
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
                let before =
                    (way == "front").then(|| [procs::sched(&front_pid), procs::sched(&shim_pids)]);
                let t = Instant::now();
                match way {
                    "front" => drop(rt.container_status(request()).await.expect("via the front")),
                    "shim" => drop(
                        direct
                            .container_status(request())
                            .await
                            .expect("to the shim"),
                    ),
                    "docker" => drop(
                        docker
                            .inspect_container(&c, None)
                            .await
                            .expect("docker inspect"),
                    ),
                    _ => drop(
                        kept.inspect_container(&c, None)
                            .await
                            .expect("docker inspect, kept connection"),
                    ),
                }
                times.entry(way).or_default().push(t.elapsed());
                if let Some(before) = before {
                    let after = [procs::sched(&front_pid), procs::sched(&shim_pids)];
                    for i in 0..2 {
                        woken[i] += after[i].switched_in - before[i].switched_in;
                        cpu[i] += after[i].cpu - before[i].cpu;
                    }
                }
            }
        }
        wakes.push((pace, woken, cpu));
        println!(
            "{pace:<28} {:>11.3} ms {:>11.3} ms {:>11.3} ms {:>11.3} ms",
            median(&times["front"]),
            median(&times["shim"]),
            median(&times["docker"]),
            median(&times["kept"]),
        );
    }
    println!("per call through the front, means: times switched in, and CPU");
    println!(
        "{:<28} {:>14} {:>14} {:>14} {:>14}",
        "pace", "front", "shim", "front CPU", "shim CPU"
    );
    let calls = HOP_CALLS as f64;
    for (pace, woken, cpu) in wakes {
        println!(
            "{pace:<28} {:>14.1} {:>14.1} {:>11.3} ms {:>11.3} ms",
            woken[0] as f64 / calls,
            woken[1] as f64 / calls,
            ms(cpu[0]) / calls,
            ms(cpu[1]) / calls,
        );
    }
    remove_pod(&mut rt, &pod).await;
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
    // The ID PullImage and ImageStatus answer for it, as Docker gives it.
    let _ = TOOL_IMAGE_ID.set(dockpod_tests::docker::image_id(&docker().await, TOOL_IMAGE).await);
    let contention = std::env::var("BENCH_CONTENTION").is_ok_and(|v| v == "1");
    let writer = contention.then(Writer::start);
    lifecycle().await;
    hops().await;
    bursts().await;
    lists_and_memory().await;
    if let Some(writer) = writer {
        writer.stop();
    }
}

/// A steady disk writer beside the benchmark: 4 MiB written with O_DIRECT, then `fdatasync`,
/// over and over, in /tmp (the filesystem of the fronts' state directories), until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    started: Instant,
    thread: std::thread::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Writer {
    fn start() -> Writer {
        use std::io::{Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        const BLOCK: usize = 4 << 20;
        // Kept within 256 MiB: the file is rewritten from its start.
        const WRAP: u64 = 256 << 20;
        let dir = tempfile::tempdir_in("/tmp").expect("writer dir");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("load"))
            .expect("the writer's file");
        let (stop, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (halt, count) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            // O_DIRECT wants a page-aligned buffer: the aligned part of a larger one.
            let backing = vec![0u8; BLOCK + 4096];
            let offset = backing.as_ptr().align_offset(4096);
            let buf = &backing[offset..offset + BLOCK];
            let mut at = 0u64;
            while !halt.load(Ordering::Relaxed) {
                if at >= WRAP {
                    file.rewind().expect("rewind");
                    at = 0;
                }
                file.write_all(buf).expect("the writer's write");
                file.sync_data().expect("the writer's fdatasync");
                at += BLOCK as u64;
                count.fetch_add(BLOCK as u64, Ordering::Relaxed);
            }
        });
        println!("contention: a writer of 4 MiB direct writes + fdatasync runs beside every figure below");
        Writer {
            stop,
            written,
            started: Instant::now(),
            thread,
            _dir: dir,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let mb = self.written.load(Ordering::Relaxed) as f64 / 1e6;
        println!(
            "contention: the writer wrote {mb:.0} MB at {:.1} MB/s",
            mb / self.started.elapsed().as_secs_f64()
        );
    }
}

/// A pod started at the floor: its sandbox, network and container.
struct FloorPod {
    sandbox: String,
    netns: String,
    added: serde_json::Value,
    app: String,
}

/// The phases of a pod's start, in a burst.
const PHASES: [&str; 3] = ["sandbox (+network)", "create", "start"];
/// The phases of a pod's teardown, in a burst.
const DOWN_PHASES: [&str; 4] = [
    "container stop",
    "sandbox stop (+network)",
    "container removal",
    "sandbox removal",
];

/// A pod started at the floor, with what each phase took.
async fn floor_up(
    docker: Docker,
    net: Arc<CniNet>,
    floor: Arc<Floor>,
) -> (FloorPod, [Duration; 3]) {
    let pod = floor.pod();
    let t = Instant::now();
    let (sandbox, netns, added) = floor_sandbox(&docker, &net, &floor, &pod).await;
    let sandboxed = t.elapsed();
    let t = Instant::now();
    let app = floor_create(&docker, &floor, &pod, &sandbox).await;
    let created = t.elapsed();
    let t = Instant::now();
    docker
        .start_container(&app, None)
        .await
        .expect("docker start");
    let pod = FloorPod {
        sandbox,
        netns,
        added,
        app,
    };
    (pod, [sandboxed, created, t.elapsed()])
}

/// A floor pod torn down in the kubelet's order: its container stopped, then its network
/// deleted and its sandbox stopped; then both removed.
async fn floor_down(docker: Docker, net: Arc<CniNet>, pod: FloorPod) -> [Duration; 4] {
    let t = Instant::now();
    docker
        .stop_container(&pod.app, stop_options())
        .await
        .expect("docker stop");
    let stopped = t.elapsed();
    let t = Instant::now();
    stop_stopped(&docker, &pod.app).await;
    let (id, ns, added) = (pod.sandbox.clone(), pod.netns, pod.added);
    tokio::task::spawn_blocking(move || net.del_directly(&id, &ns, &added))
        .await
        .expect("CNI DEL");
    docker
        .stop_container(&pod.sandbox, stop_options())
        .await
        .expect("docker stop sandbox");
    let sandbox_stopped = t.elapsed();
    let t = Instant::now();
    docker
        .remove_container(&pod.app, removal())
        .await
        .expect("docker rm");
    let removed = t.elapsed();
    let t = Instant::now();
    docker
        .remove_container(&pod.sandbox, removal())
        .await
        .expect("docker rm sandbox");
    [stopped, sandbox_stopped, removed, t.elapsed()]
}

/// A pod started through dockpod, with what each call took: its sandbox and container IDs.
async fn dockpod_up(
    mut rt: RuntimeServiceClient<Channel>,
    config: PodSandboxConfig,
) -> ((String, String), [Duration; 3]) {
    let t = Instant::now();
    let pod = run_pod(&mut rt, &config).await;
    let sandboxed = t.elapsed();
    let t = Instant::now();
    let app = app_config();
    let c = create_container(&mut rt, &pod, &config, app)
        .await
        .expect("CreateContainer");
    let created = t.elapsed();
    let t = Instant::now();
    start(&mut rt, &c).await;
    ((pod, c), [sandboxed, created, t.elapsed()])
}

/// A dockpod pod torn down as the kubelet does: its container stopped, then its sandbox; its
/// container removed, then its sandbox; what each call took.
async fn dockpod_down(
    mut rt: RuntimeServiceClient<Channel>,
    (pod, c): (String, String),
) -> [Duration; 4] {
    let t = Instant::now();
    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: STOP_TIMEOUT,
    })
    .await
    .expect("StopContainer");
    let stopped = t.elapsed();
    let t = Instant::now();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    let sandbox_stopped = t.elapsed();
    let t = Instant::now();
    rt.remove_container(RemoveContainerRequest { container_id: c })
        .await
        .expect("RemoveContainer");
    let removed = t.elapsed();
    let t = Instant::now();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("RemovePodSandbox");
    [stopped, sandbox_stopped, removed, t.elapsed()]
}

/// What one burst took: the whole start and the whole teardown, and each phase of a pod's
/// start and of its teardown.
#[derive(Default)]
struct Burst {
    up: Vec<Duration>,
    down: Vec<Duration>,
    phases: [Vec<Duration>; 3],
    down_phases: [Vec<Duration>; 4],
}

impl Burst {
    fn record(
        &mut self,
        (up, phases): (Duration, Vec<[Duration; 3]>),
        (down, down_phases): (Duration, Vec<[Duration; 4]>),
    ) {
        self.up.push(up);
        self.down.push(down);
        spread(&mut self.phases, phases);
        spread(&mut self.down_phases, down_phases);
    }
}

/// Each pod's phases, each into the list of its phase.
fn spread<const N: usize>(into: &mut [Vec<Duration>; N], pods: Vec<[Duration; N]>) {
    for pod in pods {
        for (list, d) in into.iter_mut().zip(pod) {
            list.push(d);
        }
    }
}

/// One round of a burst: `n` pods started at once by `up` (each with its phases' times), then
/// all torn down at once by `down`; the wall times go into `burst`.
async fn burst_round<P, U, D>(
    n: usize,
    up: impl Fn(usize) -> U,
    down: impl Fn(P) -> D,
    burst: &mut Burst,
) where
    P: Send + 'static,
    U: std::future::Future<Output = (P, [Duration; 3])> + Send + 'static,
    D: std::future::Future<Output = [Duration; 4]> + Send + 'static,
{
    let t = Instant::now();
    let ups: Vec<_> = (0..n).map(|i| tokio::spawn(up(i))).collect();
    let mut pods = Vec::new();
    let mut phases = Vec::new();
    for started in ups {
        let (pod, p) = started.await.expect("a pod's start");
        pods.push(pod);
        phases.push(p);
    }
    let started = t.elapsed();
    let t = Instant::now();
    let downs: Vec<_> = pods
        .into_iter()
        .map(|pod| tokio::spawn(down(pod)))
        .collect();
    let mut down_phases = Vec::new();
    for torn_down in downs {
        down_phases.push(torn_down.await.expect("a pod's teardown"));
    }
    burst.record((started, phases), (t.elapsed(), down_phases));
}

/// Each time's ratio to the floor's time beside it (the two ran one after the other, so a
/// slow spell of the machine weighs on both): the ratios at quantiles `qs` (0.5 the median,
/// 0 the lowest, 1 the highest).
fn paired_ratios<const N: usize>(
    through: &[Duration],
    floor: &[Duration],
    qs: [f64; N],
) -> [f64; N] {
    let mut ratios: Vec<f64> = through
        .iter()
        .zip(floor)
        .map(|(d, f)| d.as_secs_f64() / f.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let last = ratios.len().saturating_sub(1) as f64;
    qs.map(|q| {
        ratios
            .get((last * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    })
}

/// `n` pods started at once and torn down at once, through dockpod and at the floor,
/// alternating round by round.
async fn bursts() {
    let sizes: Vec<usize> = std::env::var("BENCH_BURSTS")
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![20, 50]);
    let rounds = env_number("BENCH_BURST_ROUNDS", 5);
    if sizes.is_empty() || rounds == 0 {
        return;
    }
    let (net, front) = cni_front().await;
    let logs = tempfile::tempdir().expect("log dir");
    let docker = docker_kept().await;
    let at_floor = Arc::new(Floor::new(logs.path()).await);
    let rt = front.runtime();
    for n in sizes {
        let (mut through, mut floor) = (Burst::default(), Burst::default());
        // A round each first, not counted: the first burst of a size meets cold caches
        // (Docker's, the CNI plugins' pages, IPAM's files) that the rounds after it do not.
        let (mut warm_through, mut warm_floor) = (Burst::default(), Burst::default());
        for round in 0..(rounds + 1) * 2 {
            let (through, floor) = match round < 2 {
                true => (&mut warm_through, &mut warm_floor),
                false => (&mut through, &mut floor),
            };
            // Each goes first every other round.
            if (round % 2 == 0) == (round / 2 % 2 == 0) {
                let up = |i| {
                    let config = pod_config(&format!("burst{n}-{i}"), logs.path());
                    dockpod_up(rt.clone(), config)
                };
                let down = |pod| dockpod_down(rt.clone(), pod);
                burst_round(n, up, down, through).await;
            } else {
                let up = |_| floor_up(docker.clone(), net.clone(), at_floor.clone());
                let down = |pod| floor_down(docker.clone(), net.clone(), pod);
                burst_round(n, up, down, floor).await;
            }
        }
        println!(
            "a burst of {n} pods at once (CNI), {rounds} rounds each after one not counted, \
             alternating; medians, and each round's ratio to the floor's round beside it"
        );
        println!(
            "{:<38} {:>10} {:>10} {:>8}   rounds' ratios: median (range)",
            "", "dockpod", "floor", "ratio"
        );
        let line = |what: &str, d: f64, f: f64| {
            println!("{what:<38} {d:>7.0} ms {f:>7.0} ms {:>7.2}x", d / f);
        };
        let whole = |what: &str, d: &[Duration], f: &[Duration]| {
            let (dm, fm) = (median(d), median(f));
            let [mid, low, high] = paired_ratios(d, f, [0.5, 0.0, 1.0]);
            println!(
                "{what:<38} {dm:>7.0} ms {fm:>7.0} ms {:>7.2}x   {mid:.2}x ({low:.2}-{high:.2})",
                dm / fm
            );
        };
        whole("start (whole burst)", &through.up, &floor.up);
        whole("teardown (whole burst)", &through.down, &floor.down);
        for (i, phase) in PHASES.iter().enumerate() {
            line(
                &format!("  each pod's {phase}"),
                median(&through.phases[i]),
                median(&floor.phases[i]),
            );
        }
        for (i, phase) in DOWN_PHASES.iter().enumerate() {
            line(
                &format!("  each pod's {phase}"),
                median(&through.down_phases[i]),
                median(&floor.down_phases[i]),
            );
        }
    }
}

/// Every shim's memory and threads (its pod runs one container, and nothing has been asked of
/// it for a while: `when` says what came before): median and largest, beside the budget.
fn shims_memory(shims: &[u32], when: &str) {
    const MIB: f64 = 1048576.0;
    let mut figures: Vec<[f64; 4]> = shims
        .iter()
        .filter_map(|pid| {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
            let field = |name: &str| -> Option<f64> {
                let line = rollup.lines().find(|l| l.starts_with(name))?;
                let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024.0 / MIB)
            };
            let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count() as f64;
            Some([
                field("Rss:")?,
                field("Pss:")?,
                field("Anonymous:")?,
                threads,
            ])
        })
        .collect();
    if figures.is_empty() {
        return;
    }
    let stat = |i: usize, figures: &mut Vec<[f64; 4]>| {
        figures.sort_by(|a, b| a[i].total_cmp(&b[i]));
        (figures[figures.len() / 2][i], figures[figures.len() - 1][i])
    };
    let (rss, rss_max) = stat(0, &mut figures);
    let (pss, pss_max) = stat(1, &mut figures);
    let (anon, anon_max) = stat(2, &mut figures);
    let (threads, threads_max) = stat(3, &mut figures);
    println!(
        "{} idle shims {when}, median (largest): PSS {pss:.2} MiB ({pss_max:.2}), private anonymous \
         {anon:.2} MiB ({anon_max:.2}) [budget 1 MiB each], RSS {rss:.2} MiB ({rss_max:.2}), \
         threads {threads:.0} ({threads_max:.0})",
        figures.len()
    );
}

/// Every container writes `BURST_LINES` lines to its log at once (an exec writing to the
/// stdout of the container's process, PID 1 in its own PID namespace, which Docker logs);
/// returns once every line is in each CRI log and the shims have been left alone for longer
/// than the time after which they give back memory.
async fn log_burst(rt: &RuntimeServiceClient<Channel>, containers: &[(String, PathBuf)]) {
    const BURST_LINES: usize = 20_000;
    /// Longer than the 2 s of quiet after which a shim gives back what work left.
    const SETTLE: Duration = Duration::from_secs(5);
    let script = format!(
        "yes 'a line of a log burst, sixty-odd bytes, as an application logs' \
         | head -n {BURST_LINES} >/proc/1/fd/1"
    );
    let writes = containers.iter().map(|(id, _)| {
        let mut rt = rt.clone();
        let script = script.clone();
        async move {
            let out = dockpod_tests::cri::exec(&mut rt, id, &["sh", "-c", &script]).await;
            assert_eq!(out.exit_code, 0, "the burst's writer failed: {out:?}");
        }
    });
    let started = Instant::now();
    futures_util::future::join_all(writes).await;
    let lines = |path: &PathBuf| {
        std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers.iter().any(|(_, log)| lines(log) < BURST_LINES) {
        if Instant::now() > deadline {
            let short: Vec<(usize, &PathBuf)> = containers
                .iter()
                .map(|(_, log)| (lines(log), log))
                .filter(|(n, _)| *n < BURST_LINES)
                .collect();
            panic!("the burst never reached every CRI log (lines, log): {short:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "log burst: {} containers x {BURST_LINES} lines, in every CRI log after {:.1} s",
        containers.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
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

/// The lists at each pod count, the CPU of a node relisting once a second, and every idle
/// shim's memory.
async fn lists_and_memory() {
    let counts: Vec<usize> = std::env::var("BENCH_LIST_PODS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 110, 250]);
    if counts.is_empty() {
        return;
    }
    let front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();

    println!("dockpod lists (one client relisting once a second; CPU of the front and all shims over {CPU_WINDOW:?})");
    let (mut pods, mut containers) = (Vec::new(), Vec::new());
    for count in counts {
        while pods.len() < count {
            let name = format!("bench{}", pods.len());
            // A log directory each, so each container's CRI log is a file of its own.
            let config = pod_config(&name, &logs.path().join(&name));
            let id = run_pod(&mut rt, &config).await;
            // A PID namespace of its own, as the kubelet gives by default: the log burst
            // writes to its PID 1's stdout.
            let mut app = app_config();
            app.linux = Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let log = PathBuf::from(&config.log_directory).join(&app.log_path);
            let c = create_container(&mut rt, &id, &config, app)
                .await
                .expect("CreateContainer");
            start(&mut rt, &c).await;
            pods.push(id);
            containers.push((c, log));
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
        shims_memory(&shims, "after their start");
        println!(
            "CPU of the front and {} shims: {:.2} % of a core (front {:.2} %, shims {:.2} %)",
            shims.len(),
            share(front_used + shims_used),
            share(front_used),
            share(shims_used)
        );
    }

    log_burst(&rt, &containers).await;
    shims_memory(&front.shim_pids(), "after a log burst");

    for id in pods {
        let _ = rt
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await;
    }
}
