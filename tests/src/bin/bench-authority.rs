//! The cost of the `:authority` repair layer (`dockpod_proto::authority`) that every
//! connection to the CRI socket and to a shim's socket goes through. One run, one process:
//! the same tonic server (dockpod's `dockpod.manager.v1` service, answering one message) on
//! two unix sockets, one accepting plain connections and one through the layer, called in
//! alternation by the same client (whose usable authority lets the layer pass the connection
//! through); then the layer's own work per request header block on a connection whose
//! authority it repairs (every block decoded and encoded again), without any I/O.
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-authority`.

use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use dockpod_proto::authority::{self, Rewriter};
use dockpod_proto::manager::manager_client::ManagerClient;
use dockpod_proto::manager::manager_server::{Manager, ManagerServer};
use dockpod_proto::manager::{ShimUpgrade, UpgradeShimsRequest};
use futures_util::StreamExt;
use tokio::net::UnixListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const CALLS: usize = 4000;
const BLOCKS: usize = 100_000;

struct Answer;

#[tonic::async_trait]
impl Manager for Answer {
    type UpgradeShimsStream =
        Pin<Box<dyn futures_util::Stream<Item = Result<ShimUpgrade, Status>> + Send>>;

    async fn upgrade_shims(
        &self,
        _r: Request<UpgradeShimsRequest>,
    ) -> Result<Response<Self::UpgradeShimsStream>, Status> {
        let one = ShimUpgrade {
            sandbox_id: "0".repeat(64),
            ..Default::default()
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(one)]))))
    }
}

async fn client(socket: &Path) -> ManagerClient<Channel> {
    let socket = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect");
    ManagerClient::new(channel)
}

async fn call(client: &mut ManagerClient<Channel>) -> Duration {
    let start = Instant::now();
    let mut stream = client
        .upgrade_shims(UpgradeShimsRequest::default())
        .await
        .expect("call")
        .into_inner();
    while stream.next().await.is_some() {}
    start.elapsed()
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(v[v.len() / 2]), us(v[v.len() * 95 / 100]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (plain_path, fixed_path) = (dir.path().join("plain.sock"), dir.path().join("fixed.sock"));
    let plain = UnixListener::bind(&plain_path).expect("bind");
    let fixed = UnixListener::bind(&fixed_path).expect("bind");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ManagerServer::new(Answer))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(plain)),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ManagerServer::new(Answer))
            .serve_with_incoming(authority::incoming(fixed)),
    );
    let (mut a, mut b) = (client(&plain_path).await, client(&fixed_path).await);
    for _ in 0..200 {
        call(&mut a).await;
        call(&mut b).await;
    }
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..CALLS {
        without.push(call(&mut a).await);
        with.push(call(&mut b).await);
    }
    let (w_med, w_p95) = stats(without);
    let (l_med, l_p95) = stats(with);
    // tonic's client sends a usable authority: its connection is passed through after the
    // first request, which is the case of the front's calls to its shims and of kubelets
    // since 2024.
    println!("{CALLS} calls each on one connection, alternating (µs), tonic client:");
    println!("{:<34} {:>10} {:>10}", "", "median", "p95");
    println!("{:<34} {w_med:>10.1} {w_p95:>10.1}", "plain tonic server");
    println!(
        "{:<34} {l_med:>10.1} {l_p95:>10.1}",
        "through the authority layer"
    );
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "difference",
        l_med - w_med,
        l_p95 - w_p95
    );

    // The layer alone, on a connection it rewrites: request header blocks as a client that
    // names the socket path sends them (HPACK with Huffman-coded values, the path not indexed,
    // as tonic and grpc-go encode it), decoded, repaired and encoded again.
    let mut encoder = httlib_hpack::Encoder::default();
    let indexed = httlib_hpack::Encoder::BEST_FORMAT
        | httlib_hpack::Encoder::WITH_INDEXING
        | httlib_hpack::Encoder::HUFFMAN_VALUE;
    let not_indexed = httlib_hpack::Encoder::BEST_FORMAT | httlib_hpack::Encoder::HUFFMAN_VALUE;
    let headers: Vec<(&[u8], &[u8], u8)> = vec![
        (b":method", b"POST", indexed),
        (b":scheme", b"http", indexed),
        (
            b":path",
            b"/runtime.v1.RuntimeService/ListContainers",
            not_indexed,
        ),
        (b":authority", b"/run/dockpod/cri.sock", indexed),
        (b"content-type", b"application/grpc", indexed),
        (b"user-agent", b"grpc-go/1.60.1", indexed),
        (b"te", b"trailers", indexed),
        (b"grpc-timeout", b"1999m", not_indexed),
    ];
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut frames = Vec::new();
    for i in 0..BLOCKS {
        let mut block = Vec::new();
        for (name, value, flags) in &headers {
            encoder
                .encode((name.to_vec(), value.to_vec(), *flags), &mut block)
                .expect("encode");
        }
        let stream = (1 + 2 * i as u32).to_be_bytes();
        let len = block.len();
        frames.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 1, 4]);
        frames.extend_from_slice(&stream);
        frames.extend_from_slice(&block);
    }
    input.extend_from_slice(&frames);
    let mut rewriter = Rewriter::default();
    let mut out = Vec::with_capacity(input.len() * 2);
    let start = Instant::now();
    for chunk in input.chunks(8192) {
        rewriter.push(chunk, &mut out).expect("rewrite");
    }
    let elapsed = start.elapsed();
    assert_eq!(rewriter.rewritten, BLOCKS as u64);
    println!(
        "the layer alone: {:.2} µs per request header block ({BLOCKS} blocks, each repaired)",
        elapsed.as_secs_f64() * 1e6 / BLOCKS as f64
    );
}
