//! Exec, attach and port-forward sessions through the front's streaming listener and the pod's
//! shim, over SPDY/3.1 and WebSocket, with the test's own clients (`dockpod_tests::streaming`).

use std::time::Duration;

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::docker::docker;
use dockpod_tests::front::Front;
use dockpod_tests::streaming::{spdy, ws};
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
    out.assert_exit(3);

    let url = exec_url(&mut rt, &c, &["true"], false, false).await;
    let out = spdy::exec(&url, None).await;
    out.assert_exit(0);
    remove_pod(&mut rt, &id).await;
}

/// Every exit code reaches the client exactly, through clients as strict as the Kubernetes
/// ones: over SPDY (reading stops at GOAWAY, as in client-go's spdystream) and over
/// WebSocket (v5, v4 and the base64 ones), with and without stdin, and with a TTY.
#[tokio::test]
async fn every_exit_code_reaches_strict_clients_over_spdy_and_websocket() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "exit-codes", logs.path()).await;
    for code in [0i64, 1, 7, 255] {
        let with_stdin = format!("cat; echo err >&2; exit {code}");
        let without = format!("echo out; echo err >&2; exit {code}");
        let cases: [(&str, &str, Option<&[u8]>); 8] = [
            ("spdy", &with_stdin, Some(b"in\n")),
            ("v5.channel.k8s.io", &with_stdin, Some(b"in\n")),
            ("spdy", &without, None),
            ("v5.channel.k8s.io", &without, None),
            ("v4.channel.k8s.io", &without, None),
            ("v4.base64.channel.k8s.io", &without, None),
            ("channel.k8s.io", &without, None),
            ("base64.channel.k8s.io", &without, None),
        ];
        for (transport, script, input) in cases {
            let what = format!("{transport}, exit {code}, stdin {}", input.is_some());
            let url = exec_url(&mut rt, &c, &["sh", "-c", script], input.is_some(), false).await;
            let out = if transport == "spdy" {
                let session = spdy::remote(&url, input.is_some(), false).await;
                if let (Some(stdin), Some(input)) = (&session.stdin, input) {
                    stdin.send(input).await;
                    stdin.finish().await;
                }
                let (out, frames) = tokio::time::timeout(SECS, session.finish_with_frames())
                    .await
                    .unwrap_or_else(|_| panic!("{what}: the session did not end"));
                spdy::assert_ended_like_the_reference(&frames);
                out
            } else {
                ws::exec(&url, transport, input).await
            };
            let expected = if input.is_some() { "in\n" } else { "out\n" };
            assert_eq!(out.stdout(), expected, "{what}");
            assert_eq!(out.stderr(), "err\n", "{what}");
            if transport.starts_with("v") || transport == "spdy" {
                assert!(!out.status.is_empty(), "{what}: no status");
                out.assert_exit(code);
            } else {
                out.assert_exit_text(code);
            }
        }

        // A TTY: the shell reads its exit from the terminal.
        let typed = format!("exit {code}\n");
        let url = exec_url(&mut rt, &c, &["sh"], true, true).await;
        let session = spdy::remote(&url, true, true).await;
        if let Some(stdin) = &session.stdin {
            stdin.send(typed.as_bytes()).await;
        }
        let (out, frames) = tokio::time::timeout(SECS, session.finish_with_frames())
            .await
            .unwrap_or_else(|_| panic!("tty exec, exit {code}: the session did not end"));
        spdy::assert_ended_like_the_reference(&frames);
        out.assert_exit(code);
        let url = exec_url(&mut rt, &c, &["sh"], true, true).await;
        let out = ws::exec(&url, "v4.channel.k8s.io", Some(typed.as_bytes())).await;
        out.assert_exit(code);
    }
    remove_pod(&mut rt, &id).await;
}

