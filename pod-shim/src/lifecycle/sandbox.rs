//! The sandbox's life: RunPodSandbox (creating, networking and starting the sandbox
//! container), StopPodSandbox, RemovePodSandbox, its readiness and its resources.

use dockpod_proto::cri::{
    ContainerEventType, ContainerState, LinuxContainerResources, PodSandboxConfig,
};
use dockpod_proto::pod_record::{Intent, PodRecord, SandboxResources};

use super::network::add_hosts_entry;
use super::{Pod, SANDBOX_STOP_GRACE};
use crate::docker::{now_ns, pod_ips, Stopped};
use crate::error::{Error, Result};
use crate::spec::{self, Context};

impl Pod {
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
        let _starting = Raised::new(&self.starting);
        self.run_sandbox_locked(config, runtime_handler).await
    }

    pub(super) async fn run_sandbox_locked(
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
        // The front made sure of the image (pulled it if missing); one removed since is
        // Docker's "No such image" at create.
        let id = match self
            .create_named(&name, body)
            .await
            .and_then(|(made, _)| made)
        {
            Err(e) if e.is_missing_image() => {
                return Err(Error::NotFound(format!(
                    "sandbox image {} is not present (contrib/setup.sh builds the default one)",
                    self.sandbox_image
                )))
            }
            created => created?,
        };
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

    pub(super) async fn start_sandbox(
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
        let mut network_flushing = crate::cni::Flushing::default();
        if let Some(cni) = self.pod_cni(&config) {
            let pid = inspect
                .state
                .as_ref()
                .and_then(|s| s.pid)
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    Error::FailedPrecondition(format!("sandbox container {id} is not running"))
                })?;
            self.hold_sandbox_process(id, pid);
            let (attachment, flushing) =
                cni.add(id, &format!("/proc/{pid}/ns/net"), &config).await?;
            network_flushing = flushing;
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
        // The pod's record and its network's go to the disk together; the sandbox is reported
        // once both are there. A failure of either is the call's (the caller deletes the
        // network and the sandbox, and the front gives the pod's directory up).
        let (saved, flushed) = tokio::join!(self.persist(), network_flushing.done());
        saved.and(flushed)?;
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
        let stopped = {
            let _stopping = Raised::new(&self.stopping);
            self.stop_sandbox_locked().await
        };
        if stopped.is_err() {
            // No `die` of the sandbox was read meanwhile (`refresh_sandbox`), and it may have
            // ended by itself before this call got as far as stopping it.
            if let Err(e) = self.refresh_sandbox().await {
                tracing::warn!(error = %e, "reading the sandbox after a failed stop");
            }
        }
        stopped
    }

    async fn stop_sandbox_locked(&self) -> Result<()> {
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
        let stopped = futures_util::future::join_all(stops)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        // Each exit recorded, all at once (a wait for Docker's event, should it not come, is
        // then one wait for the pod, not one for each container).
        let recorded = ids.iter().zip(stopped).map(|(id, stopped)| async move {
            match stopped {
                // Recorded by the read Docker's `die` event sets going, as StopContainer's is.
                Stopped::Now => self.exit_recorded(id).await,
                // The kubelet stops a pod's containers before its sandbox: their exits are
                // on the disk already, and a read of each would only ask Docker again. One
                // still reported running (it exited by itself a moment ago) or in an unknown
                // state is read now.
                Stopped::Already => {
                    let settled = self.record.reported_container(id).is_some_and(|c| {
                        c.state == ContainerState::ContainerExited as i32
                            || c.state == ContainerState::ContainerCreated as i32
                    });
                    match settled {
                        true => Ok(()),
                        false => self.refresh_container(id).await,
                    }
                }
            }
        });
        futures_util::future::join_all(recorded)
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
        self.teardown_network().await?;
        // The sandbox's end is written before Docker is asked to stop it and flushed while
        // Docker works (the network is gone already, and a status read meanwhile still gets
        // the saved state until this save is on the disk); a failed stop writes back what was.
        let was_ready = std::mem::replace(&mut self.record().ready, false);
        let mut saving = self.record.save_ahead()?;
        saving.written().await?;
        let stop = async {
            match sandbox.is_empty() {
                true => Ok(()),
                false => self
                    .engine
                    .stop(&sandbox, SANDBOX_STOP_GRACE)
                    .await
                    .map(drop),
            }
        };
        let (stopped, saved) = tokio::join!(stop, saving.done());
        if let Err(e) = stopped {
            self.record().ready = was_ready;
            if let Err(save) = self.persist().await {
                tracing::warn!(error = %save, "saving the sandbox's state after a failed stop");
            }
            return Err(e);
        }
        saved?;
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
    pub(super) async fn remove_everything(
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

    /// Refreshes the sandbox's readiness from Docker. A read can only find a ready sandbox
    /// ended, so none is made of one that is not ready (a sandbox does not start again), nor
    /// while StopPodSandbox runs, which records the sandbox's end itself (and reads it when it
    /// fails).
    pub async fn refresh_sandbox(&self) -> Result<()> {
        let (id, ready) = {
            let r = self.record();
            (r.sandbox_id.clone(), r.ready)
        };
        if id.is_empty() || !ready || self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
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
}

/// A flag of the pod's set for as long as this lives: cleared however the call holding it
/// ends, also when its future is dropped (the client went away inside it).
struct Raised<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> Raised<'a> {
    fn new(flag: &'a std::sync::atomic::AtomicBool) -> Self {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        Raised(flag)
    }
}

impl Drop for Raised<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
