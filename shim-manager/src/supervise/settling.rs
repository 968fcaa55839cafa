//! The pods whose fate start-up is still deciding: a RunPodSandbox a dead front left running
//! (its shim may still finish it) or a pod it was giving up. A RunPodSandbox that meets the
//! Docker name of such a pod waits for the decision before it asks that pod or tries again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Settling {
    shims: Mutex<HashSet<String>>,
    changed: Notify,
}

/// A pod being settled; dropping it (however its task ends) says it is decided.
pub struct Deciding {
    settling: Arc<Settling>,
    shim_id: String,
}

impl Settling {
    fn shims(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.shims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the pod of `shim_id` as being decided until the returned guard drops.
    pub fn begin(self: &Arc<Self>, shim_id: &str) -> Deciding {
        self.shims().insert(shim_id.to_string());
        Deciding {
            settling: self.clone(),
            shim_id: shim_id.to_string(),
        }
    }

    /// Returns once the pod of `shim_id` is not (or no longer) being decided.
    pub async fn decided(&self, shim_id: &str) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the set is read, so a decision in between is not missed.
            changed.as_mut().enable();
            if !self.shims().contains(shim_id) {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for Deciding {
    fn drop(&mut self) {
        self.settling.shims().remove(&self.shim_id);
        self.settling.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_its_pod_only() {
        let settling = Arc::new(Settling::default());
        let deciding = settling.begin("a");
        let _other = settling.begin("b");
        settling.decided("c").await;
        let wait = tokio::spawn({
            let settling = settling.clone();
            async move { settling.decided("a").await }
        });
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        drop(deciding);
        tokio::time::timeout(std::time::Duration::from_secs(30), wait)
            .await
            .expect("decided once its guard dropped")
            .expect("join");
    }
}
