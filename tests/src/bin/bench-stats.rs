//! Stats benchmark: prints, from one run on this machine, ListContainerStats latency with 10,
//! 50 and 100 running containers beside Docker's one-shot stats API asked for the same
//! containers (all at once, as a runtime that shims Docker's stats must), and the CPU time
//! dockerd spent serving each.
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-stats` (after `contrib/setup.sh`).

use std::time::{Duration, Instant};

use bollard::query_parameters::StatsOptions;
use dockpod_proto::cri::ListContainerStatsRequest;
use dockpod_tests::cri::{container_config, pod_config, remove_pod, run_container, run_pod};
use dockpod_tests::docker::docker;
use dockpod_tests::front::Front;
use futures_util::StreamExt;

const ROUNDS: usize = 20;
const PER_POD: usize = 5;

/// CPU time (user + system) dockerd has used so far.
fn dockerd_cpu() -> Duration {
    let pid = std::fs::read_to_string("/var/run/docker.pid").unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let docker = docker().await;
    let mut rt = front.runtime();
    let mut pods = Vec::new();
    let mut containers: Vec<String> = Vec::new();
    println!(
        "{:<12} {:>24} {:>16} {:>28} {:>16}",
        "containers",
        "ListContainerStats (ms)",
        "dockerd CPU",
        "Docker one-shot stats (ms)",
        "dockerd CPU"
    );
    for size in [10usize, 50, 100] {
        while containers.len() < size {
            let pod = pod_config(&format!("bench-stats{}", pods.len()), logs.path());
            let id = run_pod(&mut rt, &pod).await;
            for i in 0..PER_POD {
                let c = run_container(
                    &mut rt,
                    &id,
                    &pod,
                    container_config(&format!("c{i}"), &["sleep", "3600"]),
                )
                .await;
                containers.push(c);
            }
            pods.push(id);
        }
        // One call first: a container's first look samples its CPU twice.
        rt.list_container_stats(ListContainerStatsRequest::default())
            .await
            .expect("ListContainerStats");

        let (mut ours, cpu_before) = (Vec::new(), dockerd_cpu());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let stats = rt
                .list_container_stats(ListContainerStatsRequest::default())
                .await
                .expect("ListContainerStats")
                .into_inner()
                .stats;
            ours.push(t.elapsed());
            assert_eq!(stats.len(), size);
        }
        let ours_cpu = dockerd_cpu().saturating_sub(cpu_before);

        let (mut theirs, cpu_before) = (Vec::new(), dockerd_cpu());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let asks = containers.iter().map(|c| {
                let docker = docker.clone();
                async move {
                    let options = StatsOptions {
                        stream: false,
                        one_shot: true,
                    };
                    let mut s = docker.stats(c, Some(options));
                    s.next().await.expect("stats").expect("stats")
                }
            });
            futures_util::future::join_all(asks).await;
            theirs.push(t.elapsed());
        }
        let theirs_cpu = dockerd_cpu().saturating_sub(cpu_before);
        println!(
            "{:<12} {:>24.1} {:>13} ms {:>28.1} {:>13} ms",
            size,
            median(ours),
            ours_cpu.as_millis(),
            median(theirs),
            theirs_cpu.as_millis()
        );
    }
    println!("(medians of {ROUNDS} rounds; dockerd CPU summed over the rounds)");
    for id in &pods {
        remove_pod(&mut rt, id).await;
    }
}
