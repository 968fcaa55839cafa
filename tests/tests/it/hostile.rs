//! Streaming clients that send what no well-behaved client would: malformed WebSocket messages
//! on every subprotocol from a real WebSocket client (Python's websocket-client), raw SPDY
//! frames that are truncated, oversized, out of order or carry garbage header blocks, and a
//! session that panics inside the shim. Each time the pod's shim keeps its PID and is never
//! restarted, a session opened before goes on working, and the bad session alone ends.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_tests::cri::*;
use dockpod_tests::front::Front;
use dockpod_tests::streaming::{spdy, split_url, ws};
use pod_shim::streaming::spdy::{control_frame, data_header, HeaderEncoder, SYN_STREAM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

/// Generous for a loaded machine; what it protects is that nothing waits forever.
const LONG: Duration = Duration::from_secs(60);

/// The WebSocket subprotocols of exec and attach that the kubelet's server speaks.
const WS_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// A pod whose container sleeps, and its shim's PID.
async fn pod(front: &Front, rt: &mut Rt, name: &str, logs: &Path) -> (String, String, u32) {
    let config = pod_config(name, logs);
    let id = run_pod(rt, &config).await;
    let c = run_container(
        rt,
        &id,
        &config,
        container_config("main", &["sleep", "3600"]),
    )
    .await;
    let shims = front.shim_pids();
    assert_eq!(shims.len(), 1, "one pod, one shim: {shims:?}");
    (id, c, shims[0])
}

/// A session opened before the trouble: `cat` over SPDY, still echoing afterwards.
struct Bystander(spdy::Remote);

impl Bystander {
    async fn open(rt: &mut Rt, container: &str) -> Bystander {
        let url = exec_url(rt, container, &["cat"], true, false).await;
        Bystander(spdy::remote(&url, true, false).await)
    }

    async fn still_echoes(&mut self, what: &str) {
        let line = format!("{what}\n");
        self.0
            .stdin
            .as_ref()
            .expect("stdin")
            .send(line.as_bytes())
            .await;
        let echoed = tokio::time::timeout(LONG, self.0.stdout.read_until(line.as_bytes()))
            .await
            .unwrap_or_else(|_| panic!("the earlier session stopped echoing after {what}"));
        assert!(echoed.ends_with(line.as_bytes()), "{echoed:?}");
    }
}

fn assert_same_shim(front: &Front, pid: u32, what: &str) {
    assert!(
        dockpod_tests::procs::alive(pid),
        "the shim died after {what}:\n{}",
        front.log()
    );
    assert_eq!(front.shim_pids(), vec![pid], "after {what}");
    assert!(
        !front.log().contains("pod shim restarted"),
        "the shim was restarted after {what}:\n{}",
        front.log()
    );
}

#[tokio::test]
async fn malformed_websocket_messages_on_every_subprotocol_end_only_their_session() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c, shim) = pod(&front, &mut rt, "ws-hostile", logs.path()).await;
    let mut bystander = Bystander::open(&mut rt, &c).await;
    for protocol in WS_PROTOCOLS {
        let url = exec_url(&mut rt, &c, &["cat"], true, false).await;
        let script = dockpod_tests::python_script("ws_hostile.py");
        let out = tokio::task::spawn_blocking(move || {
            Command::new(dockpod_tests::python())
                .arg(script)
                .args([&url, protocol])
                .output()
                .expect("running the WebSocket client")
        })
        .await
        .expect("client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{protocol}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{protocol}: {e}: {stdout}"));
        assert_eq!(result["protocol"], protocol, "{result}");
        // Every malformed message was ignored: the session still carried stdin and stdout.
        assert_eq!(result["echoed"], "still-here\n", "{protocol}: {result}");
        // The message past the limit ended the session with a reason: 1009, too big.
        assert_eq!(result["close_code"], 1009, "{protocol}: {result}");
        assert_same_shim(&front, shim, protocol);
        bystander.still_echoes(protocol).await;
    }
    remove_pod(&mut rt, &id).await;
}

