//! What keeps a pod's shim changes in order and tells a stuck shim from a busy one: a lock
//! per pod, held by whoever stops or starts that pod's shim, and the liveness probe's
//! bookkeeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::shim::ShimHandle;

/// One lock per pod (by shim ID), held by whoever stops or starts its shim or changes which
/// shim the registry names for it.
#[derive(Default)]
pub struct PodLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl PodLocks {
    pub(super) fn of(&self, shim_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Locks of removed pods are dropped here rather than tracked: nobody else holds them.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(shim_id.to_string()).or_default().clone()
    }
}

/// When a shim last answered its liveness probe, and how long it may stay silent.
pub(super) struct Liveness {
    bound: Option<Duration>,
    answered: tokio::time::Instant,
    probed: tokio::time::Instant,
}

impl Liveness {
    pub(super) fn new(bound: Option<Duration>) -> Liveness {
        let now = tokio::time::Instant::now();
        Liveness {
            bound,
            answered: now,
            probed: now,
        }
    }

    /// Whether a probe is due, `every` after the last one.
    pub(super) fn due(&self, every: Duration) -> bool {
        self.bound.is_some() && self.probed.elapsed() >= every
    }

    /// Probes the shim (its Info); false once it has not answered for longer than the bound.
    pub(super) async fn probe(&mut self, shim: &ShimHandle) -> bool {
        let Some(bound) = self.bound else {
            return true;
        };
        self.probed = tokio::time::Instant::now();
        match shim.info().await {
            Ok(_) => {
                self.answered = tokio::time::Instant::now();
                true
            }
            Err(e) => {
                let silent = self.answered.elapsed();
                tracing::warn!(sandbox = %shim.sandbox_id, pid = shim.pid, error = %e, silent = ?silent, "pod shim did not answer its liveness probe");
                silent <= bound
            }
        }
    }
}
