//! The pod record on disk, in the pod's state directory: saved on every change as the shared
//! crate's `state_journal` defines (a frame in a journal, now and then compacted into the
//! base file), read back when a shim restarts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use dockpod_proto::layout::STATE_FILE;
use dockpod_proto::state_journal::{self, Journal, Reached};

use crate::error::{Error, Result};
use dockpod_proto::pod_record::PodRecord;

/// Clones share the journal's writer: every save of the pod goes through one.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    journal: Arc<Mutex<Journal>>,
}

impl Store {
    pub fn new(dir: &Path) -> Self {
        Store {
            dir: dir.to_path_buf(),
            journal: Arc::new(Mutex::new(Journal::new(dir, 0o600))),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record's base file, which errors name.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The persisted record, or `None` for a pod that was never saved.
    pub fn load(&self) -> Result<Option<PodRecord>> {
        let path = self.path();
        match state_journal::read(&self.dir) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::FailedPrecondition(format!("pod state {} is corrupt: {e}", path.display()))
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }

    pub fn save(&self, record: &PodRecord) -> Result<()> {
        self.write(record)
            .map_err(Error::io(format!("writing {}", self.path().display())))
    }

    /// `save` without the context, for a caller that tells several waiters of one outcome.
    pub fn write(&self, record: &PodRecord) -> std::io::Result<()> {
        self.journal().save(&json(record)?)
    }

    /// The record written where every reader, and a shim that restarts after this one
    /// died, reads it; on the disk once `sync` returns (or at once, when `Reached::Disk`).
    pub fn write_ahead(&self, record: &PodRecord) -> std::io::Result<Reached> {
        self.journal().write(&json(record)?)
    }

    /// Puts every record written so far on the disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.journal().sync()
    }

    /// For the writer when no save waits: flushes what a save that asked for less left
    /// unflushed, and makes the journal a compaction left wanted (`Journal::prepare`; until
    /// it is made, saves are compactions).
    pub fn idle(&self) {
        let mut journal = self.journal();
        if let Err(e) = journal.sync() {
            // The next save compacts: the record is whole on the disk again then.
            tracing::warn!(error = %e, dir = %self.dir.display(), "flushing the record's journal");
        }
        if let Err(e) = journal.prepare() {
            tracing::warn!(error = %e, dir = %self.dir.display(), "making the record's journal");
        }
    }

    /// The record in `state.json` alone (`Journal::fold`), for a shim that stops while its
    /// pod stays; after any save in progress, before any later one.
    pub fn fold(&self) -> std::io::Result<()> {
        self.journal().fold()
    }

    /// The journal's writer. A writer that panicked holding it left no frame half-counted
    /// (where frames end is set only once a frame is whole in the file), so a poisoned lock
    /// is used.
    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
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

    /// The pod's state directory gone from where pods are looked for, with everything in
    /// it: renamed aside in one step (`layout::removed_pod_dir`), for the front to delete
    /// once this shim has exited, rather than deleted file by file before the call answers.
    pub fn remove(&self) -> std::io::Result<()> {
        self.journal().close();
        let removed = dockpod_proto::layout::removed_pod_dir(&self.dir);
        match std::fs::rename(&self.dir, &removed) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                // A removal cut before the front deleted what it renamed.
                std::fs::remove_dir_all(&removed)?;
                std::fs::rename(&self.dir, &removed)
            }
            other => other,
        }
    }
}

/// The record as the journal holds it.
fn json(record: &PodRecord) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(std::io::Error::other)
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
        // The next save is a frame in the journal: the front reads that, and so does the
        // next shim.
        store.idle();
        record.containers.remove("c1");
        store.save(&record).expect("second save");
        let summary = PodSummary::load(dir.path()).expect("load").expect("saved");
        assert_eq!(summary.container_ids, vec!["c2"]);
        let base = std::fs::read(store.path()).expect("base");
        assert!(PodSummary::parse(&base).is_ok_and(|s| s.container_ids.len() == 2));
        let reloaded = Store::new(dir.path()).load().expect("load").expect("saved");
        assert_eq!(reloaded.containers, record.containers);
    }
}