/// The recorded client bytes of a real `crictl exec -i` (client-go's executor) replayed
/// against dockpod: the shim's frames come in the recorded reference server's order (all
/// output, then the status, then every stream's end, then GOAWAY last), with the same output
/// and the same exit status.
#[tokio::test]
async fn a_recorded_client_session_gets_the_reference_servers_frame_order() {
    use pod_shim::streaming::spdy::{read_frame, Frame, HeaderDecoder, SYN_STREAM};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "replay", logs.path()).await;
    // The command the recorded client ran.
    let cmd = ["sh", "-c", "cat; echo to-stderr >&2; exit 3"];
    let url = exec_url(&mut rt, &c, &cmd, true, false).await;
    let (host, path) = dockpod_tests::streaming::split_url(&url);

    let (head, client_frames) = spdy::recorded("exec-spdy", "client-to-server");
    let head = String::from_utf8(head).expect("the recorded head is text");
    let head: String = head
        .split_inclusive("\r\n")
        .map(|line| {
            if line.starts_with("POST ") {
                format!("POST {path} HTTP/1.1\r\n")
            } else if line.starts_with("Host: ") {
                format!("Host: {host}\r\n")
            } else {
                line.to_string()
            }
        })
        .collect();

    // Which stream is which, from the recorded client's own SYN_STREAMs.
    let mut types = std::collections::HashMap::new();
    let mut decoder = HeaderDecoder::default();
    for raw in &client_frames {
        let mut r = &raw[..];
        if let Ok(Some(Frame::Control {
            kind: SYN_STREAM,
            payload,
            ..
        })) = read_frame(&mut r).await
        {
            let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            let headers = decoder.decode(&payload[10..]).expect("header block");
            let kind = headers
                .iter()
                .find(|(n, _)| n == "streamtype")
                .map(|(_, v)| v.clone())
                .expect("streamtype");
            types.insert(id, kind);
        }
    }

    let mut tcp = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("head");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tcp.read(&mut byte).await.expect("read"), 1, "{response:?}");
        response.push(byte[0]);
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    assert!(response.contains("v4.channel.k8s.io"), "{response}");

    // Replayed as the client did: each stream opened once the one before it was answered,
    // stdin's data once all were.
    let (mut read, mut write) = tcp.into_split();
    let (replied_tx, mut replied) = tokio::sync::watch::channel(0u32);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut data: std::collections::HashMap<u32, Vec<u8>> = Default::default();
        while let Ok(Some(frame)) = read_frame(&mut read).await {
            let s = spdy::see(&frame);
            if let spdy::Seen::Reply(id) = s {
                let _ = replied_tx.send(id);
            }
            if let Frame::Data {
                stream, payload, ..
            } = &frame
            {
                data.entry(*stream).or_default().extend_from_slice(payload);
            }
            let goaway = matches!(s, spdy::Seen::GoAway { .. });
            seen.push(s);
            if goaway {
                break;
            }
        }
        (seen, data)
    });
    let last = types.keys().copied().max().expect("streams");
    for raw in &client_frames {
        let is_syn = raw[0] & 0x80 != 0 && u16::from_be_bytes([raw[2], raw[3]]) == SYN_STREAM;
        let before = if is_syn {
            u32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]) & 0x7fff_ffff
        } else {
            last + 2
        };
        if before > 1 {
            tokio::time::timeout(SECS, replied.wait_for(|r| *r >= before - 2))
                .await
                .expect("dockpod answered the stream before")
                .expect("replies");
        }
        write.write_all(raw).await.expect("replay a frame");
    }
    let (ours, data) = tokio::time::timeout(SECS, reader)
        .await
        .expect("the session ended")
        .expect("reader");
    let _ = write.shutdown().await;

    let stream_of = |kind: &str| {
        types
            .iter()
            .find(|(_, t)| t.as_str() == kind)
            .map(|(id, _)| *id)
            .expect("stream")
    };
    let text = |kind: &str| {
        String::from_utf8_lossy(&data.get(&stream_of(kind)).cloned().unwrap_or_default())
            .into_owned()
    };
    assert_eq!(text("stdout"), "hello-stdin\n");
    assert_eq!(text("stderr"), "to-stderr\n");
    let status: serde_json::Value = serde_json::from_str(&text("error")).expect("status JSON");

    let (_, reference_frames) = spdy::recorded("exec-spdy", "server-to-client");
    let mut reference = Vec::new();
    let mut reference_status = Vec::new();
    for raw in &reference_frames {
        let mut r = &raw[..];
        let frame = read_frame(&mut r).await.expect("frame").expect("frame");
        if let Frame::Data {
            stream: 1, payload, ..
        } = &frame
        {
            reference_status.extend_from_slice(payload);
        }
        reference.push(spdy::see(&frame));
    }
    let reference_status: serde_json::Value =
        serde_json::from_slice(&reference_status).expect("reference status");
    for field in ["status", "reason", "details"] {
        assert_eq!(status[field], reference_status[field], "{status}");
    }

    let phases = |frames: &[spdy::Seen]| -> Vec<&'static str> {
        let mut ended = std::collections::HashSet::new();
        let mut out: Vec<&'static str> = Vec::new();
        for f in frames {
            let phase = match f {
                spdy::Seen::Reply(_) => "answer every stream",
                spdy::Seen::Data { stream, len, fin } => {
                    if *len > 0 && ended.contains(stream) {
                        "data after its stream ended"
                    } else if *len > 0 && types.get(stream).map(String::as_str) == Some("error") {
                        "status"
                    } else if *len > 0 && !*fin {
                        "output"
                    } else if *fin && ended.insert(*stream) {
                        "end every stream"
                    } else {
                        continue;
                    }
                }
                spdy::Seen::Reset { stream, .. } if ended.insert(*stream) => "end every stream",
                spdy::Seen::GoAway { .. } => "goaway",
                _ => continue,
            };
            if out.last() != Some(&phase) {
                out.push(phase);
            }
        }
        assert_eq!(ended.len(), types.len(), "every stream ends: {frames:?}");
        out
    };
    let expected = [
        "answer every stream",
        "output",
        "status",
        "end every stream",
        "goaway",
    ];
    assert_eq!(phases(&reference), expected, "the reference: {reference:?}");
    assert_eq!(phases(&ours), expected, "dockpod: {ours:?}");
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn spdy_tty_exec_applies_resizes_and_reports_the_exit_code() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "spdy-tty", logs.path()).await;
    let url = exec_url(&mut rt, &c, &["sh"], true, true).await;
    let mut session = spdy::remote(&url, true, true).await;
    session.resize(100, 50).await;
    let stdin = session.stdin.take().expect("stdin");
    // The terminal echoes input; wait for the prompt's answer, then resize again.
    stdin.send(b"stty size\n").await;
    let seen = session.stdout.read_until(b"50 100").await;
    assert!(
        String::from_utf8_lossy(&seen).contains("50 100"),
        "{seen:?}"
    );
    session.resize(132, 43).await;
    stdin.send(b"stty size; exit 4\n").await;
    let out = session.finish().await;
    assert!(out.stdout().contains("43 132"), "{:?}", out.stdout());
    assert_eq!(out.exit_code(), 4);
    remove_pod(&mut rt, &id).await;
}

