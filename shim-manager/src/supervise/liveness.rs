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

    /// When the next probe of a shim that answers its event stream is due: two per bound (so
    /// a stuck shim is found within half the bound past it), at least a second and at most
    /// 30 s apart; `None` without a bound. Each probe wakes an idle shim and costs the front
    /// an RPC: at 250 idle pods, four per bound were most of what the node spent on them.
    pub(super) fn next_probe(&self) -> Option<tokio::time::Instant> {
        let every = (self.bound? / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        Some(self.probed + every)
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

/// Completes at `deadline`; never without one.
pub(super) async fn at(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
