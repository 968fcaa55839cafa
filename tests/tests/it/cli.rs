//! The operator subcommands against a real server: `ps`, `top` and `inspect` read the pods' shims,
//! `demo` takes a pod through its life and leaves nothing behind.

use std::process::Command;

use dockpod_tests::binaries::binary;
use dockpod_tests::cri::*;
use dockpod_tests::docker::{docker, instance_containers};
use dockpod_tests::front::Front;
use dockpod_tests::streaming::spdy;
use dockpod_tests::wait::wait_until;

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
    // Named so that the order by name (idle first) differs from the order by restarts.
    let busy = pod_config("ps-b-busy", logs.path());
    let idle = pod_config("ps-a-idle", logs.path());
    let busy_id = run_pod(&mut rt, &busy).await;
    let idle_id = run_pod(&mut rt, &idle).await;
    run_container(
        &mut rt,
        &busy_id,
        &busy,
        container_config("app", &["sleep", "3600"]),
    )
    .await;
    // The kubelet's restart of `app`: a new container with the next attempt, beside the old.
    let mut again = container_config("app", &["sleep", "3600"]);
    again.metadata.as_mut().expect("meta").attempt = 1;
    again.log_path = "app/1.log".into();
    let second = run_container(&mut rt, &busy_id, &busy, again).await;
    let busy_pid = shim_pid(&mut rt, &busy_id).await;
    let run_dir = front.run_dir().display().to_string();

    // An exec session held open: `ps` counts it while it lasts.
    let url = exec_url(&mut rt, &second, &["cat"], true, false).await;
    let mut session = spdy::remote(&url, true, false).await;
    let stdin = session.stdin.take().expect("stdin");
    stdin.send(b"ready\n").await;
    session.stdout.read_until(b"ready\n").await;

    let (ok, table, err) = shim_manager(&["ps", "--run-directory", &run_dir]);
    assert!(ok, "{err}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "POD",
            "SANDBOX",
            "SHIM",
            "PID",
            "RSS",
            "PSS",
            "UPTIME",
            "CONTAINERS",
            "RESTARTS",
            "SESSIONS"
        ]
    );
    let name = |c: &dockpod_proto::cri::PodSandboxConfig| {
        let m = c.metadata.as_ref().expect("meta");
        format!("{}/{}", m.namespace, m.name)
    };
    let cells = |line: &str| -> Vec<String> { line.split_whitespace().map(String::from).collect() };
    let busy_line = table
        .lines()
        .find(|l| l.contains(&name(&busy)))
        .expect("busy pod listed");
    let busy_cells = cells(busy_line);
    assert_eq!(busy_cells[1], busy_id[..12], "{busy_line}");
    assert_eq!(busy_cells[2], busy_pid.to_string(), "{busy_line}");
    assert!(
        busy_cells[3].ends_with("MiB") || busy_cells[3].ends_with("KiB"),
        "{busy_line}"
    );
    assert_eq!(busy_cells[6..], ["2/2", "1", "1"], "{busy_line}");
    let idle_line = table
        .lines()
        .find(|l| l.contains(&name(&idle)))
        .expect("idle pod listed");
    assert_eq!(cells(idle_line)[6..], ["0/0", "0", "0"], "{idle_line}");

    let order = |sort: &str| -> Vec<String> {
        let (ok, json, err) = shim_manager(&[
            "ps",
            "--run-directory",
            &run_dir,
            "-o",
            "json",
            "--sort",
            sort,
        ]);
        assert!(ok, "{err}");
        let pods: serde_json::Value = serde_json::from_str(&json).expect("ps -o json prints JSON");
        pods.as_array()
            .expect("an array")
            .iter()
            .map(|p| p["sandboxId"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(order("name"), [idle_id.clone(), busy_id.clone()]);
    assert_eq!(order("restarts"), [busy_id.clone(), idle_id.clone()]);
    assert_eq!(order("sessions"), [busy_id.clone(), idle_id.clone()]);

    let (ok, json, err) = shim_manager(&["ps", "--run-directory", &run_dir, "--output", "json"]);
    assert!(ok, "{err}");
    let pods: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let busy_json = pods
        .as_array()
        .and_then(|a| a.iter().find(|p| p["sandboxId"] == busy_id.as_str()))
        .expect("busy pod in the JSON");
    assert_eq!(busy_json["shimPid"], busy_pid);
    assert_eq!(busy_json["restarts"], 1);
    assert_eq!(busy_json["streamingSessions"], 1);
    assert_eq!(busy_json["containersRunning"], 2);
    assert!(
        busy_json["rssBytes"].as_u64().unwrap_or(0) > 0,
        "{busy_json}"
    );

    let (ok, wide, err) = shim_manager(&["ps", "--run-directory", &run_dir, "-o", "wide"]);
    assert!(ok, "{err}");
    let wide_line = wide
        .lines()
        .find(|l| l.contains(&busy_id))
        .expect("full ID in wide");
    let socket = busy_json["socket"].as_str().expect("socket");
    assert!(wide_line.ends_with(socket), "{wide_line}");

    // The session's end is seen at once: the count is the shim's live one.
    stdin.finish().await;
    session.finish().await.assert_exit(0);
    let run_dir_path = front.run_dir();
    wait_until(
        "ps to count no session",
        std::time::Duration::from_secs(30),
        || {
            let (_, json, _) = shim_manager(&[
                "ps",
                "--run-directory",
                &run_dir_path.display().to_string(),
                "-o",
                "json",
            ]);
            let pods: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
            let open = pods.as_array().map_or(1, |a| {
                a.iter()
                    .map(|p| p["streamingSessions"].as_u64().unwrap_or(1))
                    .sum::<u64>()
            });
            std::future::ready((open == 0).then_some(()))
        },
    )
    .await;

    let busy_name = busy.metadata.as_ref().expect("meta").name.clone();
    let (ok, json, err) = shim_manager(&["inspect", "--run-directory", &run_dir, &busy_name]);
    assert!(ok, "{err}");
    let view: serde_json::Value = serde_json::from_str(&json).expect("inspect prints JSON");
    assert_eq!(view["pod"]["sandbox_id"], busy_id.as_str());
    assert_eq!(view["shimPid"], busy_pid);
    assert_eq!(
        view["pod"]["containers"].as_object().map(|c| c.len()),
        Some(2)
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

/// `top` lists what the kernel accounts to each container: a child a container's process
/// forked is listed under that container, below the pod's shim and its sandbox.
#[tokio::test]
async fn top_lists_each_containers_processes_below_the_shim() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("top", logs.path());
    let pod_id = run_pod(&mut rt, &pod).await;
    let parent = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("parent", &["sh", "-c", "sleep 3600 & wait"]),
    )
    .await;
    let single = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("single", &["sleep", "3600"]),
    )
    .await;
    let shim = shim_pid(&mut rt, &pod_id).await;
    let docker = docker().await;
    let init_pid = |id: String| {
        let docker = docker.clone();
        async move {
            let state = docker
                .inspect_container(&id, None)
                .await
                .expect("inspect")
                .state
                .expect("state");
            u64::try_from(state.pid.expect("pid")).expect("a PID")
        }
    };
    let (sandbox_pid, parent_pid, single_pid) = (
        init_pid(pod_id.clone()).await,
        init_pid(parent.clone()).await,
        init_pid(single.clone()).await,
    );
    let run_dir = front.run_dir().display().to_string();
    let name = pod.metadata.as_ref().expect("meta").name.clone();
    let top = |output: &'static str| {
        let (ok, out, err) =
            shim_manager(&["top", "--run-directory", &run_dir, "-o", output, &name]);
        assert!(ok, "{err}");
        out
    };

    // sh forks its sleep a moment after the container starts.
    let view: serde_json::Value = wait_until(
        "top to list the forked child",
        std::time::Duration::from_secs(30),
        || {
            let view: serde_json::Value = serde_json::from_str(&top("json")).expect("top -o json");
            let forked = view["groups"].as_array().is_some_and(|g| {
                g.iter().any(|g| {
                    g["label"] == "parent"
                        && g["processes"].as_array().is_some_and(|p| p.len() == 2)
                })
            });
            std::future::ready(forked.then_some(view))
        },
    )
    .await;
    let groups = view["groups"].as_array().expect("groups");
    let labels: Vec<&str> = groups.iter().filter_map(|g| g["label"].as_str()).collect();
    assert_eq!(labels, ["(shim)", "(sandbox)", "parent", "single"]);
    let procs = |i: usize| {
        groups[i]["processes"]
            .as_array()
            .expect("processes")
            .clone()
    };
    let pids =
        |i: usize| -> Vec<u64> { procs(i).iter().filter_map(|p| p["pid"].as_u64()).collect() };
    assert_eq!(pids(0), [u64::from(shim)]);
    assert!(procs(0)[0]["command"]
        .as_str()
        .unwrap_or_default()
        .contains("pod-shim"));
    assert_eq!(groups[1]["id"], pod_id.as_str());
    assert!(pids(1).contains(&sandbox_pid), "{:?}", groups[1]);
    assert_eq!(groups[2]["id"], parent.as_str());
    let child = procs(2)
        .into_iter()
        .find(|p| p["pid"] != parent_pid)
        .expect("the child");
    assert!(pids(2).contains(&parent_pid), "{:?}", groups[2]);
    assert_eq!(child["ppid"], parent_pid, "{child}");
    assert_eq!(child["command"], "sleep 3600");
    assert_eq!(pids(3), [single_pid]);
    for p in groups
        .iter()
        .skip(1)
        .flat_map(|g| g["processes"].as_array().into_iter().flatten())
    {
        // busybox runs as root here; RSS is read from the kernel.
        assert_eq!(p["user"], "root", "{p}");
        assert!(p["rssBytes"].as_u64().unwrap_or(0) > 0, "{p}");
    }

    let text = top("table");
    let mut lines = text.lines();
    assert!(lines
        .next()
        .expect("title")
        .starts_with(&format!("POD dockpod-test/{name}")));
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "CONTAINER",
            "ID",
            "PID",
            "PPID",
            "USER",
            "%CPU",
            "TIME",
            "RSS",
            "COMMAND"
        ]
    );
    let first: Vec<&str> = lines
        .next()
        .expect("the shim's row")
        .split_whitespace()
        .collect();
    assert_eq!(first[..2], ["(shim)", &shim.to_string()]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("parent") && l.ends_with("sleep 3600")),
        "{text}"
    );

    // A stopped container is listed, with nothing in it.
    rt.stop_container(dockpod_proto::cri::StopContainerRequest {
        container_id: single.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    let view: serde_json::Value = serde_json::from_str(&top("json")).expect("top -o json");
    let stopped = &view["groups"][3];
    assert_eq!(stopped["note"], "not running", "{stopped}");
    assert_eq!(stopped["processes"], serde_json::json!([]));
    remove_pod(&mut rt, &pod_id).await;
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
    front.wait_shims_retired().await;
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
    assert_eq!(exec, "/usr/bin/shim-manager serve $DOCKPOD_OPTS");
    assert_eq!(
        setting("EnvironmentFile"),
        Some("-/etc/default/dockpod"),
        "the package's defaults file, optional"
    );

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

/// `--version` names the commit the binary was built from and the CRI release it speaks, so
/// an operator can tell which build a node runs and which kubelets it understands.
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
            "shim-manager {} (commit {commit}, cri-api {})",
            env!("CARGO_PKG_VERSION"),
            dockpod_proto::cri::API_VERSION
        ),
        "a binary built before the last commit? rebuild with `cargo build --bins`"
    );
}

