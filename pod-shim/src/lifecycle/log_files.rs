//! The CRI log files the shim writes for the pod's containers: when a follower starts, when
//! an exit waits for its last lines, and ReopenContainerLog.

use dockpod_proto::pod_record::{Observed, Phase};

use super::{Pod, LOG_DRAIN_TIMEOUT};
use crate::error::{Error, Result};
use crate::logs::LogHandle;

impl Pod {
    /// Starts writing the container's CRI log file, unless that already happens or it has no
    /// log path.
    pub(super) fn follow_log(&self, id: &str) {
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

    /// Starts the follower of a container the record has seen start and whose log is not
    /// complete: what a restarted shim resumes.
    pub(super) fn follow_log_if_started(&self, id: &str) {
        let started = self
            .record()
            .containers
            .get(id)
            .is_some_and(|c| c.started_at > 0 && !c.log_complete);
        if started {
            self.follow_log(id);
        }
    }

    /// The CRI log path of container `id` when this shim writes it: it has one, and it is not
    /// an adopted container's link to Docker's own file.
    pub(super) fn written_log(&self, id: &str) -> Option<String> {
        self.record()
            .containers
            .get(id)
            .filter(|c| !c.log_path.is_empty() && !c.docker_log)
            .map(|c| c.log_path.clone())
    }

    /// Before an exit is recorded, lets the log follower write the container's last lines, so
    /// that whoever reads "exited" finds the whole log in the file.
    pub(super) async fn settle_log(&self, id: &str, seen: &Observed) {
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
}
