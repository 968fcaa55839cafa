//! The supervisor: the one owner of which shim serves which pod. It alone writes the
//! registry, and every change of a pod's shim (start for RunPodSandbox, adoption of a
//! cri-dockerd pod, restart after a death, replacement on `upgrade-shims` or a protocol
//! change, retirement on RemovePodSandbox) happens under that pod's lock, so a task that
//! wakes to a dead shim first checks that the shim is still its pod's current one.
//!
//! Each shim has a supervising task that forwards its container events and watches the
//! process through a pidfd (so a reused PID cannot hide a dead shim): when a shim dies, the
//! task starts a new one for the same pod (same shim ID, so the same socket, state and
//! container labels), which rebuilds its view from the pod's record and from Docker. A shim
//! that lives but leaves the liveness probe unanswered for longer than
//! `--shim-liveness-timeout` (deadlocked) is killed and replaced the same way. Start-up (the
//! pods a previous front left) is in `startup`.

mod liveness;
pub mod registry;
mod settling;
mod startup;

use std::sync::Arc;
use std::time::Duration;

use dockpod_proto::cri::{
    ContainerEventResponse, ContainerEventType, RemovePodSandboxRequest, RunPodSandboxRequest,
};
use dockpod_proto::layout;
use dockpod_proto::manager::shim_upgrade::Outcome;
use dockpod_proto::manager::ShimUpgrade;
use dockpod_proto::name_holder::NameHolder;
use dockpod_proto::pod_state::PodSummary;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use crate::events::{subscribe_shim, Events};
use crate::shim::ShimHandle;
use crate::spawn::{Spawner, EXIT_TIMEOUT};
use liveness::{Liveness, PodLocks};
use registry::Registry;
use settling::Settling;

/// How often a live shim whose event stream ended is probed and subscribed to again.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(1);
/// First and longest pause between attempts to start a pod's shim again.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How many times one RunPodSandbox meets its Docker name held by another pod (and asks that
/// pod, removes it, or waits for start-up to decide it) before it gives up: each round
/// clears one holder, and a name is held by one container at a time.
const NAME_HOLDER_ROUNDS: usize = 3;

pub struct Supervisor {
    registry: Registry,
    spawner: Spawner,
    events: Events,
    locks: PodLocks,
    /// Pods start-up is still deciding the fate of.
    settling: Arc<Settling>,
    /// The supervisor's tasks (one per shim, start-up's), stopped with the front.
    tasks: dockpod_proto::tasks::Tasks,
    /// How long a live shim may leave the liveness probe unanswered before it is replaced.
    liveness_timeout: Option<Duration>,
}

