//! The front as systemd runs it on a node: the pods' shims stay in the service's cgroup, as
//! containerd's shims stay in containerd.service's, and `KillMode=process` makes a stop or
//! restart of the service end the front alone. These tests need systemd as PID 1, so they are
//! ignored elsewhere and run in the cgroup v2 VM (`contrib/cgroup2-vm.sh`, step 4 of
//! `contrib/test.sh`, with `--include-ignored`).

use std::path::{Path, PathBuf};
use std::process::Command;

use dockpod_tests::cri::*;
use dockpod_tests::front::{exited_cleanly, Front};
use dockpod_tests::streaming::spdy;
use dockpod_tests::wait::wait_until;

const SECS: std::time::Duration = std::time::Duration::from_secs(60);

fn systemctl(args: &[&str]) {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .expect("systemctl");
    assert!(status.success(), "systemctl {args:?}: {status}");
}

/// A unit of the test's own in systemd's runtime directory, stopped and removed on drop.
struct Unit {
    name: String,
    path: PathBuf,
}

impl Unit {
    /// The shipped unit's settings, running `exec`.
    fn install(exec: &str) -> Unit {
        let name = format!("{}.service", dockpod_tests::unique("dockpod-test"));
        let path = Path::new("/run/systemd/system").join(&name);
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/dockpod.service"),
        )
        .expect("contrib/systemd/dockpod.service");
        assert!(shipped.contains("KillMode=process"), "{shipped}");
        let unit = format!(
            "[Unit]\nDescription=dockpod test front\n[Service]\nExecStart={exec}\nKillMode=process\nTimeoutStopSec=30\n"
        );
        std::fs::write(&path, unit).expect("write the unit");
        systemctl(&["daemon-reload"]);
        systemctl(&["start", &name]);
        Unit { name, path }
    }

    fn main_pid(&self) -> u32 {
        let out = Command::new("systemctl")
            .args(["show", "--property=MainPID", "--value", &self.name])
            .output()
            .expect("systemctl show");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a main PID")
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        let _ = Command::new("systemctl")
            .args(["stop", &self.name])
            .status();
        let _ = std::fs::remove_file(&self.path);
        let _ = Command::new("systemctl").arg("daemon-reload").status();
    }
}

/// The cgroup (v2) of a process.
fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

async fn answers(front: &Front) {
    wait_until("the front under systemd to answer", SECS, || {
        let mut rt = front.runtime();
        async move {
            rt.status(dockpod_proto::cri::StatusRequest::default())
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs systemd as PID 1: runs in the cgroup v2 VM (contrib/cgroup2-vm.sh)"]
async fn a_restart_through_systemd_leaves_every_pod_shim_and_stream_running() {
    assert!(
        Path::new("/run/systemd/system").exists(),
        "systemd is not PID 1 here: run this test in the cgroup v2 VM"
    );
    // The test's own front, its directories and flags, run by systemd instead of the test.
    let mut front = Front::start(&[]).await;
    assert!(exited_cleanly(&front.terminate().await));
    let command = front.command();
    let exec = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let unit = Unit::install(&exec);
    answers(&front).await;

    let mut rt = front.runtime();
    let logs = tempfile::tempdir().expect("logs");
    let pod = pod_config("systemd", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let c = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("main", &["sleep", "3600"]),
    )
    .await;
    let shim = shim_pid(&mut rt, &id).await;
    let service = format!("/system.slice/{}", unit.name);
    assert!(
        cgroup_of(shim).contains(&service),
        "the shim lives in the service: {}",
        cgroup_of(shim)
    );
    let url = exec_url(&mut rt, &c, &["cat"], true, false).await;
    let mut session = spdy::remote(&url, true, false).await;
    let stdin = session.stdin.take().expect("stdin");
    stdin.send(b"before\n").await;
    session.stdout.read_until(b"before\n").await;

    let first = unit.main_pid();
    systemctl(&["restart", &unit.name]);
    answers(&front).await;
    assert_ne!(unit.main_pid(), first, "a new front");
    assert!(
        dockpod_tests::procs::alive(shim),
        "the pod's shim outlives the restart"
    );
    let mut rt = front.runtime();
    assert_eq!(shim_pid(&mut rt, &id).await, shim);
    assert!(cgroup_of(shim).contains(&service), "{}", cgroup_of(shim));
    assert_eq!(
        status(&mut rt, &c).await.state,
        dockpod_proto::cri::ContainerState::ContainerRunning as i32
    );
    stdin.send(b"after\n").await;
    stdin.finish().await;
    let out = session.finish().await;
    assert_eq!(
        out.stdout(),
        "after\n",
        "the stream went on across the restart"
    );
    assert_eq!(out.exit_code(), 0);
    remove_pod(&mut rt, &id).await;
    drop(unit);
}
