//! Where a panic stops: the isolation boundary of the front and of every pod's shim.
//!
//! The binaries unwind (`panic = "unwind"`), so a panic ends the task or thread it happened
//! in, and the hook installed here decides whether that is enough:
//!
//! - Inside an *isolated* scope (a streaming session's tasks and threads, one client
//!   connection's HTTP/2 rewriting) only that session or connection ends: it owns nothing
//!   beyond its sockets, which unwinding closes, and the pod's containers, record and other
//!   sessions never saw it. The panic is logged with its location and counted.
//! - Anywhere else (the pod's record, exit tracking, the CRI calls that change state) the
//!   code that panicked may have left state half changed, and going on would serve it. The
//!   hook logs the location and aborts the process, as `panic = "abort"` did: the front
//!   starts the shim again, which reads its record and Docker afresh (the crash-consistency
//!   path every kill test exercises), and a front aborted is started again by systemd.
//!
//! Scopes are marked per thread while an isolated future is polled (`Isolated`) or for a
//! whole thread (`isolate_thread`); tasks spawned from an isolated task are isolated only
//! through `spawn`, so every task of a session is started that way. The tasks of one session
//! (`spawn_session` and every task spawned within it) share a scope: a panic in any of them
//! aborts all of them, so a session's reader or writer never outlives the task that died
//! holding the other half of its connection.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::task::{AbortHandle, JoinHandle};

static PANICS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ISOLATED: Cell<bool> = const { Cell::new(false) };
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// The tasks of one session, aborted together when one of them panics. A task added after
/// that (the session's first task registers once spawned, and may already have lost a helper
/// by then) is aborted as it is added.
#[derive(Default)]
struct Scope(Mutex<ScopeTasks>);

#[derive(Default)]
struct ScopeTasks {
    aborted: bool,
    tasks: Vec<AbortHandle>,
}

impl Scope {
    fn add(&self, task: AbortHandle) {
        let mut scope = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if scope.aborted {
            task.abort();
            return;
        }
        scope.tasks.retain(|t| !t.is_finished());
        scope.tasks.push(task);
    }

    fn abort_all(&self) {
        let mut scope = self.0.lock().unwrap_or_else(|p| p.into_inner());
        scope.aborted = true;
        for task in std::mem::take(&mut scope.tasks) {
            task.abort();
        }
    }
}

/// Panics so far in this process that ended an isolated scope (the others end the process).
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Installs the hook that counts, logs, and aborts outside isolated scopes. A process whose
/// log is written by another thread (the shim's) names its file as `fatal_log`: the line that
/// says why the process ends is also appended there directly, as the writer thread may not
/// get to it before the abort.
pub fn install(fatal_log: Option<std::path::PathBuf>) {
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if ISOLATED.with(Cell::get) {
            let total = PANICS.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(%location, panic = %message, total, "a panic ended one streaming session or connection; the process serves on");
        } else {
            tracing::error!(%location, panic = %message, "a panic outside any session: ending the process, whose state it may have left half changed");
            if let Some(path) = &fatal_log {
                use std::io::Write;
                let line = format!("panic at {location}: {message}; ending the process\n");
                let _ = std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(line.as_bytes()));
            }
            std::process::abort();
        }
    }));
}

/// Runs `f` with this thread marked isolated, restoring the mark afterwards, also when `f`
/// unwinds: synchronous work on behalf of one connection, and each poll of `Isolated`.
pub fn within<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ISOLATED.with(|i| i.set(self.0));
        }
    }
    let _restore = Restore(ISOLATED.with(|i| i.replace(true)));
    f()
}

/// Marks the calling thread isolated for the rest of its life (a session's own threads).
pub fn isolate_thread() {
    ISOLATED.with(|i| i.set(true));
}

/// A future whose polls are isolated scopes, one of a session's tasks.
pub struct Isolated<F> {
    inner: Pin<Box<F>>,
    scope: Arc<Scope>,
}

