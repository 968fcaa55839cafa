//! The pod's operations: sandbox and container lifecycle against Docker, each followed by a
//! fresh look at what Docker did (inspect), a durable record and the CRI events it means.
//! Sandbox-wide operations exclude every other; a container's operations exclude only
//! others on the same container (see `locks`), and stops none at all, because the kubelet
//! stops a pod's containers in parallel and may kill one (grace 0) while its stop with a grace
//! period runs. The record's own lock is never held across a Docker call, and saves of the
//! record are serialised so that no older snapshot is written after a newer one. The record
//! and its saving (`record`), the sandbox's life (`sandbox`), the containers' (`containers`),
//! their CRI log files (`log_files`), the pod's network side (`network`), its event bus
//! (`events`) and the recovery from a shim killed inside a call (`recovery`) live in modules of
//! their own; the log followers are `logs::Followers`, the cri-dockerd leftovers `adopt`'s. Callers
//! outside the lifecycle read the record through `view`; only the lifecycle writes it.

use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use dockpod_proto::cri::ContainerEventResponse;
use tokio::sync::{broadcast, Notify};

use crate::cni::Cni;

mod containers;
mod events;
mod inspections;
mod log_files;
mod network;
mod record;
mod recovery;
mod sandbox;

use crate::docker::{observe, Engine};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::locks::OpLocks;
use crate::logs::Followers;
use crate::oom_kills::OomKills;
use crate::spec::Context;
use crate::state::Store;
use dockpod_proto::pod_record::{ContainerRecord, Intent, Phase, PodRecord};
pub use network::NetworkCheck;

/// Grace period for containers that StopPodSandbox stops (the kubelet normally stopped them
/// already with the pod's own grace period).
const SANDBOX_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long an exit may wait for the container's last log lines to reach its file.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long StopContainer waits for the read Docker's `die` event sets going before it reads
/// the container itself.
const EXIT_EVENT_WAIT: Duration = Duration::from_millis(250);
/// Events kept for a slow subscriber before it starts missing them.
const EVENT_BUFFER: usize = 256;

/// A read-only look at the pod's record, holding its lock: keep it for no longer than a read.
pub struct RecordView<'a>(MutexGuard<'a, PodRecord>);

impl std::ops::Deref for RecordView<'_> {
    type Target = PodRecord;

    fn deref(&self) -> &PodRecord {
        &self.0
    }
}

pub struct Pod {
    pub engine: Engine,
    pub instance: String,
    pub shim_id: String,
    pub sandbox_image: String,
    pub host: Host,
    cni: Option<Cni>,
    record: record::Record,
    ops: OpLocks,
    /// Set while RunPodSandbox runs.
    starting: std::sync::atomic::AtomicBool,
    /// Set while StopPodSandbox runs.
    stopping: std::sync::atomic::AtomicBool,
    /// Shared, not copied into each of the channel's slots: the channel makes all of its
    /// slots at once, and 256 events of 448 bytes were 120 KiB of every shim, idle or not.
    events: broadcast::Sender<Arc<ContainerEventResponse>>,
    /// Events from before anyone subscribed (a restarted shim's first look at Docker finds
    /// exits no one has heard of yet), kept for the first subscriber: the front.
    unheard: Mutex<Option<Vec<ContainerEventResponse>>>,
    logs: Followers,
    last_network_check: Mutex<Option<network::NetworkCheck>>,
    /// The sandbox's process (by sandbox ID), held from its start or from the first look at
    /// it after a restart of the shim: its network namespace, which CNI's DEL and CHECK are
    /// given, is found without a Docker request while it lives.
    sandbox_process: Mutex<Option<(String, dockpod_proto::process::ProcessHandle)>>,
    /// Each container's last inspection, refreshed whenever Docker's events (or a call of
    /// this shim) make it read the container again: ContainerStatus answers from it without
    /// asking Docker.
    inspections: inspections::Inspections,
    /// The running containers' OOM kills as the kernel counts them (see `oom_kills`).
    pub oom_kills: OomKills,
    /// Notified whenever a read of a container has been applied to the record.
    observed: Notify,
    /// Notified when the pod is removed and the shim should exit.
    pub removed: Arc<Notify>,
    /// Set once the shim stops serving: its event streams end then, or the server's graceful
    /// stop would wait for them (they never end by themselves) until the front gives up.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl Pod {
    pub fn new(
        engine: Engine,
        instance: String,
        shim_id: String,
        sandbox_image: String,
        cni: Option<Cni>,
        store: Store,
        record: PodRecord,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Pod {
            engine,
            instance,
            shim_id,
            sandbox_image,
            host: Host::detect(),
            cni,
            record: record::Record::new(store, record),
            ops: OpLocks::default(),
            starting: std::sync::atomic::AtomicBool::new(false),
            stopping: std::sync::atomic::AtomicBool::new(false),
            events,
            unheard: Mutex::new(Some(Vec::new())),
            logs: Followers::default(),
            last_network_check: Mutex::new(None),
            sandbox_process: Mutex::new(None),
            inspections: inspections::Inspections::default(),
            oom_kills: OomKills::default(),
            observed: Notify::new(),
            removed: Arc::new(Notify::new()),
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    /// The record, to change: the lifecycle's alone. A poisoned lock still holds the last
    /// consistent record, so it is used.
    fn record(&self) -> MutexGuard<'_, PodRecord> {
        self.record.lock()
    }

    /// The record as it stands, to read: what callers outside the lifecycle get.
    pub fn view(&self) -> RecordView<'_> {
        RecordView(self.record.lock())
    }