/// A shell container with stdin and a TTY, and an attach URL for it.
async fn shell_to_attach(
    rt: &mut Rt,
    pod_id: &str,
    pod: &PodSandboxConfig,
    name: &str,
) -> (String, String) {
    let mut config = container_config(name, &["sh"]);
    config.stdin = true;
    config.tty = true;
    let c = run_container(rt, pod_id, pod, config).await;
    let url = rt
        .attach(AttachRequest {
            container_id: c.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    (c, url)
}

#[tokio::test]
async fn spdy_attach_to_a_container_with_stdin_and_tty() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("spdy-attach", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let (c, url) = shell_to_attach(&mut rt, &id, &pod, "shell").await;
    let mut session = spdy::remote(&url, true, true).await;
    let stdin = session.stdin.take().expect("stdin");
    stdin.send(b"echo attached-$((40+2))\n").await;
    let seen = session.stdout.read_until(b"attached-42").await;
    assert!(String::from_utf8_lossy(&seen).contains("attached-42"));
    stdin.send(b"exit 7\n").await;
    let (out, frames) = session.finish_with_frames().await;
    spdy::assert_ended_like_the_reference(&frames);
    // An attach ends in success whatever the container's code, as with the reference
    // runtimes: `kubectl run -i --rm` takes the code from the pod's status, and would skip
    // the pod's removal on an attach error. The status must still arrive, ahead of GOAWAY.
    out.assert_exit(0);
    let status = wait_exited(&rt, &c, SECS).await;
    assert_eq!(status.exit_code, 7);

    // The same over WebSocket.
    let (c, url) = shell_to_attach(&mut rt, &id, &pod, "shell-ws").await;
    let out = ws::exec(&url, "v4.channel.k8s.io", Some(b"exit 7\n")).await;
    out.assert_exit(0);
    let status = wait_exited(&rt, &c, SECS).await;
    assert_eq!(status.exit_code, 7);
    remove_pod(&mut rt, &id).await;
}

/// A pod serving `served-by-<name>` over HTTP on 8080 (busybox httpd).
async fn web_pod(rt: &mut Rt, name: &str, logs: &std::path::Path) -> String {
    let pod = pod_config(name, logs);
    let id = run_pod(rt, &pod).await;
    let mut config = container_config("web", &["sh", "-c"]);
    config.args = vec![
        "mkdir -p /tmp/www && echo served > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www".into(),
    ];
    let c = run_container(rt, &id, &pod, config).await;
    // httpd listens once the exec of a probe succeeds.
    wait_for_script(rt, &c, "netstat -ltn | grep -q :8080", SECS).await;
    id
}

async fn port_forward_url(rt: &mut Rt, pod: &str, ports: &[i32]) -> String {
    rt.port_forward(PortForwardRequest {
        pod_sandbox_id: pod.to_string(),
        port: ports.to_vec(),
    })
    .await
    .expect("PortForward")
    .into_inner()
    .url
}

const GET: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

#[tokio::test]
async fn spdy_port_forward_many_connections_and_errors() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let id = web_pod(&mut rt, "spdy-pf", logs.path()).await;
    let url = port_forward_url(&mut rt, &id, &[8080]).await;
    let conn = spdy::connect(&url, &["portforward.k8s.io"])
        .await
        .unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(conn.protocol, "portforward.k8s.io");
    let requests = (0..8).map(|i| spdy::forward(&conn, 8080, i, GET));
    for (reply, error) in futures_util::future::join_all(requests).await {
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.contains("200 OK") && reply.contains("served"),
            "{reply}"
        );
        assert!(error.is_empty(), "{}", String::from_utf8_lossy(&error));
    }
    // Nothing listens on 9: the error stream says so, the session goes on.
    let (reply, error) = spdy::forward(&conn, 9, 100, GET).await;
    assert!(reply.is_empty());
    let error = String::from_utf8_lossy(&error);
    assert!(error.contains("port 9"), "{error}");
    let (reply, _) = spdy::forward(&conn, 8080, 101, GET).await;
    assert!(String::from_utf8_lossy(&reply).contains("served"));
    conn.close().await;
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn websocket_exec_on_every_channel_protocol() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "ws-exec", logs.path()).await;
    let cmd = ["sh", "-c", "cat; echo err >&2; exit 5"];
    // v5 closes stdin with its close message; the command sees EOF and exits.
    let url = exec_url(&mut rt, &c, &cmd, true, false).await;
    let out = ws::exec(&url, "v5.channel.k8s.io", Some(b"in-v5\n")).await;
    assert_eq!(out.stdout(), "in-v5\n");
    assert_eq!(out.stderr(), "err\n");
    assert_eq!(out.exit_code(), 5);
    // Older protocols cannot close stdin alone: run commands that do not read it.
    let cmd = ["sh", "-c", "echo out; echo err >&2; exit 6"];
    for protocol in [
        "v4.channel.k8s.io",
        "channel.k8s.io",
        "base64.channel.k8s.io",
    ] {
        let url = exec_url(&mut rt, &c, &cmd, false, false).await;
        let out = ws::exec(&url, protocol, None).await;
        assert_eq!(out.stdout(), "out\n", "{protocol}");
        assert_eq!(out.stderr(), "err\n", "{protocol}");
        if protocol == "v4.channel.k8s.io" {
            assert_eq!(out.exit_code(), 6);
        } else {
            let text = String::from_utf8_lossy(&out.status);
            assert!(text.contains("exit status 6"), "{protocol}: {text}");
        }
    }
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn websocket_port_forward_on_channels_and_tunnelled_spdy() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let id = web_pod(&mut rt, "ws-pf", logs.path()).await;
    for protocol in ["portforward.k8s.io", "v4.channel.k8s.io"] {
        let url = port_forward_url(&mut rt, &id, &[8080]).await;
        let results = ws::forward(&url, protocol, &[8080, 9], GET).await;
        let reply = String::from_utf8_lossy(&results[0].0);
        assert!(reply.contains("served"), "{protocol}: {reply}");
        let error = String::from_utf8_lossy(&results[1].1);
        assert!(error.contains("port 9"), "{protocol}: {error}");
    }
    // SPDY port-forward inside the WebSocket's binary messages, as kubectl's tunnelling does.
    let url = port_forward_url(&mut rt, &id, &[8080]).await;
    let (socket, chosen) = ws::connect(&url, &["SPDY/3.1+portforward.k8s.io"])
        .await
        .expect("websocket upgrade");
    assert_eq!(chosen, "SPDY/3.1+portforward.k8s.io");
    let conn = spdy::over(ws::tunnel(socket), chosen);
    let requests = (0..3).map(|i| spdy::forward(&conn, 8080, i, GET));
    for (reply, _) in futures_util::future::join_all(requests).await {
        assert!(String::from_utf8_lossy(&reply).contains("served"));
    }
    conn.close().await;
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn unknown_and_reused_tokens_get_404() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "tokens", logs.path()).await;
    let url = exec_url(&mut rt, &c, &["true"], false, false).await;
    let out = spdy::exec(&url, None).await;
    assert_eq!(out.exit_code(), 0);
    let reused = spdy::connect(&url, &["v4.channel.k8s.io"]).await;
    let refused = reused.err().expect("a used token is refused");
    assert!(refused.status.contains(" 404 "), "{refused:?}");
    let (base, _) = url.rsplit_once('/').expect("token");
    let forged = format!("{base}/{}", "0".repeat(48));
    let refused = spdy::connect(&forged, &["v4.channel.k8s.io"])
        .await
        .err()
        .expect("unknown token");
    assert!(refused.status.contains(" 404 "), "{refused:?}");
    let garbage = format!("{base}/not-a-token");
    let refused = ws::connect(&garbage, &["v4.channel.k8s.io"])
        .await
        .expect_err("malformed token");
    assert!(refused.contains("404"), "{refused}");
    // Each refusal is logged where it was decided: the front for paths and tokens of no
    // running pod, the pod's shim for its own tokens.
    let front_log = front.log();
    assert!(
        front_log.contains("streaming token of no running pod"),
        "{front_log}"
    );
    assert!(
        front_log.contains("streaming request for an unknown path"),
        "{front_log}"
    );
    let token = url.rsplit('/').next().expect("token");
    // The shim's log is written by a thread of its own: the line arrives shortly after.
    let shim_log = front
        .root_dir()
        .join("pods")
        .join(&token[..16])
        .join("shim.log");
    dockpod_tests::wait::wait_until("the shim to log the refused token", SECS, || {
        let logged = std::fs::read_to_string(&shim_log)
            .is_ok_and(|l| l.contains("refused an unknown, used or expired streaming token"));
        async move { logged.then_some(()) }
    })
    .await;
    remove_pod(&mut rt, &id).await;
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// How many processes in the container run `pattern` (busybox ps).
async fn running(rt: &mut Rt, container: &str, pattern: &str) -> usize {
    // "[x]yz" matches "xyz" but not this grep itself.
    let bracketed = format!("[{}]{}", &pattern[..1], &pattern[1..]);
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: container.to_string(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                format!("ps -o args | grep -c '{bracketed}' || true"),
            ],
            timeout: 10,
        })
        .await
        .expect("ExecSync ps")
        .into_inner();
    String::from_utf8_lossy(&r.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn fifty_concurrent_execs_and_the_shim_returns_to_idle() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "spdy-fifty", logs.path()).await;
    let shim = shim_pid(&mut rt, &id).await;
    // One session first, so that lazily made things (Docker connections) exist before the
    // idle level is taken.
    let url = exec_url(&mut rt, &c, &["true"], false, false).await;
    spdy::exec(&url, None).await;
    let idle_fds = open_fds(shim);
    let front_pid = front.pid().expect("front pid");
    let front_idle_fds = open_fds(front_pid);
    let idle_rss = dockpod_proto::procfs::memory(shim)
        .expect("memory")
        .rss_bytes;
    let sessions = (0..50).map(|i| {
        let mut rt = rt.clone();
        let c = c.clone();
        async move {
            let script = format!("cat; echo session-{i} >&2; exit {}", i % 7);
            let url = exec_url(&mut rt, &c, &["sh", "-c", &script], true, false).await;
            let input = format!("input-{i}\n");
            let out = spdy::exec(&url, Some(input.as_bytes())).await;
            assert_eq!(out.stdout(), input);
            assert_eq!(out.stderr(), format!("session-{i}\n"));
            assert_eq!(out.exit_code(), i64::from(i % 7));
        }
    });
    futures_util::future::join_all(sessions).await;
    let fds = dockpod_tests::wait::wait_until("the shim's fds to return to idle", SECS, || {
        let fds = open_fds(shim);
        async move { (fds <= idle_fds).then_some(fds) }
    })
    .await;
    dockpod_tests::wait::wait_until("the front's fds to return to idle", SECS, || {
        let fds = open_fds(front_pid);
        async move { (fds <= front_idle_fds).then_some(()) }
    })
    .await;
    // Freed memory goes back once the burst is over (within 4 MiB of the idle level).
    let rss = dockpod_tests::wait::wait_until("the shim's RSS to return to idle", SECS, || {
        let rss = dockpod_proto::procfs::memory(shim)
            .expect("memory")
            .rss_bytes;
        async move { (rss < idle_rss + 4 * 1024 * 1024).then_some(rss) }
    })
    .await;
    eprintln!(
        "shim fds {idle_fds} -> {fds}; RSS {} KiB idle, {} KiB after 50 sessions",
        idle_rss >> 10,
        rss >> 10
    );
    assert_eq!(
        running(&mut rt, &c, "cat").await,
        0,
        "an exec is left running"
    );
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn a_session_keeps_working_across_kill_9_of_the_front() {
    let mut front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "spdy-frontkill", logs.path()).await;
    let url = exec_url(&mut rt, &c, &["cat"], true, false).await;
    let mut session = spdy::remote(&url, true, false).await;
    let stdin = session.stdin.take().expect("stdin");
    stdin.send(b"before\n").await;
    session.stdout.read_until(b"before\n").await;
    front.kill().await;
    stdin.send(b"while-the-front-is-dead\n").await;
    let seen = session
        .stdout
        .read_until(b"while-the-front-is-dead\n")
        .await;
    assert!(String::from_utf8_lossy(&seen).contains("while-the-front-is-dead"));
    front.restart().await;
    stdin.send(b"after\n").await;
    stdin.finish().await;
    let out = session.finish().await;
    assert_eq!(out.stdout(), "after\n");
    assert_eq!(out.exit_code(), 0);
    let mut rt = front.runtime();
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn a_client_that_leaves_takes_its_exec_down() {
    // The default idle timeout (4 hours): only the client's leaving can end this exec.
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "spdy-leave", logs.path()).await;
    let url = exec_url(&mut rt, &c, &["sleep", "601"], false, false).await;
    let session = spdy::remote(&url, false, false).await;
    dockpod_tests::wait::wait_until("the exec to run", SECS, || {
        let mut rt = rt.clone();
        let c = c.clone();
        async move { (running(&mut rt, &c, "sleep 601").await == 1).then_some(()) }
    })
    .await;
    session.conn.close().await;
    dockpod_tests::wait::wait_until("the abandoned exec to be killed", SECS, || {
        let mut rt = rt.clone();
        let c = c.clone();
        async move { (running(&mut rt, &c, "sleep 601").await == 0).then_some(()) }
    })
    .await;
    remove_pod(&mut rt, &id).await;
}

