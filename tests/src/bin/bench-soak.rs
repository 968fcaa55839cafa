//! Soak benchmark: one pod for a long stretch (30 minutes unless `BENCH_SOAK_MINUTES` says
//! otherwise) with continuous exec, port-forward and log traffic, printing the shim's RSS,
//! open fds, OS threads and tokio tasks every minute. What a shim that lives for weeks must
//! show: figures flat after the first minutes.
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-soak` (after `contrib/setup.sh`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dockpod_proto::cri::{ExecRequest, PortForwardRequest};
use dockpod_proto::shim::shim_client::ShimClient;
use dockpod_proto::shim::InfoRequest;
use dockpod_tests::cri::{
    container_config, pod_config, remove_pod, run_container, run_pod, shim_pid,
};
use dockpod_tests::front::Front;
use dockpod_tests::streaming::spdy;

const FILE: usize = 1 << 20;

/// What was done, for the per-minute line.
#[derive(Default)]
struct Done {
    execs: AtomicU64,
    forwards: AtomicU64,
}

fn count(dir: String) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let minutes: u64 = std::env::var("BENCH_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(30);
    let front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut rt = front.runtime();
    let pod = pod_config("bench-soak", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let mut web = container_config("web", &["sh", "-c"]);
    web.args = vec![format!(
        "mkdir -p /tmp/www && head -c {FILE} /dev/zero > /tmp/www/file && exec httpd -f -p 8080 -h /tmp/www"
    )];
    let web = run_container(&mut rt, &id, &pod, web).await;
    // About a thousand lines a second into the CRI log.
    let talker = "i=0; while :; do echo \"line $i of the soak\"; i=$((i+1)); usleep 1000; done";
    run_container(
        &mut rt,
        &id,
        &pod,
        container_config("talker", &["sh", "-c", talker]),
    )
    .await;
    let shim = shim_pid(&mut rt, &id).await;
    let channel = dockpod_proto::sockets::channel(&front.shim_socket());
    let done = Arc::new(Done::default());
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);

    let execs = {
        let (mut rt, web, done) = (rt.clone(), web.clone(), done.clone());
        tokio::spawn(async move {
            while Instant::now() < deadline {
                let url = rt
                    .exec(ExecRequest {
                        container_id: web.clone(),
                        cmd: vec!["echo".into(), "soak".into()],
                        stdout: true,
                        ..Default::default()
                    })
                    .await
                    .expect("Exec")
                    .into_inner()
                    .url;
                let out = spdy::exec(&url, None).await;
                assert_eq!(out.stdout(), "soak\n");
                done.execs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let forwards = {
        let (mut rt, id, done) = (rt.clone(), id.clone(), done.clone());
        tokio::spawn(async move {
            let mut request = 0;
            while Instant::now() < deadline {
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
                // A few connections per session, as a browser behind kubectl makes them.
                for _ in 0..4 {
                    request += 1;
                    let (reply, _) =
                        spdy::forward(&conn, 8080, request, b"GET /file HTTP/1.0\r\n\r\n").await;
                    assert!(
                        reply.len() > FILE,
                        "a short download: {} bytes",
                        reply.len()
                    );
                    done.forwards.fetch_add(1, Ordering::Relaxed);
                }
                conn.close().await;
            }
        })
    };

    println!("minute  rss_KiB  fds  threads  tasks  execs  forwards  log_MiB");
    let log = logs.path().join("talker/0.log");
    let mut minute = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(60).min(deadline - Instant::now())).await;
        minute += 1;
        let rss = dockpod_proto::procfs::memory(shim)
            .map(|m| m.rss_bytes >> 10)
            .unwrap_or(0);
        let tasks = ShimClient::new(channel.clone())
            .info(InfoRequest { skip_memory: true })
            .await
            .map(|r| r.into_inner().tasks)
            .unwrap_or(0);
        let log_mib = std::fs::metadata(&log).map(|m| m.len() >> 20).unwrap_or(0);
        println!(
            "{minute:>6}  {rss:>7}  {:>3}  {:>7}  {tasks:>5}  {:>5}  {:>8}  {log_mib:>7}",
            count(format!("/proc/{shim}/fd")),
            count(format!("/proc/{shim}/task")),
            done.execs.load(Ordering::Relaxed),
            done.forwards.load(Ordering::Relaxed),
        );
    }
    execs.await.expect("exec loop");
    forwards.await.expect("port-forward loop");
    remove_pod(&mut rt, &id).await;
}
