//! Starting and retiring pod shims. A shim is started detached (it forks into its own session
//! and is no child of the front), reports `ready <pid>` on a pipe once its socket is bound,
//! and logs to `<root>/pods/<shim id>/shim.log`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use dockpod_proto::files::ensure_dir;
use dockpod_proto::layout;
use dockpod_proto::process::ProcessHandle;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{Error, Result};
use crate::shim::ShimHandle;

/// How long a new shim may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a clean-up shim may take: CNI DEL runs a plugin chain (60 s per plugin at most).
const CLEAN_UP_TIMEOUT: Duration = Duration::from_secs(180);
/// How many times a clean-up shim is run before the pod is left to the next front start.
const CLEAN_UP_ATTEMPTS: u32 = 3;
/// How long a retiring shim may take to exit before it is killed.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The argument a shim shows for its sandbox until Docker has assigned the ID (as long as a
/// short ID; see pod-shim's `title` module).
const SANDBOX_PLACEHOLDER: &str = "............";

pub struct Spawner {
    pub binary: PathBuf,
    pub run_dir: PathBuf,
    pub root_dir: PathBuf,
    pub docker_endpoint: String,
    pub instance: String,
    pub sandbox_image: String,
    pub log_level: String,
    /// Whether the shims log JSON, as the front does.
    pub log_json: bool,
    /// How pods get their network (the shim's `--network-plugin` and CNI arguments).
    pub network_args: Vec<std::ffi::OsString>,
    /// Seconds an idle streaming session lives.
    pub stream_idle_timeout: u64,
    /// The node's state, for the pod CIDR the kubelet last set.
    pub root: std::sync::Arc<crate::state::RootDir>,
    /// The front's Docker client, whose negotiated API version a new shim is given.
    pub engine: crate::docker::Engine,
}

impl Spawner {
    /// Starts a shim for the new pod `display` (namespace/name) and waits until it serves.
    pub async fn spawn(&self, display: &str) -> Result<ShimHandle> {
        self.spawn_with(display, &[]).await
    }

    /// `spawn`, with extra arguments for the shim.
    pub async fn spawn_with(
        &self,
        display: &str,
        extra: &[std::ffi::OsString],
    ) -> Result<ShimHandle> {
        let shim_id = layout::random_id().map_err(Error::io("choosing a shim ID"))?;
        let pod_dir = layout::pod_dir(&self.root_dir, &shim_id);
        ensure_dir(&layout::pods_dir(&self.root_dir), 0o700)
            .and_then(|()| ensure_dir(&pod_dir, 0o700))
            .map_err(Error::io(format!("creating {}", pod_dir.display())))?;
        let launched = self.launch(&shim_id, display, extra).await;
        if launched.is_err() {
            // A shim that forked its daemon and then died or hangs before it reported ready
            // may leave the daemon running, and its socket: neither may outlive the pod.
            kill_shim_processes(&shim_id).await;
            self.remove_traces_of(&shim_id);
        }
        launched
    }

    /// Starts a new shim for an existing pod whose shim is gone (or was stopped to be
    /// replaced): the same shim ID, so the same socket, state directory and container labels.
    /// The new shim rebuilds its view from the pod's record and from Docker.
    pub async fn respawn(
        &self,
        shim_id: &str,
        display: &str,
        sandbox_id: &str,
    ) -> Result<ShimHandle> {
        let handle = self.launch(shim_id, display, &[]).await?;
        Ok(ShimHandle {
            sandbox_id: sandbox_id.to_string(),
            ..handle
        })
    }

