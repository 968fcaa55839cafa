//! A container's life inside the pod: create (and a retried create), start, stop, removal,
//! status, resource updates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, ContainerUpdateBody};
use dockpod_proto::cri::{
    ContainerConfig, ContainerEventType, ContainerState, ContainerStatus, ContainerUser,
    LinuxContainerResources, LinuxContainerUser,
};
use dockpod_proto::pod_record::{ContainerRecord, Intent};

use super::{Pod, EXIT_EVENT_WAIT};
use crate::docker::now_ns;
use crate::error::{Error, Result};
use crate::spec;

impl Pod {
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
        let mut ctx = self.ctx();
        if !config.cdi_devices.is_empty() {
            ctx.cdi = self.engine.cdi_enabled().await?;
        }
        let (name, body) = spec::container(&ctx, sandbox_id, &pod_config, &config, &image)?;
        let log_path =
            dockpod_proto::validate::log_file(&pod_config.log_directory, &config.log_path)?
                .map(|p| p.display().to_string())
                .unwrap_or_default();
        if let Some(id) = self.retried_create(&config, &image).await? {
            return Ok(id);
        }
        // Saved with the intent: what Docker's container of this name is recorded as, by this
        // call or by the next shim should this one die before its own save.
        let resources = config.linux.as_ref().and_then(|l| l.resources.clone());
        let mut made = ContainerRecord {
            config,
            log_path,
            state: ContainerState::ContainerCreated as i32,
            resources,
            ..Default::default()
        };
        self.record().creating.insert(name.clone(), made.clone());
        // The image's name is resolved beside the create, so the container is not read back
        // on the call's path; its first read (StartContainer's, or a status's) settles the
        // image ID and the creation time on what Docker reports for it
        // (`ContainerRecord::settle_identity`), should the name have led elsewhere meanwhile.
        // The kubelet names the image by the ID PullImage or ImageStatus answered: that needs
        // no resolving (Docker refuses the create if no image has it).
        let named_id = dockpod_proto::validate::image_id(&image);
        let resolve = async {
            match named_id {
                Some(_) => Ok(None),
                None => self.engine.inspect_image(&image).await,
            }
        };
        let (created, resolved) = tokio::join!(self.create_named(&name, body), resolve);
        let (id, intended) = match created {
            Err(e) => {
                // The intent was not saved: nothing was asked of Docker.
                let mut r = self.record();
                r.intents.remove(&name);
                r.creating.remove(&name);
                return Err(e);
            }
            Ok((Err(e), _)) if e.is_missing_image() => {
                return Err(Error::NotFound(format!(
                    "image {image:?} not found; pull it first"
                )))
            }
            Ok((created, intended)) => (created?, intended),
        };
        let resolved = named_id.or_else(|| resolved.ok().flatten().and_then(|i| i.id));
        let (image_id, inspected) = match resolved {
            Some(image_id) => (image_id, None),
            // The name led nowhere beside the create (the image removed or retagged, or
            // Docker's answer lost): the container says what it was made from.
            None => {
                let ticket = self.inspections.ticket();
                let inspected = self.engine.inspect(&id).await.ok().flatten();
                match self.created_image(&image, inspected.as_ref()).await {
                    Ok(image_id) => (image_id, Some((ticket, inspected))),
                    Err(e) => {
                        // Nothing to record it with: the container goes, as a failed save's does.
                        let _ = self.engine.remove(&id).await;
                        self.settle_failed_create(&name).await;
                        return Err(e);
                    }
                }
            }
        };
        let created_at = inspected
            .as_ref()
            .and_then(|(_, c)| c.as_ref()?.created.as_deref())
            .map_or_else(now_ns, crate::docker::parse_time);
        made.id.clone_from(&id);
        made.image_id = image_id;
        made.created_at = created_at;
        {
            let mut r = self.record();
            r.containers.insert(id.clone(), made);
            r.intents.remove(&name);
            r.creating.remove(&name);
        }
        // With the intent on the disk, so is what this save records (`PodRecord::creating`):
        // the container is reported at once and the call answered once the save is written
        // (the front's lists read it), its flush in its turn. Without it, the save goes to
        // the disk first.
        let reach = match intended {
            true => super::record::Reach::Implied,
            false => super::record::Reach::Disk,
        };
        if let Err(e) = self.record.save_then(reach, None).await {
            self.record().containers.remove(&id);
            let _ = self.engine.remove(&id).await;
            return Err(e);
        }
        // The event watcher may have read it since: then its answer stands.
        if let Some((ticket, inspected)) = inspected {
            self.inspections.keep(&id, ticket, inspected.as_ref());
        }
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
    pub(super) async fn retried_create(
        &self,
        config: &ContainerConfig,
        image: &str,
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
                let alike =
                    c.config == *config && c.state != ContainerState::ContainerExited as i32;
                (c.id.clone(), alike, c.image_id.clone())
            });
        let Some((id, alike, recorded_image)) = earlier else {
            return Ok(None);
        };
        // The image's name may lead elsewhere since (a newer pull of its tag): then the
        // request describes another container. Docker is asked only when all else matches.
        let same = alike
            && self
                .engine
                .inspect_image(image)
                .await?
                .and_then(|i| i.id)
                .as_deref()
                == Some(recorded_image.as_str());
        if same {
            tracing::info!(container = %id, "a retried CreateContainer: answering with the container its first call made");
            return Ok(Some(id));
        }
        tracing::warn!(container = %id, "a CreateContainer for the name and attempt of another container: removing that one first");
        self.remove_container(&id).await?;
        Ok(None)
    }

    /// The ID of the image a container was created from: Docker's inspection of the
    /// container names it; without that inspection, the image's own.
    async fn created_image(
        &self,
        image: &str,
        inspected: Option<&ContainerInspectResponse>,
    ) -> Result<String> {
        if let Some(id) = inspected.and_then(|c| c.image.clone()) {
            return Ok(id);
        }
        self.engine
            .inspect_image(image)
            .await?
            .and_then(|i| i.id)
            .ok_or_else(|| Error::NotFound(format!("image {image:?} is gone since the create")))
    }

    pub(super) fn resolve(&self, id: &str) -> Option<String> {
        self.record().find(id).map(|c| c.id.clone())
    }

    pub(super) fn require(&self, id: &str) -> Result<String> {
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
    pub(super) async fn exit_recorded(&self, id: &str) -> Result<()> {
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
        let (removed, intended) = self
            .intending(&id, Intent::Remove, self.engine.remove(&id))
            .await?;
        if let Err(e) = removed {
            // Docker did not remove it: the kubelet's retry decides, not the next start.
            self.record().intents.remove(&id);
            let _ = self.persist().await;
            return Err(e);
        }
        self.forget_container(&id, intended).await
    }

    /// After Docker removed container `id`: its follower, position and record go, and the
    /// removal intent with them, in one save. With the intent on the disk (`intended`), that
    /// save is one the disk implies: a shim that finds the intent finishes the removal and
    /// forgets the container the same way, so the removal is reported at once and answered
    /// once the save is written (the front's lists read it), its flush in its turn.
    pub(super) async fn forget_container(&self, id: &str, intended: bool) -> Result<()> {
        self.logs.stop(id);
        self.inspections.remove(id);
        let forgotten = {
            let mut r = self.record();
            r.intents.remove(id);
            r.containers.remove(id)
        };
        if let Some(c) = forgotten.filter(|c| c.docker_log) {
            // An adopted container's symlink, on the log disk: off the shim's thread, and
            // off the writer's, whose saves a stalled log disk must not hold up.
            drop(tokio::task::spawn_blocking(move || {
                crate::adopt::remove_docker_log_link(&c)
            }));
        }
        // The log checkpoint, beside the record on the state disk, goes with the save.
        let (store, container) = (self.record.store().clone(), id.to_string());
        let unlink: super::record::Then = Box::new(move || store.remove_log_checkpoint(&container));
        let reach = match intended {
            true => super::record::Reach::Implied,
            false => super::record::Reach::Disk,
        };
        self.record.save_then(reach, Some(unlink)).await?;
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

    pub(super) async fn docker_update(&self, id: &str, r: &LinuxContainerResources) -> Result<()> {
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