/// Opens a raw SPDY connection to `url` (the upgrade done by hand), sends `bytes`, half-closes
/// and returns once the shim has closed its side.
async fn raw_spdy(url: &str, bytes: &[u8]) {
    let (host, path) = split_url(url);
    let mut tcp = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tcp.read(&mut byte).await.expect("answer");
        assert_eq!(n, 1, "closed before the answer: {answer:?}");
        answer.push(byte[0]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 101"), "{answer:?}");
    // The shim may close as soon as it reads something fatal: a failed write is fine.
    let _ = tcp.write_all(bytes).await;
    let _ = tcp.shutdown().await;
    let drained = tokio::time::timeout(LONG, async {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(drained.is_ok(), "the shim kept the connection open");
}

fn syn_stream(id: u32, block: &[u8]) -> Vec<u8> {
    let mut payload = id.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    payload.extend_from_slice(block);
    control_frame(SYN_STREAM, 0, &payload)
}

#[tokio::test]
async fn malformed_spdy_frames_end_only_their_session() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c, shim) = pod(&front, &mut rt, "spdy-hostile", logs.path()).await;
    let mut bystander = Bystander::open(&mut rt, &c).await;
    let error_stream = HeaderEncoder::default().encode(&[("streamtype", "error")]);
    let mut oversized = data_header(1, 0, 0).to_vec();
    oversized[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    let mut truncated = syn_stream(1, &error_stream);
    truncated.truncate(truncated.len() - 3);
    let mut bad_version = control_frame(SYN_STREAM, 0, &[0; 10]);
    bad_version[1] = 2;
    let cases: [(&str, Vec<u8>); 7] = [
        (
            "a garbage header block",
            syn_stream(1, b"\x78\x9c garbage, not zlib"),
        ),
        ("a frame head announcing 16 MiB", oversized),
        ("a truncated SYN_STREAM", truncated),
        ("DATA for a stream never opened", {
            let mut f = data_header(7, 0, 5).to_vec();
            f.extend_from_slice(b"hello");
            f
        }),
        ("a stream opened twice, then an even stream ID", {
            let mut f = syn_stream(1, &error_stream);
            f.extend(syn_stream(
                1,
                &HeaderEncoder::default().encode(&[("a", "b")]),
            ));
            f.extend(syn_stream(2, &[]));
            f
        }),
        ("SPDY version 2", bad_version),
        ("a SETTINGS frame claiming 2^32 entries", {
            control_frame(4, 0, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 7])
        }),
    ];
    for (what, bytes) in cases {
        let url = exec_url(&mut rt, &c, &["cat"], true, false).await;
        raw_spdy(&url, &bytes).await;
        assert_same_shim(&front, shim, what);
        bystander.still_echoes(what).await;
    }
    remove_pod(&mut rt, &id).await;
}

/// A panic inside a session (armed with a failpoint, as a parser's bug would strike) ends that
/// session alone: it is counted in `dockpod_panics_total`, the shim keeps its PID, and other
/// sessions and calls go on.
#[tokio::test]
async fn a_panic_in_a_session_ends_that_session_and_is_counted() {
    use dockpod_proto::failpoints::{STREAM_SESSION_PANIC, VARIABLE};
    let front = Front::start_with_env(
        &[
            "--metrics-bind-addr",
            "127.0.0.1:0",
            "--shim-liveness-timeout",
            "2",
        ],
        &[(VARIABLE, STREAM_SESSION_PANIC)],
    )
    .await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c, shim) = pod(&front, &mut rt, "session-panic", logs.path()).await;
    let mut bystander = Bystander::open(&mut rt, &c).await;

    for transport in ["spdy", "v5.channel.k8s.io"] {
        let url = exec_url(&mut rt, &c, &["dockpod-failpoint", "panic"], false, false).await;
        let out = if transport == "spdy" {
            spdy::remote(&url, false, false).await.finish().await
        } else {
            ws::exec(&url, transport, None).await
        };
        // The session ended without an outcome: no status, no output.
        assert!(
            out.status.is_empty() && out.stdout.is_empty(),
            "{transport}"
        );
        assert_same_shim(&front, shim, transport);
        bystander.still_echoes(transport).await;
    }
    // The shim serves CRI calls and new sessions as before.
    let url = exec_url(&mut rt, &c, &["echo", "after"], false, false).await;
    assert_eq!(spdy::exec(&url, None).await.stdout(), "after\n");

    // Counted: the shim reports its panics on the liveness probe's Info (every second here).
    let addr = dockpod_tests::metrics::address(&front);
    let text = dockpod_tests::wait::wait_until("the shim's 2 panics counted", LONG, || async {
        let text = dockpod_tests::metrics::scrape(&addr).await;
        text.lines()
            .any(|l| {
                l.starts_with("dockpod_panics_total{process=\"pod-shim\"") && l.ends_with(" 2")
            })
            .then_some(text)
    })
    .await;
    assert!(
        text.contains("dockpod_panics_total{process=\"front\",shim=\"\",sandbox=\"\"} 0"),
        "{text}"
    );
    let pods = front.root_dir().join("pods");
    let state = dockpod_tests::list_dir(&pods);
    let shim_log = std::fs::read_to_string(
        pods.join(state.first().expect("the pod's state"))
            .join("shim.log"),
    )
    .unwrap_or_default();
    assert!(
        shim_log.contains("failpoint stream-session-panic") && shim_log.contains("remote.rs"),
        "the panic's message and location are logged:\n{shim_log}"
    );
    remove_pod(&mut rt, &id).await;
}
