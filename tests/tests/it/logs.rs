//! CRI log files written by the pod's shim from Docker's log: the exact format, streams kept
//! apart, long lines in `P` pieces, complete before the exit is reported, rotation through
//! ReopenContainerLog, and no line lost or doubled when the shim or the front is killed.

use std::path::Path;
use std::time::Duration;

use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::crilog::{
    assert_each_once, assert_same_as_docker, docker_numbers, lines, numbers, parse, COUNTER,
};
use dockpod_tests::front::Front;
use dockpod_tests::procs;
use dockpod_tests::wait::wait_until;
use nix::sys::signal::Signal;
use tonic::Code;

const SECS: Duration = Duration::from_secs(60);

/// Kills the pod's shim with SIGKILL and runs `meanwhile` while it is down (the front is
/// paused so that it cannot start the new shim early), then lets the front start the new
/// shim; returns how many counted lines the file at `path` held while no shim ran.
async fn kill_shim_and_wait_respawn(
    front: &Front,
    rt: &mut dockpod_proto::cri::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    pod: &str,
    path: &Path,
    meanwhile: impl FnOnce(),
) -> usize {
    let shim = shim_pid(rt, pod).await;
    front.signal(Signal::SIGSTOP);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim as i32), Signal::SIGKILL)
        .expect("kill -9 the shim");
    wait_until("the shim to die", SECS, || async move {
        (!procs::alive(shim)).then_some(())
    })
    .await;
    let before = numbers(&[path]).len();
    meanwhile();
    front.signal(Signal::SIGCONT);
    wait_new_shim(rt, pod, shim, SECS).await;
    before
}

