//! The front as a process: its socket (mode, stale replacement, refusal while another server
//! lives), pid file, and a graceful stop on SIGTERM that lets an in-flight call finish.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::front::{exited_cleanly, Front};
use dockpod_tests::wait::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

#[tokio::test]
async fn socket_is_0660_and_pid_file_names_the_server() {
    let mut front = Front::start(&[]).await;
    let meta = std::fs::symlink_metadata(front.socket()).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let pid_file = front.run_dir().join("shim-manager.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("pid file");
    assert_eq!(pid.trim().parse::<u32>().ok(), front.pid());
    let root_mode = std::fs::metadata(front.root_dir())
        .expect("root")
        .permissions()
        .mode();
    assert_eq!(root_mode & 0o777, 0o700);

    let status = front.terminate().await;
    assert!(exited_cleanly(&status), "{status:?}\n{}", front.log());
    assert!(!front.socket().exists(), "socket left behind after SIGTERM");
    assert!(!pid_file.exists(), "pid file left behind after SIGTERM");
}

#[tokio::test]
async fn refuses_to_start_while_another_server_holds_the_socket() {
    let front = Front::start(&[]).await;
    // A root of its own: what is refused here is the socket alone.
    let root = front.dir().join("second-root");
    let (status, output) = front.run_second(&["--root-directory", &root.display().to_string()]);
    let status = status.expect("second server exits by itself");
    assert!(!status.success(), "second server started: {output}");
    assert!(
        output.contains("another server is already listening"),
        "{output}"
    );
    // The first one is untouched.
    front
        .runtime()
        .version(VersionRequest::default())
        .await
        .expect("first server still answers");
}

#[tokio::test]
async fn a_second_server_on_the_same_root_refuses_to_start() {
    let front = Front::start(&[]).await;
    let pid_file = front.run_dir().join("shim-manager.pid");
    let pid_before = std::fs::read_to_string(&pid_file).expect("the first server's PID file");
    // Its own socket and run directory, the first one's root: two fronts would supervise,
    // respawn and tear down the same pods.
    let socket = front.dir().join("second.sock");
    let run = front.dir().join("second-run");
    let (status, output) = front.run_second(&[
        "--container-runtime-endpoint",
        &format!("unix://{}", socket.display()),
        "--run-directory",
        &run.display().to_string(),
    ]);
    assert!(!status.expect("exits").success(), "{output}");
    let holder = format!("PID {}", front.pid().expect("the first server runs"));
    assert!(
        output.contains("owned by another shim-manager") && output.contains(&holder),
        "{output}"
    );
    assert!(!socket.exists(), "the second server bound its socket");
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("PID file"),
        pid_before
    );
    front
        .runtime()
        .version(VersionRequest::default())
        .await
        .expect("first server still answers");
}

#[tokio::test]
async fn replaces_a_stale_socket_after_a_crash() {
    let mut front = Front::start(&[]).await;
    front.kill().await;
    assert!(front.socket().exists(), "SIGKILL leaves the socket behind");
    front.restart().await;
    front
        .runtime()
        .version(VersionRequest::default())
        .await
        .expect("restarted server answers");
}

#[tokio::test]
async fn refuses_to_replace_a_file_that_is_not_a_socket() {
    let front = Front::start(&[]).await;
    let path = front.dir().join("not-a-socket");
    std::fs::write(&path, b"keep me").expect("write");
    let endpoint = format!("unix://{}", path.display());
    let root = front.dir().join("second-root").display().to_string();
    let (status, output) = front.run_second(&[
        "--container-runtime-endpoint",
        &endpoint,
        "--root-directory",
        &root,
    ]);
    assert!(!status.expect("exits").success(), "{output}");
    assert!(output.contains("is not a socket"), "{output}");
    assert_eq!(std::fs::read(&path).expect("file kept"), b"keep me");
}

#[tokio::test]
async fn rejects_invalid_flags_before_any_side_effect() {
    let front = Front::start(&[]).await;
    let dir = front.dir().join("fresh-root");
    let (status, output) = front.run_second(&[
        "--root-directory",
        &dir.display().to_string(),
        "--network-plugin",
        "kubenet",
    ]);
    assert!(!status.expect("exits").success(), "{output}");
    assert!(output.contains("kubenet"), "{output}");
    assert!(
        !dir.exists(),
        "root directory created despite invalid flags"
    );
}

/// A loopback TCP server standing in for a registry that does not answer until told to; then
/// it closes TLS attempts and answers every HTTP request with 404.
struct StalledRegistry {
    port: u16,
    first_connection: tokio::sync::oneshot::Receiver<()>,
    release: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl StalledRegistry {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (first_tx, first_connection) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut first_tx = Some(first_tx);
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                if let Some(tx) = first_tx.take() {
                    let _ = tx.send(());
                }
                let mut released = released.clone();
                tokio::spawn(async move {
                    let _ = released.wait_for(|r| *r).await;
                    let mut first = [0u8; 1];
                    if conn.read(&mut first).await.unwrap_or(0) == 1 && first[0] != 0x16 {
                        let _ = conn
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                    }
                });
            }
        });
        StalledRegistry {
            port,
            first_connection,
            release,
            task,
        }
    }
}

