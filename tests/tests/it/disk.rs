//! A pod whose state directory and logs sit on a disk that stalls or fills up: the shim keeps
//! answering while its own log, its saves and its log copies wait on the disk, reports no
//! change before it is saved, and a full disk is a clear error once a save needs room, not a
//! hung pod.

use std::time::{Duration, Instant};

use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::disk::LoopFs;
use dockpod_tests::front::Front;

const SECS: Duration = Duration::from_secs(60);
/// Generous for a loaded machine: a shim whose one thread waits on the frozen disk does not
/// answer at all until the disk is thawed.
const ANSWER: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_stalled_disk_holds_up_no_status_call_and_a_full_one_is_a_clear_error() {
    let disk = LoopFs::new(64);
    let root = disk.path().join("root");
    let front = Front::start(&["--root-directory", &root.display().to_string()]).await;
    // The pod's CRI logs are on the same disk: the log copy waits on it too.
    let logs = disk.path().join("logs");
    std::fs::create_dir(&logs).expect("log directory");
    let mut rt = front.runtime();
    let pod = pod_config("slow-disk", &logs);
    let id = run_pod(&mut rt, &pod).await;
    let stopped = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("a", &["sleep", "3600"]),
    )
    .await;
    let running = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("b", &["sleep", "3600"]),
    )
    .await;

    run_container(
        &mut rt,
        &id,
        &pod,
        container_config(
            "chatty",
            &[
                "sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.01; done",
            ],
        ),
    )
    .await;
    let chatty_log = logs.join("chatty/0.log");
    let chatty_size = || std::fs::metadata(&chatty_log).map(|m| m.len()).unwrap_or(0);
    dockpod_tests::wait::wait_until("the chatty container's first lines", SECS, || {
        let started = chatty_size() > 0;
        async move { started.then_some(()) }
    })
    .await;

    rt.stop_container(StopContainerRequest {
        container_id: stopped.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");

    // The stop's last save (the exit, then the log's end) is on disk before the disk stalls,
    // so the first round below sees a pod with nothing on its way to the disk.
    let state = root.join("pods").join(shim_dir(&root));
    dockpod_tests::wait::wait_until("the stopped container's record on disk", SECS, || {
        let saved = dockpod_proto::state_journal::read(&state)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| v["containers"][&stopped].clone())
            .is_some_and(|c| {
                c["state"] == ContainerState::ContainerExited as i32 && c["log_complete"] == true
            });
        async move { saved.then_some(()) }
    })
    .await;

    // The disk stalls. The shim logs every call (the front passes `--log-level debug` in
    // the tests) into `shim.log` on that disk: those lines wait, the calls do not.
    let shim_log = root.join("pods").join(shim_dir(&root)).join("shim.log");
    let log_size = || std::fs::metadata(&shim_log).map(|m| m.len()).unwrap_or(0);
    let frozen = disk.freeze();
    let size_frozen = log_size();
    let chatty_frozen = chatty_size();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        for c in [&running, &stopped] {
            let asked = Instant::now();
            let answer = tokio::time::timeout(ANSWER, status(&mut rt, c)).await;
            assert!(answer.is_ok(), "ContainerStatus waited on the stalled disk");
            slowest = slowest.max(asked.elapsed());
        }
        let filter = ContainerFilter {
            pod_sandbox_id: id.clone(),
            ..Default::default()
        };
        let listed = tokio::time::timeout(ANSWER, container_ids(rt.clone(), filter)).await;
        assert!(listed.is_ok(), "ListContainers waited on the stalled disk");
    }

    // A change while the disk is stalled: `running` is stopped. Its exit cannot be saved, so
    // StopContainer waits and the exit is not reported (durable before reported: a shim
    // restarted now would not remember it); every other call goes on meanwhile.
    let mut stopper = rt.clone();
    let stop_id = running.clone();
    let stopping = tokio::spawn(async move {
        stopper
            .stop_container(StopContainerRequest {
                container_id: stop_id,
                timeout: 0,
            })
            .await
    });
    // The shim's own view (`shim-manager inspect`) has the exit: its save is at the disk.
    dockpod_tests::wait::wait_until("the exit in the shim's memory", SECS, || {
        let exited =
            in_memory_state(&front, &id, &running) == Some(ContainerState::ContainerExited);
        async move { exited.then_some(()) }
    })
    .await;
    for _ in 0..10 {
        let asked = Instant::now();
        let answer = tokio::time::timeout(ANSWER, status(&mut rt, &running))
            .await
            .expect("ContainerStatus waited on the save of another change");
        slowest = slowest.max(asked.elapsed());
        assert_eq!(
            answer.state,
            ContainerState::ContainerRunning as i32,
            "an exit was reported before it was on disk"
        );
        let other = tokio::time::timeout(ANSWER, status(&mut rt, &stopped)).await;
        assert!(
            other.is_ok(),
            "ContainerStatus waited on another container's save"
        );
        let filter = ContainerFilter {
            pod_sandbox_id: id.clone(),
            ..Default::default()
        };
        let listed = tokio::time::timeout(ANSWER, container_ids(rt.clone(), filter)).await;
        assert!(listed.is_ok(), "ListContainers waited on a save");
    }
    assert!(
        !stopping.is_finished(),
        "StopContainer answered before its exit was on disk"
    );
    assert_eq!(
        log_size(),
        size_frozen,
        "the shim's log was written to the frozen disk: the test proves nothing"
    );
    assert_eq!(
        chatty_size(),
        chatty_frozen,
        "a CRI log was written to the frozen disk: the test proves nothing"
    );
    eprintln!("slowest ContainerStatus while the disk was stalled: {slowest:?}");
    drop(frozen);
    stopping
        .await
        .expect("the stop task")
        .expect("StopContainer, once the disk is back");
    assert_eq!(
        status(&mut rt, &running).await.state,
        ContainerState::ContainerExited as i32
    );
    // The log copy goes on where it stopped.
    dockpod_tests::wait::wait_until("the chatty container's log after the thaw", SECS, || {
        let grown = chatty_size() > chatty_frozen;
        async move { grown.then_some(()) }
    })
    .await;
    dockpod_tests::wait::wait_until("the held-back log lines", SECS, || {
        let grown = log_size() > size_frozen;
        async move { grown.then_some(()) }
    })
    .await;

    // The disk is full. Saves go on while the record's journal has room (its space was
    // written when it was made); the save that needs new room (the journal's compaction)
    // fails its call with a clear error, and the pod goes on.
    let filler = disk.fill("filler");
    let mut made = Vec::new();
    let refusal = loop {
        let name = format!("d{}", made.len());
        match create_container(&mut rt, &id, &pod, container_config(&name, &["true"])).await {
            Ok(c) => made.push(c),
            Err(status) => break status,
        }
        // Every frame holds every container: 64 KiB of journal are full long before this.
        assert!(made.len() < 64, "no create needed new room on a full disk");
    };
    assert_eq!(
        refusal.code(),
        tonic::Code::ResourceExhausted,
        "{refusal:?}"
    );
    assert!(
        refusal.message().contains("No space left on device"),
        "{}",
        refusal.message()
    );
    let pod_answer = tokio::time::timeout(ANSWER, pod_status(&mut rt, &id)).await;
    assert!(
        pod_answer.is_ok(),
        "the pod stopped answering on a full disk"
    );
    let filter = ContainerFilter {
        pod_sandbox_id: id.clone(),
        ..Default::default()
    };
    let listed = container_ids(rt.clone(), filter).await;
    for c in &made {
        assert!(listed.contains(c), "{c} created on the full disk is gone");
    }
    std::fs::remove_file(&filler).expect("free the disk");
    let created = create_container(&mut rt, &id, &pod, container_config("after", &["true"])).await;
    assert!(created.is_ok(), "{created:?}");
    remove_pod(&mut rt, &id).await;
    drop(front);
}

