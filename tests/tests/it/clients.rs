//! CRI clients that no one here wrote, and the `:authority` forms real clients send over a unix
//! socket: Python's grpcio with its default options (installed from PyPI by
//! `contrib/setup.sh`), and the harness's bare HTTP/2 client sending a socket path, its
//! percent-encoding, an empty authority and none (grpc-go dialled with a path, as every kubelet
//! before kubernetes/kubernetes#123463 did; grpc-java; grpcurl -unix), on the CRI socket and on
//! a shim's socket.

use std::path::Path;
use std::process::Command;

use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::front::Front;
use dockpod_tests::h2raw;
use prost::Message;

/// Runs `tests/python/cri_client.py` against `socket`; what it printed, as JSON.
fn grpcio(socket: &Path, scenario: &str, args: serde_json::Value) -> serde_json::Value {
    let script = dockpod_tests::python_script("cri_client.py");
    let out = Command::new(dockpod_tests::python())
        .arg(script)
        .arg(UPSTREAM_PROTO)
        .arg(socket)
        .arg(scenario)
        .arg(args.to_string())
        .output()
        .expect("run the Python client");
    assert!(
        out.status.success(),
        "grpcio {scenario}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "grpcio {scenario} printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test]
async fn python_grpcio_with_default_options_runs_a_whole_pod() {
    let front = Front::start(&[]).await;
    let socket = front.socket();
    let version = grpcio(&socket, "version", serde_json::json!({}));
    assert_eq!(version["runtime_name"], "docker");
    assert_eq!(version["runtime_api_version"], "v1");
    assert_eq!(
        grpcio(&socket, "list", serde_json::json!({}))["pods"],
        serde_json::json!([])
    );

    let logs = tempfile::tempdir().expect("logs");
    std::fs::create_dir_all(logs.path().join("main")).expect("the kubelet's log directory");
    let name = dockpod_tests::unique("grpcio");
    let args = serde_json::json!({
        "name": name,
        "uid": format!("uid-{name}"),
        "log_directory": logs.path(),
        "image": dockpod_tests::docker::TOOL_IMAGE,
    });
    let r = grpcio(&socket, "lifecycle", args);
    assert_eq!(r["state"], "CONTAINER_RUNNING", "{r}");
    assert_eq!(r["exec_stdout"], "exec-ok\n", "{r}");
    assert_eq!(r["exec_exit_code"], 3, "{r}");
    assert_eq!(r["listed"], serde_json::json!([r["container"]]), "{r}");
    assert_eq!(r["stopped_state"], "SANDBOX_NOTREADY", "{r}");
    assert_eq!(r["remaining"], serde_json::json!([]), "{r}");
    let log = std::fs::read_to_string(logs.path().join("main/0.log")).expect("container log");
    assert!(log.contains(" stdout F from-python"), "{log}");
    // Gone from Docker too, not only from the answer.
    let mut rt = front.runtime();
    assert!(pod_ids(rt.clone(), PodSandboxFilter::default())
        .await
        .is_empty());

    // A shim's own socket takes the same client.
    let pod = pod_config("grpcio-shim", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let c = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("main", &["sleep", "3600"]),
    )
    .await;
    let listed = grpcio(&front.shim_socket(), "containers", serde_json::json!({}));
    assert_eq!(listed["containers"], serde_json::json!([c]));
    remove_pod(&mut rt, &id).await;
}

/// Python's grpcio with stubs from upstream's api.proto sends the fields a 1.36 kubelet sends,
/// and Docker runs what they ask: the stop signal, an environment value sent as bytes, the
/// pod's resources; the streaming lists answer it.
#[tokio::test]
async fn python_grpcio_speaks_todays_cri_and_docker_runs_it() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let name = dockpod_tests::unique("grpcio-today");
    let answer = grpcio(
        &front.socket(),
        "todays_cri",
        serde_json::json!({
            "name": name,
            "uid": format!("uid-{name}"),
            "log_directory": logs.path(),
            "image": dockpod_tests::docker::TOOL_IMAGE,
        }),
    );
    let sandbox = answer["sandbox"].as_str().expect("sandbox").to_string();
    let container = answer["container"].as_str().expect("container").to_string();
    assert_eq!(answer["stop_signal"], "SIGQUIT", "{answer}");
    assert_eq!(
        answer["streamed_containers"],
        serde_json::json!([container])
    );
    assert_eq!(answer["streamed_pods"], serde_json::json!([sandbox]));
    let docker = dockpod_tests::docker::docker().await;
    let image = dockpod_tests::docker::image_id(&docker, dockpod_tests::docker::TOOL_IMAGE).await;
    assert_eq!(answer["image_ref"], image.as_str());
    let inspected = docker
        .inspect_container(&container, None)
        .await
        .expect("inspect container");
    let config = inspected.config.expect("config");
    assert_eq!(config.stop_signal.as_deref(), Some("SIGQUIT"));
    assert!(
        config
            .env
            .unwrap_or_default()
            .contains(&"GREETING=grüße".to_string()),
        "the bytes of the value, as UTF-8"
    );
    let sandbox_host = docker
        .inspect_container(&sandbox, None)
        .await
        .expect("inspect sandbox")
        .host_config
        .expect("host config");
    assert_eq!(sandbox_host.cpu_shares, Some(384));
    assert_eq!(sandbox_host.memory, Some(80 << 20));
    remove_pod(&mut front.runtime(), &sandbox).await;
}

/// The authorities a client may send over a unix socket at `socket`.
fn authorities(socket: &Path) -> Vec<(&'static str, Option<String>)> {
    let path = socket.display().to_string();
    let encoded = path.replace('/', "%2F");
    vec![
        ("the socket path", Some(path)),
        ("the percent-encoded path", Some(encoded)),
        ("an empty authority", Some(String::new())),
        ("no authority", None),
        ("localhost", Some("localhost".into())),
    ]
}

#[tokio::test]
async fn every_authority_form_is_served_on_the_cri_and_shim_sockets() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("authority", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let c = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("main", &["sleep", "3600"]),
    )
    .await;

    let cri = front.socket();
    let version = VersionRequest::default().encode_to_vec();
    for (what, authority) in authorities(&cri) {
        let answer = h2raw::unary(
            &cri,
            authority.as_deref(),
            "/runtime.v1.RuntimeService/Version",
            &version,
        )
        .await
        .unwrap_or_else(|e| panic!("CRI socket, {what}: {e}"));
        assert_eq!(
            (answer.status.as_str(), answer.grpc_status.as_str()),
            ("200", "0"),
            "CRI socket, {what}"
        );
        let v = VersionResponse::decode(answer.message.as_slice()).expect("VersionResponse");
        assert_eq!(v.runtime_name, "docker", "CRI socket, {what}");
    }

    let shim = front.shim_socket();
    let list = ListContainersRequest::default().encode_to_vec();
    for (what, authority) in authorities(&shim) {
        let answer = h2raw::unary(
            &shim,
            authority.as_deref(),
            "/runtime.v1.RuntimeService/ListContainers",
            &list,
        )
        .await
        .unwrap_or_else(|e| panic!("shim socket, {what}: {e}"));
        assert_eq!(answer.grpc_status, "0", "shim socket, {what}");
        let listed = ListContainersResponse::decode(answer.message.as_slice()).expect("answer");
        let ids: Vec<&str> = listed.containers.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, [c.as_str()], "shim socket, {what}");
    }
    remove_pod(&mut rt, &id).await;
}