#[tokio::test]
async fn writes_the_cri_format_completely_before_the_exit_is_reported() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("logfmt", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    std::fs::create_dir(logs.path().join("app")).expect("kubelet creates the container's dir");
    let mut config = container_config("app", &["sh", "-c"]);
    config.args = vec![
        "echo out; echo err >&2; head -c 102400 /dev/zero | tr '\\0' a; echo; echo -n tail-no-newline".into(),
    ];
    let c = run_container(&mut rt, &id, &pod, config).await;
    let status = wait_exited(&rt, &c, SECS).await;
    let path = logs.path().join("app/0.log");
    assert_eq!(status.log_path, path.display().to_string());
    // Read right at the first "exited": the log must already be whole.
    let records = parse(&path);
    let out = lines(&records, "stdout");
    assert_eq!(lines(&records, "stderr"), vec!["err".to_string()]);
    assert_eq!(
        out.len(),
        3,
        "{:?}",
        out.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    assert_eq!(out[0], "out");
    assert_eq!(
        out[1],
        "a".repeat(102400),
        "the 100 KiB line did not reassemble"
    );
    assert_eq!(out[2], "tail-no-newline");
    let long_pieces = records
        .iter()
        .filter(|r| r.stream == "stdout" && !r.full)
        .count();
    assert!(
        long_pieces >= 6,
        "a 100 KiB line should come in 16 KiB P pieces"
    );
    assert!(records.iter().all(|r| r.content.len() <= 16 * 1024));
    remove_pod(&mut rt, &id).await;
}

/// A pod whose container `app` counts lines (`COUNTER`) into `<logs>/app/0.log`: the pod's
/// and container's IDs and the log file's path.
async fn counting_pod(
    rt: &mut dockpod_proto::cri::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    name: &str,
    logs: &Path,
) -> (String, String, std::path::PathBuf) {
    let pod = pod_config(name, logs);
    let id = run_pod(rt, &pod).await;
    std::fs::create_dir(logs.join("app")).expect("container dir");
    let mut config = container_config("app", &["sh", "-c"]);
    config.args = vec![COUNTER.into()];
    let c = run_container(rt, &id, &pod, config).await;
    (id, c, logs.join("app/0.log"))
}

#[tokio::test]
async fn reopen_after_rename_continues_in_a_fresh_file() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c, path) = counting_pod(&mut rt, "logrot", logs.path()).await;
    let rotated = logs.path().join("app/0.log.20261127-000000");
    wait_until("some lines", SECS, || async {
        (numbers(&[&path]).len() >= 10).then_some(())
    })
    .await;
    std::fs::rename(&path, &rotated).expect("rotate");
    rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: c.clone(),
    })
    .await
    .expect("ReopenContainerLog");
    wait_until("lines in the new file", SECS, || async {
        (numbers(&[&path]).len() >= 10).then_some(())
    })
    .await;
    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    wait_exited(&rt, &c, SECS).await;
    let all = numbers(&[&rotated, &path]);
    assert_each_once(&all);
    assert_same_as_docker(&c, &all, &docker_numbers(&c).await);

    // A stopped container's log is not reopened, and no new file appears.
    std::fs::rename(&path, logs.path().join("app/0.log.old")).expect("rotate again");
    let err = rt
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: c.clone(),
        })
        .await
        .expect_err("reopen of a stopped container");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        !path.exists(),
        "a log file was created for a stopped container"
    );
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn no_line_lost_or_doubled_when_the_shim_or_the_front_is_killed() {
    let mut front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c, path) = counting_pod(&mut rt, "logkill", logs.path()).await;
    let grows = |at_least: usize| {
        let path = path.clone();
        async move { (numbers(&[&path]).len() >= at_least).then_some(()) }
    };
    wait_until("first lines", SECS, || grows(10)).await;

    // The shim dies; the container keeps counting. The new shim the front starts, with the
    // same identity and state, resumes the file where it stopped.
    let before = kill_shim_and_wait_respawn(&front, &mut rt, &id, &path, || ()).await;
    wait_until("lines after the respawn", SECS, || grows(before + 20)).await;

    // The front dies and comes back; the shim goes on writing throughout.
    front.kill().await;
    let before = numbers(&[&path]).len();
    wait_until("lines while the front is down", SECS, || grows(before + 10)).await;
    front.restart().await;
    let mut rt = front.runtime();
    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    wait_exited(&rt, &c, SECS).await;
    let written = numbers(&[&path]);
    assert_each_once(&written);
    assert_same_as_docker(&c, &written, &docker_numbers(&c).await);
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn rotated_files_and_a_shim_restart_together_hold_every_line_once() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c, path) = counting_pod(&mut rt, "logrotkill", logs.path()).await;
    let first = logs.path().join("app/0.log.1");
    let second = logs.path().join("app/0.log.2");
    let grows = |at_least: usize| {
        let path = path.clone();
        async move { (numbers(&[&path]).len() >= at_least).then_some(()) }
    };
    let reopen = |rt: &mut dockpod_proto::cri::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >| {
        let request = ReopenContainerLogRequest {
            container_id: c.clone(),
        };
        let mut rt = rt.clone();
        async move { rt.reopen_container_log(request).await.expect("reopen") }
    };
    wait_until("first lines", SECS, || grows(10)).await;

    // Rotated, then the shim restarts: the fresh file's tail alone would not say what the
    // rotated one holds.
    std::fs::rename(&path, &first).expect("rotate");
    reopen(&mut rt).await;
    wait_until("lines in the second file", SECS, || grows(10)).await;
    let before = kill_shim_and_wait_respawn(&front, &mut rt, &id, &path, || ()).await;
    wait_until("lines after the respawn", SECS, || grows(before + 10)).await;

    // The shim dies between the kubelet's rename and its reopen.
    kill_shim_and_wait_respawn(&front, &mut rt, &id, &path, || {
        std::fs::rename(&path, &second).expect("rotate again")
    })
    .await;
    reopen(&mut rt).await;
    wait_until("lines in the third file", SECS, || grows(10)).await;

    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    wait_exited(&rt, &c, SECS).await;
    let written = numbers(&[&first, &second, &path]);
    assert_each_once(&written);
    assert_same_as_docker(&c, &written, &docker_numbers(&c).await);
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn a_container_writing_flat_out_does_not_grow_the_shims_memory() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("logflood", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    std::fs::create_dir(logs.path().join("app")).expect("container dir");
    let config = container_config("app", &["yes", &"0123456789abcdef".repeat(8)]);
    let c = run_container(&mut rt, &id, &pod, config).await;
    let path = logs.path().join("app/0.log");
    let shim = shim_pid(&mut rt, &id).await;
    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let rss = || {
        dockpod_proto::procfs::memory(shim)
            .expect("shim memory")
            .rss_bytes
    };
    const MB: u64 = 1 << 20;
    // After a first stretch the shim's buffers are at their working size; from there on the
    // volume written must not show in its memory.
    let mut peak_early = 0;
    wait_until("8 MiB written", SECS, || {
        peak_early = peak_early.max(rss());
        let n = size(&path);
        async move { (n >= 8 * MB).then_some(()) }
    })
    .await;
    let mut peak = peak_early;
    wait_until("40 MiB written", Duration::from_secs(120), || {
        peak = peak.max(rss());
        let n = size(&path);
        async move { (n >= 40 * MB).then_some(()) }
    })
    .await;
    eprintln!(
        "shim RSS: {} KiB after 8 MiB of log, peak {} KiB by 40 MiB",
        peak_early >> 10,
        peak >> 10
    );
    assert!(
        peak < peak_early + 8 * MB,
        "shim RSS grew from {} MiB to {} MiB while 32 MiB of log went through",
        peak_early / MB,
        peak / MB
    );
    rt.stop_container(StopContainerRequest {
        container_id: c,
        timeout: 0,
    })
    .await
    .expect("stop");
    remove_pod(&mut rt, &id).await;
}

