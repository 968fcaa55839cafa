//! Socket activation: the CRI socket handed over by systemd (`dockpod.socket`), taken as
//! sd_listen_fds(3) takes it: fd 3, when `LISTEN_PID` names this process and `LISTEN_FDS`
//! counts at least one. The socket outlives the front: while one front stops and the next
//! starts, the kubelet's connections wait in its backlog instead of being refused.
//!
//! The `listenfd` crate checks the descriptor (a listening Unix stream socket). The PID is
//! checked here: listenfd also accepts a missing `LISTEN_PID`, which sd_listen_fds does not.
//! The variables are unset either way, as sd_listen_fds(unset_environment=1) does, so that no
//! pod's shim, started by this process, takes them for its own.

use std::os::unix::net::UnixListener;

use anyhow::Context;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// The socket systemd passed, if it passed one to this process. To be called before any
/// thread starts: it changes the environment.
pub fn take() -> anyhow::Result<Option<UnixListener>> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let passed = for_us
        && std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.trim().parse::<u32>().ok())
            .is_some_and(|n| n >= 1);
    let listener = if passed {
        listenfd::ListenFd::from_env()
            .take_unix_listener(0)
            .context("taking the CRI socket systemd passed as fd 3")?
    } else {
        None
    };
    for name in VARIABLES {
        std::env::remove_var(name);
    }
    if let Some(listener) = &listener {
        // Not inherited by the shims this front starts: only the fronts serve the socket.
        fcntl(listener, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .context("marking the passed socket close-on-exec")?;
        listener
            .set_nonblocking(true)
            .context("making the passed socket non-blocking")?;
    }
    Ok(listener)
}
