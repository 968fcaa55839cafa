//! What docs/design.md's Security section promises, checked on a running front: who may reach the
//! CRI socket, the shims' sockets and the pods' state; that a silent client cannot hold a
//! streaming connection; and that an oversized request is refused without harm.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::crilog::COUNTER;
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;
use tokio::io::AsyncReadExt;
use tonic::Code;

const SECS: Duration = Duration::from_secs(60);
/// Not a group this machine needs to know: the socket takes a numeric GID as it is.
const GROUP: &str = "4242";

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every file and directory below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

#[tokio::test]
async fn sockets_and_state_are_only_for_root_and_the_cri_group() {
    let front = Front::start(&["--cri-socket-group", GROUP]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("perms", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    std::fs::create_dir(logs.path().join("count")).expect("log dir");
    let c = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("count", &["sh", "-c", COUNTER]),
    )
    .await;
    let log = logs.path().join("count/0.log");
    wait_until("the CRI log", SECS, || async { log.exists().then_some(()) }).await;
    wait_until("a log checkpoint", SECS, || async {
        walk(&front.root_dir())
            .iter()
            .any(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && p.parent().is_some_and(|d| d.ends_with("logs"))
            })
            .then_some(())
    })
    .await;

    let socket = std::fs::metadata(front.socket()).expect("CRI socket");
    assert!(socket.file_type().is_socket());
    assert_eq!(socket.permissions().mode() & 0o777, 0o660);
    assert_eq!(socket.gid().to_string(), GROUP);

    let shims = front.run_dir().join("shims");
    assert_eq!(mode(&shims), 0o700);
    let sockets = walk(&shims);
    assert_eq!(
        sockets.len(),
        2,
        "the pod's socket and streaming socket: {sockets:?}"
    );
    for s in &sockets {
        assert!(std::fs::symlink_metadata(s)
            .expect("meta")
            .file_type()
            .is_socket());
        assert_eq!(mode(s), 0o600, "{}", s.display());
    }

    assert_eq!(mode(&front.root_dir()), 0o700);
    let state = walk(&front.root_dir());
    for file in ["state.json", "state.journal"] {
        assert!(state.iter().any(|p| p.ends_with(file)), "{file}: {state:?}");
    }
    for path in &state {
        let m = mode(path);
        if path.is_dir() {
            assert_eq!(m, 0o700, "{}", path.display());
        } else {
            assert_eq!(m & 0o077, 0, "{} is {m:o}", path.display());
        }
    }
    // The kubelet's log files are readable by root's group, as with containerd.
    assert_eq!(mode(&log), 0o640);

    rt.stop_container(StopContainerRequest {
        container_id: c,
        timeout: 0,
    })
    .await
    .expect("stop");
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn a_streaming_client_that_sends_nothing_is_dropped() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("silent", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let c = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("sleep", &["sleep", "3600"]),
    )
    .await;
    let url = rt
        .exec(ExecRequest {
            container_id: c,
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .expect("host:port");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf))
        .await
        .expect("dropped within 30 s");
    assert!(matches!(read, Ok(0) | Err(_)), "the server sent {read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "dropped after only {waited:?}"
    );
    assert!(front
        .log()
        .contains("dropped a streaming client that sent no request in time"));
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_front_serves_on() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime().max_encoding_message_size(64 << 20);
    let mut pod = pod_config("huge", logs.path());
    pod.annotations
        .insert("huge".into(), "x".repeat(dockpod_proto::MAX_MESSAGE + 1024));
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a request larger than the limit");
    assert!(
        matches!(
            err.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::Internal
        ),
        "{err:?}"
    );
    assert!(front.shim_pids().is_empty(), "no shim was started for it");
    let mut rt = front.runtime();
    rt.version(VersionRequest::default())
        .await
        .expect("still serving");
}
