//! dockerd restarts under running pods: the shims reconnect, statuses, events and the runtime
//! configuration are right afterwards, and the CRI log file resumes with no line lost or
//! written twice.

use std::time::Duration;

use bollard::query_parameters::LogsOptions;
use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::crilog::{assert_same_as_docker, docker_numbers, numbers, COUNTER};
use dockpod_tests::docker::docker;
use dockpod_tests::dockerd;
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;
use futures_util::StreamExt;

const SECS: Duration = Duration::from_secs(60);

/// The last `n <i>` line in Docker's own log of `container`.
async fn last_number_in_docker(container: &str) -> u64 {
    let docker = docker().await;
    let options = LogsOptions {
        stdout: true,
        ..Default::default()
    };
    let mut stream = docker.logs(container, Some(options));
    let mut last = None;
    while let Some(item) = stream.next().await {
        let text = item.expect("docker logs").to_string();
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("n ").and_then(|n| n.parse().ok()) {
                last = Some(n);
            }
        }
    }
    last.expect("the counter logged something")
}

#[tokio::test]
async fn statuses_events_and_logs_are_right_after_a_dockerd_restart() {
    let _slot = crate::slot().await;
    let live_restore = dockerd::live_restore(&docker().await).await;
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("dockerd-restart", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    for dir in ["count", "done"] {
        std::fs::create_dir(logs.path().join(dir)).expect("container dir");
    }
    let mut config = container_config("count", &["sh", "-c"]);
    config.args = vec![format!("trap 'exit 3' TERM; {COUNTER}")];
    let counter = run_container(&mut rt, &id, &pod, config).await;
    let mut config = container_config("done", &["sh", "-c", "echo bye; exit 7"]);
    config.log_path = "done/0.log".into();
    let done = run_container(&mut rt, &id, &pod, config).await;
    let done_before = wait_exited(&rt, &done, SECS).await;
    assert_eq!(done_before.exit_code, 7);
    let path = logs.path().join("count/0.log");
    let grows = |at_least: usize| {
        let path = path.clone();
        async move { (numbers(&[&path]).len() >= at_least).then_some(()) }
    };
    wait_until("first lines", SECS, || grows(10)).await;
    let before = status(&mut rt, &counter).await;
    let config = rt
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .expect("RuntimeConfig")
        .into_inner();

    tokio::task::spawn_blocking(dockerd::restart)
        .await
        .expect("restart dockerd");
    // The kubelet reads it once and relies on it.
    let config_after = rt
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .expect("RuntimeConfig after the restart")
        .into_inner();
    assert_eq!(config_after, config);

    if live_restore {
        // The counter never stopped: its log goes on in the same file, and its status is the
        // same running container.
        let now = numbers(&[&path]).len();
        wait_until("lines after the restart", SECS, || grows(now + 20)).await;
        let after = status(&mut rt, &counter).await;
        assert_eq!(after.state, ContainerState::ContainerRunning as i32);
        assert_eq!(after.started_at, before.started_at, "restarted container");
    } else {
        eprintln!("dockerd runs without --live-restore: its restart stops the containers");
        let after = wait_exited(&rt, &counter, SECS).await;
        assert_eq!(after.exit_code, 3, "the counter's TERM trap exit code");
    }
    let done_after = status(&mut rt, &done).await;
    assert_eq!(done_after.exit_code, 7);
    assert_eq!(done_after.finished_at, done_before.finished_at);

    // Events still flow from the pod's shim through the front.
    let mut events = rt
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    rt.stop_container(StopContainerRequest {
        container_id: counter.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    if live_restore {
        let stopped = wait_stopped_event(&mut events, &counter, SECS).await;
        assert!(
            stopped.is_some(),
            "no stopped event after the dockerd restart"
        );
    }
    wait_exited(&rt, &counter, SECS).await;

    // Every line Docker kept, once, in its order, the last one included; what Docker lost
    // across its own restart is its loss (printed).
    let written = numbers(&[&path]);
    assert_same_as_docker(&counter, &written, &docker_numbers(&counter).await);
    assert_eq!(
        written.last().copied(),
        Some(last_number_in_docker(&counter).await),
        "the file ends before Docker's log does"
    );
    remove_pod(&mut rt, &id).await;
}
