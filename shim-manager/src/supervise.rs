//! Keeps one live shim per pod. Each shim has a supervising task in the front that forwards
//! its container events and watches the process through a pidfd (so a reused PID cannot hide
//! a dead shim): when a shim dies, the task starts a new one for the same pod (same shim ID,
//! so the same socket, state and container labels), which rebuilds its view from the pod's
//! record and from Docker. A shim that lives but leaves the liveness probe unanswered for
//! longer than `--shim-liveness-timeout` (deadlocked) is killed and replaced the same way.
//! The same machinery re-indexes the pods when the front starts (from their state files, so
//! a stuck shim cannot delay serving), settles the RunPodSandbox calls a dead front left
//! unfinished, and replaces shims on `upgrade-shims` or when a shim speaks another protocol
//! revision.
//!
//! A per-pod lock orders these: whoever holds it may stop or start that pod's shim, and a
//! task that wakes to a dead shim first checks that the shim is still the pod's current one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dockpod_proto::layout;
use dockpod_proto::manager::shim_upgrade::Outcome;
use dockpod_proto::manager::ShimUpgrade;
use dockpod_proto::pod_state::{live_shim_pid, shim_processes, PodSummary};
use dockpod_proto::process::ProcessHandle;
use k8s_cri::v1::ContainerEventResponse;
use tokio_stream::StreamExt;
use tonic::Streaming;

use crate::events::subscribe_shim;
use crate::pods::Pods;
use crate::registry::ShimHandle;
use crate::spawn::EXIT_TIMEOUT;

/// How often a live shim whose event stream ended is subscribed to again, and how often it is
/// probed for liveness.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a RunPodSandbox left running by a dead front may take to end before its pod is
/// abandoned (image checks and a CNI chain of up to a minute per plugin).
const UNFINISHED_RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// Probes of a shim that answers its event stream go this far apart.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// First and longest pause between attempts to start a pod's shim again.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// One lock per pod (by shim ID) for stopping and starting its shim.
#[derive(Default)]
pub struct RestartLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl RestartLocks {
    fn of(&self, shim_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Locks of removed pods are dropped here rather than tracked: nobody else holds them.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(shim_id.to_string()).or_default().clone()
    }
}

/// The running shim of a pod directory, if any: its PID file names a live `pod-shim` of that
/// shim ID, also after the handle is open (so the handle is on that process, not on one that
/// got the PID in between). A shim that has not written its PID file yet (it does once its
/// sockets are bound) is found by its command line.
fn live_shim(pod_dir: &std::path::Path, shim_id: &str) -> Option<ProcessHandle> {
    if let Some(pid) = live_shim_pid(pod_dir, shim_id) {
        let process = ProcessHandle::open(pid).ok()?;
        return (live_shim_pid(pod_dir, shim_id) == Some(pid)).then_some(process);
    }
    shim_processes(shim_id)
        .into_iter()
        .filter_map(|pid| ProcessHandle::open(pid).ok())
        .find(|p| shim_processes(shim_id).contains(&p.pid()))
}

/// When a shim last answered its liveness probe, and how long it may stay silent.
struct Liveness {
    bound: Option<Duration>,
    answered: tokio::time::Instant,
    probed: tokio::time::Instant,
}

impl Liveness {
    fn new(bound: Option<Duration>) -> Liveness {
        let now = tokio::time::Instant::now();
        Liveness {
            bound,
            answered: now,
            probed: now,
        }
    }

    /// Whether a probe is due, `every` after the last one.
    fn due(&self, every: Duration) -> bool {
        self.bound.is_some() && self.probed.elapsed() >= every
    }

    /// Probes the shim (its Info); false once it has not answered for longer than the bound.
    async fn probe(&mut self, shim: &ShimHandle) -> bool {
        let Some(bound) = self.bound else {
            return true;
        };
        self.probed = tokio::time::Instant::now();
        match shim.info().await {
            Ok(_) => {
                self.answered = tokio::time::Instant::now();
                true
            }
            Err(e) => {
                let silent = self.answered.elapsed();
                tracing::warn!(sandbox = %shim.sandbox_id, pid = shim.pid, error = %e, silent = ?silent, "pod shim did not answer its liveness probe");
                silent <= bound
            }
        }
    }
}

