//! Log benchmark: a container writes lines as fast as it can; prints how fast they reach the
//! CRI log file through the pod's shim (MB/s, lines/s, from StartContainer until the exit is
//! reported, which dockpod reports only once the file is complete) beside the same container
//! run straight through Docker (its json-file log only, from start until Docker's wait ends),
//! the CPU both use per 100 MB (dockerd, containerd and its shims, and the pod's shim), and
//! the shim's peak RSS. The two runs alternate, `ROUNDS` times, and medians are printed, so
//! both see the same machine.
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-logs` (after `contrib/setup.sh`).

use std::time::{Duration, Instant};

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::{
    ContainerState, PodSandboxConfig, RemoveContainerRequest, RemovePodSandboxRequest,
};
use dockpod_tests::cri::{
    container_config, create_container, pod_config, run_pod, shim_pid, start, status,
};
use dockpod_tests::docker::{docker, TOOL_IMAGE};
use dockpod_tests::front::Front;
use dockpod_tests::procs;
use tonic::transport::Channel;

const LINES: usize = 200_000;
/// Each line is this long including its newline.
const LINE: usize = 100;
const ROUNDS: usize = 3;

fn command() -> String {
    format!("yes '{}' | head -n {LINES}", "x".repeat(LINE - 1))
}

/// The Docker engine's processes: what Docker alone spends on a container's output.
fn engine_pids() -> Vec<u32> {
    procs::named(&[
        "dockerd",
        "containerd",
        "containerd-shim",
        "containerd-shim-runc-v2",
    ])
}

/// One run's figures.
struct Run {
    elapsed: Duration,
    engine_cpu: Duration,
    shim_cpu: Duration,
}

impl Run {
    fn mb_per_s(&self) -> f64 {
        (LINES * LINE) as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    /// CPU seconds per 100 MB written.
    fn per_100mb(cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 100.0 / ((LINES * LINE) as f64 / 1e6)
    }
}

struct Pod {
    sandbox: String,
    config: PodSandboxConfig,
    logs: tempfile::TempDir,
    shim: u32,
}

async fn through_dockpod(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    round: usize,
    peak_rss: &mut u64,
) -> Run {
    let name = format!("app{round}");
    std::fs::create_dir(pod.logs.path().join(&name)).expect("container log dir");
    let mut config = container_config(&name, &["sh", "-c"]);
    config.args = vec![command()];
    let id = create_container(rt, &pod.sandbox, &pod.config, config)
        .await
        .expect("create");
    let engine = engine_pids();
    let before = (procs::cpu_time(&engine), procs::cpu_time(&[pod.shim]));
    let t = Instant::now();
    start(rt, &id).await;
    loop {
        if let Ok(m) = dockpod_proto::procfs::memory(pod.shim) {
            *peak_rss = (*peak_rss).max(m.rss_bytes);
        }
        if status(rt, &id).await.state == ContainerState::ContainerExited as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = Run {
        elapsed: t.elapsed(),
        engine_cpu: procs::cpu_time(&engine).saturating_sub(before.0),
        shim_cpu: procs::cpu_time(&[pod.shim]).saturating_sub(before.1),
    };
    let file = pod.logs.path().join(&name).join("0.log");
    let written = std::fs::read_to_string(&file).expect("log file");
    let lines = written.lines().count();
    assert_eq!(
        lines,
        LINES,
        "the log file {} has {lines} lines, not {LINES}",
        file.display()
    );
    let _ = rt
        .remove_container(RemoveContainerRequest { container_id: id })
        .await;
    run
}

async fn through_docker(docker: &bollard::Docker) -> Run {
    let raw = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(TOOL_IMAGE.into()),
                entrypoint: Some(vec!["sh".into(), "-c".into(), command()]),
                ..Default::default()
            },
        )
        .await
        .expect("docker create");
    let engine = engine_pids();
    let before = procs::cpu_time(&engine);
    let t = Instant::now();
    docker
        .start_container(&raw.id, None)
        .await
        .expect("docker start");
    let mut wait = docker.wait_container(
        &raw.id,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    while futures_util::StreamExt::next(&mut wait).await.is_some() {}
    let run = Run {
        elapsed: t.elapsed(),
        engine_cpu: procs::cpu_time(&engine).saturating_sub(before),
        shim_cpu: Duration::ZERO,
    };
    let _ = docker
        .remove_container(
            &raw.id,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    run
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();
    let config = pod_config("benchlog", logs.path());
    let sandbox = run_pod(&mut rt, &config).await;
    let shim = shim_pid(&mut rt, &sandbox).await;
    let pod = Pod {
        sandbox,
        config,
        logs,
        shim,
    };
    let docker = docker().await;
    let mut peak_rss = 0;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        ours.push(through_dockpod(&mut rt, &pod, round, &mut peak_rss).await);
        theirs.push(through_docker(&docker).await);
    }

    let mb = (LINES * LINE) as f64 / 1e6;
    println!("dockpod log benchmark: {LINES} lines of {LINE} bytes ({mb:.0} MB), median of {ROUNDS} rounds each");
    let figures = |runs: &[Run]| {
        (
            median(runs.iter().map(Run::mb_per_s).collect()),
            median(runs.iter().map(|r| Run::per_100mb(r.engine_cpu)).collect()),
            median(runs.iter().map(|r| Run::per_100mb(r.shim_cpu)).collect()),
            median(
                runs.iter()
                    .map(|r| Run::per_100mb(r.engine_cpu + r.shim_cpu))
                    .collect(),
            ),
        )
    };
    let (our_rate, our_engine, our_shim, our_cpu) = figures(&ours);
    let (their_rate, their_engine, _, their_cpu) = figures(&theirs);
    println!(
        "into the CRI log file via the shim: {our_rate:>6.1} MB/s   CPU per 100 MB {our_cpu:>5.2} s (Docker {our_engine:.2} s, shim {our_shim:.2} s)"
    );
    println!(
        "same container, Docker alone:       {their_rate:>6.1} MB/s   CPU per 100 MB {their_cpu:>5.2} s (Docker {their_engine:.2} s)"
    );
    println!(
        "ratio dockpod / Docker alone:        throughput {:.2}x   CPU {:.2}x",
        our_rate / their_rate,
        our_cpu / their_cpu
    );
    println!(
        "shim peak RSS while logging: {:.2} MiB",
        peak_rss as f64 / 1048576.0
    );
    let _ = rt
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.sandbox,
        })
        .await;
}