impl Drop for StalledRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn sigterm_stops_accepting_and_finishes_in_flight_calls() {
    let mut front = Front::start(&[]).await;
    let mut registry = StalledRegistry::start().await;
    let image = format!("127.0.0.1:{}/dockpod-stalled/app:1", registry.port);
    let mut images = front.images();
    let request = PullImageRequest {
        image: Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pull = tokio::spawn(async move { images.pull_image(request).await });

    // dockerd is now talking to the stalled registry: the pull is in flight.
    tokio::time::timeout(Duration::from_secs(60), &mut registry.first_connection)
        .await
        .expect("dockerd contacted the registry")
        .expect("registry task alive");
    front.signal(nix::sys::signal::Signal::SIGTERM);

    // New connections are refused while the old call is still running.
    let socket = front.socket();
    wait_until(
        "the front to stop accepting",
        Duration::from_secs(10),
        || {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(&socket)
                    .await
                    .is_err()
                    .then_some(())
            }
        },
    )
    .await;
    assert!(
        !pull.is_finished(),
        "the in-flight pull ended before the registry answered"
    );

    let _ = registry.release.send(true);
    let answer = tokio::time::timeout(Duration::from_secs(120), pull)
        .await
        .expect("pull answered after release")
        .expect("pull task");
    let err = answer.expect_err("the stalled registry has no such image");
    assert_ne!(err.code(), Code::Unavailable, "call was cut off: {err:?}");
    assert!(err.message().contains(&image), "{err:?}");
    let status = front
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("front exits after draining");
    assert!(exited_cleanly(&status), "{status:?}\n{}", front.log());
}

#[tokio::test]
async fn sigterm_ends_event_streams_instead_of_waiting_for_them() {
    let mut front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let mut events = rt
        .get_container_events(dockpod_proto::cri::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let started = std::time::Instant::now();
    let status = front.terminate().await;
    let took = started.elapsed();
    eprintln!("SIGTERM to exit with an event stream open: {took:?}");
    assert!(dockpod_tests::front::exited_cleanly(&status), "{status:?}");
    // The stream ended as a stream ends, not cut off with the connection.
    let end = tokio::time::timeout(std::time::Duration::from_secs(30), events.message())
        .await
        .expect("the event stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    // The drain waits 10 s for calls in flight; an event stream must not be one of them. The
    // bound leaves a loaded machine room and still tells the two apart.
    assert!(
        took < std::time::Duration::from_secs(5),
        "SIGTERM took {took:?} with an event stream open"
    );
}

/// Generous for a loaded machine: what a front takes to answer its first calls.
const SECS: Duration = Duration::from_secs(60);

/// As under systemd's `dockpod.socket`: the CRI socket is passed to the front as fd 3 and
/// outlives it, so while one front stops and the next starts, calls wait in the socket's
/// backlog and none is refused.
#[tokio::test]
async fn a_socket_passed_by_systemd_refuses_no_call_while_the_front_restarts() {
    let mut front = Front::start_activated(&[]).await;
    let socket = front.socket();
    let log = front.log();
    assert!(
        log.contains("listening on the socket systemd passed"),
        "{log}"
    );
    // A client calling all along, each call on a fresh connection, as a kubelet reconnecting.
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let caller = tokio::spawn({
        let (answered, stop, socket) = (answered.clone(), stop.clone(), socket.clone());
        async move {
            let mut refused = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match version_on_a_new_connection(&socket).await {
                    Ok(()) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => refused.push(e),
                }
            }
            refused
        }
    });
    for restart in 0..2 {
        let before = answered.load(Ordering::SeqCst);
        wait_until("calls answered by the running front", SECS, || {
            let more = answered.load(Ordering::SeqCst) > before;
            async move { more.then_some(()) }
        })
        .await;
        assert!(exited_cleanly(&front.terminate().await));
        // With no front running, a new call connects (the socket listens still) and waits. A
        // refused connection fails at once: the bound below only gives it the time to.
        let mut waiting = tokio::spawn(version_on_a_new_connection(socket.clone()));
        let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
        assert!(
            early.is_err(),
            "restart {restart}: a call with no front running ended: {early:?}"
        );
        front.restart().await;
        waiting
            .await
            .expect("the waiting call's task")
            .expect("the call made while no front ran, answered by the next front");
    }
    stop.store(true, Ordering::SeqCst);
    let refused = caller.await.expect("the calling task");
    assert!(refused.is_empty(), "calls refused: {refused:?}");
    assert!(
        socket.exists(),
        "a front removed the socket that systemd owns"
    );
}

/// One Version call on a connection of its own.
async fn version_on_a_new_connection(
    socket: impl AsRef<std::path::Path>,
) -> Result<(), tonic::Status> {
    let channel = dockpod_proto::sockets::channel(socket.as_ref());
    RuntimeServiceClient::new(channel)
        .version(VersionRequest::default())
        .await
        .map(drop)
}