impl<F: Future> Isolated<F> {
    /// `future` as a task of the current session (or of a session of its own, outside any).
    pub fn new(future: F) -> Isolated<F> {
        Isolated {
            inner: Box::pin(future),
            scope: SCOPE.try_with(Arc::clone).unwrap_or_default(),
        }
    }
}

impl<F: Future> Future for Isolated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Aborts the session's tasks if this poll unwinds.
        struct OnUnwind<'a>(&'a Scope);
        impl Drop for OnUnwind<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.abort_all();
                }
            }
        }
        let this = &mut *self;
        let scope = this.scope.clone();
        let _on_unwind = OnUnwind(&scope);
        let inner = this.inner.as_mut();
        within(|| SCOPE.sync_scope(scope.clone(), || inner.poll(cx)))
    }
}

/// Spawns `future` on the current runtime as an isolated task of the current session.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = Isolated::new(future);
    let scope = task.scope.clone();
    let handle = tokio::spawn(task);
    scope.add(handle.abort_handle());
    handle
}

/// Spawns `future` on `runtime` as the first task of a new session.
pub fn spawn_session<F>(runtime: &tokio::runtime::Handle, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let scope = Arc::new(Scope::default());
    let task = Isolated {
        inner: Box::pin(future),
        scope: scope.clone(),
    };
    let handle = runtime.spawn(task);
    scope.add(handle.abort_handle());
    handle
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// The hook is the process's: each case runs in a child test process of its own, picked
    /// by `DOCKPOD_TEST_PANICS`, so no other test of this binary runs under it.
    fn child(case: &str) -> std::process::Output {
        let exe = std::env::current_exe().expect("test binary");
        std::process::Command::new(exe)
            .args(["--exact", "panics::tests::case", "--nocapture"])
            .env("DOCKPOD_TEST_PANICS", case)
            .output()
            .expect("child runs")
    }

    #[test]
    fn case() {
        let Ok(case) = std::env::var("DOCKPOD_TEST_PANICS") else {
            return;
        };
        install(None);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("runtime");
        if case == "outside" {
            let _ = runtime.block_on(tokio::spawn(async { panic!("state half changed") }));
            unreachable!("the hook aborts");
        }
        // A session's task panics alone: the process goes on.
        let session = spawn_session(runtime.handle(), async { panic!("the session itself") });
        let outcome = runtime.block_on(session);
        assert!(outcome.expect_err("panicked").is_panic());
        assert_eq!(count(), 1);
        // A panic in one task of a session ends its other tasks, however long they would run.
        let session = spawn_session(runtime.handle(), async {
            let reader = spawn(std::future::pending::<()>());
            let helper = spawn(async { panic!("a helper of a session") });
            let _ = helper.await;
            reader.await
        });
        let ended = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), session).await
        });
        // The first task is aborted too, or (when it got there first) saw its reader aborted.
        let cancelled = match ended.expect("the session ended") {
            Err(session) => session.is_cancelled(),
            Ok(reader) => reader.is_err_and(|r| r.is_cancelled()),
        };
        assert!(cancelled);
        assert_eq!(count(), 2);
        // Another session is not touched by either.
        let other = spawn_session(runtime.handle(), async { spawn(async { 7 }).await.ok() });
        assert_eq!(runtime.block_on(other).ok().flatten(), Some(7));
        // A session's thread, and synchronous work for one connection.
        let thread = std::thread::spawn(|| {
            isolate_thread();
            panic!("a session's thread")
        });
        assert!(thread.join().is_err());
        assert!(std::panic::catch_unwind(|| within(|| panic!("one connection"))).is_err());
        assert_eq!(count(), 4);
        // The mark does not leak out of the scope that set it, and the process serves on.
        assert!(!ISOLATED.with(Cell::get));
        assert_eq!(
            runtime.block_on(async { spawn(async { 7 }).await.ok() }),
            Some(7)
        );
    }

    #[test]
    fn an_isolated_panic_ends_its_scope_and_is_counted() {
        let out = child("isolated");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn a_panic_outside_any_scope_ends_the_process() {
        let out = child("outside");
        assert_eq!(
            out.status.signal(),
            Some(nix::sys::signal::Signal::SIGABRT as i32),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
