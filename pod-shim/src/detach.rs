//! Detaching the shim from the front: fork, let the parent return at once (the front reaps
//! it), and make the child a session leader, so the shim is no child of the front, survives it,
//! and gets no signal meant for the front's terminal or process group.
#![allow(unsafe_code)]

use std::io;

pub enum Role {
    /// The short-lived parent: return and exit 0.
    Parent,
    /// The detached shim.
    Daemon,
}

/// Must run before any thread exists (before the tokio runtime is built).
pub fn detach() -> io::Result<Role> {
    // SAFETY: the process is single-threaded here (called first thing in main, before any
    // runtime or thread), so the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { .. } => Ok(Role::Parent),
        nix::unistd::ForkResult::Child => {
            nix::unistd::setsid().map_err(io::Error::from)?;
            std::env::set_current_dir("/")?;
            Ok(Role::Daemon)
        }
    }
}