    async fn launch(
        &self,
        shim_id: &str,
        display: &str,
        extra: &[std::ffi::OsString],
    ) -> Result<ShimHandle> {
        let pod_dir = layout::pod_dir(&self.root_dir, shim_id);
        let socket_dir = layout::shim_socket_dir(&self.run_dir);
        ensure_dir(&socket_dir, 0o700)
            .map_err(Error::io(format!("creating {}", socket_dir.display())))?;
        let socket = layout::shim_socket(&self.run_dir, shim_id);
        let log_path = pod_dir.join(layout::SHIM_LOG);
        let log = open_log(&log_path)?;
        let mut child = self
            .command(shim_id, display, &socket)
            .args(extra)
            .arg("--daemonize")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(Error::io(format!("starting {}", self.binary.display())))?;
        let stdout = child.stdout.take();
        let ready = async {
            let mut line = String::new();
            if let Some(out) = stdout {
                BufReader::new(out).read_line(&mut line).await?;
            }
            Ok::<_, std::io::Error>(line)
        };
        let line = tokio::time::timeout(READY_TIMEOUT, ready).await;
        // The direct child only forks and exits; reap it whatever happened.
        let _ = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
        let failure = |why: String| {
            Error::FailedPrecondition(format!(
                "pod shim for {display} did not start: {why}; its log ends: {}",
                dockpod_proto::shim_log::tail(&log_path, 5).join(" | ")
            ))
        };
        let line = match line {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(failure(e.to_string())),
            Err(_) => return Err(failure(format!("no ready report within {READY_TIMEOUT:?}"))),
        };
        let pid = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse::<u32>().ok())
            .ok_or_else(|| failure(format!("unexpected report {:?}", line.trim())))?;
        // The shim reported itself running; if it died since, the supervisor finds the
        // handle without a process and starts it again.
        let process = ProcessHandle::open(pid)
            .map_err(|e| tracing::warn!(pid, error = %e, "watching a new shim"))
            .ok();
        Ok(ShimHandle {
            shim_id: shim_id.to_string(),
            sandbox_id: String::new(),
            channel: dockpod_proto::sockets::channel(&socket),
            socket,
            pid,
            process,
        })
    }

    /// `pod-shim` with the arguments every shim of pod `shim_id` gets.
    fn command(
        &self,
        shim_id: &str,
        display: &str,
        socket: &std::path::Path,
    ) -> tokio::process::Command {
        let pod_dir = layout::pod_dir(&self.root_dir, shim_id);
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("--pod")
            .arg(display)
            .arg("--sandbox")
            .arg(SANDBOX_PLACEHOLDER)
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(&pod_dir)
            .arg("--shim-id")
            .arg(shim_id)
            .arg("--instance")
            .arg(&self.instance)
            .arg("--docker-endpoint")
            .arg(&self.docker_endpoint)
            .arg("--sandbox-image")
            .arg(&self.sandbox_image)
            .arg("--log-level")
            .arg(&self.log_level)
            // Only when asked: a shim binary from before the flag still starts in text.
            .args(
                self.log_json
                    .then_some(["--log-format", "json"])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.network_args)
            .arg("--stream-idle-timeout")
            .arg(self.stream_idle_timeout.to_string())
            .args(pod_cidr_args(&self.root.runtime_config().pod_cidr))
            .env(
                "GLIBC_TUNABLES",
                shim_tunables(std::env::var("GLIBC_TUNABLES").ok()),
            );
        if let Some(v) = self.engine.negotiated_version() {
            // The shim need not ask Docker again (a runc run on Docker 20.10).
            command
                .arg("--docker-api-version")
                .arg(format!("{}.{}", v.major_version, v.minor_version));
        }
        command
    }

    /// Gives up on a pod whose RunPodSandbox failed: stops its shim, then has a `--clean-up`
    /// shim of the pod delete what the failed one left (containers labelled with its shim
    /// ID, CNI attachments recorded in its state directory: a shim killed inside the call
    /// could not undo its part), then deletes the pod's socket and state. The pod is marked
    /// abandoned first, so a front that dies on the way has its successor finish the job
    /// rather than serve the half-removed pod.
    pub async fn abandon(&self, shim: &ShimHandle, display: &str) {
        let pod_dir = layout::pod_dir(&self.root_dir, &shim.shim_id);
        if let Err(e) = std::fs::write(pod_dir.join(layout::ABANDONED_FILE), b"") {
            tracing::warn!(shim = %shim.shim_id, error = %e, "marking a pod abandoned");
        }
        shim.shut_down(EXIT_TIMEOUT).await;
        // Any other process started as this pod's shim (one still on its way up when a front
        // died, whose handle nobody has) goes too: it would hold the pod directory's lock
        // from the clean-up, and bind sockets for a pod that no longer exists.
        kill_shim_processes(&shim.shim_id).await;
        // A clean-up cut short (killed, say) is run again: it deletes only what is left.
        let mut attempts = 0;
        let cleaned = loop {
            attempts += 1;
            match self.clean_up(shim, display, &pod_dir).await {
                Ok(()) => break true,
                Err(e) if attempts < CLEAN_UP_ATTEMPTS => {
                    tracing::warn!(shim = %shim.shim_id, error = %e, "cleaning up after a failed RunPodSandbox; trying again");
                    // What failed (a plugin, dockerd) gets a moment before the next try.
                    tokio::time::sleep(EXIT_TIMEOUT * attempts).await;
                }
                Err(e) => {
                    tracing::error!(shim = %shim.shim_id, error = %e, "cleaning up after a failed RunPodSandbox; the pod stays marked abandoned for the next front start");
                    break false;
                }
            }
        };
        if cleaned {
            self.remove_traces(shim);
        }
    }

    /// One run of a `--clean-up` shim for the pod.
    async fn clean_up(
        &self,
        shim: &ShimHandle,
        display: &str,
        pod_dir: &std::path::Path,
    ) -> Result<()> {
        let log = open_log(&pod_dir.join(layout::SHIM_LOG))?;
        let mut child = self
            .command(&shim.shim_id, display, &shim.socket)
            .arg("--clean-up")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!("starting {}", self.binary.display())))?;
        match tokio::time::timeout(CLEAN_UP_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(Error::FailedPrecondition(format!("clean-up shim {status}"))),
            Ok(Err(e)) => Err(Error::io("waiting for the clean-up shim")(e)),
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "clean-up shim still running after {CLEAN_UP_TIMEOUT:?}"
            ))),
        }
    }

    fn remove_traces(&self, shim: &ShimHandle) {
        self.remove_traces_of(&shim.shim_id);
    }

    /// Deletes the sockets and the state directory of shim `shim_id`.
    fn remove_traces_of(&self, shim_id: &str) {
        let _ = std::fs::remove_file(layout::shim_socket(&self.run_dir, shim_id));
        let _ = std::fs::remove_file(dockpod_proto::streaming::shim_stream_socket(
            &self.run_dir,
            shim_id,
        ));
        let pod_dir = layout::pod_dir(&self.root_dir, shim_id);
        let _ = std::fs::remove_dir_all(layout::removed_pod_dir(&pod_dir));
        let _ = std::fs::remove_dir_all(pod_dir);
    }

    /// Stops a shim whose pod failed to start or was removed, and deletes its socket and state.
    /// Containers are not touched here.
    pub async fn retire(&self, shim: &ShimHandle) {
        // A shim whose pod was removed is already on its way out and may not answer; either
        // way it gets the time to finish before it is killed.
        shim.shut_down(EXIT_TIMEOUT).await;
        self.remove_traces(shim);
    }
}

