//! The pod's operations: sandbox and container lifecycle against Docker, each followed by a
//! fresh look at what Docker did (inspect), a durable record and the CRI events it means.
//! Sandbox-wide operations exclude every other; a container's operations exclude only
//! others on the same container (see `locks`), and stops none at all, because the kubelet
//! stops a pod's containers in parallel and may kill one (grace 0) while its stop with a grace
//! period runs. The record's own lock is never held across a Docker call, and saves of the
//! record are serialised so that no older snapshot is written after a newer one. The record
//! and its saving (`record`), the pod's network side (`network`), its event bus (`events`)
//! and the recovery from a shim killed inside a call (`recovery`) live in modules of their
//! own; the log followers are `logs::Followers`, the cri-dockerd leftovers `adopt`'s. Callers
//! outside the lifecycle read the record through `view`; only the lifecycle writes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerUpdateBody};
use dockpod_proto::cri::{
    ContainerConfig, ContainerEventResponse, ContainerEventType, ContainerState, ContainerStatus,
    ContainerUser, LinuxContainerResources, LinuxContainerUser, PodSandboxConfig,
};
use tokio::sync::{broadcast, Notify};

use crate::cni::Cni;

mod events;
mod inspections;
mod network;
mod record;
mod recovery;

use crate::docker::{now_ns, observe, Engine};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::locks::OpLocks;
use crate::logs::{Followers, LogHandle};
use crate::spec::{self, Context};
use crate::state::Store;
use dockpod_proto::pod_record::{
    ContainerRecord, Intent, Observed, Phase, PodRecord, SandboxResources,
};
use network::add_hosts_entry;
pub use network::{pod_ips, NetworkCheck};

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
    events: broadcast::Sender<ContainerEventResponse>,
    /// Events from before anyone subscribed (a restarted shim's first look at Docker finds
    /// exits no one has heard of yet), kept for the first subscriber: the front.
    unheard: Mutex<Option<Vec<ContainerEventResponse>>>,
    logs: Followers,
    last_network_check: Mutex<Option<network::NetworkCheck>>,
    /// Each container's last inspection, refreshed whenever Docker's events (or a call of
    /// this shim) make it read the container again: ContainerStatus answers from it without
    /// asking Docker.
    inspections: inspections::Inspections,
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
            events,
            unheard: Mutex::new(Some(Vec::new())),
            logs: Followers::default(),
            last_network_check: Mutex::new(None),
            inspections: inspections::Inspections::default(),
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

    /// Whether RunPodSandbox runs now.
    pub fn sandbox_starting(&self) -> bool {
        self.starting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Creates and starts the sandbox container; on any failure removes what it created.
    pub async fn run_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String> {
        self.starting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let result = self.run_sandbox_locked(config, runtime_handler).await;
        self.starting
            .store(false, std::sync::atomic::Ordering::SeqCst);
        result
    }

    async fn run_sandbox_locked(
        &self,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String> {
        let _guard = self.ops.pod().await;
        {
            let r = self.record();
            if !r.sandbox_id.is_empty() {
                // Asked by the front for a retry whose first run made this pod: the same
                // request is answered with it; any other is not this pod's.
                if r.ready && r.config == config && r.runtime_handler == runtime_handler {
                    tracing::info!(sandbox = %r.sandbox_id, "a retried RunPodSandbox: answering with the sandbox its first call made");
                    return Ok(r.sandbox_id.clone());
                }
                return Err(Error::FailedPrecondition(format!(
                    "shim {} runs sandbox {} of another request (or stopped)",
                    self.shim_id, r.sandbox_id
                )));
            }
        }
        // The handler names one of the engine's runtimes: the front checked it against the
        // engine's list, and Docker refuses a name it does not have.
        let ctx = Context {
            runtime_handler: runtime_handler.clone(),
            ..self.ctx()
        };
        let (name, body) = spec::sandbox(&ctx, &config, &self.sandbox_image)?;
        if self
            .engine
            .inspect_image(&self.sandbox_image)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!(
                "sandbox image {} is not present (contrib/setup.sh builds the default one)",
                self.sandbox_image
            )));
        }
        let id = self.create_named(&name, body).await?;
        match self.start_sandbox(&id, config, runtime_handler).await {
            Ok(()) => Ok(id),
            Err(e) => {
                if let Err(undo) = self.teardown_network().await {
                    tracing::error!(error = %undo, sandbox = %id, "deleting the failed sandbox's network");
                }
                if let Err(cleanup) = self.engine.remove(&id).await {
                    tracing::error!(error = %cleanup, sandbox = %id, "removing the failed sandbox container");
                }
                *self.record() = PodRecord {
                    shim_id: self.shim_id.clone(),
                    ..Default::default()
                };
                Err(e)
            }
        }
    }

    async fn start_sandbox(
        &self,
        id: &str,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<()> {
        self.engine.start(id).await?;
        let inspect = self.engine.inspect(id).await?.ok_or_else(|| {
            Error::NotFound(format!("sandbox container {id} vanished after start"))
        })?;
        let mut ips = pod_ips(&inspect);
        if let Some(cni) = self.pod_cni(&config) {
            let pid = inspect
                .state
                .as_ref()
                .and_then(|s| s.pid)
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    Error::FailedPrecondition(format!("sandbox container {id} is not running"))
                })?;
            let attachment = cni.add(id, &format!("/proc/{pid}/ns/net"), &config).await?;
            ips = attachment.ips();
            {
                let mut r = self.record();
                r.sandbox_id = id.to_string();
                r.network = attachment.network_name;
            }
            add_hosts_entry(&inspect, &ips)?;
        }
        {
            let mut r = self.record();
            r.sandbox_id = id.to_string();
            r.config = config;
            r.runtime_handler = runtime_handler;
            r.created_at = inspect
                .created
                .as_deref()
                .map(crate::docker::parse_time)
                .unwrap_or_else(now_ns);
            r.ready = true;
            r.ips = ips;
            // RunPodSandbox holds the pod lock alone: the only create under way was its own.
            r.intents.retain(|_, i| *i != Intent::Create);
        }
        self.persist().await?;
        // As containerd announces a sandbox: created, then started, under the sandbox's ID.
        self.emit(id, ContainerEventType::ContainerCreatedEvent);
        self.emit(id, ContainerEventType::ContainerStartedEvent);
        if let Err(e) = crate::title::show_sandbox(id) {
            tracing::debug!(error = %e, "cannot show the sandbox ID on the command line");
        }
        tracing::info!(sandbox = %id, pod = %self.record().display_name(), "sandbox running");
        Ok(())
    }

    /// Stops every container, then the sandbox. Idempotent.
    pub async fn stop_sandbox(&self) -> Result<()> {
        let _guard = self.ops.pod().await;
        let (sandbox, ids) = {
            let r = self.record();
            (
                r.sandbox_id.clone(),
                r.containers.keys().cloned().collect::<Vec<_>>(),
            )
        };
        let stops = ids
            .iter()
            .map(|id| self.engine.stop(id, SANDBOX_STOP_GRACE));
        for result in futures_util::future::join_all(stops).await {
            result?;
        }
        for id in &ids {
            self.refresh_container(id).await?;
        }
        self.teardown_network().await?;
        if !sandbox.is_empty() {
            self.engine.stop(&sandbox, SANDBOX_STOP_GRACE).await?;
        }
        let was_ready = std::mem::replace(&mut self.record().ready, false);
        self.persist().await?;
        if was_ready {
            self.emit(&sandbox, ContainerEventType::ContainerStoppedEvent);
        }
        Ok(())
    }

    /// Removes every container, the sandbox and the pod's state; the shim exits afterwards.
    pub async fn remove_sandbox(&self) -> Result<()> {
        let _guard = self.ops.pod().await;
        let (sandbox, ids) = {
            let r = self.record();
            (
                r.sandbox_id.clone(),
                r.containers.keys().cloned().collect::<Vec<_>>(),
            )
        };
        let mut removed = Vec::with_capacity(ids.len());
        let outcome = self.remove_everything(&sandbox, &ids, &mut removed).await;
        // Containers are announced gone once that is on disk (a shim killed before comes back
        // with them still recorded, and removes them again): by the removal of the record, or,
        // when an error cut the removal, by a save of what it removed (the retry does the rest).
        if outcome.is_err() && !removed.is_empty() {
            if let Err(save) = self.persist().await {
                tracing::warn!(error = %save, "saving a removal cut by an error");
                return outcome;
            }
        }
        // Before the shim stops serving: its event streams deliver what was sent first.
        for id in &removed {
            self.emit(id, ContainerEventType::ContainerDeletedEvent);
        }
        outcome?;
        if !sandbox.is_empty() {
            self.emit(&sandbox, ContainerEventType::ContainerDeletedEvent);
        }
        tracing::info!(sandbox = %sandbox, "pod removed; shim exiting");
        self.removed.notify_one();
        Ok(())
    }

    /// RemovePodSandbox's effects, in order: every container (each named in `removed` once
    /// Docker removed it and the record forgot it), the network, the sandbox, the record.
    async fn remove_everything(
        &self,
        sandbox: &str,
        ids: &[String],
        removed: &mut Vec<String>,
    ) -> Result<()> {
        for id in ids {
            self.engine.remove(id).await?;
            self.logs.stop(id);
            self.inspections.remove(id);
            if let Some(c) = self.record().containers.remove(id) {
                crate::adopt::remove_docker_log_link(&c);
            }
            removed.push(id.clone());
        }
        self.teardown_network().await?;
        if !sandbox.is_empty() {
            self.engine.remove(sandbox).await?;
        }
        self.record().ready = false;
        let checkpoint = self.record().cri_dockerd_checkpoint.clone();
        crate::adopt::remove_checkpoint(&checkpoint);
        self.record.remove().await
    }

    /// Refreshes the sandbox's readiness from Docker.
    pub async fn refresh_sandbox(&self) -> Result<()> {
        let id = self.record().sandbox_id.clone();
        if id.is_empty() {
            return Ok(());
        }
        let inspect = self.engine.inspect(&id).await?;
        let running = inspect
            .as_ref()
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.running)
            .unwrap_or(false);
        let changed = {
            let mut r = self.record();
            let changed = r.ready && !running;
            if changed {
                r.ready = false;
            }
            changed
        };
        if changed {
            // The sandbox stopped by itself, or while no shim watched.
            self.announce(&id, &[ContainerEventType::ContainerStoppedEvent])
                .await?;
        }
        Ok(())
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
        self.settle_log(id, &seen).await;
        let events = {
            let mut r = self.record();
            let Some(c) = r.containers.get_mut(id) else {
                return Ok(None);
            };
            // Under the record's lock, so no other read's answer lands between the two.
            if !self.inspections.keep(id, ticket, inspect.as_ref()) {
                return Ok(inspect);
            }
            c.observe(&seen)
        };
        let announced = self.announce(id, &events).await;
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
            let started = self
                .record()
                .containers
                .get(id)
                .is_some_and(|c| c.started_at > 0 && !c.log_complete);
            if started {
                self.follow_log(id);
            }
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
    async fn create_named(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
        self.intend(name, Intent::Create).await?;
        let created = self.create_or_replace_orphan(name, body).await;
        if created.is_err() {
            self.record().intents.remove(name);
            if let Err(e) = self.persist().await {
                tracing::warn!(error = %e, name, "settling a failed create's intent");
            }
        }
        created
    }

    /// Saves `intent` for `key` before the Docker call it announces.
    async fn intend(&self, key: &str, intent: Intent) -> Result<()> {
        self.record().intents.insert(key.to_string(), intent);
        self.persist().await
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<String> {
        // Creates of other containers run beside this one; one of the same name and attempt waits.
        let meta = config.metadata.clone().unwrap_or_default();
        let _guard = self
            .ops
            .container(&format!("create/{}/{}", meta.name, meta.attempt))
            .await;
        self.check_sandbox(sandbox_id)?;
        // The pod's configuration as it was created, not as this request restates it: the log
        // directory in particular bounds where the container's log may be written.
        let pod_config = self.record().config.clone();
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image.is_empty() {
            return Err(Error::InvalidArgument("container image is empty".into()));
        }
        let image_id = match self.engine.inspect_image(&image).await? {
            Some(i) => i.id.unwrap_or_default(),
            None => {
                return Err(Error::NotFound(format!(
                    "image {image:?} not found; pull it first"
                )))
            }
        };
        let mut ctx = self.ctx();
        if !config.cdi_devices.is_empty() {
            ctx.cdi = self.engine.cdi_enabled().await?;
        }
        let (name, body) = spec::container(&ctx, sandbox_id, &pod_config, &config, &image_id)?;
        let log_path =
            dockpod_proto::validate::log_file(&pod_config.log_directory, &config.log_path)?
                .map(|p| p.display().to_string())
                .unwrap_or_default();
        if let Some(id) = self.retried_create(&config, &image_id).await? {
            return Ok(id);
        }
        let id = self.create_named(&name, body).await?;
        let ticket = self.inspections.ticket();
        let inspected = self.engine.inspect(&id).await.ok().flatten();
        let created_at = inspected
            .as_ref()
            .and_then(|c| c.created.as_deref())
            .map(crate::docker::parse_time)
            .unwrap_or_else(now_ns);
        let resources = config.linux.as_ref().and_then(|l| l.resources.clone());
        let record = ContainerRecord {
            id: id.clone(),
            config,
            image_id,
            log_path,
            created_at,
            state: ContainerState::ContainerCreated as i32,
            resources,
            ..Default::default()
        };
        {
            let mut r = self.record();
            r.containers.insert(id.clone(), record);
            r.intents.remove(&name);
        }
        if let Err(e) = self.persist().await {
            self.record().containers.remove(&id);
            let _ = self.engine.remove(&id).await;
            return Err(e);
        }
        // The event watcher may have read it since: then its answer stands.
        self.inspections.keep(&id, ticket, inspected.as_ref());
        self.emit(&id, ContainerEventType::ContainerCreatedEvent);
        tracing::info!(container = %id, name = %name, "container created");
        Ok(id)
    }

    /// A CreateContainer for a name and attempt this pod holds already is a retry whose first
    /// answer was lost (its caller gave up, or a front or shim died before it answered): the
    /// container that call made is the answer when it is the one this request describes and
    /// has not exited. Any other (another configuration, another image, exited) is removed,
    /// and the caller creates afresh. Either way Docker's name conflict never reaches the
    /// caller.
    async fn retried_create(
        &self,
        config: &ContainerConfig,
        image_id: &str,
    ) -> Result<Option<String>> {
        let meta = config.metadata.clone().unwrap_or_default();
        let earlier = self
            .record()
            .containers
            .values()
            .find(|c| {
                c.config
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
            })
            .map(|c| {
                let same = c.config == *config
                    && c.image_id == image_id
                    && c.state != ContainerState::ContainerExited as i32;
                (c.id.clone(), same)
            });
        match earlier {
            None => Ok(None),
            Some((id, true)) => {
                tracing::info!(container = %id, "a retried CreateContainer: answering with the container its first call made");
                Ok(Some(id))
            }
            Some((id, false)) => {
                tracing::warn!(container = %id, "a CreateContainer for the name and attempt of another container: removing that one first");
                self.remove_container(&id).await?;
                Ok(None)
            }
        }
    }

    /// Starts writing the container's CRI log file, unless that already happens or it has no
    /// log path.
    fn follow_log(&self, id: &str) {
        let Some(path) = self.written_log(id) else {
            return;
        };
        self.logs.follow(
            &self.engine,
            id,
            path.into(),
            self.record.store().log_checkpoint(id),
        );
    }

    /// The CRI log path of container `id` when this shim writes it: it has one, and it is not
    /// an adopted container's link to Docker's own file.
    fn written_log(&self, id: &str) -> Option<String> {
        self.record()
            .containers
            .get(id)
            .filter(|c| !c.log_path.is_empty() && !c.docker_log)
            .map(|c| c.log_path.clone())
    }

    /// Before an exit is recorded, lets the log follower write the container's last lines, so
    /// that whoever reads "exited" finds the whole log in the file.
    async fn settle_log(&self, id: &str, seen: &Observed) {
        if !matches!(seen.phase, Phase::Exited | Phase::Gone) {
            return;
        }
        let Some(log) = self.logs.handle(id) else {
            return;
        };
        if log.wait_done(LOG_DRAIN_TIMEOUT).await {
            self.logs.stop(id);
            if let Some(c) = self.record().containers.get_mut(id) {
                c.log_complete = true;
            }
        } else {
            tracing::warn!(container = %id, "log not drained in time; reporting the exit anyway");
        }
    }

    /// Opens a fresh log file for a running container (after the kubelet renamed the old one).
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let id = self.running(id)?;
        if self
            .record()
            .containers
            .get(&id)
            .is_some_and(|c| c.docker_log)
        {
            // Docker rotates its own log file; the kubelet's path is a symlink to it.
            return Ok(());
        }
        if !self.logs.follows(&id) {
            // A restarted shim serves before its first look at every container has started
            // their followers; this running container's follower starts now (it resumes from
            // its checkpoint, which also finds the file the kubelet just renamed).
            self.follow_log(&id);
        }
        let log: Option<LogHandle> = self.logs.handle(&id);
        match log {
            Some(log) => log.reopen().await,
            None => Err(Error::FailedPrecondition(format!(
                "container {id} has no log file to reopen"
            ))),
        }
    }

    fn resolve(&self, id: &str) -> Option<String> {
        self.record().find(id).map(|c| c.id.clone())
    }

    fn require(&self, id: &str) -> Result<String> {
        self.resolve(id).ok_or_else(|| {
            Error::NotFound(format!(
                "container {id} not found in pod {}",
                self.record().display_name()
            ))
        })
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        let id = self.require(id)?;
        let _guard = self.ops.container(&id).await;
        if let Some(path) = self.written_log(&id) {
            crate::logs::create_file(path.into()).await?;
        }
        self.engine.start(&id).await?;
        self.follow_log(&id);
        self.refresh_container(&id).await
    }

    /// Stops with `timeout` seconds of grace; an unknown or stopped container is fine.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let Some(id) = self.resolve(id) else {
            return Ok(());
        };
        let _guard = self.ops.shared().await;
        self.engine
            .stop(&id, Duration::from_secs(timeout.max(0) as u64))
            .await?;
        self.exit_recorded(&id).await
    }

    /// After Docker stopped container `id`: returns once the record holds its exit and has
    /// saved it (the exit is reported). The read that Docker's `die` event set going records
    /// it; a read of this call's own would wait on Docker, which holds the container while it
    /// cleans up after the stop (measured 24 ms on Docker 20.10, a third of the stop). Without
    /// the event soon (Docker's event stream reconnecting, say), the container is read here.
    async fn exit_recorded(&self, id: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + EXIT_EVENT_WAIT;
        loop {
            let observed = self.observed.notified();
            tokio::pin!(observed);
            // Registered before the record is looked at, so no read lands unseen in between.
            observed.as_mut().enable();
            // As reported: the exit is recorded once it is on disk.
            let running = self
                .record
                .reported_container(id)
                .is_some_and(|c| c.state == ContainerState::ContainerRunning as i32);
            if !running {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, observed).await.is_err() {
                // Returns once the exit is saved, whichever read recorded it.
                return self.refresh_container(id).await;
            }
        }
    }

    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let Some(id) = self.resolve(id) else {
            return Ok(());
        };
        let _guard = self.ops.container(&id).await;
        self.intend(&id, Intent::Remove).await?;
        if let Err(e) = self.engine.remove(&id).await {
            // Docker did not remove it: the kubelet's retry decides, not the next start.
            self.record().intents.remove(&id);
            let _ = self.persist().await;
            return Err(e);
        }
        self.forget_container(&id).await
    }

    /// After Docker removed container `id`: its follower, position and record go, and the
    /// removal intent with them, in one save.
    async fn forget_container(&self, id: &str) -> Result<()> {
        self.logs.stop(id);
        self.inspections.remove(id);
        let forgotten = {
            let mut r = self.record();
            r.intents.remove(id);
            r.containers.remove(id)
        };
        // Files on the state and log disks: unlinked on the blocking pool, off the shim's thread.
        let (store, container) = (self.record.store().clone(), id.to_string());
        let unlinked = tokio::task::spawn_blocking(move || {
            store.remove_log_checkpoint(&container);
            if let Some(c) = forgotten {
                crate::adopt::remove_docker_log_link(&c);
            }
        });
        if let Err(e) = unlinked.await {
            tracing::warn!(error = %e, container = %id, "removing a container's log files");
        }
        self.persist().await?;
        self.emit(id, ContainerEventType::ContainerDeletedEvent);
        Ok(())
    }

    pub async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(ContainerStatus, HashMap<String, String>)> {
        let id = self.require(id)?;
        // From the last inspection: Docker's events keep it current. Only a container not
        // inspected since this shim started is read now, and answered once what that read
        // found is reported: a respawned or adopting shim's record may predate it.
        let kept = self.inspections.get(&id);
        let inspect = match kept {
            Some(inspect) => Some(inspect),
            None => {
                let read = self.reinspect(&id).await?.map(Arc::new);
                self.record.container_settled(&id).await;
                read
            }
        };
        let status = self
            .record
            .reported_container(&id)
            .as_ref()
            .map(ContainerRecord::status)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        let pid = inspect
            .as_ref()
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.pid)
            .unwrap_or(0);
        let status = ContainerStatus {
            user: (pid > 0).then(|| process_user(pid)).flatten(),
            ..status
        };
        let mut info = HashMap::new();
        if verbose {
            let details = serde_json::json!({
                "pid": pid,
                "shimPid": std::process::id(),
                "sandboxID": self.record().sandbox_id,
                "inspect": inspect.as_deref(),
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok((status, info))
    }

    pub async fn update_resources(
        &self,
        id: &str,
        resources: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let id = self.require(id)?;
        let Some(r) = resources else { return Ok(()) };
        let _guard = self.ops.container(&id).await;
        self.docker_update(&id, &r).await?;
        if let Some(c) = self.record().containers.get_mut(&id) {
            c.resources = Some(r);
        }
        self.persist().await
    }

    /// UpdatePodSandboxResources (the kubelet's call on every in-place pod resize): the pod's
    /// resources are recorded, and the sandbox container, the part of the pod Docker owns,
    /// takes them as its own limits (the pod's cgroup above it is the kubelet's to resize).
    pub async fn update_sandbox_resources(
        &self,
        sandbox_id: &str,
        overhead: Option<LinuxContainerResources>,
        resources: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let _guard = self.ops.container(sandbox_id).await;
        if sandbox_id.is_empty() || sandbox_id != self.record().sandbox_id {
            return Err(Error::NotFound(format!(
                "pod sandbox {sandbox_id} not found"
            )));
        }
        if let Some(r) = &resources {
            self.docker_update(sandbox_id, r).await?;
        }
        self.record().sandbox_resources = Some(SandboxResources {
            overhead,
            resources,
        });
        self.persist().await
    }

    async fn docker_update(&self, id: &str, r: &LinuxContainerResources) -> Result<()> {
        let mut host = bollard::models::HostConfig::default();
        spec::apply_resources(&mut host, r, self.host);
        let body = ContainerUpdateBody {
            cpu_period: host.cpu_period,
            cpu_quota: host.cpu_quota,
            cpu_shares: host.cpu_shares,
            memory: host.memory,
            memory_swap: host.memory_swap,
            cpuset_cpus: host.cpuset_cpus,
            cpuset_mems: host.cpuset_mems,
            ..Default::default()
        };
        self.engine.update(id, body).await
    }

    /// The Docker ID of a running container of this pod, for exec.
    pub fn running(&self, id: &str) -> Result<String> {
        let id = self.require(id)?;
        let running = self
            .record()
            .containers
            .get(&id)
            .is_some_and(|c| c.state == ContainerState::ContainerRunning as i32);
        if running {
            Ok(id)
        } else {
            Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )))
        }
    }
}

/// The identities of a container's first process, read from the kernel.
fn process_user(pid: i64) -> Option<ContainerUser> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Vec<i64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (uid, gid) = (field("Uid:"), field("Gid:"));
    Some(ContainerUser {
        linux: Some(LinuxContainerUser {
            uid: *uid.first()?,
            gid: *gid.first()?,
            supplemental_groups: field("Groups:"),
        }),
    })
}
