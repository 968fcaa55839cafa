//! The pod's record as the shim keeps it: the one in memory, behind a lock that is never
//! held across a Docker call, and its durable copy (`state::Store`). Saves are serialised,
//! each writing a snapshot taken under the save's own lock, so an older snapshot is never
//! written after a newer one whatever order the operations finish in.
//!
//! A save runs on tokio's blocking pool: the shim has one thread, and a disk that is slow (or
//! frozen) must not stall gRPC, exit tracking and streams with it. Saves that queue up behind
//! a slow one are batched: the next write takes the record as it is then, and every caller
//! whose change it holds is answered by it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::pod::PodRecord;
use crate::state::Store;

pub(super) struct Record {
    current: Mutex<PodRecord>,
    store: Store,
    /// Held across one snapshot and save.
    saving: Mutex<()>,
    /// Saves asked for so far; each caller's number is taken after its change was made.
    requested: AtomicU64,
    /// The highest request number whose change is on disk.
    saved: AtomicU64,
}

impl Record {
    pub(super) fn new(store: Store, record: PodRecord) -> Record {
        Record {
            current: Mutex::new(record),
            store,
            saving: Mutex::new(()),
            requested: AtomicU64::new(0),
            saved: AtomicU64::new(0),
        }
    }

    /// The record; a poisoned lock still holds the last consistent record, so it is used.
    pub(super) fn lock(&self) -> MutexGuard<'_, PodRecord> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the record as it is now (or a later one), off the shim's thread.
    pub(super) async fn save(self: &Arc<Self>) -> Result<()> {
        let wanted = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let record = self.clone();
        tokio::task::spawn_blocking(move || record.save_blocking(wanted))
            .await
            .map_err(|e| Error::io("saving the pod state")(std::io::Error::other(e)))?
    }

    fn save_blocking(&self, wanted: u64) -> Result<()> {
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        if self.saved.load(Ordering::Acquire) >= wanted {
            // A write that began after this change was made has it.
            return Ok(());
        }
        // Read before the snapshot: every request numbered up to here made its change first.
        let covers = self.requested.load(Ordering::Acquire);
        let snapshot = self.lock().clone();
        self.store.save(&snapshot)?;
        self.saved.store(covers, Ordering::Release);
        Ok(())
    }

    /// The pod's state directory, for the files kept beside the record (log positions).
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Deletes the durable copy (the pod is removed).
    pub(super) fn remove(&self) -> Result<()> {
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        self.store.remove()
    }
}
