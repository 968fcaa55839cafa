//! Exec, attach and port-forward sessions through the front's streaming listener and the pod's
//! shim, over SPDY/3.1 and WebSocket, with the test's own clients (`dockpod_tests::streaming`).

use std::time::Duration;

use dockpod_tests::cri::*;
use dockpod_tests::front::Front;
use dockpod_tests::streaming::{spdy, ws};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

const SECS: Duration = Duration::from_secs(60);

type Rt = RuntimeServiceClient<Channel>;

/// A pod with one long-running busybox container.
async fn pod_with_container(rt: &mut Rt, name: &str, logs: &std::path::Path) -> (String, String) {
    let pod = pod_config(name, logs);
    let id = run_pod(rt, &pod).await;
    let c = run_container(rt, &id, &pod, container_config("main", &["sleep", "3600"])).await;
    (id, c)
}

async fn exec_url(rt: &mut Rt, container: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
    rt.exec(ExecRequest {
        container_id: container.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    })
    .await
    .unwrap_or_else(|e| panic!("Exec: {e:?}"))
    .into_inner()
    .url
}

#[tokio::test]
async fn spdy_exec_carries_stdin_eof_output_streams_and_the_exit_code() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "spdy-exec", logs.path()).await;
    let url = exec_url(
        &mut rt,
        &c,
        &["sh", "-c", "cat; echo to-stderr >&2; exit 3"],
        true,
        false,
    )
    .await;
    assert!(url.starts_with("http://127.0.0.1:"), "absolute URL: {url}");
    let out = spdy::exec(&url, Some(b"hello-stdin\n")).await;
    assert_eq!(out.stdout(), "hello-stdin\n");
    assert_eq!(out.stderr(), "to-stderr\n");
    assert_eq!(out.exit_code(), 3, "{:?}", String::from_utf8_lossy(&out.status));

    let url = exec_url(&mut rt, &c, &["true"], false, false).await;
    let out = spdy::exec(&url, None).await;
    assert_eq!(out.exit_code(), 0);
    assert_eq!(out.status()["status"], "Success");
    remove_pod(&mut rt, &id).await;
}
