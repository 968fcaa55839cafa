//! Log benchmark: a container writes lines as fast as it can; prints how fast they reach the
//! CRI log file through the pod's shim (MB/s, lines/s, from StartContainer until the exit is
//! reported, which dockpod reports only once the file is complete), the same container's run
//! time straight through Docker for comparison, and the shim's peak RSS meanwhile.
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-logs` (after `contrib/setup.sh`).

use std::time::{Duration, Instant};

use dockpod_tests::cri::{
    container_config, create_container, pod_config, run_pod, shim_pid, start, status,
};
use dockpod_tests::docker::{docker, TOOL_IMAGE};
use dockpod_tests::front::Front;
use k8s_cri::v1::{ContainerState, RemovePodSandboxRequest};

const LINES: usize = 200_000;
/// Each line is this long including its newline.
const LINE: usize = 100;

fn command() -> String {
    format!("yes '{}' | head -n {LINES}", "x".repeat(LINE - 1))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();
    let pod = pod_config("benchlog", logs.path());
    let sandbox = run_pod(&mut rt, &pod).await;
    std::fs::create_dir(logs.path().join("app")).expect("container log dir");
    let shim = shim_pid(&mut rt, &sandbox).await;
    let mut config = container_config("app", &["sh", "-c"]);
    config.args = vec![command()];
    let id = create_container(&mut rt, &sandbox, &pod, config)
        .await
        .expect("create");

    let t = Instant::now();
    start(&mut rt, &id).await;
    let mut peak_rss = 0;
    loop {
        if let Ok(m) = dockpod_proto::procfs::memory(shim) {
            peak_rss = peak_rss.max(m.rss_bytes);
        }
        if status(&mut rt, &id).await.state == ContainerState::ContainerExited as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dockpod = t.elapsed();
    let file = logs.path().join("app/0.log");
    let written = std::fs::read_to_string(&file).expect("log file");
    let lines = written.lines().count();
    if lines != LINES {
        let kept = logs.keep();
        panic!(
            "the log file has {lines} lines, not {LINES}; kept in {}",
            kept.display()
        );
    }

    // The same output through Docker alone (json-file), for scale.
    let docker = docker().await;
    let t = Instant::now();
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
    docker
        .start_container(&raw.id, None)
        .await
        .expect("docker start");
    let mut wait = docker.wait_container(
        &raw.id,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    while futures_util::StreamExt::next(&mut wait).await.is_some() {}
    let plain = t.elapsed();
    let _ = docker
        .remove_container(
            &raw.id,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;

    let mb = (LINES * LINE) as f64 / 1e6;
    println!("dockpod log benchmark: {LINES} lines of {LINE} bytes ({mb:.0} MB)");
    println!(
        "into the CRI log file via the shim: {:>7.2} s  {:>6.1} MB/s  {:>9.0} lines/s",
        dockpod.as_secs_f64(),
        mb / dockpod.as_secs_f64(),
        LINES as f64 / dockpod.as_secs_f64()
    );
    println!(
        "same container, Docker alone:       {:>7.2} s  {:>6.1} MB/s  {:>9.0} lines/s",
        plain.as_secs_f64(),
        mb / plain.as_secs_f64(),
        LINES as f64 / plain.as_secs_f64()
    );
    println!(
        "shim peak RSS while logging: {:.2} MiB",
        peak_rss as f64 / 1048576.0
    );
    let _ = rt
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await;
}
