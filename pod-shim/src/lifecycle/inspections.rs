//! Each container's last inspection, kept in the order Docker answered: ContainerStatus
//! answers from it without asking Docker, so an older read applied after a newer one would
//! stick until the container's next event (a container that exited shown running, say).
//! Reads of one container run concurrently (a call's own look after a Docker call, the event
//! watcher's, a resync), so each takes a ticket before it asks Docker and only the newest
//! ticket seen for a container may be applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bollard::models::ContainerInspectResponse;

/// A read of a container, taken before Docker was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

struct Kept {
    ticket: Ticket,
    /// `None`: Docker no longer had the container at that read.
    inspect: Option<Arc<ContainerInspectResponse>>,
}

/// One entry per recorded container, dropped with its record.
#[derive(Default)]
pub struct Inspections {
    next: AtomicU64,
    kept: Mutex<HashMap<String, Kept>>,
}

impl Inspections {
    /// Taken before Docker is asked, so tickets order reads by when they were made.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.next.fetch_add(1, Ordering::SeqCst))
    }

    fn kept(&self) -> MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the answer to read `ticket` of container `id` unless a read made after it was
    /// kept already; returns whether it was kept (and so may be applied to the record).
    pub fn keep(
        &self,
        id: &str,
        ticket: Ticket,
        inspect: Option<&ContainerInspectResponse>,
    ) -> bool {
        let mut kept = self.kept();
        if kept.get(id).is_some_and(|k| k.ticket > ticket) {
            return false;
        }
        kept.insert(
            id.to_string(),
            Kept {
                ticket,
                inspect: inspect.map(|i| Arc::new(i.clone())),
            },
        );
        true
    }

    /// The last inspection kept, if any read found the container.
    pub fn get(&self, id: &str) -> Option<Arc<ContainerInspectResponse>> {
        self.kept().get(id).and_then(|k| k.inspect.clone())
    }

    pub fn remove(&self, id: &str) {
        self.kept().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> ContainerInspectResponse {
        ContainerInspectResponse {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn an_older_read_answered_last_is_not_kept() {
        let kept = Inspections::default();
        let (older, newer) = (kept.ticket(), kept.ticket());
        assert!(kept.keep("c", newer, Some(&named("newer"))));
        assert!(!kept.keep("c", older, Some(&named("older"))));
        assert_eq!(
            kept.get("c").and_then(|i| i.name.clone()).as_deref(),
            Some("newer")
        );
    }

    #[test]
    fn a_read_that_found_nothing_is_kept_in_order_too() {
        let kept = Inspections::default();
        let (older, newer) = (kept.ticket(), kept.ticket());
        assert!(kept.keep("c", newer, None));
        assert!(!kept.keep("c", older, Some(&named("older"))));
        assert!(kept.get("c").is_none());
        // Once the container is forgotten, the next read starts afresh.
        kept.remove("c");
        assert!(kept.keep("c", older, Some(&named("again"))));
    }
}
