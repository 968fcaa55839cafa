//! The pod-shim binary on its own: socket hygiene (0600 in a 0700 directory), the
//! dockpod.shim.v1 Info and Shutdown calls, and a clean exit that removes its socket; and the
//! shim as a library call, run in this process and stopped with nothing of it left.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use dockpod_proto::shim::shim_client::ShimClient;
use dockpod_proto::shim::{InfoRequest, ShutdownRequest};
use dockpod_tests::binaries::binary;
use dockpod_tests::wait::wait_until;

struct Shim(std::process::Child);

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serves_info_and_shuts_down_on_request() {
    let dir = tempfile::Builder::new()
        .prefix(&dockpod_tests::reaper::front_dir_prefix())
        .tempdir_in("/tmp")
        .expect("tempdir");
    let socket = dir.path().join("shims").join("s.sock");
    // The front makes a pod's directory before it starts the pod's shim.
    std::fs::create_dir(dir.path().join("state")).expect("state dir");
    let mut shim = Shim(
        Command::new(binary("pod-shim"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args([
                "--pod",
                "default/web",
                "--shim-id",
                "0123456789abcdef",
                "--instance",
                "test",
            ])
            .args(["--sandbox-image", dockpod_tests::docker::PAUSE_IMAGE])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn pod-shim"),
    );
    let channel = dockpod_proto::sockets::channel(&socket);
    let info = wait_until("the shim to answer Info", Duration::from_secs(10), || {
        let mut client = ShimClient::new(channel.clone());
        async move {
            client
                .info(InfoRequest::default())
                .await
                .ok()
                .map(|r| r.into_inner())
        }
    })
    .await;
    assert_eq!(info.protocol_version, dockpod_proto::PROTOCOL_VERSION);
    assert_eq!(info.pid, shim.0.id());
    // No RunPodSandbox yet: the shim supervises nothing.
    assert_eq!(info.sandbox_id, "");
    assert_eq!((info.containers_running, info.containers_total), (0, 0));
    assert!(info.rss_bytes > 0 && info.pss_bytes > 0, "{info:?}");
    // The front's liveness probe: the same answer without the memory it does not need.
    let probe = ShimClient::new(channel.clone())
        .info(InfoRequest { skip_memory: true })
        .await
        .expect("Info without memory")
        .into_inner();
    assert_eq!((probe.rss_bytes, probe.pss_bytes), (0, 0), "{probe:?}");
    assert_eq!(
        (probe.pid, probe.protocol_version),
        (info.pid, info.protocol_version)
    );

    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().expect("dir")), 0o700);

    ShimClient::new(channel)
        .shutdown(ShutdownRequest {})
        .await
        .expect("Shutdown");
    let status = wait_until("the shim to exit", Duration::from_secs(10), || {
        let status = shim.0.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "socket left behind");
}

/// `pod_shim::run::run` serves in this process and, once its shutdown future completes,
/// returns with its tasks joined, its hand-over thread ended and both sockets gone.
#[tokio::test]
async fn runs_in_process_and_ends_when_told() {
    use clap::Parser;
    let dir = tempfile::Builder::new()
        .prefix(&dockpod_tests::reaper::front_dir_prefix())
        .tempdir_in("/tmp")
        .expect("tempdir");
    let socket = dir.path().join("shims").join("0123456789abcdef.sock");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let config = pod_shim::config::ShimConfig::parse_from([
        "pod-shim".as_ref(),
        "--socket".as_ref(),
        socket.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--pod".as_ref(),
        "default/in-process".as_ref(),
        "--shim-id".as_ref(),
        "0123456789abcdef".as_ref(),
        "--instance".as_ref(),
        "test".as_ref(),
        "--docker-endpoint".as_ref(),
        std::ffi::OsStr::new(&dockpod_tests::docker::endpoint()),
        "--sandbox-image".as_ref(),
        dockpod_tests::docker::PAUSE_IMAGE.as_ref(),
    ]);
    let threads_before = threads();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shim = tokio::spawn(pod_shim::run::run(config, async move {
        let _ = stopped.await;
    }));
    let channel = dockpod_proto::sockets::channel(&socket);
    let info = wait_until(
        "the in-process shim to answer Info",
        Duration::from_secs(30),
        || {
            let mut client = ShimClient::new(channel.clone());
            async move {
                client
                    .info(InfoRequest { skip_memory: true })
                    .await
                    .ok()
                    .map(|r| r.into_inner())
            }
        },
    )
    .await;
    assert_eq!(info.pid, std::process::id(), "served from this process");
    let stream_socket = dockpod_proto::layout::stream_socket_beside(&socket, "0123456789abcdef");
    assert!(stream_socket.exists());

    stop.send(()).expect("the shim still waits for its stop");
    let ended = tokio::time::timeout(Duration::from_secs(30), shim)
        .await
        .expect("run returned within the bound")
        .expect("join");
    assert!(ended.is_ok(), "{ended:?}");
    assert!(!socket.exists() && !stream_socket.exists(), "a socket left");
    assert!(
        threads() <= threads_before,
        "a thread of the shim outlived it ({} threads before, {} after)",
        threads_before,
        threads()
    );
}

/// Threads of this process named as the shim names its own.
fn threads() -> usize {
    dockpod_tests::list_dir(std::path::Path::new("/proc/self/task"))
        .into_iter()
        .filter(|t| {
            std::fs::read_to_string(format!("/proc/self/task/{t}/comm"))
                .is_ok_and(|c| c.trim() == "stream-handover")
        })
        .count()
}