    pub fn snapshot(&self) -> PodRecord {
        self.record().clone()
    }

    /// The record as clients may be told of it: a change still on its way to the disk is not
    /// in it (see `record`).
    pub fn reported(&self) -> PodRecord {
        self.record.reported()
    }

    async fn persist(&self) -> Result<()> {
        self.record.save().await
    }

    fn ctx(&self) -> Context<'_> {
        Context {
            instance: &self.instance,
            shim_id: &self.shim_id,
            host: self.host,
            cni: self.cni.is_some(),
            api: self.engine.api_version(),
            runtime_handler: self.record().runtime_handler.clone(),
            cdi: false,
        }
    }

    /// Re-reads one container from Docker and records (and announces) what changed.
    pub async fn refresh_container(&self, id: &str) -> Result<()> {
        self.reinspect(id).await?;
        // Another read (Docker's event) may have recorded the change first and be saving it
        // still: the caller answers once the change is reported.
        self.record.container_settled(id).await;
        Ok(())
    }

    /// Docker's `oom` event for a container of this pod: recorded (an exit already seen
    /// becomes OOMKilled at once, whatever Docker's flag said when it was read) and saved
    /// before the container is read again, so a failed read cannot lose it.
    pub async fn oom_reported(&self, id: &str) -> Result<()> {
        let changed = self
            .record()
            .containers
            .get_mut(id)
            .is_some_and(ContainerRecord::oom_reported);
        if changed {
            self.persist().await?;
        }
        self.refresh_container(id).await
    }

    /// Inspects a container of this pod, records and announces what changed, and returns the
    /// inspection (`None` when the container is not this pod's or Docker no longer has it).
    /// An answer older than one applied already is returned but not applied.
    async fn reinspect(&self, id: &str) -> Result<Option<ContainerInspectResponse>> {
        if !self.record().containers.contains_key(id) {
            return Ok(None);
        }
        let ticket = self.inspections.ticket();
        let inspect = self.engine.inspect(id).await?;
        let seen = observe(inspect.as_ref());
        if seen.phase == Phase::Running {
            let pid = inspect.as_ref().and_then(|i| i.state.as_ref()?.pid);
            self.oom_kills.watch(id, pid.unwrap_or(0));
        }
        self.settle_log(id, &seen).await;
        let (events, settled) = {
            let mut r = self.record();
            let Some(c) = r.containers.get_mut(id) else {
                return Ok(None);
            };
            // Under the record's lock, so no other read's answer lands between the two.
            if !self.inspections.keep(id, ticket, inspect.as_ref()) {
                return Ok(inspect);
            }
            let events = c.observe(&seen);
            (events, c.settle_identity(&seen))
        };
        let announced = match events.is_empty() && settled {
            // Saved with the events when there are any (see `create_container`).
            true => self.persist().await,
            false => self.announce(id, &events).await,
        };
        self.observed.notify_waiters();
        announced?;
        Ok(inspect)
    }

    /// Re-reads the sandbox and every container: after a (re)connect to Docker's events
    /// nothing that happened meanwhile is trusted to have been seen.
    pub async fn resync(&self) -> Result<()> {
        self.refresh_sandbox().await?;
        let ids: Vec<String> = self.record().containers.keys().cloned().collect();
        for id in &ids {
            self.follow_log_if_started(id);
        }
        for id in ids {
            self.refresh_container(&id).await?;
        }
        Ok(())
    }

    fn check_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let r = self.record();
        if sandbox_id != r.sandbox_id {
            return Err(Error::NotFound(format!(
                "pod sandbox {sandbox_id} not found"
            )));
        }
        if !r.ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {sandbox_id} is not ready"
            )));
        }
        Ok(())
    }

    /// Creates a container under `name` with its create intent saved first; the caller
    /// settles the intent in the save that records the container. A name conflict with a
    /// container no live shim stands for (see `orphan`) is resolved by removing it and
    /// creating once more, so the kubelet's retry of the same call succeeds.
    ///
    /// Returns Docker's answer and whether the intent reached the disk.
    async fn create_named(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<(Result<String>, bool)> {
        let (created, intended) = self
            .intending(
                name,
                Intent::Create,
                self.create_or_replace_orphan(name, body),
            )
            .await?;
        if created.is_err() {
            self.settle_failed_create(name).await;
        }
        Ok((created, intended))
    }

    /// Drops the intent of a create that made nothing (and the record it would have made).
    async fn settle_failed_create(&self, name: &str) {
        {
            let mut r = self.record();
            r.intents.remove(name);
            r.creating.remove(name);
        }
        if let Err(e) = self.persist().await {
            tracing::warn!(error = %e, name, "settling a failed create's intent");
        }
    }

    /// Runs the Docker call `effect` once `intent` for `key` is written to the record, and
    /// returns what it answered and whether the intent also reached the disk. The two go
    /// together: a shim that dies after the write finds the intent (the kernel holds it), and
    /// the flush, which only a crash of the machine needs, runs beside Docker's work instead
    /// of before it. Docker's answer is not told before that flush has ended either way.
    async fn intending<T>(
        &self,
        key: &str,
        intent: Intent,
        effect: impl std::future::Future<Output = Result<T>>,
    ) -> Result<(Result<T>, bool)> {
        self.record().intents.insert(key.to_string(), intent);
        let mut saving = self.record.save_ahead()?;
        saving.written().await?;
        let (answer, flushed) = tokio::join!(effect, saving.done());
        if let Err(e) = &flushed {
            tracing::warn!(error = %e, key, "flushing an intent: its outcome's save goes to the disk itself");
        }
        Ok((answer, flushed.is_ok()))
    }
}
