//! One pod's shim as the front reaches it: its socket, its process (through a pidfd, see
//! `dockpod_proto::process`) and the calls the front makes to it beyond the CRI (Info,
//! Shutdown). Holds no state of the pod; the supervisor decides which handle is current.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::process::ProcessHandle;
use dockpod_proto::shim::shim_client::ShimClient;
use dockpod_proto::shim::{InfoRequest, InfoResponse, ShutdownRequest};
use tonic::transport::Channel;

use crate::metrics::ShimCalls;

/// How long a shim may take to answer Info.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One pod's shim as the front reaches it.
#[derive(Debug)]
pub struct ShimHandle {
    pub shim_id: String,
    pub sandbox_id: String,
    pub socket: PathBuf,
    pub pid: u32,
    /// The shim's process, when it was running as the handle was made.
    pub process: Option<ProcessHandle>,
    pub channel: Channel,
}

impl ShimHandle {
    pub fn runtime(&self) -> RuntimeServiceClient<ShimCalls<Channel>> {
        RuntimeServiceClient::new(ShimCalls::new(self.channel.clone()))
            .max_decoding_message_size(dockpod_proto::MAX_MESSAGE)
            .max_encoding_message_size(dockpod_proto::MAX_MESSAGE)
    }

    pub fn control(&self) -> ShimClient<ShimCalls<Channel>> {
        ShimClient::new(ShimCalls::new(self.channel.clone()))
    }
}

impl ShimHandle {
    /// The shim's Info, within `PROBE_TIMEOUT`, without its memory: the front's callers (the
    /// liveness probe among them) need none of it, and it is the costly part.
    pub async fn info(&self) -> Result<InfoResponse, String> {
        let request = InfoRequest { skip_memory: true };
        tokio::time::timeout(PROBE_TIMEOUT, self.control().info(request))
            .await
            .map_err(|_| {
                format!(
                    "shim {} (pid {}) did not answer within {PROBE_TIMEOUT:?}",
                    self.shim_id, self.pid
                )
            })?
            .map(tonic::Response::into_inner)
            .inspect(|info| crate::metrics::global().shim_panics(&self.shim_id, info.panics))
            .map_err(|e| format!("shim {}: {}", self.shim_id, e.message()))
    }

    /// A handle on the shim `shim_id` under `run_dir`, whatever its state.
    pub fn at(
        run_dir: &Path,
        shim_id: &str,
        sandbox_id: &str,
        process: Option<ProcessHandle>,
    ) -> ShimHandle {
        let socket = dockpod_proto::layout::shim_socket(run_dir, shim_id);
        ShimHandle {
            shim_id: shim_id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            channel: dockpod_proto::sockets::channel(&socket),
            socket,
            pid: process.as_ref().map_or(0, ProcessHandle::pid),
            process,
        }
    }

    /// Whether the shim's process runs (a PID reused by another process is not the shim).
    pub fn alive(&self) -> bool {
        self.process.as_ref().is_some_and(ProcessHandle::alive)
    }

    /// Returns once the shim's process has exited (at once for a handle without one).
    pub async fn exited(&self) {
        if let Some(process) = &self.process {
            process.exited().await;
        }
    }

    /// Asks the shim to shut down and gives it `timeout` to answer and `timeout` to exit,
    /// then kills it; true once it is gone.
    pub async fn shut_down(&self, timeout: Duration) -> bool {
        let _ = tokio::time::timeout(timeout, self.control().shutdown(ShutdownRequest {})).await;
        self.stop_within(timeout).await
    }

    /// Waits up to `timeout` for the shim to exit, then kills it; true once it is gone.
    pub async fn stop_within(&self, timeout: Duration) -> bool {
        let Some(process) = &self.process else {
            return true;
        };
        if process.wait_exited(timeout).await {
            return true;
        }
        if let Err(e) = process.kill() {
            tracing::warn!(shim = %self.shim_id, pid = self.pid, error = %e, "killing a shim");
        }
        process.wait_exited(timeout).await
    }
}

/// Sockets of the shims under `run_dir`, whatever their state.
pub fn shim_sockets(run_dir: &Path) -> Vec<PathBuf> {
    let dir = dockpod_proto::layout::shim_socket_dir(run_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut sockets: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()) == Some("sock")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(dockpod_proto::layout::is_shim_id)
        })
        .collect();
    sockets.sort();
    sockets
}