/// The idle session's exec (`touch /tmp/started-<n>; exec sleep <n>`) ran, and is killed.
async fn ran_and_was_killed(rt: &mut Rt, c: &str, n: u32) {
    let sleep = format!("sleep {n}");
    dockpod_tests::wait::wait_until(&format!("the idle exec {n} to be killed"), SECS, || {
        let (mut rt, c, sleep) = (rt.clone(), c.to_string(), sleep.clone());
        async move { (running(&mut rt, &c, &sleep).await == 0).then_some(()) }
    })
    .await;
    let started = exec(rt, c, &["test", "-e", &format!("/tmp/started-{n}")]).await;
    assert_eq!(started.exit_code, 0, "the idle exec {n} never ran");
}

#[tokio::test]
async fn a_session_that_idles_out_takes_its_exec_down() {
    let front = Front::start(&["--streaming-idle-timeout", "2"]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "spdy-idle", logs.path()).await;
    // The client stays but sends nothing, and the command prints nothing: the session idles
    // out. The command leaves a mark, so the test knows it ran even if it was killed before
    // anyone could see it running.
    let cmd = ["sh", "-c", "touch /tmp/started-602; exec sleep 602"];
    let url = exec_url(&mut rt, &c, &cmd, false, false).await;
    let session = spdy::remote(&url, false, false).await;
    let ended = tokio::time::timeout(SECS, session.finish()).await;
    assert!(ended.is_ok(), "the idle session was not closed");
    ran_and_was_killed(&mut rt, &c, 602).await;

    // The same over WebSocket: a PING is answered, then nothing more goes either way.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let cmd = ["sh", "-c", "touch /tmp/started-603; exec sleep 603"];
    let url = exec_url(&mut rt, &c, &cmd, false, false).await;
    let (mut socket, _) = ws::connect(&url, &["v5.channel.k8s.io"])
        .await
        .expect("websocket upgrade");
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    let ended = tokio::time::timeout(SECS, async {
        let mut ponged = false;
        while let Some(Ok(message)) = socket.next().await {
            ponged |= matches!(&message, Message::Pong(p) if &p[..] == b"are you there");
        }
        ponged
    })
    .await;
    assert_eq!(
        ended,
        Ok(true),
        "no PONG, or the idle session was not closed"
    );
    ran_and_was_killed(&mut rt, &c, 603).await;
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn spdy_flow_control_is_kept_with_a_peer_that_keeps_it() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "spdy-window", logs.path()).await;
    const TOTAL: usize = 300_000;
    const WINDOW: u32 = 16 * 1024;
    let cmd = format!("cat > /dev/null; head -c {TOTAL} /dev/zero");
    let url = exec_url(&mut rt, &c, &["sh", "-c", &cmd], true, false).await;
    let mut session = spdy::remote(&url, true, false).await;
    session.conn.announce_window(WINDOW).await;
    let stdin = session.stdin.take().expect("stdin");
    stdin.send(&vec![b'x'; 100_000]).await;
    stdin.finish().await;
    // Read stdout granting window only as data is taken: the server may never be ahead of
    // what was granted.
    let (mut received, mut granted) = (0usize, WINDOW as usize);
    while received < TOTAL {
        let chunk = tokio::time::timeout(Duration::from_secs(20), session.stdout.recv())
            .await
            .expect("the server stalled")
            .expect("stdout ended early");
        received += chunk.len();
        assert!(
            received <= granted,
            "the server sent {received} bytes with {granted} granted"
        );
        let delta = chunk.len() as u32;
        session.conn.window_update(session.stdout.id, delta).await;
        session.conn.window_update(0, delta).await;
        granted += chunk.len();
    }
    assert!(
        session
            .conn
            .window_updates
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the server returned no window for 100 kB of stdin"
    );
    let out = session.finish().await;
    assert_eq!(out.exit_code(), 0);
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn streaming_calls_check_their_requests() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "spdy-checks", logs.path()).await;
    let exec = |container: &str, tty: bool, stderr: bool| ExecRequest {
        container_id: container.to_string(),
        cmd: vec!["true".into()],
        tty,
        stdin: false,
        stdout: true,
        stderr,
    };
    let err = rt
        .exec(exec(&"f".repeat(64), false, true))
        .await
        .expect_err("unknown container");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = rt
        .exec(exec(&c, true, true))
        .await
        .expect_err("tty and stderr");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut empty = exec(&c, false, false);
    empty.cmd.clear();
    let err = rt.exec(empty).await.expect_err("no command");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: id.clone(),
            port: vec![70000],
        })
        .await
        .expect_err("port out of range");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    wait_exited(&rt, &c, SECS).await;
    let err = rt.exec(exec(&c, false, true)).await.expect_err("stopped");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = rt
        .attach(AttachRequest {
            container_id: c.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("stopped");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn older_spdy_protocols_get_text_errors_and_no_resize_stream() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "spdy-v2", logs.path()).await;
    for protocol in ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"] {
        let url = exec_url(&mut rt, &c, &["sh", "-c", "echo old; exit 9"], false, false).await;
        let conn = spdy::connect(&url, &[protocol])
            .await
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(conn.protocol, protocol);
        let mut error = conn.open(&[("streamtype", "error")]).await;
        let mut stdout = conn.open(&[("streamtype", "stdout")]).await;
        let mut stderr = conn.open(&[("streamtype", "stderr")]).await;
        let (out, _, status) = tokio::join!(stdout.read_all(), stderr.read_all(), error.read_all());
        assert_eq!(out, b"old\n", "{protocol}");
        let status = String::from_utf8_lossy(&status);
        assert!(status.contains("exit status 9"), "{protocol}: {status}");
        conn.close().await;
    }
    // A protocol nobody speaks is refused before any session starts.
    let url = exec_url(&mut rt, &c, &["true"], false, false).await;
    let refused = spdy::connect(&url, &["v9.channel.k8s.io"])
        .await
        .err()
        .expect("unknown protocol");
    assert!(refused.status.contains(" 403 "), "{refused:?}");
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn port_forward_reaches_a_host_network_pod() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let mut pod = pod_config("pf-hostnet", logs.path());
    host_network(&mut pod);
    let id = run_pod(&mut rt, &pod).await;
    let mut web = container_config("web", &["sh", "-c"]);
    // Port 0: httpd binds a free port on the node's loopback, read back from its socket.
    web.args = vec![
        "mkdir -p /tmp/www && echo on-the-node > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:0 -h /tmp/www".into(),
    ];
    let web = run_container(&mut rt, &id, &pod, web).await;
    let pid = docker()
        .await
        .inspect_container(&web, None)
        .await
        .expect("inspect httpd")
        .state
        .and_then(|s| s.pid)
        .expect("httpd's PID") as u32;
    let port = dockpod_tests::wait::wait_until("httpd to listen", SECS, || async move {
        dockpod_tests::procs::listening_port(pid)
    })
    .await;
    let url = port_forward_url(&mut rt, &id, &[i32::from(port)]).await;
    let conn = spdy::connect(&url, &["portforward.k8s.io"])
        .await
        .unwrap_or_else(|r| panic!("{r:?}"));
    let (reply, error) = spdy::forward(&conn, port, 0, GET).await;
    assert!(
        String::from_utf8_lossy(&reply).contains("on-the-node"),
        "{}",
        String::from_utf8_lossy(&error)
    );
    conn.close().await;
    remove_pod(&mut rt, &id).await;
}

