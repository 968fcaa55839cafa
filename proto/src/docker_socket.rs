//! Connections to dockerd's Unix socket, kept for the next request while the front or a shim
//! is busy. bollard's own Unix transport keeps none (`pool_max_idle_per_host(0)`), so each
//! Docker request opened a connection and closed it: on our side a socket, a connect and a
//! close, and on dockerd's an accept and a new connection's goroutine, for each of a
//! StartContainer's four requests and each of a burst's (bench-pods' hops: an inspect after an
//! idle pause 0.27 ms faster over a kept connection). A kept connection goes after `IDLE`
//! without a request, before a quiet shim gives its heap back (pod-shim's `memory`), so an
//! idle shim holds none; the pool's clean-up timer stops once it has nothing to clean.
//!
//! bollard takes any transport that turns its request into hyper's response, and hyper-util's
//! client pools given a connector. The connector is written here, since bollard's is private
//! and hyperlocal's would need its own URI form for the same path.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{BollardRequest, ClientVersion, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// How long a connection is kept without a request: under the 2 s after which a quiet shim
/// gives its heap back, so a kept connection's buffers are freed before that trim.
const IDLE: Duration = Duration::from_millis(500);
/// Connections kept at most: a call's requests beside each other (a start's reads, a
/// create's image check) rarely exceed it; one over it is opened and closed as before.
const KEPT: usize = 4;

/// Opens dockerd's socket; every URI leads there.
#[derive(Clone)]
struct Connector {
    socket: Arc<PathBuf>,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let socket = self.socket.clone();
        Box::pin(async move {
            tokio::net::UnixStream::connect(socket.as_path())
                .await
                .map(TokioIo::new)
        })
    }
}

/// A Docker client on the Unix socket `path` (with or without `unix://`), speaking
/// `version`, each request bounded by `timeout` seconds.
pub fn connect(
    path: &str,
    timeout: u64,
    version: &ClientVersion,
) -> Result<Docker, bollard::errors::Error> {
    let socket = PathBuf::from(path.strip_prefix("unix://").unwrap_or(path));
    if !socket.exists() {
        return Err(bollard::errors::Error::SocketNotFoundError(
            socket.display().to_string(),
        ));
    }
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE)
        .pool_max_idle_per_host(KEPT)
        .pool_timer(TokioTimer::new())
        .build(Connector {
            socket: Arc::new(socket),
        });
    let transport = move |request: BollardRequest| {
        let client = client.clone();
        async move {
            client
                .request(request)
                .await
                .map_err(bollard::errors::Error::from)
        }
    };
    // The authority names no host: the connector decides where every request goes.
    Docker::connect_with_custom_transport(transport, Some("http://docker"), timeout, version)
}
