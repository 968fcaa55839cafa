//! One run per operation. A mutating CRI call runs in a task of its own, to its end whatever
//! happens to its caller (a kubelet that gives up at its deadline drops only its wait, never
//! the operation halfway), and a repeat of the call while that run is still going (the
//! kubelet's retry after the deadline) waits for the same outcome instead of starting a
//! second run that would race the first in Docker.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tonic::Status;

type Outcome<T> = Option<Result<T, Status>>;

/// The operations running now, by key; an entry lives exactly as long as its run.
pub struct Flights<T> {
    running: Arc<Mutex<HashMap<String, watch::Receiver<Outcome<T>>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

fn lock<V>(m: &Mutex<V>) -> MutexGuard<'_, V> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Runs `op` under `key` in a task of its own and returns its outcome; while a run of
    /// `key` is going, `op` is dropped unrun and the outcome of that run is returned. The key
    /// names everything that makes two calls the same operation.
    pub async fn run<F>(&self, key: String, op: F) -> Result<T, Status>
    where
        F: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let mut outcome = {
            let mut running = lock(&self.running);
            match running.get(&key) {
                Some(going) => {
                    tracing::info!(%key, "the same call is running; waiting for its outcome");
                    going.clone()
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    running.insert(key.clone(), rx.clone());
                    let running = Arc::clone(&self.running);
                    tokio::spawn(async move {
                        let result = op.await;
                        // Settled: a call from now on is a new operation.
                        lock(&running).remove(&key);
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        let settled = outcome.wait_for(Option::is_some).await;
        match settled.as_deref() {
            Ok(Some(result)) => result.clone(),
            // Only a runtime shutting down ends the run without an outcome (panics abort).
            _ => Err(Status::unavailable("the server is stopping")),
        }
    }

    /// How many operations are running now.
    pub fn running(&self) -> usize {
        lock(&self.running).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_repeat_while_running_shares_the_outcome_and_a_later_call_runs_again() {
        let flights = Arc::new(Flights::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let op = |runs: Arc<AtomicUsize>, gate: Option<tokio::sync::oneshot::Receiver<()>>| async move {
            let n = runs.fetch_add(1, Ordering::SeqCst) as u32;
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            Ok(n + 40)
        };
        let first = tokio::spawn({
            let (flights, runs) = (flights.clone(), runs.clone());
            async move { flights.run("k".into(), op(runs, Some(released))).await }
        });
        while flights.running() == 0 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let (flights, runs) = (flights.clone(), runs.clone());
            async move { flights.run("k".into(), op(runs, None)).await }
        });
        // Another key is another operation and does not wait.
        assert_eq!(
            flights
                .run("other".into(), op(runs.clone(), None))
                .await
                .ok(),
            Some(41)
        );
        let _ = release.send(());
        assert_eq!(first.await.ok().and_then(|r| r.ok()), Some(40));
        assert_eq!(second.await.ok().and_then(|r| r.ok()), Some(40));
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the repeat did not run");
        assert_eq!(flights.running(), 0);
        assert_eq!(
            flights.run("k".into(), op(runs.clone(), None)).await.ok(),
            Some(42)
        );
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_cut_the_run() {
        let flights = Flights::<()>::default();
        let done = Arc::new(AtomicUsize::new(0));
        let op = {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        };
        let gave_up =
            tokio::time::timeout(Duration::from_millis(1), flights.run("k".into(), op)).await;
        assert!(gave_up.is_err());
        // The repeat waits for the same run, which ends.
        let repeat = flights.run("k".into(), async { Err(Status::internal("second run")) });
        assert!(repeat.await.is_ok());
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn errors_are_shared_too() {
        let flights = Flights::<()>::default();
        let failed = flights
            .run("k".into(), async { Err(Status::not_found("gone")) })
            .await;
        assert_eq!(failed.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    }
}
