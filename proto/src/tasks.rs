//! Tasks with an owner (the project's habit 7): a process's long-lived tasks are spawned
//! through one `Tasks`, a task tracker with a cancellation token, so that when the process
//! stops serving every one of them is cancelled and joined within a bound, and a test that
//! runs a server in-process leaves nothing running behind it. Clones share the tracker and
//! token; the owner stops them (or holds `cancel_on_drop`).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// Runs `task` until it ends or the tasks are stopped.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let _ = cancel.run_until_cancelled(task).await;
        });
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels every task when dropped: for an owner that may return early.
    pub fn cancel_on_drop(&self) -> DropGuard {
        self.cancel.clone().drop_guard()
    }

    /// Cancels every task and waits at most `limit` for all to end; whether they did.
    pub async fn stop(&self, limit: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        let joined = tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok();
        if !joined {
            tracing::warn!(
                left = self.tracker.len(),
                "tasks still running when stopped"
            );
        }
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_cancels_and_joins_every_task() {
        let tasks = Tasks::default();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            // Dropped by the cancellation: the sender goes with it.
            let _ended = ended_tx;
            std::future::pending::<()>().await;
        });
        tasks.clone().spawn(async {});
        assert!(tasks.stop(Duration::from_secs(30)).await, "joined in time");
        assert_eq!(tasks.running(), 0);
        assert!(ended_rx.await.is_err(), "the pending task was dropped");
    }

    #[tokio::test]
    async fn the_drop_guard_cancels() {
        let tasks = Tasks::default();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _ended = ended_tx;
            std::future::pending::<()>().await;
        });
        drop(tasks.cancel_on_drop());
        assert!(ended_rx.await.is_err(), "cancelled by the guard");
    }
}
