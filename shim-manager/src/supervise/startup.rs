//! The supervisor's start-up: re-indexing the pods a previous front left (from their state
//! files, so a stuck shim cannot delay serving), settling the RunPodSandbox calls it left
//! unfinished, deleting sockets nothing owns, and taking over each live shim (replaced if it
//! speaks another protocol revision) or starting a new one for a dead one. Also the adoption
//! of one cri-dockerd pod, which ends the same way: a supervised shim in the registry.

use std::path::Path;
use std::sync::Arc;

use dockpod_proto::cri::ListContainersRequest;
use dockpod_proto::layout;
use dockpod_proto::manager::shim_upgrade::Outcome;
use dockpod_proto::pod_state::{live_shim_pid, shim_processes, PodSummary};
use dockpod_proto::process::ProcessHandle;

use super::{Supervisor, LIVENESS_INTERVAL};
use crate::error::{Error, Result};
use crate::shim::ShimHandle;

/// How long a RunPodSandbox left running by a dead front may take to end before its pod is
/// abandoned (image checks and a CNI chain of up to a minute per plugin).
const UNFINISHED_RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The running shim of a pod directory, if any: its PID file names a live `pod-shim` of that
/// shim ID, also after the handle is open (so the handle is on that process, not on one that
/// got the PID in between). A shim that has not written its PID file yet (it does once its
/// sockets are bound) is found by its command line.
fn live_shim(pod_dir: &Path, shim_id: &str) -> Option<ProcessHandle> {
    if let Some(pid) = live_shim_pid(pod_dir, shim_id) {
        let process = ProcessHandle::open(pid).ok()?;
        return (live_shim_pid(pod_dir, shim_id) == Some(pid)).then_some(process);
    }
    let opened: Vec<ProcessHandle> = shim_processes(shim_id)
        .into_iter()
        .filter_map(|pid| ProcessHandle::open(pid).ok())
        .collect();
    // One more look after the handles are open, so none is on a process that took a PID
    // in between (one scan of /proc, not one per candidate).
    let still = shim_processes(shim_id);
    opened.into_iter().find(|p| still.contains(&p.pid()))
}

