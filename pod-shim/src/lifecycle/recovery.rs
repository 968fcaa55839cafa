//! Crash recovery of the pod's containers: what a shim killed between Docker and its record
//! left behind. A create that meets its name taken asks who stands for that container (an
//! orphan is removed, another pod's sandbox is reported to the front); a starting shim
//! reconciles its record with the containers carrying its label (finishing the creates and
//! removals that were cut, removing what no record explains); a RunPodSandbox that never
//! completed is abandoned, its network and containers deleted.

use bollard::models::ContainerCreateBody;
use dockpod_proto::cri::ContainerEventType;

use super::Pod;
use crate::error::{Error, Result};

/// Who stands for a container whose name a create met (see `Pod::holder`).
enum Holder {
    /// Nobody: the container is an orphan to remove.
    Nobody(String),
    /// Another pod of this instance, whose sandbox it is.
    Pod(dockpod_proto::name_holder::NameHolder),
    /// Not this instance's, or this pod's own: Docker's conflict stands.
    Unknown,
}

impl Pod {
    pub(super) async fn create_or_replace_orphan(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String> {
        match self.engine.create(name, body.clone()).await {
            Err(e) if e.is_conflict() => match self.holder(name).await? {
                Holder::Nobody(orphan) => {
                    tracing::warn!(container = %orphan, name = %name, "removing a container no shim stands for (a cut create), then creating again");
                    self.engine.remove(&orphan).await?;
                    self.engine.create(name, body).await
                }
                Holder::Pod(holder) => Err(Error::NameHeld {
                    message: format!(
                        "the name {name} is sandbox {} of pod shim {}",
                        holder.sandbox_id, holder.shim_id
                    ),
                    holder,
                }),
                Holder::Unknown => Err(e),
            },
            other => other,
        }
    }

    /// Who stands for container `name_or_id`. Nobody, when it carries this instance's labels
    /// and either this shim's ID with no record holding it (a shim of this pod died between
    /// Docker's create and its record), or the ID of a shim whose pod directory is gone. The
    /// latter is a create Docker finished after its shim was killed and its pod cleaned up:
    /// the clean-up listed the shim's containers before Docker had made this one, and every
    /// later RunPodSandbox of the same pod and attempt meets its name. Another pod, when it is
    /// the sandbox of another shim of this instance whose pod directory is there: the front
    /// asks that pod (a RunPodSandbox whose answer was lost made it).
    async fn holder(&self, name_or_id: &str) -> Result<Holder> {
        let Some(inspect) = self.engine.inspect(name_or_id).await? else {
            return Ok(Holder::Unknown);
        };
        let id = inspect.id.unwrap_or_default();
        let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
        let instance = labels.get(dockpod_proto::labels::INSTANCE);
        let shim = labels.get(dockpod_proto::labels::SHIM_ID);
        let sandbox = labels
            .get(dockpod_proto::labels::DOCKER_TYPE)
            .map(String::as_str)
            == Some(dockpod_proto::labels::TYPE_SANDBOX);
        Ok(match shim {
            _ if id.is_empty() || instance != Some(&self.instance) => Holder::Unknown,
            Some(shim) if *shim == self.shim_id => {
                let r = self.record();
                if r.sandbox_id != id && !r.containers.contains_key(&id) {
                    Holder::Nobody(id)
                } else {
                    Holder::Unknown
                }
            }
            Some(shim) => {
                let gone = self
                    .record
                    .store()
                    .dir()
                    .parent()
                    .is_some_and(|pods| dockpod_proto::layout::pod_is_gone(pods, shim));
                match (gone, sandbox) {
                    (true, _) => Holder::Nobody(id),
                    (false, true) => Holder::Pod(dockpod_proto::name_holder::NameHolder {
                        sandbox_id: id,
                        shim_id: shim.clone(),
                    }),
                    (false, false) => Holder::Unknown,
                }
            }
            None => Holder::Unknown,
        })
    }

    /// Brings the record and Docker in step when the shim starts (see
    /// `PodRecord::reconcile`): records the container of a create cut after Docker made it
    /// when its intent holds the record the create would make (`PodRecord::creating`), removes
    /// every other container of this shim that no record holds (a create cut between Docker
    /// and the record, named by its intent when it got that far), finishes removals that were
    /// cut, and settles every intent. It holds the pod
    /// lock, so no operation of this shim is between Docker and the record meanwhile.
    pub async fn reconcile(&self) -> Result<()> {
        let _guard = self.ops.pod().await;
        let label = format!("{}={}", dockpod_proto::labels::SHIM_ID, self.shim_id);
        let labelled: Vec<(String, String)> = self
            .engine
            .list_labelled(&[label])
            .await?
            .into_iter()
            .filter_map(|c| {
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default();
                Some((c.id?, name.trim_start_matches('/').to_string()))
            })
            .collect();
        let plan = self.record().reconcile(&labelled);
        for orphan in &plan.orphans {
            if plan.cut_creates.contains(orphan) {
                tracing::warn!(container = %orphan, "removing the container of a create that was cut before it was recorded");
            } else {
                tracing::warn!(container = %orphan, "removing a container of this pod that no record holds");
            }
            self.engine.remove(orphan).await?;
        }
        for id in &plan.unfinished_removals {
            tracing::warn!(container = %id, "finishing a removal that was cut");
            self.engine.remove(id).await?;
            // Its intent was read back, not necessarily from the disk (the kernel kept the
            // frames of a shim that died): this save goes to the disk itself.
            self.forget_container(id, false).await?;
        }
        for (id, name) in &plan.finished_creates {
            tracing::warn!(container = %id, name = %name, "recording the container of a create that was cut after Docker made it");
            let mut r = self.record();
            if let Some(mut made) = r.creating.remove(name) {
                made.id.clone_from(id);
                r.containers.insert(id.clone(), made);
            }
        }
        let settled = {
            let mut r = self.record();
            let had = !r.intents.is_empty() || !r.creating.is_empty();
            r.intents.clear();
            r.creating.clear();
            had
        };
        if settled {
            self.persist().await?;
        }
        // What Docker says of them since (their image and creation time; a start that reached
        // Docker before the shim died), as a restarted shim reads every container it holds.
        for (id, _) in &plan.finished_creates {
            self.emit(id, ContainerEventType::ContainerCreatedEvent);
            self.refresh_container(id).await?;
            self.follow_log_if_started(id);
        }
        Ok(())
    }

    /// Deletes what a RunPodSandbox of this pod that never completed left: the network
    /// attachments recorded in the pod's directory (recorded before the first plugin ran, so
    /// a shim killed inside ADD leaves one), then every container labelled with this shim.
    pub async fn abandon(&self) -> Result<()> {
        let _guard = self.ops.pod().await;
        // A failed network deletion does not keep the containers: a sandbox container left
        // behind would take its name from every retry of the kubelet's RunPodSandbox. The
        // first failure is reported once everything else was tried.
        let mut failed = None;
        if let Some(cni) = &self.cni {
            for attachment in cni.recorded().await? {
                let netns = self.sandbox_netns(&attachment.container_id).await;
                match cni.del(&attachment, &netns).await {
                    Ok(()) => {
                        tracing::info!(sandbox = %attachment.container_id, network = %attachment.network_name, "deleted the network of an abandoned sandbox")
                    }
                    Err(e) => {
                        tracing::error!(sandbox = %attachment.container_id, error = %e, "deleting the network of an abandoned sandbox");
                        failed.get_or_insert(e);
                    }
                }
            }
        }
        let label = format!("{}={}", dockpod_proto::labels::SHIM_ID, self.shim_id);
        for summary in self.engine.list_labelled(&[label]).await? {
            if let Some(id) = summary.id {
                self.engine.remove(&id).await?;
                tracing::info!(container = %id, "removed a container of an abandoned sandbox");
            }
        }
        failed.map_or(Ok(()), Err)
    }
}
