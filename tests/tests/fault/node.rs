//! Faults under a node's worth of pods (`fleet`): the front killed, each shim killed while a
//! container exits, a shim frozen, every shim upgraded, dockerd restarted. No container is
//! restarted by any of them, and every status, event and log line is right afterwards.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use dockpod_proto::cri::*;
use dockpod_tests::binaries::binary;
use dockpod_tests::cri::*;
use dockpod_tests::crilog::{assert_same_as_docker, docker_numbers, numbers};
use dockpod_tests::docker::docker;
use dockpod_tests::dockerd;
use dockpod_tests::procs;
use dockpod_tests::streaming::spdy;
use dockpod_tests::wait::wait_until;
use futures_util::future::join_all;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::fleet::{now_ns, Fleet, FleetPod, EXIT_CODE, PODS, SECS};

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// Waits until enough counted lines are in every pod's log.
async fn counters_logging(fleet: &Fleet, at_least: usize) {
    for pod in &fleet.pods {
        let path = pod.log_dir.join("count/0.log");
        wait_until("counted lines", SECS, || {
            let path = path.clone();
            async move { (numbers(&[&path]).len() >= at_least).then_some(()) }
        })
        .await;
    }
}

/// Stops every counter and checks each pod's log holds every line exactly once.
async fn assert_no_log_line_lost(fleet: &Fleet) {
    let rt = fleet.runtime();
    join_all(fleet.pods.iter().map(|p| {
        let mut rt = rt.clone();
        async move {
            rt.stop_container(StopContainerRequest {
                container_id: p.counter.clone(),
                timeout: 0,
            })
            .await
            .expect("stop the counter");
        }
    }))
    .await;
    for pod in &fleet.pods {
        wait_exited(&rt, &pod.counter, SECS).await;
        let cri = numbers(&[&pod.log_dir.join("count/0.log")]);
        let docker = docker_numbers(&pod.counter).await;
        assert_same_as_docker(&pod.counter, &cri, &docker);
        assert!(!cri.is_empty(), "{}: no line at all", pod.counter);
        assert!(
            cri.windows(2).all(|w| w[0] < w[1]),
            "{}: lines out of order",
            pod.counter
        );
    }
}