/// Kills every process started as a serving shim of `shim_id` (found by its command line, so
/// also one that has not written its PID file yet) and waits for each to exit.
async fn kill_shim_processes(shim_id: &str) {
    // One look at /proc can miss a process of the shim that is between fork and exec, or in
    // the middle of an exec (its command line then reads empty): the look is repeated, a few
    // milliseconds apart, until two in a row find none.
    let deadline = tokio::time::Instant::now() + EXIT_TIMEOUT;
    let mut quiet = 0;
    while quiet < 2 && tokio::time::Instant::now() < deadline {
        let found = dockpod_proto::pod_state::shim_processes(shim_id);
        quiet = if found.is_empty() { quiet + 1 } else { 0 };
        for pid in found {
            if let Ok(process) = ProcessHandle::open(pid) {
                let _ = process.kill();
                process.wait_exited(EXIT_TIMEOUT).await;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn open_log(path: &std::path::Path) -> Result<std::fs::File> {
    dockpod_proto::shim_log::open(path).map_err(Error::io(format!("opening {}", path.display())))
}

/// `--pod-cidr <cidrs>`, or nothing while the kubelet has not set one: an empty argument
/// would not survive being read back from /proc when the shim is started again.
fn pod_cidr_args(pod_cidr: &str) -> Vec<String> {
    if pod_cidr.is_empty() {
        Vec::new()
    } else {
        vec!["--pod-cidr".into(), pod_cidr.into()]
    }
}

/// glibc's tunables for a shim: the operator's own, and no cache of ended threads' stacks. A
/// shim's blocking-pool threads end a second after their last job, and glibc would keep each
/// one's stack for a thread to come, 12 KiB of it resident (0.02 MiB of every shim after a
/// log burst, measured by bench-pods); a new thread's stack costs a mapping instead.
fn shim_tunables(operators: Option<String>) -> String {
    const NO_STACK_CACHE: &str = "glibc.pthread.stack_cache_size=0";
    match operators {
        Some(own) if !own.is_empty() => format!("{own}:{NO_STACK_CACHE}"),
        _ => NO_STACK_CACHE.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_tunables_are_kept_beside_the_shims() {
        assert_eq!(shim_tunables(None), "glibc.pthread.stack_cache_size=0");
        assert_eq!(
            shim_tunables(Some(String::new())),
            "glibc.pthread.stack_cache_size=0"
        );
        assert_eq!(
            shim_tunables(Some("glibc.malloc.tcache_count=0".into())),
            "glibc.malloc.tcache_count=0:glibc.pthread.stack_cache_size=0"
        );
    }
}
