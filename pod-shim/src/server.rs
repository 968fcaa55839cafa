//! The shim's gRPC server: `dockpod.shim.v1` on its own unix socket, until shutdown is asked
//! for over the protocol or by a signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use dockpod_proto::shim::shim_server::{Shim, ShimServer};
use dockpod_proto::shim::{InfoRequest, InfoResponse, ShutdownRequest, ShutdownResponse};
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::config::ShimConfig;

struct ShimService {
    config: ShimConfig,
    started: Instant,
    shutdown: Arc<Notify>,
}

#[tonic::async_trait]
impl Shim for ShimService {
    async fn info(&self, _req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let pid = std::process::id();
        let memory = dockpod_proto::procfs::memory(pid)
            .map_err(|e| Status::internal(format!("reading /proc/{pid}: {e}")))?;
        let (namespace, name) = self.config.pod.split_once('/').unwrap_or(("", ""));
        Ok(Response::new(InfoResponse {
            protocol_version: dockpod_proto::PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid,
            sandbox_id: self.config.sandbox_id.clone(),
            pod_namespace: namespace.to_string(),
            pod_name: name.to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            rss_bytes: memory.rss_bytes,
            pss_bytes: memory.pss_bytes,
        }))
    }

    async fn shutdown(
        &self,
        _req: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!("shutdown requested by the front");
        self.shutdown.notify_one();
        Ok(Response::new(ShutdownResponse {}))
    }
}

/// Serves on `listener` until `signal` completes or the front asks for shutdown.
pub async fn run(
    config: ShimConfig,
    listener: UnixListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let shutdown = Arc::new(Notify::new());
    let service = ShimService {
        config,
        started: Instant::now(),
        shutdown: shutdown.clone(),
    };
    let stop = async move {
        tokio::select! {
            () = signal => {},
            () = shutdown.notified() => {},
        }
    };
    tonic::transport::Server::builder()
        .add_service(ShimServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop)
        .await
}