/// Subscribes to GetContainerEvents, stops `pod`'s counter and waits for its stopped event.
async fn assert_stop_event_arrives(fleet: &Fleet, pod: &FleetPod) {
    let mut rt = fleet.runtime();
    let mut events = rt
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    rt.stop_container(StopContainerRequest {
        container_id: pod.counter.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    wait_stopped_event(&mut events, &pod.counter, SECS)
        .await
        .expect("the stopped event within a minute");
}

#[tokio::test]
async fn killing_and_restarting_the_front_disturbs_no_pod() {
    let _slot = crate::slot().await;
    let mut fleet = Fleet::start("frontkill").await;
    counters_logging(&fleet, 5).await;
    let before = fleet.statuses().await;
    let shims = sorted_pids(fleet.front.shim_pids());

    fleet.front.kill().await;
    counters_logging(&fleet, 25).await;
    fleet.front.restart().await;

    assert_eq!(
        sorted_pids(fleet.front.shim_pids()),
        shims,
        "shims kept running"
    );
    fleet.assert_unchanged(&before).await;
    assert_stop_event_arrives(&fleet, &fleet.pods[0]).await;
    assert_no_log_line_lost(&fleet).await;
    fleet.remove().await;
}

fn sorted_pids(mut pids: Vec<u32>) -> Vec<u32> {
    pids.sort();
    pids
}

#[tokio::test]
async fn each_shim_killed_while_a_container_exits_comes_back_with_the_exit() {
    let _slot = crate::slot().await;
    let fleet = Fleet::start("shimkill").await;
    let mut rt = fleet.runtime();
    let before = fleet.statuses().await;
    let mut events = rt
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    for pod in &fleet.pods {
        let old = shim_pid(&mut rt, &pod.id).await;
        // The front is paused so the exit surely happens while no shim watches.
        fleet.front.signal(Signal::SIGSTOP);
        signal(old, Signal::SIGKILL);
        wait_until("the shim to die", SECS, || async move {
            (!procs::alive(old)).then_some(())
        })
        .await;
        let (after, by) = fleet.make_exit(pod).await;
        fleet.front.signal(Signal::SIGCONT);
        wait_new_shim(&rt, &pod.id, old, SECS).await;

        let exited = wait_exited(&rt, &pod.exiter, SECS).await;
        assert_eq!(exited.exit_code, EXIT_CODE, "{}", pod.exiter);
        assert!(
            (after..=by).contains(&exited.finished_at),
            "finished at {} outside [{after}, {by}] (now {})",
            exited.finished_at,
            now_ns()
        );
        assert_eq!(exited.started_at, before[&pod.exiter].started_at);
        let counter = status(&mut rt, &pod.counter).await;
        assert_eq!(counter.state, ContainerState::ContainerRunning as i32);
        assert_eq!(counter.started_at, before[&pod.counter].started_at);
        // The exit no shim saw happen is announced once the new shim has looked.
        wait_stopped_event(&mut events, &pod.exiter, SECS)
            .await
            .expect("the exiter's stopped event");
    }
    assert!(
        fleet.front.log().matches("pod shim restarted").count() >= PODS,
        "the front restarted every shim"
    );
    assert_no_log_line_lost(&fleet).await;
    fleet.remove().await;
}

#[tokio::test]
async fn a_frozen_shim_delays_no_other_pod() {
    let _slot = crate::slot().await;
    let fleet = Fleet::start("frozen").await;
    let mut rt = fleet.runtime();
    let frozen = &fleet.pods[0];
    let shim = shim_pid(&mut rt, &frozen.id).await;
    signal(shim, Signal::SIGSTOP);
    let started = Instant::now();
    let listed = container_ids(rt.clone(), ContainerFilter::default()).await;
    let took = started.elapsed();
    let others = fleet.pods[1..].iter().map(|p| {
        let mut rt = rt.clone();
        let container_id = p.counter.clone();
        async move {
            rt.container_status(ContainerStatusRequest {
                container_id,
                verbose: false,
            })
            .await
        }
    });
    // The frozen shim never answers while frozen, so any answer shows nothing waited for it;
    // the bound only tells that from a wait as long as the kubelet's 2-minute deadline, with
    // room for a loaded machine (the front's own fallback comes after 500 ms).
    const ANSWERED: Duration = Duration::from_secs(20);
    let answered = tokio::time::timeout(ANSWERED, join_all(others)).await;
    signal(shim, Signal::SIGCONT);
    eprintln!("with a frozen shim, ListContainers took {took:?}");
    assert!(took < ANSWERED, "ListContainers took {took:?}");
    for pod in &fleet.pods[1..] {
        for c in [&pod.counter, &pod.exiter] {
            assert!(listed.contains(c), "{c} missing from ListContainers");
        }
    }
    let answered = answered.expect("other pods' statuses answered while one shim is frozen");
    assert!(answered.iter().all(Result::is_ok), "{answered:?}");
    fleet.remove().await;
}

/// Runs `shim-manager upgrade-shims` against the fleet's front.
async fn upgrade_shims(fleet: &Fleet) -> Output {
    let endpoint = format!("unix://{}", fleet.front.socket().display());
    tokio::process::Command::new(binary("shim-manager"))
        .args(["upgrade-shims", "--container-runtime-endpoint", &endpoint])
        .output()
        .await
        .expect("run upgrade-shims")
}

#[tokio::test]
async fn upgrade_shims_replaces_every_idle_shim_and_leaves_containers_alone() {
    let _slot = crate::slot().await;
    let fleet = Fleet::start("upgrade").await;
    let mut rt = fleet.runtime();
    let busy = &fleet.pods[1];
    let url = rt
        .exec(ExecRequest {
            container_id: busy.exiter.clone(),
            cmd: vec!["sh".into()],
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    let mut session = spdy::remote(&url, true, false).await;
    let stdin = session.stdin.take().expect("stdin");
    stdin.send(b"echo before-$((1+1))\n").await;
    session.stdout.read_until(b"before-2").await;
    let before = fleet.statuses().await;
    let mut old = BTreeMap::new();
    for pod in &fleet.pods {
        old.insert(pod.id.clone(), shim_pid(&mut rt, &pod.id).await);
    }

    let out = upgrade_shims(&fleet).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a busy pod is reported: {stdout}");
    assert_eq!(stdout.matches("upgraded ").count(), PODS - 1, "{stdout}");
    assert!(
        stdout.contains(&format!("busy     {}", busy_name(busy))),
        "{stdout}"
    );
    for pod in &fleet.pods {
        let now = shim_pid(&mut rt, &pod.id).await;
        if pod.id == busy.id {
            assert_eq!(now, old[&pod.id], "the busy pod keeps its shim");
        } else {
            assert_ne!(now, old[&pod.id], "pod {} has a new shim", pod.id);
        }
    }
    // The session on the busy pod never noticed.
    stdin.send(b"echo after-$((2+2)); exit 0\n").await;
    let done = session.finish().await;
    assert!(done.stdout().contains("after-4"), "{:?}", done.stdout());
    fleet.assert_unchanged(&before).await;

    // With the session over, the busy pod is replaced too.
    let out = wait_until("upgrade-shims to replace every shim", SECS, || async {
        let out = upgrade_shims(&fleet).await;
        out.status.success().then_some(out)
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("upgraded ").count(), PODS, "{stdout}");
    fleet.assert_unchanged(&before).await;
    assert_stop_event_arrives(&fleet, &fleet.pods[0]).await;
    assert_no_log_line_lost(&fleet).await;
    fleet.remove().await;
}

fn busy_name(pod: &FleetPod) -> String {
    let meta = pod.config.metadata.as_ref().expect("metadata");
    format!("{}/{}", meta.namespace, meta.name)
}

#[tokio::test]
async fn twenty_pods_are_right_after_a_dockerd_restart() {
    let _slot = crate::slot().await;
    assert!(
        dockerd::live_restore(&docker().await).await,
        "contrib/dockerd.sh starts dockerd with --live-restore"
    );
    let fleet = Fleet::start("dockerd").await;
    let rt = fleet.runtime();
    fleet.make_exit(&fleet.pods[0]).await;
    wait_exited(&rt, &fleet.pods[0].exiter, SECS).await;
    let before = fleet.statuses().await;

    dockerd::restart();

    // The shims reconnect in their own time; statuses must come back exactly as they were.
    wait_until("every status as before the restart", SECS, || async {
        (fleet.try_statuses().await? == before).then_some(())
    })
    .await;
    fleet.assert_unchanged(&before).await;
    // Exit tracking works again: an exit after the restart is seen with its code.
    fleet.make_exit(&fleet.pods[1]).await;
    let exited = wait_exited(&rt, &fleet.pods[1].exiter, SECS).await;
    assert_eq!(exited.exit_code, EXIT_CODE);
    assert_no_log_line_lost(&fleet).await;
    fleet.remove().await;
}
