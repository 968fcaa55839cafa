//! The shim's gRPC server on its unix socket: `dockpod.shim.v1` and the pod-scoped
//! `runtime.v1.RuntimeService`, until the front asks for shutdown, the pod is removed, or a
//! signal arrives.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use dockpod_proto::cri::runtime_service_server::RuntimeServiceServer;
use dockpod_proto::shim::shim_server::{Shim, ShimServer};
use dockpod_proto::shim::{
    CheckNetworkRequest, CheckNetworkResponse, ContainerProcess, InfoRequest, InfoResponse,
    InspectRequest, InspectResponse, ProcessesRequest, ProcessesResponse, ShutdownRequest,
    ShutdownResponse,
};
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::cri::ShimRuntime;
use crate::lifecycle::Pod;

use dockpod_proto::MAX_MESSAGE;

struct ShimService {
    pod: Arc<Pod>,
    streaming: Arc<crate::streaming::Streaming>,
    started: Instant,
    shutdown: Arc<Notify>,
}

#[tonic::async_trait]
impl Shim for ShimService {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let pid = std::process::id();
        let memory = if req.into_inner().skip_memory {
            dockpod_proto::procfs::Memory::default()
        } else {
            dockpod_proto::procfs::memory(pid)
                .map_err(|e| Status::internal(format!("reading /proc/{pid}: {e}")))?
        };
        let record = self.pod.snapshot();
        let meta = record.config.metadata.clone().unwrap_or_default();
        Ok(Response::new(InfoResponse {
            protocol_version: dockpod_proto::PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid,
            sandbox_id: record.sandbox_id.clone(),
            pod_namespace: meta.namespace,
            pod_name: meta.name,
            uptime_seconds: self.started.elapsed().as_secs(),
            rss_bytes: memory.rss_bytes,
            pss_bytes: memory.pss_bytes,
            containers_running: record.running_containers() as u32,
            containers_total: record.containers.len() as u32,
            restarts: record.restarts(),
            panics: dockpod_proto::panics::count(),
            streaming_sessions: self.streaming.sessions.open() as u32,
            sandbox_starting: self.pod.sandbox_starting(),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
                .try_into()
                .unwrap_or(u32::MAX),
        }))
    }

    async fn inspect(
        &self,
        _req: Request<InspectRequest>,
    ) -> Result<Response<InspectResponse>, Status> {
        let record = self.pod.snapshot();
        let json = serde_json::json!({
            "shimId": self.pod.shim_id,
            "shimPid": std::process::id(),
            "instance": self.pod.instance,
            "uptimeSeconds": self.started.elapsed().as_secs(),
            "oomScoreAdjFloor": self.pod.host.min_oom_score_adj,
            "pod": record,
        });
        Ok(Response::new(InspectResponse {
            json: serde_json::to_string_pretty(&json).unwrap_or_default(),
        }))
    }

    async fn check_network(
        &self,
        _req: Request<CheckNetworkRequest>,
    ) -> Result<Response<CheckNetworkResponse>, Status> {
        let response = match self.pod.check_network().await {
            Some(check) => CheckNetworkResponse {
                checked: true,
                network: check.network,
                error: check.outcome.err().unwrap_or_default(),
            },
            None => CheckNetworkResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn processes(
        &self,
        _req: Request<ProcessesRequest>,
    ) -> Result<Response<ProcessesResponse>, Status> {
        let record = self.pod.snapshot();
        let mut wanted: Vec<(String, String, bool)> = Vec::new();
        if !record.sandbox_id.is_empty() {
            wanted.push((record.sandbox_id.clone(), String::new(), true));
        }
        let mut containers: Vec<_> = record.containers.values().collect();
        containers.sort_by_key(|c| (c.name().to_string(), c.created_at));
        wanted.extend(
            containers
                .into_iter()
                .map(|c| (c.id.clone(), c.name().to_string(), false)),
        );
        let mut found = Vec::with_capacity(wanted.len());
        // Asked of Docker now rather than taken from the last inspection: a PID read from
        // an older look may by now name another process.
        for (id, name, sandbox) in wanted {
            let pid = self
                .pod
                .engine
                .inspect(&id)
                .await?
                .and_then(|c| c.state)
                .filter(|s| s.running == Some(true))
                .and_then(|s| s.pid)
                .and_then(|pid| u32::try_from(pid).ok())
                .unwrap_or(0);
            found.push(ContainerProcess {
                id,
                name,
                sandbox,
                pid,
            });
        }
        Ok(Response::new(ProcessesResponse { containers: found }))
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

/// How long a shim whose pod was removed waits for the front's Shutdown before it stops.
const REMOVED_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves on `listener` until `signal` completes, the front asks for shutdown, or the pod is
/// removed.
pub async fn run(
    pod: Arc<Pod>,
    streaming: Arc<crate::streaming::Streaming>,
    listener: UnixListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let shutdown = Arc::new(Notify::new());
    let removed = pod.removed.clone();
    let closing = pod.closing.clone();
    let service = ShimService {
        pod: pod.clone(),
        streaming: streaming.clone(),
        started: Instant::now(),
        shutdown: shutdown.clone(),
    };
    let stop = async move {
        let removed = async {
            removed.notified().await;
            // The front retires a removed pod's shim (Shutdown) once the shim has answered:
            // a shim that stopped at once would take the two cores from that answer on its
            // way to the kubelet. A front that died meanwhile never asks, so the shim also
            // goes on its own, a moment later.
            tokio::time::sleep(REMOVED_EXIT_WAIT).await;
        };
        tokio::select! {
            () = signal => {},
            () = shutdown.notified() => {},
            () = removed => {},
        }
        closing.send_replace(true);
    };
    tonic::transport::Server::builder()
        .max_concurrent_streams(dockpod_proto::MAX_CONCURRENT_STREAMS)
        .add_service(ShimServer::new(service))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            RuntimeServiceServer::new(ShimRuntime {
                pod,
                streaming,
                usage: Default::default(),
                making: Default::default(),
                changing: Default::default(),
            })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
            // The pod's calls are its work: what they leave is given back once it is quiet.
            |request: Request<()>| {
                crate::memory::busy();
                Ok(request)
            },
        ))
        .serve_with_incoming_shutdown(dockpod_proto::authority::incoming(listener), stop)
        .await
}
