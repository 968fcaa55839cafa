//! Fault tests: dockerd, the front or a shim fails while pods run. A fault such as a dockerd
//! restart disturbs every pod on the node, so these tests live in a test binary of their own
//! (cargo runs test binaries one after another, never beside the main suite) and take one
//! slot each, so that they also run one at a time within it.

mod churn;
mod dockerd_restart;
mod fleet;
mod load;
mod node;

/// Held for the whole of a fault test.
pub async fn slot() -> tokio::sync::MutexGuard<'static, ()> {
    static SLOT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SLOT.lock().await
}