#[tokio::test]
async fn port_forward_reaches_a_server_on_the_pods_ipv6_loopback() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let mut pod = pod_config("pf-ipv6", logs.path());
    pod.linux = Some(LinuxPodSandboxConfig {
        sysctls: [
            (
                "net.ipv6.conf.all.disable_ipv6".to_string(),
                "0".to_string(),
            ),
            ("net.ipv6.conf.lo.disable_ipv6".to_string(), "0".to_string()),
        ]
        .into(),
        ..Default::default()
    });
    let id = run_pod(&mut rt, &pod).await;
    let mut web = container_config("web", &["sh", "-c"]);
    web.args = vec![
        "mkdir -p /tmp/www && echo over-ipv6 > /tmp/www/index.html && exec httpd -f -p [::1]:8081 -h /tmp/www".into(),
    ];
    let c = run_container(&mut rt, &id, &pod, web).await;
    wait_for_script(&rt, &c, "netstat -ltn | grep -q ':::8081\\|::1:8081'", SECS).await;
    let url = port_forward_url(&mut rt, &id, &[8081]).await;
    let conn = spdy::connect(&url, &["portforward.k8s.io"])
        .await
        .unwrap_or_else(|r| panic!("{r:?}"));
    let (reply, error) = spdy::forward(&conn, 8081, 0, GET).await;
    assert!(
        String::from_utf8_lossy(&reply).contains("over-ipv6"),
        "{}",
        String::from_utf8_lossy(&error)
    );
    conn.close().await;
    remove_pod(&mut rt, &id).await;
}