impl Pods {
    /// Starts supervising `shim`: its events are forwarded from the moment this returns, and
    /// it is replaced whenever it dies while it is its pod's shim.
    pub async fn supervise(self: &Arc<Self>, shim: Arc<ShimHandle>) {
        let stream = match subscribe_shim(&shim).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(sandbox = %shim.sandbox_id, error = %e, "following a shim's events");
                None
            }
        };
        let pods = self.clone();
        tokio::spawn(async move { pods.watch(shim, stream).await });
    }

    /// Whether `shim` is still the shim its pod is served by (not removed, not replaced).
    fn is_current(&self, shim: &Arc<ShimHandle>) -> bool {
        self.registry
            .pod(&shim.sandbox_id)
            .is_some_and(|current| Arc::ptr_eq(&current, shim))
    }

    async fn watch(
        self: Arc<Self>,
        mut shim: Arc<ShimHandle>,
        mut stream: Option<Streaming<ContainerEventResponse>>,
    ) {
        let mut tick = tokio::time::interval(LIVENESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut liveness = Liveness::new(self.liveness_timeout);
        loop {
            match stream.as_mut() {
                Some(events) => loop {
                    tokio::select! {
                        item = events.next() => match item {
                            Some(Ok(event)) => self.events.publish(event),
                            Some(Err(status)) => {
                                tracing::debug!(sandbox = %shim.sandbox_id, error = %status.message(), "shim event stream failed");
                                break;
                            }
                            None => break,
                        },
                        () = shim.exited() => break,
                        _ = tick.tick() => if liveness.due(PROBE_EVERY) && !liveness.probe(&shim).await {
                            break;
                        },
                    }
                },
                None => {
                    tokio::select! {
                        () = shim.exited() => {}
                        _ = tick.tick() => {}
                    }
                }
            }
            if !self.is_current(&shim) {
                return;
            }
            if shim.alive() && liveness.probe(&shim).await {
                // A live shim whose stream ended (or never started): subscribe again. A stuck
                // shim fails this until it moves again, at one attempt per tick, and is
                // replaced once it has not answered for the liveness bound.
                stream = subscribe_shim(&shim).await.ok();
                continue;
            }
            if shim.alive() {
                tracing::error!(sandbox = %shim.sandbox_id, pid = shim.pid, "pod shim has not answered its liveness probe; killing it to start a new one");
                shim.stop_within(EXIT_TIMEOUT).await;
                if shim.alive() {
                    continue;
                }
            }
            liveness = Liveness::new(self.liveness_timeout);
            match self.recover(&shim).await {
                Some(new) => {
                    shim = new;
                    stream = subscribe_shim(&shim).await.ok();
                }
                None => return,
            }
        }
    }

    /// Starts a new shim for the pod of `dead`, retrying with back-off, unless the pod has
    /// been removed or someone else has replaced the shim meanwhile.
    async fn recover(&self, dead: &Arc<ShimHandle>) -> Option<Arc<ShimHandle>> {
        let lock = self.restarts.of(&dead.shim_id);
        let _held = lock.lock().await;
        let pod_dir = layout::pod_dir(&self.spawner.root_dir, &dead.shim_id);
        let mut delay = RETRY_FIRST;
        loop {
            if !self.is_current(dead) {
                return None;
            }
            // The shim removes the pod's state before it answers RemovePodSandbox: a shim
            // that died after that has nothing to come back for.
            let summary = match PodSummary::load(&pod_dir) {
                Ok(Some(summary)) => summary,
                Ok(None) => {
                    // Removed to the end (the state goes last), though perhaps never answered:
                    // the front forgets the pod, so a retried RemovePodSandbox finds it gone.
                    tracing::info!(sandbox = %dead.sandbox_id, "shim exited with its pod removed");
                    self.registry.remove_pod(&dead.sandbox_id);
                    self.spawner.retire(dead).await;
                    return None;
                }
                Err(e) => {
                    tracing::error!(sandbox = %dead.sandbox_id, error = %e, "cannot read the pod's state; its shim stays down");
                    return None;
                }
            };
            tracing::warn!(sandbox = %dead.sandbox_id, pid = dead.pid, "pod shim is gone; starting a new one");
            match self
                .spawner
                .respawn(&dead.shim_id, &summary.display, &dead.sandbox_id)
                .await
            {
                Ok(new) => {
                    crate::metrics::global().shim_restarted();
                    let new = Arc::new(new);
                    tracing::info!(sandbox = %new.sandbox_id, pid = new.pid, "pod shim restarted");
                    self.registry.insert_pod(new.clone());
                    return Some(new);
                }
                Err(e) => {
                    tracing::error!(sandbox = %dead.sandbox_id, error = %e, retry = ?delay, "restarting a pod shim failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Indexes every pod under the root directory from its state file and supervises its
    /// shim: a live one is checked for its protocol revision (and replaced if it speaks
    /// another), a gone one is started again. Returns without waiting for any shim.
    pub fn adopt(self: &Arc<Self>) {
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
            let Some(shim_id) = entry
                .file_name()
                .to_str()
                .filter(|n| layout::is_shim_id(n))
                .map(str::to_string)
            else {
                continue;
            };
            let pod_dir = entry.path();
            let summary = match PodSummary::load(&pod_dir) {
                Ok(Some(s)) if !s.sandbox_id.is_empty() => s,
                Ok(_) => {
                    // A RunPodSandbox the previous front started and did not see to its end.
                    let pods = self.clone();
                    tokio::spawn(async move { pods.settle_unfinished(shim_id, pod_dir).await });
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
            for c in &summary.container_ids {
                self.registry.insert_container(c, &summary.sandbox_id);
            }
            self.registry.insert_pod(shim.clone());
            tracing::info!(sandbox = %shim.sandbox_id, pid, "indexed pod");
            let pods = self.clone();
            tokio::spawn(async move { pods.take_over(shim).await });
        }
    }

    /// Deletes the sockets of shims whose pod directory is gone: a shim killed after it
    /// removed its pod's state (the last step of RemovePodSandbox) while no front watched
    /// could not delete them itself. Runs before any shim of this front is started.
    fn remove_stray_sockets(&self) {
        let pods_dir = layout::pods_dir(&self.spawner.root_dir);
        for socket in crate::registry::shim_sockets(&self.spawner.run_dir) {
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
        let summary = |pod_dir: &std::path::Path| match PodSummary::load(pod_dir) {
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
        self.take_over(shim).await;
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

    /// `upgrade-shims` for one pod: stops its shim and starts the current binary in its place.
    /// A shim with open streaming sessions is left alone unless `force`.
    pub async fn replace(self: &Arc<Self>, old: &Arc<ShimHandle>, force: bool) -> ShimUpgrade {
        let lock = self.restarts.of(&old.shim_id);
        let _held = lock.lock().await;
        let mut report = ShimUpgrade {
            sandbox_id: old.sandbox_id.clone(),
            old_pid: old.pid,
            ..Default::default()
        };
        let fail = |mut report: ShimUpgrade, outcome: Outcome, message: String| {
            report.set_outcome(outcome);
            report.message = message;
            report
        };
        if !self.is_current(old) {
            return fail(
                report,
                Outcome::Failed,
                "the pod was removed or its shim replaced meanwhile".into(),
            );
        }
        let pod_dir = layout::pod_dir(&self.spawner.root_dir, &old.shim_id);
        let summary = match PodSummary::load(&pod_dir) {
            Ok(Some(summary)) => summary,
            Ok(None) => return fail(report, Outcome::Failed, "the pod has no state".into()),
            Err(e) => {
                return fail(
                    report,
                    Outcome::Failed,
                    format!("reading the pod's state: {e}"),
                )
            }
        };
        report.pod = summary.display.clone();
        if old.alive() {
            match old.info().await {
                Ok(info) if info.streaming_sessions > 0 && !force => {
                    let n = info.streaming_sessions;
                    return fail(
                        report,
                        Outcome::Busy,
                        format!("{n} streaming session(s) open"),
                    );
                }
                Ok(_) => {}
                Err(e) if !force => return fail(report, Outcome::Failed, e),
                Err(_) => {}
            }
            old.shut_down(EXIT_TIMEOUT).await;
        }
        match self
            .spawner
            .respawn(&old.shim_id, &summary.display, &old.sandbox_id)
            .await
        {
            Ok(new) => {
                let new = Arc::new(new);
                report.new_pid = new.pid;
                report.set_outcome(Outcome::Upgraded);
                self.registry.insert_pod(new.clone());
                tracing::info!(sandbox = %new.sandbox_id, old = old.pid, new = new.pid, "pod shim replaced");
                self.supervise(new).await;
                report
            }
            // The old handle stays current: its task finds the shim gone and keeps trying.
            Err(e) => fail(report, Outcome::Failed, e.to_string()),
        }
    }
}