/// `--log-format json`: every line the front and the pods' shims log is one JSON object with
/// its level and message, as log shippers read them.
#[tokio::test]
async fn the_fronts_log_is_json_when_asked() {
    let front = Front::start(&["--log-format", "json"]).await;
    let mut rt = front.runtime();
    rt.version(dockpod_proto::cri::VersionRequest::default())
        .await
        .expect("Version");
    let logs = tempfile::tempdir().expect("logs");
    let pod = pod_config("json-log", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let all_json = |what: &str, log: &str| {
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{what} logged nothing");
        for line in &lines {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"));
            assert!(value["level"].is_string(), "{what}: no level: {line}");
            assert!(
                value["fields"]["message"].is_string(),
                "{what}: no message: {line}"
            );
        }
    };
    let log = front.log();
    all_json("the front", &log);
    assert!(
        log.contains("listening"),
        "the listening line is missing: {log}"
    );
    // The shim's log is written by a thread of its own: its lines arrive shortly after.
    let pods = front.root_dir().join("pods");
    let shim_log = wait_until("the shim's log", std::time::Duration::from_secs(30), || {
        let log = dockpod_tests::list_dir(&pods)
            .into_iter()
            .map(|d| pods.join(d).join(dockpod_proto::layout::SHIM_LOG))
            .find_map(|p| std::fs::read_to_string(p).ok())
            .filter(|l| l.contains(&id));
        std::future::ready(log)
    })
    .await;
    all_json("the pod's shim", &shim_log);
    remove_pod(&mut rt, &id).await;
}
