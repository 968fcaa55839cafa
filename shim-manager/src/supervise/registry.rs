//! The front's index of pods and containers: sandbox ID → the pod's shim, container ID →
//! sandbox ID. Anyone may read it; only the supervisor writes it (the writes are visible in
//! `supervise` alone), so every change of which shim serves a pod happens in one place,
//! under that pod's lock, and containers are indexed from what the shims announce. It holds
//! nothing that cannot be rebuilt: at start-up it is refilled from the pods' state files (see
//! `supervise::startup`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::shim::ShimHandle;

#[derive(Default)]
pub struct Registry {
    pods: RwLock<HashMap<String, Arc<ShimHandle>>>,
    containers: RwLock<HashMap<String, String>>,
    /// Wakes those waiting for a container to be indexed.
    indexed: tokio::sync::Notify,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// The single entry whose key is `id` or starts with it.
fn lookup<'a, V>(map: &'a HashMap<String, V>, id: &str) -> Option<(&'a String, &'a V)> {
    if id.is_empty() {
        return None;
    }
    if let Some(entry) = map.get_key_value(id) {
        return Some(entry);
    }
    let mut found = map.iter().filter(|(k, _)| k.starts_with(id));
    match (found.next(), found.next()) {
        (Some(entry), None) => Some(entry),
        _ => None,
    }
}

impl Registry {
    pub(super) fn insert_pod(&self, shim: Arc<ShimHandle>) {
        write(&self.pods).insert(shim.sandbox_id.clone(), shim);
    }

    /// Forgets a pod and its containers.
    pub(super) fn remove_pod(&self, sandbox_id: &str) -> Option<Arc<ShimHandle>> {
        write(&self.containers).retain(|_, s| s != sandbox_id);
        write(&self.pods).remove(sandbox_id)
    }

    pub fn pod(&self, id: &str) -> Option<Arc<ShimHandle>> {
        lookup(&read(&self.pods), id).map(|(_, s)| s.clone())
    }

    pub fn pods(&self) -> Vec<Arc<ShimHandle>> {
        read(&self.pods).values().cloned().collect()
    }

    pub(super) fn insert_container(&self, container_id: &str, sandbox_id: &str) {
        write(&self.containers).insert(container_id.to_string(), sandbox_id.to_string());
        self.indexed.notify_waiters();
    }

    /// Waits at most `bound` for container `id` to be indexed; whether it is.
    pub async fn await_container(&self, id: &str, bound: std::time::Duration) -> bool {
        let waiting = async {
            loop {
                let indexed = self.indexed.notified();
                tokio::pin!(indexed);
                // Registered before the index is read, so an insert in between is not missed.
                indexed.as_mut().enable();
                if read(&self.containers).contains_key(id) {
                    return;
                }
                indexed.await;
            }
        };
        tokio::time::timeout(bound, waiting).await.is_ok()
    }

    /// The containers of pod `sandbox_id` become exactly `ids`.
    pub(super) fn replace_containers(&self, sandbox_id: &str, ids: &[String]) {
        {
            let mut containers = write(&self.containers);
            containers.retain(|_, s| s != sandbox_id);
            for id in ids {
                containers.insert(id.clone(), sandbox_id.to_string());
            }
        }
        self.indexed.notify_waiters();
    }

    pub(super) fn remove_container(&self, container_id: &str) {
        write(&self.containers).remove(container_id);
    }

    /// The full container ID and its pod's shim.
    pub fn container(&self, id: &str) -> Option<(String, Arc<ShimHandle>)> {
        let (cid, sandbox) = {
            let containers = read(&self.containers);
            let (cid, sandbox) = lookup(&containers, id)?;
            (cid.clone(), sandbox.clone())
        };
        self.pod(&sandbox).map(|s| (cid, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_full_id_or_unique_prefix() {
        let map = HashMap::from([("abc123".to_string(), 1), ("abd456".to_string(), 2)]);
        assert_eq!(lookup(&map, "abc123").map(|(_, v)| *v), Some(1));
        assert_eq!(lookup(&map, "abd").map(|(_, v)| *v), Some(2));
        assert_eq!(lookup(&map, "ab"), None);
        assert_eq!(lookup(&map, ""), None);
    }

    #[tokio::test]
    async fn a_container_awaited_is_found_once_indexed_and_a_pods_list_replaces_its_entries() {
        let registry = Arc::new(Registry::default());
        let waiting = tokio::spawn({
            let registry = registry.clone();
            async move {
                registry
                    .await_container("c1", std::time::Duration::from_secs(60))
                    .await
            }
        });
        tokio::task::yield_now().await;
        registry.insert_container("c1", "pod");
        assert!(waiting.await.expect("join"), "indexed while it waited");
        registry.insert_container("c2", "pod");
        registry.insert_container("other", "pod2");
        registry.replace_containers("pod", &["c3".to_string()]);
        let ids = |r: &Registry| {
            let mut ids: Vec<String> = read(&r.containers).keys().cloned().collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&registry), vec!["c3".to_string(), "other".to_string()]);
        assert!(
            !registry
                .await_container("never", std::time::Duration::from_millis(1))
                .await
        );
    }
}
