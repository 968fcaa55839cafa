//! A CNI plugin's process: started as `posix_spawn` starts a program (a child that shares the
//! shim's memory and runs only until its `execve`, with the shim's thread waiting meanwhile:
//! `CLONE_VM | CLONE_VFORK`) and with a parent-death signal set before that `execve`, so a
//! plugin dies with a shim killed inside ADD instead of finishing its ADD after the next
//! shim's clean-up DEL.
//!
//! Written here because nothing else starts a process both ways: std's `Command` (and tokio's,
//! built on it) forks the whole shim once a `pre_exec` hook is set, and the parent-death signal
//! needs one. A fork copies the shim's page tables and then faults on each page the shim writes
//! next; measured on the build machine, a plugin's run took 0.6 to 1.2 ms longer forked than
//! spawned, four plugins per ADD and four per DEL. No crate spawns with a parent-death signal.
//!
//! The child runs on its own small stack and makes only system calls (as a child of `vfork`
//! may): the parent-death signal, its standard streams, default handlers for every signal the
//! shim handles (a handler running in the child would run on the shim's memory), an empty
//! signal mask and SIGPIPE at its default (as std gives its children), then `execve`. A failed
//! `execve` leaves its errno where the shim reads it once the child is gone.
//!
//! The parent-death signal comes when the thread that started the child ends: a plugin is
//! started from the shim's runtime thread, which lives as long as the shim.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Output};
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal, WaitOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

/// The child's stack until its `execve`: a handful of system calls need little of it.
const CHILD_STACK: usize = 64 * 1024;
/// The highest signal number on Linux.
const LAST_SIGNAL: libc::c_int = 64;

/// A running plugin, killed and reaped when dropped before it was waited for.
pub struct PluginProcess {
    pid: Pid,
    /// `None` on a kernel without pidfds (before 5.3): then the exit is waited for on a
    /// thread of the blocking pool.
    pidfd: Option<AsyncFd<OwnedFd>>,
    reaped: bool,
    stdin: Option<pipe::Sender>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
}

/// Starts `program` with the shim's environment and `env` on top, its standard streams
/// piped. Must be called on the shim's runtime thread (see the module's doc).
pub fn spawn(program: &Path, env: &[(&str, &OsStr)]) -> io::Result<PluginProcess> {
    let path = c_string(program.as_os_str())?;
    let argv = [path.as_ptr(), std::ptr::null()];
    let environment = environment(env)?;
    let mut envp: Vec<*const libc::c_char> = environment.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (stdin_read, stdin_write) = pipe_above_std()?;
    let (stdout_read, stdout_write) = pipe_above_std()?;
    let (stderr_read, stderr_write) = pipe_above_std()?;
    let setup = ChildSetup {
        program: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        streams: [
            stdin_read.as_raw_fd(),
            stdout_write.as_raw_fd(),
            stderr_write.as_raw_fd(),
        ],
        parent: rustix::process::getpid().as_raw_nonzero().get(),
        exec_errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let blocked = BlockedSignals::all()?;
    let started = {
        let setup = &setup;
        // SAFETY: with CLONE_VM | CLONE_VFORK this thread waits until the child has called
        // `execve` or `_exit`, so everything the child reads (`setup` and what it points to,
        // all alive until `spawn` returns) stays in place and unchanged; the child runs on
        // `stack`, calls only async-signal-safe functions, allocates nothing and never
        // returns into Rust code of the shim. Every signal is blocked around the clone so no
        // handler of the shim's runs in the child before it sets its own dispositions.
        unsafe {
            nix::sched::clone(
                Box::new(move || run_child(setup)),
                &mut stack,
                nix::sched::CloneFlags::CLONE_VM | nix::sched::CloneFlags::CLONE_VFORK,
                Some(libc::SIGCHLD),
            )
        }
    };
    drop(blocked);
    let pid = started.map_err(io::Error::from)?;
    let pid = Pid::from_raw(pid.as_raw()).ok_or_else(|| io::Error::other("clone gave no PID"))?;
    let exec_errno = setup.exec_errno.load(Ordering::SeqCst);
    if exec_errno != 0 {
        // The child has exited already (CLONE_VFORK returned): reaped here.
        let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
        return Err(io::Error::from_raw_os_error(exec_errno));
    }
    // The child's ends belong to it now.
    drop((stdin_read, stdout_write, stderr_write));
    let watched = (|| {
        let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
            // `new` is deprecated for fds the caller could close while registered; this
            // AsyncFd owns its OwnedFd, so it cannot be, and `register` would need unsafe.
            #[allow(deprecated)]
            Ok(fd) => Some(AsyncFd::new(fd)?),
            Err(e) if e == rustix::io::Errno::NOSYS => None,
            Err(e) => return Err(io::Error::from(e)),
        };
        Ok(PluginProcess {
            pid,
            pidfd,
            reaped: false,
            stdin: Some(pipe::Sender::from_owned_fd(stdin_write)?),
            stdout: pipe::Receiver::from_owned_fd(stdout_read)?,
            stderr: pipe::Receiver::from_owned_fd(stderr_read)?,
        })
    })();
    if watched.is_err() {
        // A plugin nobody could wait for or talk to: ended now, not left running.
        let _ = rustix::process::kill_process(pid, Signal::KILL);
        let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
    }
    watched
}