/// A pod with two port-forward targets: 9000 accepts and never reads (the connection is the
/// stdin of a `sleep`), 9001 counts what it receives and answers with the count.
async fn sink_pod(rt: &mut Rt, name: &str, logs: &std::path::Path) -> String {
    let pod = pod_config(name, logs);
    let id = run_pod(rt, &pod).await;
    let mut config = container_config("sinks", &["sh", "-c"]);
    config.args = vec!["nc -ll -p 9000 -e sleep 3600 & exec nc -ll -p 9001 -e wc -c".into()];
    let c = run_container(rt, &id, &pod, config).await;
    wait_for_script(
        rt,
        &c,
        "netstat -ltn | grep -q :9000 && netstat -ltn | grep -q :9001",
        SECS,
    )
    .await;
    id
}

/// On one port-forward session that keeps SPDY's windows, a connection whose target never
/// reads sits next to one that moves `TOTAL` bytes: the second completes while the first stays
/// stuck, and PINGs are answered throughout.
async fn stuck_neighbour(conn: &spdy::Conn, requests: (u32, u32)) {
    const TOTAL: usize = 64 * 1024 * 1024;
    // More than the kernel's socket buffers can take in, so the stuck connection is stuck.
    const STUCK: usize = 32 * 1024 * 1024;
    // Generous for a loaded machine: a session whose reader waited on the stuck stream
    // would not answer at all.
    const PING_LIMIT: Duration = Duration::from_secs(5);
    conn.announce_window(64 * 1024).await;
    let open = |port: &'static str, request: u32| async move {
        let id = request.to_string();
        let error = conn
            .open(&[("streamtype", "error"), ("port", port), ("requestid", &id)])
            .await;
        error.finish().await;
        let data = conn
            .open(&[("streamtype", "data"), ("port", port), ("requestid", &id)])
            .await;
        (error, data)
    };
    let (_stuck_error, stuck) = open("9000", requests.0).await;
    let stuck = tokio::spawn(async move {
        stuck.send_windowed(&vec![b's'; STUCK]).await;
    });
    let (_error, mut data) = open("9001", requests.1).await;
    let started = tokio::time::Instant::now();
    let transfer = tokio::spawn(async move {
        data.send_windowed(&vec![b'x'; TOTAL]).await;
        data.finish().await;
        data.read_all().await
    });
    let mut slowest = Duration::ZERO;
    let mut pings = 0u32;
    while !transfer.is_finished() {
        slowest = slowest.max(conn.ping(2 * pings + 1, PING_LIMIT).await);
        pings += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reply = transfer.await.expect("transfer");
    let elapsed = started.elapsed();
    assert_eq!(String::from_utf8_lossy(&reply).trim(), TOTAL.to_string());
    assert!(
        !stuck.is_finished(),
        "the target that never reads took {STUCK} bytes: the test proves nothing"
    );
    stuck.abort();
    eprintln!(
        "{} MiB in {elapsed:?} next to a stuck connection; {pings} PINGs, slowest answer {slowest:?}",
        TOTAL >> 20
    );
}

