//! The pod's network side: its CNI attachment (set up by `start_sandbox`), deleted on stop
//! and removal and checked on demand (the last CHECK's outcome kept), the pod's hostname in its /etc/hosts, and its IPs as
//! Docker reports them where no CNI is used.

use bollard::models::ContainerInspectResponse;
use dockpod_proto::cri::PodSandboxConfig;

use super::Pod;
use crate::cni::Cni;
use crate::error::{Error, Result};

impl Pod {
    /// The CNI settings when this pod's network comes from CNI (not for host-network pods).
    pub(super) fn pod_cni(&self, config: &PodSandboxConfig) -> Option<&Cni> {
        let host_network = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|o| o.network == dockpod_proto::cri::NamespaceMode::Node as i32);
        self.cni.as_ref().filter(|_| !host_network)
    }

    /// The sandbox's network namespace path while its process lives, else empty (CNI's DEL
    /// then still releases addresses and rules). The process held since the sandbox started
    /// answers while it lives (a pidfd: a PID another process took since is not it); Docker
    /// is asked otherwise, and the process it names is held from then on. A StopPodSandbox in
    /// a burst of them waited 9 ms (median of 40) for that Docker request.
    pub(super) async fn sandbox_netns(&self, sandbox: &str) -> String {
        if sandbox.is_empty() {
            return String::new();
        }
        let held = self
            .sandbox_process()
            .as_ref()
            .filter(|(id, process)| id == sandbox && process.alive())
            .map(|(_, process)| process.pid());
        if let Some(pid) = held {
            return format!("/proc/{pid}/ns/net");
        }
        let pid = match self.engine.inspect(sandbox).await {
            Ok(Some(c)) => c.state.and_then(|s| s.pid).unwrap_or(0),
            _ => 0,
        };
        if pid > 0 {
            self.hold_sandbox_process(sandbox, pid);
            format!("/proc/{pid}/ns/net")
        } else {
            String::new()
        }
    }

    /// Holds the sandbox's process, `pid` as Docker reported it a moment ago; nothing when it
    /// has gone since.
    pub(super) fn hold_sandbox_process(&self, sandbox: &str, pid: i64) {
        let process = u32::try_from(pid)
            .ok()
            .and_then(|pid| dockpod_proto::process::ProcessHandle::open(pid).ok());
        *self.sandbox_process() = process.map(|p| (sandbox.to_string(), p));
    }

    fn sandbox_process(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(String, dockpod_proto::process::ProcessHandle)>> {
        self.sandbox_process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deletes the sandbox's CNI attachment, if it has one; idempotent. An adopted pod's other
    /// libcni attachments (cri-dockerd's loopback network) go first, as cri-dockerd deleted
    /// them, and a failure there is only logged, as it was. The caller saves the record with
    /// the rest of its operation: a shim cut before that save deletes the network again on
    /// the retry, which CNI's DEL allows.
    pub(super) async fn teardown_network(&self) -> Result<()> {
        let (network, sandbox, adopted) = {
            let r = self.record();
            (r.network.clone(), r.sandbox_id.clone(), r.adopted)
        };
        if network.is_empty() {
            return Ok(());
        }
        let Some(cni) = &self.cni else {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {sandbox} is attached to CNI network {network:?}, but this shim was started without CNI"
            )));
        };
        let netns = self.sandbox_netns(&sandbox).await;
        if adopted {
            let others = cni.libcni_attachments(&sandbox).await?;
            for other in others.iter().filter(|a| a.network_name != network) {
                if let Err(e) = cni.del(other, &netns).await {
                    tracing::warn!(sandbox = %sandbox, network = %other.network_name, error = %e, "deleting an adopted pod's extra network");
                }
            }
        }
        match cni.load(&network, &sandbox).await? {
            Some(attachment) => {
                cni.del(&attachment, &netns).await?;
                tracing::info!(sandbox = %sandbox, network = %network, "pod network deleted");
            }
            None => {
                tracing::warn!(sandbox = %sandbox, network = %network, "no recorded CNI attachment; nothing to delete")
            }
        }
        self.record().network.clear();
        Ok(())
    }

    /// Runs CNI CHECK on a running sandbox's attachment and keeps the outcome for verbose
    /// status; None when the sandbox has no CNI attachment or no running process.
    pub async fn check_network(&self) -> Option<NetworkCheck> {
        let (network, sandbox) = {
            let r = self.record();
            (r.network.clone(), r.sandbox_id.clone())
        };
        let cni = self.cni.as_ref().filter(|_| !network.is_empty())?;
        let netns = self.sandbox_netns(&sandbox).await;
        if netns.is_empty() {
            return None;
        }
        let (result, outcome) = match cni.load(&network, &sandbox).await {
            Ok(Some(a)) => {
                let checked = cni.check(&a, &netns).await;
                (a.result, checked)
            }
            Ok(None) => (
                None,
                Err(Error::Network(format!(
                    "no cached attachment to network {network:?}"
                ))),
            ),
            Err(e) => (None, Err(e)),
        };
        let check = NetworkCheck {
            network,
            sandbox,
            at: crate::docker::now_ns(),
            result,
            outcome: outcome.map_err(|e| e.to_string()),
        };
        if let Ok(mut last) = self.last_network_check.lock() {
            *last = Some(check.clone());
        }
        Some(check)
    }

    /// The last CHECK of the pod's current attachment, if one ran since it was set up.
    pub fn last_network_check(&self) -> Option<NetworkCheck> {
        let (network, sandbox) = {
            let r = self.record();
            (r.network.clone(), r.sandbox_id.clone())
        };
        self.last_network_check
            .lock()
            .ok()?
            .clone()
            .filter(|c| c.network == network && c.sandbox == sandbox)
    }
}

/// The outcome of a CNI CHECK of the pod's attachment. CHECK starts every plugin of the
/// chain (and iptables, under the node's xtables lock), so it runs when the shim starts and
/// when an operator asks (`shim-manager check`), and verbose status reports the last one.
#[derive(Clone, Debug)]
pub struct NetworkCheck {
    pub network: String,
    pub sandbox: String,
    /// Nanoseconds since the epoch.
    pub at: i64,
    /// The attachment's cached ADD result.
    pub result: Option<serde_json::Value>,
    pub outcome: std::result::Result<(), String>,
}

/// Names the pod's hostname in its /etc/hosts (Docker's file for the sandbox, which the pod's
/// containers share): with no Docker network, Docker wrote only the loopback names there.
pub(super) fn add_hosts_entry(inspect: &ContainerInspectResponse, ips: &[String]) -> Result<()> {
    use std::io::Write;
    let hostname = inspect
        .config
        .as_ref()
        .and_then(|c| c.hostname.as_deref())
        .unwrap_or_default();
    let (Some(path), Some(ip)) = (inspect.hosts_path.as_deref(), ips.first()) else {
        return Ok(());
    };
    if hostname.is_empty() || path.is_empty() {
        return Ok(());
    }
    let mut hosts = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(Error::io(format!("opening {path}")))?;
    writeln!(hosts, "{ip}\t{hostname}").map_err(Error::io(format!("writing {path}")))
}
