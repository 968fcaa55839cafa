//! One exec type for ExecSync and the streamed exec alike: an `Exec` is created and started
//! attached to the streams asked for, its exit code is read once Docker has recorded the
//! exec's end, and, since Docker's API cannot kill an exec, it is killed by its host PID (from
//! the exec's inspect data, pinned with a pidfd) only while that PID is still this exec's.
//! ExecSync collects the output, each stream capped at 16 MiB.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::CreateExecOptions;
use futures_util::StreamExt;

use crate::docker::Engine;
pub use crate::docker::{InputSink, OutputStream};
use crate::error::{Error, Result};

/// Most bytes kept of each of stdout and stderr.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// Which streams an exec is attached to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attach {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A started exec.
pub struct Exec {
    engine: Engine,
    id: String,
}

impl Exec {
    /// Creates `cmd` as an exec in `container` and starts it attached to `attach`'s streams.
    pub async fn start(
        engine: &Engine,
        container: &str,
        cmd: Vec<String>,
        attach: Attach,
    ) -> Result<(Exec, OutputStream, InputSink)> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec command is empty".into()));
        }
        let id = engine
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd),
                    attach_stdin: Some(attach.stdin),
                    attach_stdout: Some(attach.stdout),
                    // A terminal has one stream.
                    attach_stderr: Some(attach.stderr && !attach.tty),
                    tty: Some(attach.tty),
                    ..Default::default()
                },
            )
            .await?;
        let exec = Exec {
            engine: engine.clone(),
            id,
        };
        let (output, input) = engine.start_exec(&exec.id, attach.tty).await?;
        Ok((exec, output, input))
    }

    /// The exit code of the exec, once its output has ended. Docker can end the output
    /// stream before it has recorded the process's exit (the exec still "running", no exit
    /// code yet), so the code is read only once Docker says the exec no longer runs.
    pub async fn exit_code(&self) -> Result<i64> {
        let deadline = tokio::time::Instant::now() + EXIT_RECORD_TIMEOUT;
        let mut delay = Duration::from_millis(2);
        loop {
            let inspect = self.engine.inspect_exec(&self.id).await?;
            if inspect.running == Some(false) {
                return inspect.exit_code.ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "Docker recorded no exit code for exec {}",
                        self.id
                    ))
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::DeadlineExceeded(format!(
                    "Docker did not record the end of exec {} within {EXIT_RECORD_TIMEOUT:?} of its output's end",
                    self.id
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Kills the exec's process (and so its children, which lose their parent's pipe), only
    /// while it is still this exec's: the PID is pinned with a pidfd first, and the kill goes
    /// ahead only if Docker still reports the exec running with that PID afterwards, so a PID
    /// reused by another process after the exec ended is never signalled.
    pub async fn kill(&self) {
        let running_pid = || async {
            match self.engine.inspect_exec(&self.id).await {
                Ok(inspect) => inspect
                    .running
                    .filter(|r| *r)
                    .and(inspect.pid)
                    .filter(|p| *p > 0),
                Err(e) => {
                    tracing::warn!(error = %e, exec = %self.id, "inspecting an exec to kill");
                    None
                }
            }
        };
        let Some(pid) = running_pid().await else {
            return;
        };
        let Some(pidfd) = pidfd::open(pid) else {
            return;
        };
        if running_pid().await != Some(pid) {
            return;
        }
        if let Err(e) = pidfd::kill(&pidfd) {
            tracing::warn!(error = %e, pid, "killing an exec");
        }
    }

    /// Resizes the exec's terminal.
    pub async fn resize(&self, height: u16, width: u16) {
        if let Err(e) = self.engine.resize_exec(&self.id, height, width).await {
            tracing::debug!(error = %e, "resizing an exec's terminal");
        }
    }
}

pub async fn exec_sync(
    engine: &Engine,
    container: &str,
    cmd: Vec<String>,
    timeout: Option<Duration>,
) -> Result<Output> {
    let attach = Attach {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let (exec, mut output, _input) = Exec::start(engine, container, cmd, attach).await?;
    let mut out = Output {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit_code: 0,
    };
    let collect = async {
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(LogOutput::StdOut { message }) => append(&mut out.stdout, &message),
                Ok(LogOutput::StdErr { message }) => append(&mut out.stderr, &message),
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::docker(format!(
                        "reading exec output in container {container}"
                    ))(e))
                }
            }
        }
        Ok(())
    };
    let finished = match timeout {
        Some(t) => tokio::time::timeout(t, collect).await.ok(),
        None => Some(collect.await),
    };
    match finished {
        Some(result) => result?,
        None => {
            exec.kill().await;
            return Err(Error::DeadlineExceeded(format!(
                "command in container {container} timed out after {:?}",
                timeout.unwrap_or_default()
            )));
        }
    }
    out.exit_code = i32::try_from(exec.exit_code().await?).unwrap_or(i32::MAX);
    Ok(out)
}

/// How long Docker may take to record an exec's exit after its output ended; past this the
/// call fails rather than guess a code.
const EXIT_RECORD_TIMEOUT: Duration = Duration::from_secs(30);

fn append(buf: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// pidfds through rustix: neither nix nor std offers pidfd_send_signal for a process that is
/// not our child.
mod pidfd {
    use rustix::fd::OwnedFd;
    use rustix::process::{Pid, PidfdFlags, Signal};

    /// A pidfd for `pid`, or `None` if the process is gone.
    pub fn open(pid: i64) -> Option<OwnedFd> {
        let pid = Pid::from_raw(i32::try_from(pid).ok()?)?;
        rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()
    }

    /// SIGKILL to the process `pidfd` refers to (ESRCH once it has exited, whatever now has
    /// its PID).
    pub fn kill(pidfd: &OwnedFd) -> std::io::Result<()> {
        rustix::process::pidfd_send_signal(pidfd, Signal::KILL).map_err(std::io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped() {
        let mut buf = vec![0u8; MAX_OUTPUT - 2];
        append(&mut buf, b"abcdef");
        assert_eq!(buf.len(), MAX_OUTPUT);
        assert_eq!(&buf[MAX_OUTPUT - 2..], b"ab");
        append(&mut buf, b"x");
        assert_eq!(buf.len(), MAX_OUTPUT);
    }
}
