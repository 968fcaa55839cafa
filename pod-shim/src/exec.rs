//! ExecSync: runs a command in a running container and collects its output, each stream
//! capped at 16 MiB, its exit code read once Docker has recorded the exec's end. Docker's API
//! cannot kill an exec, so on timeout the exec'd process is killed by its host PID (from the
//! exec's inspect data), pinned with a pidfd. The streamed exec shares the exit code and the
//! kill.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;

use crate::docker::Engine;
use crate::error::{Error, Result};

/// Most bytes kept of each of stdout and stderr.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

pub async fn exec_sync(
    engine: &Engine,
    container: &str,
    cmd: Vec<String>,
    timeout: Option<Duration>,
) -> Result<Output> {
    if cmd.is_empty() {
        return Err(Error::InvalidArgument("exec command is empty".into()));
    }
    let docker = engine.api();
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(Error::docker(format!(
            "creating exec in container {container}"
        )))?;
    let started = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: None,
            }),
        )
        .await
        .map_err(Error::docker(format!(
            "starting exec in container {container}"
        )))?;
    let StartExecResults::Attached { mut output, .. } = started else {
        return Err(Error::FailedPrecondition(format!(
            "exec in container {container} did not attach"
        )));
    };
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
            kill_exec(engine, &exec.id).await;
            return Err(Error::DeadlineExceeded(format!(
                "command in container {container} timed out after {:?}",
                timeout.unwrap_or_default()
            )));
        }
    }
    out.exit_code = i32::try_from(exit_code(engine, &exec.id).await?).unwrap_or(i32::MAX);
    Ok(out)
}

/// How long Docker may take to record an exec's exit after its output ended; past this the
/// call fails rather than guess a code.
const EXIT_RECORD_TIMEOUT: Duration = Duration::from_secs(30);

/// The exit code of an exec whose output has ended. Docker can end the output stream before
/// it has recorded the process's exit (the exec still "running", no exit code yet), so the
/// code is read only once Docker says the exec no longer runs.
pub(crate) async fn exit_code(engine: &Engine, exec_id: &str) -> Result<i64> {
    let deadline = tokio::time::Instant::now() + EXIT_RECORD_TIMEOUT;
    let mut delay = Duration::from_millis(2);
    loop {
        let inspect = engine
            .api()
            .inspect_exec(exec_id)
            .await
            .map_err(Error::docker(format!("inspecting exec {exec_id}")))?;
        if inspect.running == Some(false) {
            return inspect.exit_code.ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "Docker recorded no exit code for exec {exec_id}"
                ))
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::DeadlineExceeded(format!(
                "Docker did not record the end of exec {exec_id} within {EXIT_RECORD_TIMEOUT:?} of its output's end"
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

fn append(buf: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Kills a timed-out exec's process (and so its children, which lose their parent's pipe),
/// only while it is still that exec's: the PID is pinned with a pidfd first, and the kill
/// goes ahead only if Docker still reports the exec running with that PID afterwards, so a
/// PID reused by another process after the exec ended is never signalled.
pub(crate) async fn kill_exec(engine: &Engine, exec_id: &str) {
    let running_pid = || async {
        match engine.api().inspect_exec(exec_id).await {
            Ok(inspect) => inspect
                .running
                .filter(|r| *r)
                .and(inspect.pid)
                .filter(|p| *p > 0),
            Err(e) => {
                tracing::warn!(error = %e, exec = exec_id, "inspecting a timed-out exec");
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
        tracing::warn!(error = %e, pid, "killing a timed-out exec");
    }
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