#[tokio::test]
async fn a_connection_that_never_reads_holds_up_neither_its_neighbour_nor_pings() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let id = sink_pod(&mut rt, "pf-stuck", logs.path()).await;
    let url = port_forward_url(&mut rt, &id, &[9000, 9001]).await;
    let conn = spdy::connect(&url, &["portforward.k8s.io"])
        .await
        .unwrap_or_else(|r| panic!("{r:?}"));
    stuck_neighbour(&conn, (1, 2)).await;
    conn.close().await;
    // The same through WebSocket, as kubectl tunnels SPDY in it.
    let url = port_forward_url(&mut rt, &id, &[9000, 9001]).await;
    let (socket, chosen) = ws::connect(&url, &["SPDY/3.1+portforward.k8s.io"])
        .await
        .expect("websocket upgrade");
    let conn = spdy::over(ws::tunnel(socket), chosen);
    stuck_neighbour(&conn, (3, 4)).await;
    conn.close().await;
    remove_pod(&mut rt, &id).await;
}

/// A base64 WebSocket text frame whose first character is two bytes long ("éAAAA") once
/// killed the pod's shim, and every session of the pod with it. It is no message: the shim
/// lives on and the same session goes on.
#[tokio::test]
async fn a_multibyte_first_character_on_base64_websocket_kills_nothing() {
    use futures_util::{SinkExt, StreamExt};
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let (id, c) = pod_with_container(&mut rt, "ws-utf8", logs.path()).await;
    let shim = shim_pid(&mut rt, &id).await;
    let url = exec_url(
        &mut rt,
        &c,
        &["sh", "-c", "head -n 1; echo done"],
        true,
        false,
    )
    .await;
    let (mut socket, chosen) = ws::connect(&url, &["base64.channel.k8s.io"])
        .await
        .expect("websocket upgrade");
    assert_eq!(chosen, "base64.channel.k8s.io");
    socket
        .send(tokio_tungstenite::tungstenite::Message::text("éAAAA"))
        .await
        .expect("send the hostile frame");
    socket
        .send(ws::frame(0, b"line\n", true))
        .await
        .expect("send stdin");
    let mut out = Vec::new();
    while let Some(Ok(message)) = socket.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = &message {
            if let Some(data) = t.as_str().strip_prefix('1') {
                use base64::Engine as _;
                out.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .expect("base64 stdout"),
                );
            }
        }
        if String::from_utf8_lossy(&out).contains("done") {
            break;
        }
    }
    assert_eq!(String::from_utf8_lossy(&out), "line\ndone\n");
    assert!(dockpod_tests::procs::alive(shim), "the pod's shim died");
    assert_eq!(shim_pid(&mut rt, &id).await, shim);
    remove_pod(&mut rt, &id).await;
}
