//! The pod's operation locks. Sandbox-wide operations (running, stopping and removing the
//! sandbox, and the start-up removal of what a cut create left) exclude everything else;
//! container operations exclude only operations on the same container, so a Docker call
//! stuck on one container never delays another container's operations. Status and lists take
//! no lock at all: they read the record.
//!
//! Written here: keyed async mutexes are a few lines over tokio's, and the crates that offer
//! them bring their own runtimes or no pruning of idle keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

type KeyLock = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
pub struct OpLocks {
    pod: Arc<RwLock<()>>,
    /// One entry per container with an operation running or waiting; removed with the last.
    containers: Arc<Mutex<HashMap<String, KeyLock>>>,
}

/// Held by a sandbox-wide operation.
pub struct PodGuard {
    _pod: OwnedRwLockWriteGuard<()>,
}

/// Held by an operation on one container.
pub struct ContainerGuard {
    key: String,
    lock: KeyLock,
    held: Option<OwnedMutexGuard<()>>,
    containers: Arc<Mutex<HashMap<String, KeyLock>>>,
    _pod: OwnedRwLockReadGuard<()>,
}

fn map(m: &Mutex<HashMap<String, KeyLock>>) -> MutexGuard<'_, HashMap<String, KeyLock>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OpLocks {
    /// Waits until no other operation of the pod runs.
    pub async fn pod(&self) -> PodGuard {
        PodGuard {
            _pod: self.pod.clone().write_owned().await,
        }
    }

    /// Waits until no sandbox-wide operation and no other operation on `container` runs.
    pub async fn container(&self, container: &str) -> ContainerGuard {
        let pod = self.pod.clone().read_owned().await;
        let lock = map(&self.containers)
            .entry(container.to_string())
            .or_default()
            .clone();
        let held = lock.clone().lock_owned().await;
        ContainerGuard {
            key: container.to_string(),
            lock,
            held: Some(held),
            containers: self.containers.clone(),
            _pod: pod,
        }
    }

    /// Waits only for sandbox-wide operations: for calls that may run beside any other on the
    /// same container (stops with different grace periods, say).
    pub async fn shared(&self) -> OwnedRwLockReadGuard<()> {
        self.pod.clone().read_owned().await
    }

    /// Containers with an operation running or waiting.
    pub fn busy(&self) -> usize {
        map(&self.containers).len()
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut containers = map(&self.containers);
        // The map's reference and ours: nobody else waits for this container.
        if Arc::strong_count(&self.lock) == 2 {
            containers.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_container_never_waits_for_another() {
        let locks = OpLocks::default();
        let _a = locks.container("a").await;
        let b = tokio::time::timeout(Duration::from_secs(5), locks.container("b")).await;
        assert!(b.is_ok(), "b waited for a");
        let again = tokio::time::timeout(Duration::from_millis(20), locks.container("a")).await;
        assert!(
            again.is_err(),
            "a second operation on a ran beside the first"
        );
    }

    #[tokio::test]
    async fn the_pod_lock_excludes_container_operations_and_keys_are_pruned() {
        let locks = Arc::new(OpLocks::default());
        let a = locks.container("a").await;
        let pod = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _pod = locks.pod().await;
            }
        });
        tokio::task::yield_now().await;
        assert!(
            !pod.is_finished(),
            "the pod lock ran beside a container operation"
        );
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), pod)
            .await
            .expect("pod lock taken once a is done")
            .expect("task");
        assert_eq!(locks.busy(), 0);
        let _shared = locks.shared().await;
        let _c = locks.container("c").await;
        assert_eq!(locks.busy(), 1);
    }
}
