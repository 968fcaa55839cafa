//! OOM kills as the kernel counts them, beside Docker's word for them. Docker 20.10 on
//! cgroup v2 (its containerd 1.6 watching the container's cgroup) at times reports neither its
//! `oom` event nor its `OOMKilled` flag for a container the kernel's OOM killer killed: seen in
//! the cgroup v2 VM, the kernel's log naming the kill six seconds after the container's start
//! and Docker saying exit 137 and nothing more. So the shim counts for itself: it watches each
//! running container's `memory.events` with inotify (cgroup v2 announces every change of that
//! file as a modification) and reports a rise of its `oom_kill` as Docker's `oom` event is
//! reported. The count is also read when the watch is set, so a kill between the container's
//! start and the watch is not lost while the cgroup is still there.
//!
//! Cgroup v1's counters announce nothing to inotify (they need an eventfd per cgroup through
//! `cgroup.event_control`); there Docker's report is left alone. One inotify instance per
//! shim, made with its first watch: a pod running no container on cgroup v2 spends none.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, Inotify, InotifyEvent, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::inotify::{out_of_inotify, registered};
use crate::kernel_stats::Cgroup;

/// The file whose `oom_kill` line the kernel raises with each kill in the cgroup.
const EVENTS_FILE: &str = "memory.events";

/// The pod's running containers' OOM kill counters, and the kills found and not yet taken.
#[derive(Default)]
pub struct OomKills {
    state: Mutex<State>,
    /// Notified when a kill is found outside `next` or the inotify instance is made.
    changed: Notify,
}

#[derive(Default)]
struct State {
    inotify: Option<Arc<AsyncFd<Instance>>>,
    watched: HashMap<WatchDescriptor, Watched>,
    /// Containers with a kill found and not yet taken by `next`, oldest first.
    found: VecDeque<String>,
}

struct Watched {
    id: String,
    cgroup: Cgroup,
    /// The count last read.
    kills: u64,
}

impl Watched {
    /// Reads the count again; whether it rose. A cgroup gone meanwhile did not.
    fn rose(&mut self) -> bool {
        match self.cgroup.oom_kills() {
            Some(kills) if kills > self.kills => {
                self.kills = kills;
                true
            }
            // Said, because a kill whose cgroup went before this read is lost to the count
            // (Docker's report then stands alone).
            None => {
                tracing::debug!(container = %self.id, "an OOM kill counter could not be read: the cgroup is gone");
                false
            }
            _ => false,
        }
    }
}

/// The inotify instance as tokio's `AsyncFd` wants it.
struct Instance(Inotify);

impl AsRawFd for Instance {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl OomKills {
    /// Watches the cgroup of container `id`, whose process is `pid`, from now until the
    /// cgroup is removed (the container's end). Once per container; nothing on cgroup v1, or
    /// when the process is gone already.
    pub fn watch(&self, id: &str, pid: i64) {
        if pid <= 0 || self.lock().watched.values().any(|w| w.id == id) {
            return;
        }
        if let Some(Cgroup::V2(dir)) = Cgroup::of(pid) {
            self.watch_cgroup(id, dir);
        }
    }

    /// Watches the cgroup v2 directory `dir` of container `id`.
    fn watch_cgroup(&self, id: &str, dir: PathBuf) {
        let file = dir.join(EVENTS_FILE);
        let mut state = self.lock();
        let inotify = match &state.inotify {
            Some(inotify) => inotify.clone(),
            None => match registered(Instance) {
                Ok(made) => {
                    let made = Arc::new(made);
                    state.inotify = Some(made.clone());
                    self.changed.notify_waiters();
                    made
                }
                Err(e) => {
                    warn_unwatched(e);
                    return;
                }
            },
        };
        let wd = match inotify
            .get_ref()
            .0
            .add_watch(&file, AddWatchFlags::IN_MODIFY)
        {
            Ok(wd) => wd,
            Err(e) if out_of_inotify(e) => return warn_unwatched(e),
            // The cgroup is gone: the container ended before it could be watched.
            Err(e) => {
                tracing::debug!(error = %e, container = %id, "not watching a container's OOM kills");
                return;
            }
        };
        let mut watched = Watched {
            id: id.to_string(),
            cgroup: Cgroup::V2(dir),
            kills: 0,
        };
        // A container's cgroup is its own from its start: any kill counted is its.
        if watched.rose() {
            state.found.push_back(watched.id.clone());
            self.changed.notify_waiters();
        }
        tracing::debug!(container = %id, kills = watched.kills, "watching the container's OOM kills");
        state.watched.insert(wd, watched);
    }

