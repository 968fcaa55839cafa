//! What the shim's inotify users (the log readers, the OOM kill counter) share: an instance
//! registered with tokio, and telling a spent limit, which they each work around, from other
//! failures.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::inotify::{InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

/// A new non-blocking instance, wrapped by `owner` (which decides how it is closed) and
/// registered with tokio's reactor.
pub fn registered<T: AsRawFd>(owner: impl FnOnce(Inotify) -> T) -> Result<AsyncFd<T>, Errno> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    // `new` is deprecated for fds the caller could close while registered; this AsyncFd owns
    // the instance, so it cannot be, and `register` would need unsafe.
    #[allow(deprecated)]
    AsyncFd::new(owner(inotify)).map_err(|e| {
        e.raw_os_error()
            .map(Errno::from_raw)
            .unwrap_or(Errno::EINVAL)
    })
}

/// Whether inotify failed for want of instances or watches (the user's limits, or the
/// process's or system's file descriptors).
pub fn out_of_inotify(e: Errno) -> bool {
    matches!(e, Errno::EMFILE | Errno::ENFILE | Errno::ENOSPC)
}