/// Container `container`'s state in its shim's memory (`shim-manager inspect`), which may be
/// ahead of what the shim reports.
fn in_memory_state(front: &Front, pod: &str, container: &str) -> Option<ContainerState> {
    let out = std::process::Command::new(dockpod_tests::binaries::binary("shim-manager"))
        .arg("inspect")
        .arg("--run-directory")
        .arg(front.run_dir())
        .arg(pod)
        .output()
        .expect("shim-manager inspect");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let state = json["pod"]["containers"][container]["state"].as_i64()?;
    ContainerState::try_from(state as i32).ok()
}

/// The one pod directory under `root`.
fn shim_dir(root: &std::path::Path) -> String {
    let dirs: Vec<String> = std::fs::read_dir(root.join("pods"))
        .expect("pods directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// One container whose last log lines cannot reach their stalled disk does not hold up the
/// exit of another: the exit of the container on the healthy disk is reported while the
/// other's, which waits for its log to drain, is not yet.
#[tokio::test]
async fn an_exit_waiting_on_its_log_delays_no_other_exit() {
    let disk = LoopFs::new(64);
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    // The slow container's log directory is on the disk that will stall.
    std::os::unix::fs::symlink(disk.path(), logs.path().join("slow")).expect("symlink");
    let mut rt = front.runtime();
    let pod = pod_config("drain", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let chatty = "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.01; done";
    let slow = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("slow", &["sh", "-c", chatty]),
    )
    .await;
    let quick = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("quick", &["sleep", "3600"]),
    )
    .await;
    let slow_log = disk.path().join("0.log");
    dockpod_tests::wait::wait_until("the slow container's first lines", SECS, || {
        let started = std::fs::metadata(&slow_log).is_ok_and(|m| m.len() > 0);
        async move { started.then_some(()) }
    })
    .await;

    let frozen = disk.freeze();
    let docker = dockpod_tests::docker::docker().await;
    // The slow container dies first, so its exit is the first event the shim reads.
    docker
        .kill_container(
            &slow,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("kill the slow container");
    dockpod_tests::wait::wait_until("the slow container's exit in Docker", SECS, || {
        let docker = docker.clone();
        let slow = slow.clone();
        async move {
            let running = docker
                .inspect_container(&slow, None)
                .await
                .ok()?
                .state?
                .running?;
            (!running).then_some(())
        }
    })
    .await;
    docker
        .kill_container(
            &quick,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("kill the quick container");
    // The slow exit waits (up to 10 s) for lines its disk cannot take; the quick one is read
    // and reported meanwhile.
    wait_exited(&rt, &quick, SECS).await;
    assert_eq!(
        status(&mut rt, &slow).await.state,
        ContainerState::ContainerRunning as i32,
        "the slow exit was recorded first: the quick exit waited for it"
    );
    drop(frozen);
    wait_exited(&rt, &slow, SECS).await;
    remove_pod(&mut rt, &id).await;
}