impl PluginProcess {
    pub fn id(&self) -> u32 {
        self.pid.as_raw_nonzero().get().unsigned_abs()
    }

    /// Hands the plugin `input` on its stdin (closed after it), reads its stdout and stderr to
    /// their end and waits for its exit, all at once: a plugin that writes much before it
    /// reads, or exits without reading, cannot stall the others.
    pub async fn output(mut self, input: &[u8]) -> io::Result<Output> {
        let stdin = self.stdin.take();
        let write = async move {
            if let Some(mut stdin) = stdin {
                match stdin.write_all(input).await {
                    // A plugin may exit without reading; its exit status tells what happened.
                    Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let (written, out, err) = tokio::join!(
            write,
            self.stdout.read_to_end(&mut stdout),
            self.stderr.read_to_end(&mut stderr),
        );
        written?;
        out?;
        err?;
        let status = self.wait().await?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Waits for the plugin's exit and reaps it.
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = exit_of(self.pid, self.pidfd.as_ref()).await?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for PluginProcess {
    /// A plugin not waited for to its end (its call timed out or was dropped) is killed, and
    /// reaped once gone so that it leaves no zombie.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let killed = match &self.pidfd {
            Some(pidfd) => pidfd_send_signal(pidfd.get_ref(), Signal::KILL),
            // Not reaped, so the PID is still the plugin's.
            None => rustix::process::kill_process(self.pid, Signal::KILL),
        };
        if let Err(e) = killed {
            tracing::warn!(error = %e, pid = self.id(), "killing a CNI plugin");
        }
        if matches!(reap(self.pid, WaitOptions::NOHANG), Ok(Some(_))) {
            return;
        }
        let (pid, pidfd) = (self.pid, self.pidfd.take());
        let reaper = async move {
            let _ = exit_of(pid, pidfd.as_ref()).await;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(reaper)),
            Err(_) => drop(std::thread::spawn(move || reap(pid, WaitOptions::empty()))),
        }
    }
}

/// Waits for child `pid` to exit, on its pidfd when there is one (readable once it has
/// exited, so the reaping does not block), else on a thread of the blocking pool, and reaps it.
async fn exit_of(pid: Pid, pidfd: Option<&AsyncFd<OwnedFd>>) -> io::Result<ExitStatus> {
    match pidfd {
        Some(pidfd) => loop {
            let mut ready = pidfd.readable().await?;
            match reap(pid, WaitOptions::NOHANG)? {
                Some(status) => return Ok(status),
                None => ready.clear_ready(),
            }
        },
        None => tokio::task::spawn_blocking(move || reap(pid, WaitOptions::empty()))
            .await
            .map_err(io::Error::other)??
            .ok_or_else(|| io::Error::other("waitpid answered nothing")),
    }
}

/// The exit status of child `pid` once it has exited; `None` while it runs (with `NOHANG`).
fn reap(pid: Pid, options: WaitOptions) -> io::Result<Option<ExitStatus>> {
    Ok(rustix::process::waitpid(Some(pid), options)?
        .map(|(_, status)| ExitStatus::from_raw(status.as_raw())))
}

/// What the child reads, made ready before it exists (it may not allocate).
struct ChildSetup {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Its stdin, stdout and stderr, each above 2 (see `pipe_above_std`).
    streams: [RawFd; 3],
    /// The shim: a child whose parent is another has lost the shim before its parent-death
    /// signal was set.
    parent: libc::pid_t,
    /// The errno of a failed setup or `execve`, written by the child.
    exec_errno: AtomicI32,
}

/// The child, between the clone and its `execve`. Returns only through `_exit`.
fn run_child(setup: &ChildSetup) -> isize {
    // SAFETY: system calls on values `spawn` made ready; see `spawn`.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(setup);
        }
        if libc::getppid() != setup.parent {
            libc::_exit(127);
        }
        for (target, fd) in (0..).zip(setup.streams) {
            // `dup2` leaves the copy open across `execve`; the originals close there.
            if libc::dup2(fd, target) < 0 {
                fail(setup);
            }
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        for signal in 1..=LAST_SIGNAL {
            if libc::sigaction(signal, std::ptr::null(), &mut action) != 0 {
                // KILL, STOP and the C library's own: none has a handler to reset.
                continue;
            }
            let handled =
                action.sa_sigaction != libc::SIG_DFL && action.sa_sigaction != libc::SIG_IGN;
            if handled || signal == libc::SIGPIPE {
                action.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(setup.program, setup.argv, setup.envp);
        fail(setup)
    }
}

/// Leaves the errno of the child's failed call for the shim, and ends the child.
unsafe fn fail(setup: &ChildSetup) -> ! {
    // SAFETY: the calling thread's errno; `_exit` runs no handler of the shim's.
    unsafe {
        setup
            .exec_errno
            .store(*libc::__errno_location(), Ordering::SeqCst);
        libc::_exit(127)
    }
}

/// Every signal blocked on this thread until dropped, then the mask as it was.
struct BlockedSignals(libc::sigset_t);

impl BlockedSignals {
    fn all() -> io::Result<BlockedSignals> {
        // SAFETY: sigset_t is plain data, initialised by sigfillset and pthread_sigmask.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut before: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            match libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before) {
                0 => Ok(BlockedSignals(before)),
                e => Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask `all` saved.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// A close-on-exec pipe (read end, write end) whose descriptors are above 2, so that the
/// child's `dup2` of one onto its standard streams cannot overwrite another.
fn pipe_above_std() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((above_std(read)?, above_std(write)?))
}

fn above_std(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let moved = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: `fcntl` just made this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// The shim's environment with `env` set on top of it, as `KEY=value` strings.
fn environment(env: &[(&str, &OsStr)]) -> io::Result<Vec<CString>> {
    let mut all: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(key, _)| !env.iter().any(|(k, _)| OsStr::new(k) == key))
        .collect();
    all.extend(
        env.iter()
            .map(|(k, v)| (OsString::from(k), v.to_os_string())),
    );
    all.into_iter()
        .map(|(key, value)| {
            let mut entry = key;
            entry.push("=");
            entry.push(value);
            c_string(&entry)
        })
        .collect()
}

/// A C string; a NUL inside (a pod's name in CNI_ARGS, say) is an error, not a cut.
fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a NUL byte in {:?}", s.to_string_lossy()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A plugin made of a shell script: started with no arguments, as a plugin is.
    struct Script {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    }

    fn script(body: &str) -> Script {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("plugin");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Script { _dir: dir, path }
    }

    async fn run(body: &str, env: &[(&str, &OsStr)], input: &str) -> Output {
        let plugin = script(body);
        let child = spawn(&plugin.path, env).expect("spawn");
        child.output(input.as_bytes()).await.expect("output")
    }

    #[tokio::test]
    async fn a_plugin_gets_its_environment_and_input_and_gives_its_output_and_status() {
        let out = run(
            "read line; echo \"out $line $CNI_COMMAND\"; echo err >&2; exit 3",
            &[("CNI_COMMAND", OsStr::new("ADD"))],
            "the input",
        )
        .await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out the input ADD\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[tokio::test]
    async fn the_plugins_variables_replace_the_shims_of_the_same_name() {
        // HOME is the test's own, set by neither the plugin's caller nor the test.
        let home = std::env::var("HOME").unwrap_or_default();
        let out = run(
            "echo \"$HOME|$CNI_PATH\"",
            &[
                ("HOME", OsStr::new("/plugin-home")),
                ("CNI_PATH", OsStr::new("/opt/cni")),
            ],
            "",
        )
        .await;
        assert_ne!(home, "/plugin-home");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/plugin-home|/opt/cni\n"
        );
    }

    #[tokio::test]
    async fn output_larger_than_a_pipe_on_both_streams_does_not_stall() {
        // Nor does input larger than a pipe that the plugin reads only after its output.
        let input = "x".repeat(300_000);
        let out = run(
            "head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2; cat >/dev/null",
            &[],
            &input,
        )
        .await;
        assert_eq!((out.stdout.len(), out.stderr.len()), (300_000, 300_000));
        assert!(out.status.success());
    }

    #[tokio::test]
    async fn the_child_starts_with_no_signal_blocked_and_sigpipe_at_its_default() {
        // This test process ignores SIGPIPE (Rust's runtime does), and blocks every signal
        // around the clone; a plugin must see neither. (What this process inherited ignored
        // is the plugin's too, as with any exec.)
        let out = run("grep -E '^Sig(Blk|Ign)' /proc/self/status", &[], "").await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mask = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        assert_eq!(mask("SigBlk:"), 0, "{text}");
        let sigpipe = 1u64 << (libc::SIGPIPE - 1);
        assert_eq!(mask("SigIgn:") & sigpipe, 0, "{text}");
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_is_an_error_and_leaves_no_child() {
        let err = spawn(Path::new("/nonexistent/plugin"), &[])
            .err()
            .expect("no such program");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let nul = spawn(Path::new("/bin/sh"), &[("CNI_ARGS", OsStr::new("a\0b"))]);
        assert_eq!(
            nul.err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
    }

    /// Waits (up to a bound that only covers a loaded machine) for `pid` to be reaped by
    /// someone other than the caller: its `/proc` entry goes with its reaping.
    fn gone(pid: u32) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[tokio::test]
    async fn a_plugin_dropped_before_its_end_is_killed_and_reaped() {
        let plugin = script("exec sleep 600");
        let child = spawn(&plugin.path, &[]).expect("spawn");
        let pid = child.id();
        drop(child);
        assert!(
            tokio::task::spawn_blocking(move || gone(pid))
                .await
                .expect("join"),
            "plugin {pid} still there"
        );
    }

    #[test]
    fn a_plugin_dies_with_the_thread_that_started_it() {
        // The parent-death signal comes when the starting thread ends, as with the shim's.
        let plugin = script("exec sleep 600");
        let path = plugin.path.clone();
        let (sent, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let child = runtime.block_on(async { spawn(&path, &[]).expect("spawn") });
            sent.send(child.pid).expect("send");
            // Neither killed nor reaped by the handle: only the thread's end may end it.
            std::mem::forget(child);
        })
        .join()
        .expect("thread");
        let pid = started.recv().expect("pid");
        // The bound only covers a loaded machine: the signal comes with the thread's end.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = reap(pid, WaitOptions::NOHANG).expect("waitpid") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                let _ = reap(pid, WaitOptions::empty());
                panic!("the plugin outlived the thread that started it");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
}
