//! ExecSync: runs a command in a running container and collects its output, each stream
//! capped at 16 MiB. Docker's API cannot kill an exec, so on timeout the exec'd process is
//! killed by its host PID (from the exec's inspect data).

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
    let inspect = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(Error::docker(format!(
            "inspecting exec in container {container}"
        )))?;
    out.exit_code = inspect.exit_code.unwrap_or(0) as i32;
    Ok(out)
}

fn append(buf: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Kills a timed-out exec's process (and so its children, which lose their parent's pipe).
pub(crate) async fn kill_exec(engine: &Engine, exec_id: &str) {
    match engine.api().inspect_exec(exec_id).await {
        Ok(inspect) => {
            if let Some(pid) = inspect.pid.filter(|p| *p > 0) {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
                    tracing::warn!(error = %e, %pid, "killing a timed-out exec");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, exec = exec_id, "inspecting a timed-out exec"),
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