/// The most the shim's resident memory may ever reach, from its start (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("shim status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[tokio::test]
async fn a_tty_line_of_100_mib_is_cut_into_partial_records_in_bounded_memory() {
    const TOTAL: usize = 100 << 20;
    // The bound for a shim's memory, whatever its containers write.
    const RSS_BOUND: u64 = 16 << 20;
    const RECORD: usize = 16 * 1024;
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("ttyline", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    std::fs::create_dir(logs.path().join("app")).expect("container dir");
    let script = format!("yes x | tr -d '\\n' | head -c {TOTAL}");
    let mut config = container_config("app", &["sh", "-c", &script]);
    config.tty = true;
    let c = run_container(&mut rt, &id, &pod, config).await;
    let shim = shim_pid(&mut rt, &id).await;
    // Generous for a loaded machine: Docker and the shim each write 100 MiB.
    wait_exited(&rt, &c, Duration::from_secs(300)).await;
    let peak = peak_rss(shim);
    let records = parse(&logs.path().join("app/0.log"));
    let total: usize = records.iter().map(|r| r.content.len()).sum();
    eprintln!(
        "{} records for {} MiB without a newline; shim peak RSS {} KiB",
        records.len(),
        total >> 20,
        peak >> 10
    );
    assert_eq!(total, TOTAL, "every byte of the line is in the CRI log");
    assert!(records.iter().all(|r| r.stream == "stdout"));
    assert!(
        records.iter().all(|r| r.content.len() <= RECORD),
        "a record longer than 16 KiB"
    );
    // The line never ended: every piece is partial (the last may be closed at the exit).
    let partial = records.iter().filter(|r| !r.full).count();
    assert!(
        partial >= records.len() - 1,
        "{partial} of {} partial",
        records.len()
    );
    assert!(
        records.iter().all(|r| r.content.bytes().all(|b| b == b'x')),
        "content other than the container's output"
    );
    assert!(
        peak < RSS_BOUND,
        "the shim's RSS reached {} KiB copying one 100 MiB line",
        peak >> 10
    );
    remove_pod(&mut rt, &id).await;
}

/// A container's log checkpoint (where its follower is in Docker's log, in the pod's state
/// directory) goes with the container: RemoveContainer's save forgets it, and the record's
/// writer unlinks the file right after.
#[tokio::test]
async fn a_removed_containers_log_checkpoint_goes_with_it() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();
    let pod = pod_config("checkpoint", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let c = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("count", &["sh", "-c", COUNTER]),
    )
    .await;
    let pods = dockpod_tests::list_dir(&front.root_dir().join("pods"));
    assert_eq!(pods.len(), 1, "{pods:?}");
    let checkpoint = front
        .root_dir()
        .join("pods")
        .join(&pods[0])
        .join("logs")
        .join(format!("{c}.json"));
    wait_until("the container's log checkpoint", SECS, || {
        let there = checkpoint.exists();
        async move { there.then_some(()) }
    })
    .await;
    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    rt.remove_container(RemoveContainerRequest { container_id: c })
        .await
        .expect("RemoveContainer");
    // Unlinked just after the answer, by the writer that saved the removal.
    wait_until("the log checkpoint's removal", SECS, || {
        let gone = !checkpoint.exists();
        async move { gone.then_some(()) }
    })
    .await;
    remove_pod(&mut rt, &id).await;
}
