//! The operator subcommands against a real server: `ps` and `inspect` read the pods' shims,
//! `demo` takes a pod through its life and leaves nothing behind.

use std::process::Command;

use dockpod_tests::binaries::binary;
use dockpod_tests::cri::*;
use dockpod_tests::docker::instance_containers;
use dockpod_tests::front::Front;

fn shim_manager(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("shim-manager"))
        .args(args)
        .output()
        .expect("run shim-manager");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn ps_and_inspect_show_each_pods_shim() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let busy = pod_config("ps-busy", logs.path());
    let idle = pod_config("ps-idle", logs.path());
    let busy_id = run_pod(&mut rt, &busy).await;
    let idle_id = run_pod(&mut rt, &idle).await;
    run_container(
        &mut rt,
        &busy_id,
        &busy,
        container_config("app", &["sleep", "3600"]),
    )
    .await;
    let busy_pid = shim_pid(&mut rt, &busy_id).await;
    let run_dir = front.run_dir().display().to_string();

    let (ok, table, err) = shim_manager(&["ps", "--run-directory", &run_dir]);
    assert!(ok, "{err}");
    let name = |c: &k8s_cri::v1::PodSandboxConfig| {
        let m = c.metadata.as_ref().expect("meta");
        format!("{}/{}", m.namespace, m.name)
    };
    let busy_line = table
        .lines()
        .find(|l| l.contains(&name(&busy)))
        .expect("busy pod listed");
    assert!(busy_line.contains(&busy_id[..12]), "{busy_line}");
    assert!(busy_line.contains(&busy_pid.to_string()), "{busy_line}");
    assert!(busy_line.trim_end().ends_with("1/1"), "{busy_line}");
    assert!(
        busy_line.contains("MiB") || busy_line.contains("KiB"),
        "{busy_line}"
    );
    let idle_line = table
        .lines()
        .find(|l| l.contains(&name(&idle)))
        .expect("idle pod listed");
    assert!(idle_line.trim_end().ends_with("0/0"), "{idle_line}");

    let busy_name = busy.metadata.as_ref().expect("meta").name.clone();
    let (ok, json, err) = shim_manager(&["inspect", "--run-directory", &run_dir, &busy_name]);
    assert!(ok, "{err}");
    let view: serde_json::Value = serde_json::from_str(&json).expect("inspect prints JSON");
    assert_eq!(view["pod"]["sandbox_id"], busy_id.as_str());
    assert_eq!(view["shimPid"], busy_pid);
    assert_eq!(
        view["pod"]["containers"].as_object().map(|c| c.len()),
        Some(1)
    );
    let (ok, json, _) = shim_manager(&["inspect", "--run-directory", &run_dir, &idle_id[..8]]);
    assert!(ok);
    assert!(json.contains(&idle_id));
    let (ok, _, err) = shim_manager(&["inspect", "--run-directory", &run_dir, "no-such-pod"]);
    assert!(!ok);
    assert!(err.contains("no-such-pod"), "{err}");
    remove_pod(&mut rt, &busy_id).await;
    remove_pod(&mut rt, &idle_id).await;
}

#[tokio::test]
async fn demo_runs_a_pod_through_its_life() {
    let front = Front::start(&[]).await;
    let endpoint = format!("unix://{}", front.socket().display());
    let run_dir = front.run_dir().display().to_string();
    let (ok, out, err) = shim_manager(&[
        "demo",
        "--container-runtime-endpoint",
        &endpoint,
        "--run-directory",
        &run_dir,
    ]);
    assert!(ok, "demo failed:\n{out}\n{err}");
    for expected in [
        "RunPodSandbox",
        "SHIM PID",
        "dockpod-demo/hello",
        "\"Hello from dockpod\"",
        "ContainerRunning",
        "RemovePodSandbox",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    assert!(instance_containers(&front.instance_id()).await.is_empty());
    assert!(front.shim_pids().is_empty());
}

/// The shipped unit stops the front alone (systemd's `KillMode=process`): what systemd then
/// does on `systemctl stop` is a SIGTERM to the front, after which every pod's shim must still
/// run and the next front must serve the same pods.
#[tokio::test]
async fn the_systemd_unit_stops_only_the_front_and_pods_outlive_it() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/dockpod.service"),
    )
    .expect("contrib/systemd/dockpod.service");
    let setting = |key: &str| {
        unit.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .next_back()
            .map(str::trim)
    };
    assert_eq!(setting("KillMode"), Some("process"));
    let exec = setting("ExecStart").expect("ExecStart");
    assert!(exec.ends_with("/shim-manager serve"), "{exec}");

    let mut front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("unit", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let shim = shim_pid(&mut rt, &id).await;
    assert!(dockpod_tests::front::exited_cleanly(
        &front.terminate().await
    ));
    assert!(
        dockpod_tests::procs::alive(shim),
        "the pod's shim outlives the front"
    );
    front.restart().await;
    let mut rt = front.runtime();
    assert_eq!(shim_pid(&mut rt, &id).await, shim);
    remove_pod(&mut rt, &id).await;
}

/// `--version` names the commit the binary was built from, so an operator can tell which
/// build a node runs.
#[test]
fn version_names_the_commit_it_was_built_from() {
    let (ok, out, err) = shim_manager(&["--version"]);
    assert!(ok, "{err}");
    let tree = env!("CARGO_MANIFEST_DIR");
    let commit = Command::new("git")
        .args(["-C", tree, "rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    assert_eq!(
        out.trim(),
        format!(
            "shim-manager {} (commit {commit})",
            env!("CARGO_PKG_VERSION")
        ),
        "a binary built before the last commit? rebuild with `cargo build --bins`"
    );
}

/// `--log-format json`: every line the front logs is one JSON object with its level and
/// message, as log shippers read them.
#[tokio::test]
async fn the_fronts_log_is_json_when_asked() {
    let front = Front::start(&["--log-format", "json"]).await;
    let mut rt = front.runtime();
    rt.version(k8s_cri::v1::VersionRequest::default())
        .await
        .expect("Version");
    let log = front.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the front logged nothing");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "no level: {line}");
        assert!(value["fields"]["message"].is_string(), "no message: {line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("listening")),
        "the listening line is missing: {log}"
    );
}
