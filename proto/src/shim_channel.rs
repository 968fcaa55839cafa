//! The front's gRPC connection to one shim: HTTP/2 over the shim's Unix socket, each call
//! handed straight to hyper's connection from the caller's task.
//!
//! tonic's `Channel` puts a buffer task in front of its connection (tower's `Buffer`), so a
//! forwarded call woke three of the front's tasks on its way out (the caller's, the buffer's,
//! the connection's) where two do the work. On this project's 2-core nested hypervisor each
//! wake-up costs 0.1-0.2 ms of latency, on every call the front forwards. A shim's connection
//! needs none of what the buffer is for (load balancing, a pool of endpoints, back-pressure
//! across callers: hyper's HTTP/2 sender is itself shared by clones), so the call goes from the
//! caller's task to hyper's sender.
//!
//! Like `Channel`, it connects on the first call and again on the first call after the
//! connection closed (the shim restarted): a call on a connection that dies fails, the next
//! one connects anew, and one that found the connection closed before it was sent is sent
//! on a new one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::body::Body;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A lazily connecting gRPC channel to the server on the Unix socket at a path; clones share
/// its connection.
#[derive(Clone)]
pub struct ShimChannel {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    /// The connection's sender while it is open; taken by whoever finds it closed.
    sender: Mutex<Option<SendRequest<Body>>>,
    /// Held while connecting, so that callers arriving together share one connection.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ShimChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimChannel")
            .field("socket", &self.inner.socket)
            .finish_non_exhaustive()
    }
}

impl ShimChannel {
    /// A channel to `socket`; nothing is connected until the first call.
    pub fn new(socket: &Path) -> ShimChannel {
        ShimChannel {
            inner: Arc::new(Inner {
                socket: socket.to_path_buf(),
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl Inner {
    fn open_sender(&self) -> Option<SendRequest<Body>> {
        let kept = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        kept.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The open connection's sender, connecting first when there is none.
    async fn sender(&self) -> Result<SendRequest<Body>, BoxError> {
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        // Unavailable, as tonic's `Channel` reports a server it cannot reach: the shim may be
        // starting again, and a retry may find it.
        let unreachable = |e: &dyn std::fmt::Display| {
            tonic::Status::unavailable(format!("connecting to {}: {e}", self.socket.display()))
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| unreachable(&e))?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        let socket = self.socket.display().to_string();
        drop(tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, socket, "the connection to a shim ended");
            }
        }));
        *self.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }
}

impl tower::Service<http::Request<Body>> for ShimChannel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the connection's, found in `call`: HTTP/2 takes calls side by side.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            // tonic's generated clients send a path alone; HTTP/2 asks for a scheme and an
            // authority, which a Unix socket has no use for.
            let mut parts = request.uri().clone().into_parts();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(http::uri::Authority::from_static("localhost"));
            *request.uri_mut() = http::Uri::from_parts(parts)?;
            let mut sender = inner.sender().await?;
            match sender.try_send_request(request).await {
                Ok(response) => Ok(response),
                Err(mut unsent) => match unsent.take_message() {
                    // It never left: the connection had closed (the shim restarted) before
                    // this caller saw it. Once more, on a new connection.
                    Some(request) => Ok(inner.sender().await?.send_request(request).await?),
                    None => Err(unsent.into_error().into()),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::shim_client::ShimClient;
    use crate::shim::shim_server::{Shim, ShimServer};
    use crate::shim::{
        CheckNetworkRequest, CheckNetworkResponse, InfoRequest, InfoResponse, InspectRequest,
        InspectResponse, ProcessesRequest, ProcessesResponse, ShutdownRequest, ShutdownResponse,
    };
    use tonic::{Request, Response, Status};

    struct Answers;

    #[tonic::async_trait]
    impl Shim for Answers {
        async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
            Ok(Response::new(InfoResponse {
                pid: std::process::id(),
                ..Default::default()
            }))
        }

        async fn shutdown(
            &self,
            _: Request<ShutdownRequest>,
        ) -> Result<Response<ShutdownResponse>, Status> {
            Err(Status::unimplemented("not here"))
        }

        async fn inspect(
            &self,
            _: Request<InspectRequest>,
        ) -> Result<Response<InspectResponse>, Status> {
            Err(Status::unimplemented("not here"))
        }

        async fn check_network(
            &self,
            _: Request<CheckNetworkRequest>,
        ) -> Result<Response<CheckNetworkResponse>, Status> {
            Err(Status::unimplemented("not here"))
        }

        async fn processes(
            &self,
            _: Request<ProcessesRequest>,
        ) -> Result<Response<ProcessesResponse>, Status> {
            Err(Status::unimplemented("not here"))
        }
    }

    /// Serves `Answers` on `socket` until the sender is dropped; the task ends once every
    /// connection is closed.
    fn serve(
        socket: &Path,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::UnixListener::bind(socket).expect("bind");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ShimServer::new(Answers))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        (stop, task)
    }

    /// Calls go through, side by side on one connection; once the server is gone a call
    /// fails, and once it is back the next call connects again.
    #[tokio::test]
    async fn connects_lazily_and_again_after_the_server_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("shim.sock");
        let channel = ShimChannel::new(&socket);
        let mut client = ShimClient::new(channel.clone());
        let (stop, server) = serve(&socket);
        let calls = (0..8).map(|_| {
            let mut client = client.clone();
            async move { client.info(InfoRequest::default()).await }
        });
        for answer in futures_util::future::join_all(calls).await {
            assert_eq!(answer.expect("info").into_inner().pid, std::process::id());
        }
        let refused = client.shutdown(ShutdownRequest::default()).await;
        assert_eq!(
            refused.expect_err("unimplemented").code(),
            tonic::Code::Unimplemented,
            "a status travels back as it was sent"
        );

        drop(stop);
        server.await.expect("the server ends");
        std::fs::remove_file(&socket).expect("the old socket");
        let failed = client.info(InfoRequest::default()).await;
        assert_eq!(
            failed.expect_err("no server").code(),
            tonic::Code::Unavailable,
            "as tonic's own channel says it"
        );

        let (_stop, _server) = serve(&socket);
        let answer = client.info(InfoRequest::default()).await.expect("info");
        assert_eq!(answer.into_inner().pid, std::process::id());
    }
}