impl Supervisor {
    pub fn new(
        spawner: Spawner,
        liveness_timeout: Option<Duration>,
        tasks: dockpod_proto::tasks::Tasks,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            registry: Registry::default(),
            spawner,
            events: Events::default(),
            locks: PodLocks::default(),
            settling: Arc::default(),
            tasks,
            liveness_timeout,
        })
    }

    /// The index of pods and containers, to read.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The front's long-lived tasks.
    pub fn tasks(&self) -> &dockpod_proto::tasks::Tasks {
        &self.tasks
    }

    /// The container events of every shim, merged.
    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn run_dir(&self) -> &std::path::Path {
        &self.spawner.run_dir
    }

    pub fn root_dir(&self) -> &std::path::Path {
        &self.spawner.root_dir
    }

    /// RunPodSandbox: a new shim for the pod `display` (namespace/name) is handed the request;
    /// on success it serves the pod from now on, on failure nothing of it is left.
    ///
    /// A request whose Docker name another pod of this instance holds is a retry whose first
    /// answer was lost (a front or shim killed between Docker's create and the answer), or a
    /// request for a pod that was stopped or made otherwise. The pod holding the name is asked
    /// (after start-up has decided its fate, if it still does): it answers the same request
    /// with its own sandbox, as if the first call had been answered; any other request has it
    /// removed, and this one runs afresh. Docker's name conflict never reaches the caller.
    ///
    /// `ready` (the sandbox image made sure of) runs beside the first shim's start; the shim
    /// is handed the request once it has succeeded, and given up when it fails.
    pub async fn run_pod(
        self: &Arc<Self>,
        display: &str,
        req: RunPodSandboxRequest,
        ready: impl std::future::Future<Output = Result<(), Status>>,
    ) -> Result<String, Status> {
        let mut round = 1;
        let mut ready = Some(ready);
        loop {
            let status = match self.run_pod_once(display, req.clone(), ready.take()).await {
                Ok(id) => return Ok(id),
                Err(status) => status,
            };
            let Some(holder) = NameHolder::of(&status) else {
                return Err(status);
            };
            if round == NAME_HOLDER_ROUNDS {
                return Err(Status::already_exists(status.message().to_string()));
            }
            round += 1;
            self.settling.decided(&holder.shim_id).await;
            // Not indexed once decided: given up, its containers deleted; the next round's
            // create finds the name free.
            let Some(pod) = self.registry.pod(&holder.sandbox_id) else {
                continue;
            };
            match pod.runtime().run_pod_sandbox(req.clone()).await {
                Ok(answer) => {
                    let id = answer.into_inner().pod_sandbox_id;
                    tracing::info!(sandbox = %id, "RunPodSandbox answered with the pod an earlier run of it made");
                    return Ok(id);
                }
                Err(refused) if refused.code() == tonic::Code::FailedPrecondition => {
                    tracing::warn!(sandbox = %holder.sandbox_id, reason = %refused.message(), "the pod holding this RunPodSandbox's name is not what it asks for; removing it first");
                    self.remove_pod(&holder.sandbox_id).await?;
                }
                Err(unreachable) => return Err(unreachable),
            }
        }
    }

    async fn run_pod_once(
        self: &Arc<Self>,
        display: &str,
        req: RunPodSandboxRequest,
        ready: Option<impl std::future::Future<Output = Result<(), Status>>>,
    ) -> Result<String, Status> {
        let ready = async {
            match ready {
                Some(ready) => ready.await,
                None => Ok(()),
            }
        };
        let (spawned, ready) = tokio::join!(self.spawner.spawn(display), ready);
        let shim = spawned?;
        if let Err(status) = ready {
            // Handed nothing, it made nothing; given up as a failed run's shim is.
            self.spawner.abandon(&shim, display).await;
            return Err(status);
        }
        let lock = self.locks.of(&shim.shim_id);
        let _held = lock.lock().await;
        // Subscribed beside the call, not after it: the shim keeps what it announces until
        // its first subscriber comes, so the sandbox's events reach the stream either way.
        let mut runtime = shim.runtime();
        let (ran, events) = tokio::join!(runtime.run_pod_sandbox(req), subscribe_shim(&shim));
        let sandbox_id = match ran {
            Ok(r) => r.into_inner().pod_sandbox_id,
            Err(status) => {
                // A shim that failed removes what it created; one that died inside the call
                // (killed between Docker's create and its answer, or inside CNI ADD) cannot:
                // the kubelet's retry would meet its sandbox's name, and its address would
                // stay taken.
                self.spawner.abandon(&shim, display).await;
                return Err(status);
            }
        };
        let shim = Arc::new(ShimHandle {
            sandbox_id: sandbox_id.clone(),
            ..shim
        });
        self.registry.insert_pod(shim.clone());
        self.follow(shim, events);
        Ok(sandbox_id)
    }

    /// RemovePodSandbox through the pod's current shim; once it has answered (the pod is gone
    /// from Docker and its record from disk), the pod is forgotten and the call answered. The
    /// shim exits by itself; retiring it (waiting for its exit, deleting its socket and pod
    /// directory) goes on in the background, so the caller does not wait for a process's
    /// end. A front that dies meanwhile leaves a pod directory without a record, which the
    /// next front cleans up as it does any pod a dead front left.
    pub async fn remove_pod(self: &Arc<Self>, id: &str) -> Result<(), Status> {
        let Some(shim) = self.registry.pod(id) else {
            return Ok(());
        };
        let lock = self.locks.of(&shim.shim_id);
        let _held = lock.lock().await;
        // Replaced or removed while this waited for the lock: the current one decides.
        let Some(shim) = self.registry.pod(&shim.sandbox_id) else {
            return Ok(());
        };
        shim.runtime()
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: shim.sandbox_id.clone(),
            })
            .await?;
        self.registry.remove_pod(&shim.sandbox_id);
        let supervisor = self.clone();
        self.tasks
            .spawn(async move { supervisor.spawner.retire(&shim).await });
        Ok(())
    }

    /// Keeps the container index in step with what `shim` announces: a container it created
    /// is indexed under its pod, one it deleted forgotten. Only while `shim` is its pod's
    /// current shim: a create that ends after its pod's removal indexes nothing.
    fn index(&self, shim: &Arc<ShimHandle>, event: &ContainerEventResponse) {
        if event.container_id.is_empty() || event.container_id == shim.sandbox_id {
            return;
        }
        match ContainerEventType::try_from(event.container_event_type) {
            Ok(ContainerEventType::ContainerCreatedEvent) if self.is_current(shim) => {
                self.registry
                    .insert_container(&event.container_id, &shim.sandbox_id);
            }
            Ok(ContainerEventType::ContainerDeletedEvent) => {
                self.registry.remove_container(&event.container_id);
            }
            _ => {}
        }
    }

    /// Follows `shim`'s events again after a gap in them (its stream ended, or a new shim
    /// took over), and indexes its containers as it lists them: a create or removal
    /// announced while no one listened is not missed.
    async fn resubscribe(
        &self,
        shim: &Arc<ShimHandle>,
    ) -> Option<Streaming<ContainerEventResponse>> {
        let stream = subscribe_shim(shim).await.ok()?;
        self.reindex(shim).await;
        Some(stream)
    }

    /// The pod's containers as `shim` lists them (from its record) replace the index's.
    /// Called once subscribed, so nothing announced after the list is lost.
    async fn reindex(&self, shim: &Arc<ShimHandle>) {
        let listed = match shim
            .runtime()
            .list_containers(dockpod_proto::cri::ListContainersRequest::default())
            .await
        {
            Ok(answer) => answer.into_inner().containers,
            Err(e) => {
                tracing::debug!(sandbox = %shim.sandbox_id, error = %e.message(), "listing a shim's containers to index them");
                return;
            }
        };
        if self.is_current(shim) {
            let ids: Vec<String> = listed.into_iter().map(|c| c.id).collect();
            self.registry.replace_containers(&shim.sandbox_id, &ids);
        }
    }

    /// Starts supervising `shim`: its events are forwarded from the moment this returns, and
    /// it is replaced whenever it dies while it is its pod's shim.
    pub async fn supervise(self: &Arc<Self>, shim: Arc<ShimHandle>) {
        let events = subscribe_shim(&shim).await;
        self.follow(shim, events);
    }

    /// `supervise`, with the subscription to `shim`'s events already asked for.
    fn follow(
        self: &Arc<Self>,
        shim: Arc<ShimHandle>,
        events: crate::error::Result<Streaming<ContainerEventResponse>>,
    ) {
        let stream = match events {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(sandbox = %shim.sandbox_id, error = %e, "following a shim's events");
                None
            }
        };
        let supervisor = self.clone();
        self.tasks
            .spawn(async move { supervisor.watch(shim, stream).await });
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
                            Some(Ok(event)) => {
                                self.index(&shim, &event);
                                self.events.publish(event);
                            }
                            Some(Err(status)) => {
                                tracing::debug!(sandbox = %shim.sandbox_id, error = %status.message(), "shim event stream failed");
                                break;
                            }
                            None => break,
                        },
                        () = shim.exited() => break,
                        // Nothing wakes this task between probes: a node of 250 idle pods
                        // costs the front next to nothing.
                        () = liveness::at(liveness.next_probe()) => if !liveness.probe(&shim).await {
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
                stream = self.resubscribe(&shim).await;
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
                    stream = self.resubscribe(&shim).await;
                }
                None => return,
            }
        }
    }

    /// Starts a new shim for the pod of `dead`, retrying with back-off, unless the pod has
    /// been removed or someone else has replaced the shim meanwhile.
    async fn recover(&self, dead: &Arc<ShimHandle>) -> Option<Arc<ShimHandle>> {
        let lock = self.locks.of(&dead.shim_id);
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

    /// `upgrade-shims` for one pod: stops its shim and starts the current binary in its place.
    /// A shim with open streaming sessions is left alone unless `force`.
    pub async fn replace(self: &Arc<Self>, old: &Arc<ShimHandle>, force: bool) -> ShimUpgrade {
        let lock = self.locks.of(&old.shim_id);
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
