//! Streaming benchmark: prints, from one run on this machine, the round-trip latency of
//! `true` through ExecSync and through a streamed exec (Exec, then a SPDY session through the
//! front's listener and the pod's shim), beside `docker exec` of the same command through the
//! Docker API (create, start attached, inspect); and port-forward throughput (MB/s of one
//! 64 MiB download through a SPDY session) beside the same download straight from the pod's
//! IP on Docker's bridge.
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-streaming` (after `contrib/setup.sh`).

use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use dockpod_proto::cri::{ExecRequest, ExecSyncRequest, PortForwardRequest};
use dockpod_tests::cri::{
    container_config, pod_config, pod_status, remove_pod, run_container, run_pod,
};
use dockpod_tests::docker::docker;
use dockpod_tests::front::Front;
use dockpod_tests::streaming::spdy;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUNDS: usize = 40;
const DOWNLOAD: usize = 64 * 1024 * 1024;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    println!(
        "{what:<48} n={:<4} median {:>7.2} ms   p95 {:>7.2} ms",
        v.len(),
        at(0.5),
        at(0.95)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();
    let pod = pod_config("bench-stream", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let mut web = container_config("web", &["sh", "-c"]);
    web.args = vec![format!(
        "mkdir -p /tmp/www && head -c {DOWNLOAD} /dev/zero > /tmp/www/big && exec httpd -f -p 8080 -h /tmp/www"
    )];
    let c = run_container(&mut rt, &id, &pod, web).await;
    let docker = docker().await;

    // Warm-up, and wait for httpd.
    for _ in 0..50 {
        let r = rt
            .exec_sync(ExecSyncRequest {
                container_id: c.clone(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "netstat -ltn | grep -q :8080".into(),
                ],
                timeout: 10,
            })
            .await
            .expect("ExecSync")
            .into_inner();
        if r.exit_code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (mut sync, mut streamed, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let r = rt
            .exec_sync(ExecSyncRequest {
                container_id: c.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
            .expect("ExecSync")
            .into_inner();
        assert_eq!(r.exit_code, 0);
        sync.push(t.elapsed());

        let t = Instant::now();
        let url = rt
            .exec(ExecRequest {
                container_id: c.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .expect("Exec")
            .into_inner()
            .url;
        let out = spdy::exec(&url, None).await;
        assert_eq!(out.exit_code(), 0);
        streamed.push(t.elapsed());

        let t = Instant::now();
        let exec = docker
            .create_exec(
                &c,
                CreateExecOptions {
                    cmd: Some(vec!["true".to_string()]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .expect("create exec");
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .expect("start exec")
        {
            while output.next().await.is_some() {}
        }
        let inspect = docker.inspect_exec(&exec.id).await.expect("inspect exec");
        assert_eq!(inspect.exit_code, Some(0));
        raw.push(t.elapsed());
    }
    println!("exec of `true` in a running container, {ROUNDS} rounds each:");
    row("ExecSync (front -> shim -> Docker)", sync);
    row("Exec + SPDY session (listener -> shim -> Docker)", streamed);
    row("docker exec via the Docker API (create/start/inspect)", raw);

    let url = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: id.clone(),
            port: vec![8080],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let conn = spdy::connect(&url, &["portforward.k8s.io"])
        .await
        .unwrap_or_else(|r| panic!("{r:?}"));
    let t = Instant::now();
    let (reply, _) = spdy::forward(&conn, 8080, 0, b"GET /big HTTP/1.0\r\n\r\n").await;
    let through = t.elapsed();
    assert!(reply.len() > DOWNLOAD, "short download: {}", reply.len());
    conn.close().await;

    let ip = pod_status(&mut rt, &id)
        .await
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .expect("pod IP");
    let t = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect((ip.as_str(), 8080))
        .await
        .expect("connect to the pod");
    tcp.write_all(b"GET /big HTTP/1.0\r\n\r\n")
        .await
        .expect("request");
    let mut direct = Vec::with_capacity(DOWNLOAD + 1024);
    tcp.read_to_end(&mut direct).await.expect("download");
    let straight = t.elapsed();
    assert!(direct.len() > DOWNLOAD);
    let mbs = |d: Duration| DOWNLOAD as f64 / 1e6 / d.as_secs_f64();
    println!(
        "download of {} MiB from busybox httpd in the pod:",
        DOWNLOAD >> 20
    );
    println!(
        "{:<48} {:>8.1} MB/s",
        "through a SPDY port-forward session",
        mbs(through)
    );
    println!(
        "{:<48} {:>8.1} MB/s",
        "straight to the pod IP (Docker bridge)",
        mbs(straight)
    );
    remove_pod(&mut rt, &id).await;
}
