//! Front restart benchmark: with 10, 50 and 100 pods running, the front is killed (SIGKILL)
//! and started again, and this prints the time from starting the process to its first
//! ListPodSandbox answer that holds every pod, beside the time to its first answer of any
//! call (Version) in the same run. The design's bound is one second with 100 pods.
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-restart` (after `contrib/setup.sh`).

use std::time::{Duration, Instant};

use dockpod_proto::cri::{ListPodSandboxRequest, VersionRequest};
use dockpod_tests::cri::{pod_config, remove_pod, run_pod};
use dockpod_tests::front::Front;

const SIZES: [usize; 3] = [10, 50, 100];
const ROUNDS: usize = 5;
const POLL: Duration = Duration::from_millis(2);
const GIVE_UP: Duration = Duration::from_secs(30);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    ms(v[v.len() / 2])
}

/// Restarts the front and returns (first answer of any call, first full ListPodSandbox).
async fn restart(front: &mut Front, pods: usize) -> (Duration, Duration) {
    front.kill().await;
    let started = Instant::now();
    front.relaunch();
    let mut first_answer = None;
    loop {
        assert!(
            started.elapsed() < GIVE_UP,
            "front did not serve:\n{}",
            front.log()
        );
        let mut rt = front.runtime();
        if first_answer.is_none() && rt.version(VersionRequest::default()).await.is_ok() {
            first_answer = Some(started.elapsed());
        }
        if first_answer.is_some() {
            let listed = rt
                .list_pod_sandbox(ListPodSandboxRequest::default())
                .await
                .map(|r| r.into_inner().items.len())
                .unwrap_or(0);
            if listed == pods {
                return (first_answer.unwrap_or_default(), started.elapsed());
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut pods = Vec::new();
    println!(
        "front start to first answer and to a full ListPodSandbox (median of {ROUNDS} restarts)"
    );
    for size in SIZES {
        let mut rt = front.runtime();
        while pods.len() < size {
            let config = pod_config(&format!("restart{}", pods.len()), logs.path());
            pods.push(run_pod(&mut rt, &config).await);
        }
        let mut answers = Vec::new();
        let mut lists = Vec::new();
        for _ in 0..ROUNDS {
            let (answer, list) = restart(&mut front, size).await;
            answers.push(answer);
            lists.push(list);
        }
        println!(
            "{size:>4} pods: first answer {:>7.1} ms   first full ListPodSandbox {:>7.1} ms",
            median(answers),
            median(lists)
        );
    }
    let mut rt = front.runtime();
    for id in &pods {
        remove_pod(&mut rt, id).await;
    }
}