impl Supervisor {
    /// Indexes every pod under the root directory from its state file and supervises its
    /// shim: a live one is checked for its protocol revision (and replaced if it speaks
    /// another), a gone one is started again. Returns without waiting for any shim.
    pub fn resume_pods(self: &Arc<Self>) {
        self.remove_stray_sockets();
        let pods_dir = layout::pods_dir(&self.spawner.root_dir);
        let entries = match std::fs::read_dir(&pods_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(dir = %pods_dir.display(), error = %e, "cannot read the pods' state");
                return;
            }
        };
        for entry in entries.filter_map(|e| e.ok()) {
            if let Some(shim_id) = entry.file_name().to_str().and_then(layout::removed_pod) {
                // A pod removed while the previous front ran, which died before it deleted
                // what the pod left (its shim, if it still runs, stops by itself).
                tracing::info!(shim = %shim_id, "deleting a removed pod's directory");
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "deleting a removed pod's directory");
                }
                continue;
            }
            let Some(shim_id) = entry
                .file_name()
                .to_str()
                .filter(|n| layout::is_shim_id(n))
                .map(str::to_string)
            else {
                continue;
            };
            let pod_dir = entry.path();
            if pod_dir.join(layout::ABANDONED_FILE).exists() {
                // Given up by a front that died before the clean-up was through.
                let supervisor = self.clone();
                let deciding = self.settling.begin(&shim_id);
                self.tasks.spawn(async move {
                    supervisor.finish_abandoning(shim_id, pod_dir).await;
                    drop(deciding);
                });
                continue;
            }
            let summary = match PodSummary::load(&pod_dir) {
                Ok(Some(s)) if !s.sandbox_id.is_empty() => s,
                Ok(_) => {
                    // A RunPodSandbox the previous front started and did not see to its end.
                    let pods = self.clone();
                    let deciding = self.settling.begin(&shim_id);
                    self.tasks.spawn(async move {
                        pods.settle_unfinished(shim_id, pod_dir).await;
                        drop(deciding);
                    });
                    continue;
                }
                Err(e) => {
                    tracing::error!(dir = %pod_dir.display(), error = %e, "unreadable pod state; pod skipped");
                    continue;
                }
            };
            let process = live_shim(&pod_dir, &shim_id);
            let pid = process.as_ref().map_or(0, ProcessHandle::pid);
            let shim = Arc::new(ShimHandle::at(
                &self.spawner.run_dir,
                &shim_id,
                &summary.sandbox_id,
                process,
            ));
            // Nothing else runs yet, so the lock is free; it is taken all the same, as for
            // every change of a pod's shim.
            let lock = self.locks.of(&shim_id);
            let Ok(_held) = lock.try_lock() else {
                tracing::error!(shim = %shim_id, "pod lock held at start-up; pod skipped");
                continue;
            };
            for c in &summary.container_ids {
                self.registry.insert_container(c, &summary.sandbox_id);
            }
            self.registry.insert_pod(shim.clone());
            tracing::info!(sandbox = %shim.sandbox_id, pid, "indexed pod");
            let pods = self.clone();
            self.tasks.spawn(async move { pods.take_over(shim).await });
        }
    }

    /// Deletes the sockets of shims whose pod directory is gone: a shim killed after it
    /// removed its pod's state (the last step of RemovePodSandbox) while no front watched
    /// could not delete them itself. Runs before any shim of this front is started.
    fn remove_stray_sockets(&self) {
        let pods_dir = layout::pods_dir(&self.spawner.root_dir);
        for socket in crate::shim::shim_sockets(&self.spawner.run_dir) {
            let Some(shim_id) = socket.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if pods_dir.join(shim_id).exists() {
                continue;
            }
            tracing::info!(socket = %socket.display(), "removing the socket of a shim whose pod is gone");
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_file(dockpod_proto::streaming::shim_stream_socket(
                &self.spawner.run_dir,
                shim_id,
            ));
        }
    }

    /// A pod directory without a sandbox: a RunPodSandbox whose front died before it ended.
    /// A shim still running it is given the time to finish (it runs its call to the end);
    /// the pod is then served like any other. A pod whose shim died first, or never gets a
    /// sandbox, is abandoned: what it left in Docker and CNI is deleted, so the kubelet's
    /// retry finds neither a name in use nor an address taken.
    async fn settle_unfinished(self: Arc<Self>, shim_id: String, pod_dir: std::path::PathBuf) {
        let summary = |pod_dir: &Path| match PodSummary::load(pod_dir) {
            Ok(Some(s)) if !s.sandbox_id.is_empty() => Some(s),
            _ => None,
        };
        let deadline = tokio::time::Instant::now() + UNFINISHED_RUN_TIMEOUT;
        let mut settled = summary(&pod_dir);
        while settled.is_none() && tokio::time::Instant::now() < deadline {
            // Found again each round: the process first seen may be the shim's parent, which
            // exits once its daemon child runs.
            let Some(process) = live_shim(&pod_dir, &shim_id) else {
                break;
            };
            let shim = ShimHandle::at(&self.spawner.run_dir, &shim_id, "", Some(process));
            // A shim that answers and runs no RunPodSandbox will never get a sandbox: its
            // front died between starting it and asking.
            if let Ok(info) = shim.info().await {
                if !info.sandbox_starting && info.sandbox_id.is_empty() {
                    settled = summary(&pod_dir);
                    break;
                }
            }
            tokio::select! {
                () = shim.exited() => {}
                () = tokio::time::sleep(LIVENESS_INTERVAL / 5) => {}
            }
            settled = summary(&pod_dir);
        }
        let lock = self.locks.of(&shim_id);
        let held = lock.lock().await;
        let process = live_shim(&pod_dir, &shim_id);
        let sandbox_id = settled.as_ref().map_or("", |s| s.sandbox_id.as_str());
        let shim = Arc::new(ShimHandle::at(
            &self.spawner.run_dir,
            &shim_id,
            sandbox_id,
            process,
        ));
        let Some(summary) = settled else {
            tracing::warn!(shim = %shim_id, "abandoning a pod whose RunPodSandbox never ended");
            self.spawner.abandon(&shim, "unfinished").await;
            return;
        };
        for c in &summary.container_ids {
            self.registry.insert_container(c, &summary.sandbox_id);
        }
        self.registry.insert_pod(shim.clone());
        tracing::info!(sandbox = %shim.sandbox_id, pid = shim.pid, "indexed a pod whose RunPodSandbox ended after its front");
        // `take_over` may replace the shim, which takes the lock itself.
        drop(held);
        self.take_over(shim).await;
    }

    /// Cleans up again after a pod a dead front was giving up (the clean-up deletes only
    /// what is left, so running it twice is safe).
    async fn finish_abandoning(self: Arc<Self>, shim_id: String, pod_dir: std::path::PathBuf) {
        let lock = self.locks.of(&shim_id);
        let _held = lock.lock().await;
        let process = live_shim(&pod_dir, &shim_id);
        let shim = ShimHandle::at(&self.spawner.run_dir, &shim_id, "", process);
        tracing::warn!(shim = %shim_id, "finishing the clean-up of a pod a previous front gave up");
        self.spawner.abandon(&shim, "abandoned").await;
    }

    async fn take_over(self: Arc<Self>, shim: Arc<ShimHandle>) {
        if shim.alive() {
            match shim.info().await {
                Ok(info) if info.protocol_version != dockpod_proto::PROTOCOL_VERSION => {
                    tracing::warn!(sandbox = %shim.sandbox_id, theirs = info.protocol_version, ours = dockpod_proto::PROTOCOL_VERSION, "shim speaks another protocol revision; replacing it");
                    let report = self.replace(&shim, true).await;
                    if report.outcome != Outcome::Upgraded as i32 {
                        tracing::error!(sandbox = %shim.sandbox_id, error = %report.message, "replacing the shim failed");
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "shim does not answer; serving its pod from Docker until it does")
                }
            }
        }
        self.supervise(shim).await;
    }

    /// Serves a pod cri-dockerd created: a shim started with `--adopt` builds the pod's
    /// record from Docker and the checkpoint, and its containers are indexed from its answer.
    pub async fn adopt_cri_dockerd_pod(
        self: &Arc<Self>,
        sandbox: &str,
        display: &str,
        checkpoint: &Path,
    ) -> Result<()> {
        let mut args: Vec<std::ffi::OsString> = vec!["--adopt".into(), sandbox.into()];
        if checkpoint.exists() {
            args.push("--adopt-checkpoint".into());
            args.push(checkpoint.into());
        }
        let shim = self.spawner.spawn_with(display, &args).await?;
        let lock = self.locks.of(&shim.shim_id);
        let _held = lock.lock().await;
        let shim = Arc::new(ShimHandle {
            sandbox_id: sandbox.to_string(),
            ..shim
        });
        let containers = shim
            .runtime()
            .list_containers(ListContainersRequest::default())
            .await
            .map_err(|s| {
                Error::FailedPrecondition(format!(
                    "listing the adopted pod's containers: {}",
                    s.message()
                ))
            })?
            .into_inner()
            .containers;
        for c in containers {
            self.registry.insert_container(&c.id, sandbox);
        }
        self.registry.insert_pod(shim.clone());
        self.supervise(shim).await;
        Ok(())
    }
}
