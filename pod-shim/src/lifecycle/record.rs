//! The pod's record as the shim keeps it: the one in memory, behind a lock that is never
//! held across a Docker call, and its durable copy (`state::Store`). Saves are serialised,
//! each writing a snapshot taken under the save's own lock, so an older snapshot is never
//! written after a newer one whatever order the operations finish in.

use std::sync::{Mutex, MutexGuard};

use crate::error::Result;
use crate::pod::PodRecord;
use crate::state::Store;

pub(super) struct Record {
    current: Mutex<PodRecord>,
    store: Store,
    /// Held across one snapshot and save.
    saving: Mutex<()>,
}

impl Record {
    pub(super) fn new(store: Store, record: PodRecord) -> Record {
        Record {
            current: Mutex::new(record),
            store,
            saving: Mutex::new(()),
        }
    }

    /// The record; a poisoned lock still holds the last consistent record, so it is used.
    pub(super) fn lock(&self) -> MutexGuard<'_, PodRecord> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the record as it is now.
    pub(super) fn save(&self) -> Result<()> {
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.lock().clone();
        self.store.save(&snapshot)
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
