//! The pod record on disk: one JSON file in the pod's state directory, replaced atomically on
//! every change, read back when a shim restarts.

use std::path::{Path, PathBuf};

use dockpod_proto::files::atomic_write;
use dockpod_proto::layout::STATE_FILE;

use crate::error::{Error, Result};
use dockpod_proto::pod_record::PodRecord;

#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Self {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record's file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The persisted record, or `None` for a pod that was never saved.
    pub fn load(&self) -> Result<Option<PodRecord>> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::FailedPrecondition(format!("pod state {} is corrupt: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }

    pub fn save(&self, record: &PodRecord) -> Result<()> {
        self.write(record)
            .map_err(Error::io(format!("writing {}", self.path().display())))
    }

    /// `save` without the context, for a caller that tells several waiters of one outcome.
    pub fn write(&self, record: &PodRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        atomic_write(&self.path(), &bytes, 0o600)
    }

    /// Where the checkpoint of a container's CRI log lives (see `log_position`).
    pub fn log_checkpoint(&self, container: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{container}.json"))
    }

    pub fn remove_log_checkpoint(&self, container: &str) {
        let path = self.log_checkpoint(container);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, path = %path.display(), "removing a log checkpoint");
            }
        }
    }

    /// Removes the pod's state directory with everything in it.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockpod_proto::cri::{PodSandboxConfig, PodSandboxMetadata};
    use dockpod_proto::pod_record::ContainerRecord;
    use dockpod_proto::pod_state::PodSummary;

    /// The front indexes pods from this file when it starts: what it reads must match what
    /// the shim writes.
    #[test]
    fn the_front_reads_what_the_shim_saves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let mut record = PodRecord {
            shim_id: "0123456789abcdef".into(),
            sandbox_id: "sandbox1".into(),
            config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    namespace: "shop".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        for id in ["c2", "c1"] {
            record.containers.insert(
                id.into(),
                ContainerRecord {
                    id: id.into(),
                    ..Default::default()
                },
            );
        }
        store.save(&record).expect("save");
        let summary = PodSummary::load(dir.path())
            .expect("load")
            .expect("a state file");
        assert_eq!(summary.sandbox_id, "sandbox1");
        assert_eq!(summary.display, "shop/web");
        assert_eq!(summary.container_ids, vec!["c1", "c2"]);
    }
}
