//! ListPodSandbox and ListContainers from the pods' saved records instead of their shims: the
//! kubelet relists every second, and asking every shim made each list cost one RPC per pod.
//! Every shim saves its record (a frame written into its journal, or the base renamed into
//! place: `state_journal`) before it answers a call or announces a change, so the files say
//! what the shims would answer. Each record is kept parsed and read again only once inotify
//! reports one of its files written, replaced or removed. A list first drains inotify's
//! queue, and the kernel queues a write's or a rename's event before the shim's answer can
//! leave, so a list made after a call returned sees that call's change. (A list made while a
//! frame is being written may see it before its save is done: the shim's own answer would
//! not yet, but only a crash of the machine, which takes the front along, could undo it.)
//!
//! inotify through nix, not a watcher crate: the queue must be drained on the caller's own
//! thread at the moment of the list (the point above), which the callback-driven crates
//! (notify) do not offer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use dockpod_proto::layout;
use dockpod_proto::listing::PodListing;
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::shim::ShimHandle;

/// One pod's file as last read.
struct Kept {
    /// `None` when the directory could not be watched: the record is read on every list.
    watch: Option<WatchDescriptor>,
    /// Whether the record's files were written (or never read) since `listing` was parsed.
    stale: bool,
    listing: Option<Arc<PodListing>>,
}

#[derive(Default)]
struct Files {
    pods: HashMap<String, Kept>,
    watches: HashMap<WatchDescriptor, String>,
}

pub struct Listings {
    /// `None` when inotify is unavailable: every file is then read on every list.
    inotify: Option<Inotify>,
    kept: Mutex<Files>,
}

impl Default for Listings {
    fn default() -> Self {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(
                |e| tracing::warn!(error = %e, "no inotify: lists read every pod's state file"),
            )
            .ok();
        Listings {
            inotify,
            kept: Mutex::new(Files::default()),
        }
    }
}

impl Listings {
    /// What each shim of `shims` lists (same order), from its pod's state file under
    /// `root_dir`. `None` where the file cannot be read or names another sandbox than the
    /// front's index does: the caller asks that shim.
    pub fn of(&self, root_dir: &Path, shims: &[Arc<ShimHandle>]) -> Vec<Option<Arc<PodListing>>> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        self.drain(&mut kept);
        let listed = shims
            .iter()
            .map(|shim| self.listing(&mut kept, root_dir, shim))
            .collect();
        // Pods the index no longer holds are forgotten, with their watches.
        if kept.pods.len() > shims.len() {
            let current: std::collections::HashSet<&str> =
                shims.iter().map(|s| s.shim_id.as_str()).collect();
            let gone: Vec<String> = kept
                .pods
                .keys()
                .filter(|id| !current.contains(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                if let Some(watch) = kept.pods.remove(&id).and_then(|k| k.watch) {
                    kept.watches.remove(&watch);
                    if let Some(inotify) = &self.inotify {
                        // Already gone with its directory is fine.
                        let _ = inotify.rm_watch(watch);
                    }
                }
            }
        }
        listed
    }

    /// Marks stale every pod whose record's files inotify reports written, replaced or removed.
    fn drain(&self, kept: &mut Files) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        loop {
            let events = match inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reading inotify; every pod's state is read again");
                    kept.pods.values_mut().for_each(|k| k.stale = true);
                    return;
                }
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    kept.pods.values_mut().for_each(|k| k.stale = true);
                    continue;
                }
                let about_state = event.name.as_ref().is_none_or(|n| {
                    n.as_os_str() == layout::STATE_FILE || n.as_os_str() == layout::JOURNAL_FILE
                });
                if !about_state {
                    continue;
                }
                let Some(shim_id) = kept.watches.get(&event.wd).cloned() else {
                    continue;
                };
                if let Some(k) = kept.pods.get_mut(&shim_id) {
                    k.stale = true;
                    if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                        // The directory went: its watch is gone with it.
                        k.watch = None;
                        kept.watches.remove(&event.wd);
                    }
                }
            }
        }
    }

    fn listing(
        &self,
        kept: &mut Files,
        root_dir: &Path,
        shim: &ShimHandle,
    ) -> Option<Arc<PodListing>> {
        let pod_dir = layout::pod_dir(root_dir, &shim.shim_id);
        if !kept.pods.contains_key(&shim.shim_id) {
            // Watched before the first read, so no replacement after that read goes unseen.
            let watch = self.inotify.as_ref().and_then(|inotify| {
                inotify
                    // The base is only ever renamed into place or deleted, the journal also
                    // written in place.
                    .add_watch(
                        &pod_dir,
                        AddWatchFlags::IN_MOVED_TO
                            | AddWatchFlags::IN_MODIFY
                            | AddWatchFlags::IN_DELETE
                            | AddWatchFlags::IN_DELETE_SELF,
                    )
                    .map_err(|e| tracing::debug!(dir = %pod_dir.display(), error = %e, "watching a pod's state"))
                    .ok()
            });
            if let Some(watch) = watch {
                kept.watches.insert(watch, shim.shim_id.clone());
            }
            kept.pods.insert(
                shim.shim_id.clone(),
                Kept {
                    watch,
                    stale: true,
                    listing: None,
                },
            );
        }
        let k = kept.pods.get_mut(&shim.shim_id)?;
        if k.stale || k.watch.is_none() {
            k.listing = dockpod_proto::state_journal::read(&pod_dir)
                .ok()
                .flatten()
                .and_then(|bytes| PodListing::parse(&bytes).ok().flatten())
                .map(Arc::new);
            // A file that could not be read is tried again next time.
            k.stale = k.listing.is_none();
        }
        k.listing
            .clone()
            .filter(|l| !shim.sandbox_id.is_empty() && l.pod.id == shim.sandbox_id)
    }
}