    /// The next container an OOM kill was counted in (again, after each further kill).
    pub async fn next(&self) -> String {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let inotify = {
                let mut state = self.lock();
                if let Some(id) = state.found.pop_front() {
                    return id;
                }
                state.inotify.clone()
            };
            let Some(inotify) = inotify else {
                changed.await;
                continue;
            };
            tokio::select! {
                _ = changed => {}
                ready = inotify.readable() => {
                    let Ok(mut ready) = ready else {
                        // Only when the runtime shuts down: nothing is left to report to.
                        return std::future::pending().await;
                    };
                    match ready.get_inner().0.read_events() {
                        Ok(events) => self.apply(&events),
                        Err(Errno::EAGAIN) => ready.clear_ready(),
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the OOM kill watch");
                            ready.clear_ready();
                        }
                    }
                }
            }
        }
    }

    fn apply(&self, events: &[InotifyEvent]) {
        let mut state = self.lock();
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                state.watched.remove(&event.wd);
            } else if let Some(watched) = state.watched.get_mut(&event.wd) {
                if watched.rose() {
                    let id = watched.id.clone();
                    state.found.push_back(id);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Once per shim: Docker's report still stands, and the operator can raise the limit.
fn warn_unwatched(e: Errno) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(error = %e, "no inotify instance or watch left to count containers' OOM kills (fs.inotify.max_user_instances, max_user_watches); relying on Docker's report alone");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The bound only covers a loaded machine: inotify's events come at once.
    async fn next(kills: &OomKills) -> String {
        tokio::time::timeout(Duration::from_secs(30), kills.next())
            .await
            .expect("a kill was reported")
    }

    fn events(kills: u64) -> String {
        format!("low 0\nhigh 0\nmax 4\noom 1\noom_kill {kills}\noom_group_kill 0\n")
    }

    /// A kill counted before the watch, each later rise, and none for a write that raises
    /// nothing; a removed file ends the watch.
    #[tokio::test]
    async fn a_rise_of_oom_kill_is_reported_once_per_rise() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(a.join(EVENTS_FILE), events(1)).unwrap();
        std::fs::write(b.join(EVENTS_FILE), events(0)).unwrap();
        let kills = OomKills::default();
        kills.watch_cgroup("a", a.clone());
        kills.watch_cgroup("b", b.clone());
        assert_eq!(next(&kills).await, "a", "the kill before the watch");

        std::fs::write(b.join(EVENTS_FILE), events(0)).unwrap();
        std::fs::write(b.join(EVENTS_FILE), events(2)).unwrap();
        std::fs::write(a.join(EVENTS_FILE), events(1)).unwrap();
        assert_eq!(
            next(&kills).await,
            "b",
            "a rise; the unchanged writes are not"
        );
        std::fs::write(a.join(EVENTS_FILE), events(3)).unwrap();
        assert_eq!(next(&kills).await, "a");

        std::fs::remove_dir_all(&b).unwrap();
        // The removal's IN_IGNORED is read with the next event of `a`.
        std::fs::write(a.join(EVENTS_FILE), events(4)).unwrap();
        assert_eq!(next(&kills).await, "a");
        assert_eq!(
            kills.lock().watched.len(),
            1,
            "b's watch ended with its file"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), kills.next())
                .await
                .is_err(),
            "nothing more was counted"
        );
    }
}
