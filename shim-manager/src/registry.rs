//! The front's index of pods and containers: sandbox ID → the pod's shim, container ID →
//! sandbox ID. It holds nothing that cannot be rebuilt: at start-up it is refilled from the
//! pods' state files (see `supervise::adopt`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dockpod_proto::process::ProcessHandle;
use dockpod_proto::shim::shim_client::ShimClient;
use dockpod_proto::shim::{InfoRequest, InfoResponse, ShutdownRequest};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

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
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(dockpod_proto::MAX_MESSAGE)
            .max_encoding_message_size(dockpod_proto::MAX_MESSAGE)
    }

    pub fn control(&self) -> ShimClient<Channel> {
        ShimClient::new(self.channel.clone())
    }
}

#[derive(Default)]
pub struct Registry {
    pods: RwLock<HashMap<String, Arc<ShimHandle>>>,
    containers: RwLock<HashMap<String, String>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// The single entry whose key is `id` or starts with it.
fn lookup<'a, V>(map: &'a HashMap<String, V>, id: &str) -> Option<(&'a String, &'a V)> {
    if id.is_empty() {
        return None;
    }
    if let Some(entry) = map.get_key_value(id) {
        return Some(entry);
    }
    let mut found = map.iter().filter(|(k, _)| k.starts_with(id));
    match (found.next(), found.next()) {
        (Some(entry), None) => Some(entry),
        _ => None,
    }
}

impl Registry {
    pub fn insert_pod(&self, shim: Arc<ShimHandle>) {
        write(&self.pods).insert(shim.sandbox_id.clone(), shim);
    }

    /// Forgets a pod and its containers.
    pub fn remove_pod(&self, sandbox_id: &str) -> Option<Arc<ShimHandle>> {
        write(&self.containers).retain(|_, s| s != sandbox_id);
        write(&self.pods).remove(sandbox_id)
    }

    pub fn pod(&self, id: &str) -> Option<Arc<ShimHandle>> {
        lookup(&read(&self.pods), id).map(|(_, s)| s.clone())
    }

    pub fn pods(&self) -> Vec<Arc<ShimHandle>> {
        read(&self.pods).values().cloned().collect()
    }

    pub fn insert_container(&self, container_id: &str, sandbox_id: &str) {
        write(&self.containers).insert(container_id.to_string(), sandbox_id.to_string());
    }

    pub fn remove_container(&self, container_id: &str) {
        write(&self.containers).remove(container_id);
    }

    /// The full container ID and its pod's shim.
    pub fn container(&self, id: &str) -> Option<(String, Arc<ShimHandle>)> {
        let (cid, sandbox) = {
            let containers = read(&self.containers);
            let (cid, sandbox) = lookup(&containers, id)?;
            (cid.clone(), sandbox.clone())
        };
        self.pod(&sandbox).map(|s| (cid, s))
    }
}

impl ShimHandle {
    /// The shim's Info, within `PROBE_TIMEOUT`.
    pub async fn info(&self) -> Result<InfoResponse, String> {
        tokio::time::timeout(PROBE_TIMEOUT, self.control().info(InfoRequest {}))
            .await
            .map_err(|_| {
                format!(
                    "shim {} (pid {}) did not answer within {PROBE_TIMEOUT:?}",
                    self.shim_id, self.pid
                )
            })?
            .map(tonic::Response::into_inner)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_full_id_or_unique_prefix() {
        let map = HashMap::from([("abc123".to_string(), 1), ("abd456".to_string(), 2)]);
        assert_eq!(lookup(&map, "abc123").map(|(_, v)| *v), Some(1));
        assert_eq!(lookup(&map, "abd").map(|(_, v)| *v), Some(2));
        assert_eq!(lookup(&map, "ab"), None);
        assert_eq!(lookup(&map, ""), None);
    }
}
