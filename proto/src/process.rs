//! A handle on one process that PID reuse cannot fool: a pidfd (Linux 5.3 on), which refers
//! to the process itself and becomes readable when it exits, so a watcher is woken at the
//! exit rather than polling, and a kill can never reach a process that later got the PID.
//! Where the kernel has no pidfd, the PID plus the process's start time from `/proc` stands
//! in (a reused PID has another start time).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;

/// How often a process without a pidfd is looked at while waited for.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct ProcessHandle {
    pid: u32,
    watch: Watch,
}

#[derive(Debug)]
enum Watch {
    Pidfd(AsyncFd<OwnedFd>),
    StartTime(u64),
}

impl ProcessHandle {
    /// A handle on the process that has `pid` now; an error if there is none. Needs a tokio
    /// runtime (the pidfd is registered with its reactor).
    pub fn open(pid: u32) -> io::Result<ProcessHandle> {
        let raw = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("pid {pid}")))?;
        let watch = match pidfd_open(raw, PidfdFlags::empty()) {
            // `new` is deprecated for fds the caller could close while registered; this
            // AsyncFd owns its OwnedFd, so it cannot be, and `register` would need unsafe.
            #[allow(deprecated)]
            Ok(fd) => Watch::Pidfd(AsyncFd::new(fd)?),
            Err(e) if e == rustix::io::Errno::NOSYS => {
                let started = start_time(pid).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("no process {pid}"))
                })?;
                Watch::StartTime(started)
            }
            Err(e) => return Err(e.into()),
        };
        let handle = ProcessHandle { pid, watch };
        if handle.alive() {
            Ok(handle)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("process {pid} has exited"),
            ))
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process still runs (a zombie has exited).
    pub fn alive(&self) -> bool {
        match &self.watch {
            Watch::Pidfd(fd) => {
                let mut fds = [PollFd::new(fd.get_ref(), PollFlags::IN)];
                let now = Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // Readable means exited; an error (which a valid pidfd cannot give) as well.
                matches!(poll(&mut fds, Some(&now)), Ok(0))
            }
            Watch::StartTime(started) => start_time(self.pid) == Some(*started),
        }
    }

    /// Returns once the process has exited.
    pub async fn exited(&self) {
        match &self.watch {
            Watch::Pidfd(fd) => loop {
                match fd.readable().await {
                    Ok(mut ready) => {
                        if !self.alive() {
                            return;
                        }
                        ready.clear_ready();
                    }
                    // The reactor is gone (the runtime is shutting down): look instead.
                    Err(_) => {
                        while self.alive() {
                            tokio::time::sleep(POLL_INTERVAL).await;
                        }
                        return;
                    }
                }
            },
            Watch::StartTime(_) => {
                while self.alive() {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
    }

    /// Whether the process exited within `timeout`.
    pub async fn wait_exited(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.exited()).await.is_ok()
    }

    /// SIGKILL to this process, never to another that got its PID since.
    pub fn kill(&self) -> io::Result<()> {
        match &self.watch {
            Watch::Pidfd(fd) => match pidfd_send_signal(fd.get_ref(), Signal::KILL) {
                Err(e) if e == rustix::io::Errno::SRCH => Ok(()),
                other => other.map_err(io::Error::from),
            },
            Watch::StartTime(_) if self.alive() => {
                let pid = nix::unistd::Pid::from_raw(self.pid as i32);
                match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
                    Err(nix::errno::Errno::ESRCH) => Ok(()),
                    other => other.map_err(io::Error::from),
                }
            }
            Watch::StartTime(_) => Ok(()),
        }
    }
}

/// The start time of live process `pid` (clock ticks after boot), `None` for no process or
/// a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `state` is field 3 of stat(5), `starttime` field 22; `rest` starts at field 3.
    let state = *fields.first()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn follows_a_process_to_its_exit_and_kills_only_it() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        let handle = ProcessHandle::open(child.id()).expect("open");
        assert!(handle.alive());
        assert!(!handle.wait_exited(Duration::from_millis(50)).await);
        handle.kill().expect("kill");
        // Reaped by us; the pidfd still says it exited (and a zombie counts as exited).
        let _ = child.wait();
        assert!(handle.wait_exited(Duration::from_secs(10)).await);
        assert!(!handle.alive());
        handle.kill().expect("a kill after the exit is no error");
    }

    #[tokio::test]
    async fn no_handle_on_a_process_that_is_gone() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        let _ = child.wait();
        assert!(ProcessHandle::open(pid).is_err());
    }

    #[test]
    fn reads_its_own_start_time() {
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
    }
}
