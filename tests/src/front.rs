//! `Front`: the real `shim-manager serve` on a temporary socket, root and run directory, with
//! its log kept for failure messages; stopped (SIGTERM, then SIGKILL) and removed on drop.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use dockpod_proto::cri::image_service_client::ImageServiceClient;
use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::StatusRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::Channel;

use crate::binaries::binary;
use crate::wait::wait_until_blocking;

/// How long a front may take to answer its first call.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a front may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Front {
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// Variables set on every front process (and so on the shims it starts).
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Where in the log the current process's output starts.
    log_start: u64,
    /// The CRI socket, bound by the test and passed to every front process as systemd's
    /// socket activation passes it (see `start_activated`).
    activation: Option<UnixListener>,
    /// A shell command line that starts the front (see `start_from_shell`).
    shell: Option<String>,
}

impl Front {
    /// Starts a front with the default flags plus `extra` and waits until it answers.
    pub async fn start(extra: &[&str]) -> Front {
        let mut front = Front::new(extra);
        front.spawn();
        front.wait_ready().await;
        front
    }

    /// Starts a front as `start` does, with `env` set on its processes (failpoints, say).
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Front {
        let mut front = Front::new(extra);
        front.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        front.spawn();
        front.wait_ready().await;
        front
    }

    /// Starts a front as systemd starts it from `dockpod.socket`: the test binds the CRI
    /// socket and keeps it across restarts, and each front process gets it as fd 3 with
    /// `LISTEN_FDS=1` and `LISTEN_PID` naming that process.
    pub async fn start_activated(extra: &[&str]) -> Front {
        let mut front = Front::new(extra);
        let listener = UnixListener::bind(front.socket()).expect("binding the CRI socket");
        front.activation = Some(listener);
        front.spawn();
        front.wait_ready().await;
        front
    }

    /// Starts a front from a shell command line as an operator types it (a README's):
    /// `shim-manager` is found on PATH (the binaries under test), a path ending in
    /// `/shim-manager` is taken for them too, and every flag `start` would pass (with `extra`)
    /// is given as its `DOCKPOD_*` variable instead, as `/etc/default/dockpod` gives them to the
    /// service.
    pub async fn start_from_shell(line: &str, extra: &[&str]) -> Front {
        let mut front = Front::new(extra);
        front.shell = Some(line.to_string());
        front.spawn();
        front.wait_ready().await;
        front
    }

    /// The variables that point `shim-manager`'s client commands (ps, top, demo, ...) run
    /// from a shell at this front, with PATH finding the binaries under test first.
    pub fn client_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "DOCKPOD_CONTAINER_RUNTIME_ENDPOINT".into(),
                format!("unix://{}", self.socket().display()),
            ),
            (
                "DOCKPOD_RUN_DIRECTORY".into(),
                self.run_dir().display().to_string(),
            ),
            (
                "DOCKPOD_ROOT_DIRECTORY".into(),
                self.root_dir().display().to_string(),
            ),
            ("DOCKPOD_DOCKER_ENDPOINT".into(), crate::docker::endpoint()),
            ("PATH".into(), binaries_path()),
        ]
    }

    fn new(extra: &[&str]) -> Front {
        crate::reaper::reap_once();
        // Named after this test process, so a later run can tell it was left by a killed one.
        let dir = tempfile::Builder::new()
            .prefix(&crate::reaper::front_dir_prefix())
            .tempdir_in("/tmp")
            .expect("temporary front directory");
        Front {
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            child: None,
            log_start: 0,
            activation: None,
            shell: None,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }

    /// The root directory: the test's own `--root-directory` if it gave one.
    pub fn root_dir(&self) -> PathBuf {
        self.args
            .iter()
            .position(|a| a == "--root-directory")
            .and_then(|i| self.args.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join("root"))
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("front.log")
    }

    /// Everything the front has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines the current front process logged: what a failure message shows (a
    /// front restarted many times at debug level logs megabytes, and a CI log keeps only
    /// part of a long message).
    fn recent_log(&self) -> String {
        const LINES: usize = 80;
        let log = self.log();
        let own = log.get(self.log_start as usize..).unwrap_or(&log);
        let lines: Vec<&str> = own.lines().collect();
        lines[lines.len().saturating_sub(LINES)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The command line for this front: default flags first, then the test's own, so a test
    /// can override any of them.
    pub fn command(&self) -> Command {
        if let Some(line) = &self.shell {
            return self.shell_command(line);
        }
        let mut cmd = Command::new(binary("shim-manager"));
        cmd.arg("serve")
            .args(self.serve_args())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// The flags of `serve`: the defaults first, then the test's own, so a test can override
    /// any of them.
    fn serve_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--container-runtime-endpoint".to_string(),
            format!("unix://{}", self.socket().display()),
            "--root-directory".into(),
            self.root_dir().display().to_string(),
            "--run-directory".into(),
            self.run_dir().display().to_string(),
            "--log-level".into(),
            "debug".into(),
            "--pod-shim-binary".into(),
            binary("pod-shim").display().to_string(),
            "--docker-endpoint".into(),
            crate::docker::endpoint(),
        ]
        .into();
        args.extend(self.args.iter().cloned());
        args
    }

    /// `line` run by `sh`, with the flags of `command` as variables.
    fn shell_command(&self, line: &str) -> Command {
        let own = binary("shim-manager").display().to_string();
        // The README's `target/release/shim-manager`: the binaries under test stand in.
        let line = match line
            .split_whitespace()
            .find(|w| w.ends_with("/shim-manager"))
        {
            Some(path) => line.replacen(path, &own, 1),
            None => line.to_string(),
        };
        let mut cmd = Command::new("sh");
        // `exec`, so the front is the test's child and its signals reach it.
        cmd.arg("-c").arg(format!("exec {line}"));
        let args = self.serve_args();
        let mut i = 0;
        while let Some(flag) = args.get(i).and_then(|a| a.strip_prefix("--")) {
            let value = args.get(i + 1).filter(|v| !v.starts_with("--"));
            let var = format!("DOCKPOD_{}", flag.to_uppercase().replace('-', "_"));
            cmd.env(var, value.map(String::as_str).unwrap_or("true"));
            i += if value.is_some() { 2 } else { 1 };
        }
        cmd.env("PATH", binaries_path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("front log file");
        self.log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let err = log.try_clone().expect("front log file");
        let mut command = match &self.activation {
            Some(listener) => activated(&self.command(), listener),
            None => self.command(),
        };
        let child = command
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawning shim-manager");
        if let Some(listener) = &self.activation {
            inheritable(listener, false);
        }
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "shim-manager exited during start-up with {status}:\n{}",
                    self.recent_log()
                );
            }
            let mut client = self.runtime();
            if client.status(StatusRequest::default()).await.is_ok() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "shim-manager did not answer within {START_TIMEOUT:?}:\n{}",
                self.recent_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn channel(&self) -> Channel {
        dockpod_proto::sockets::channel(&self.socket())
    }

    /// A CRI client that, like the kubelet's, accepts large answers (ExecSync output).
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel()).max_decoding_message_size(64 << 20)
    }

    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel())
    }

    /// Sends `signal` to the front.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// Waits for the front to exit and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, and the exit status once the front has drained and exited.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        match self.wait_exit(STOP_TIMEOUT).await {
            Some(status) => status,
            None => panic!(
                "shim-manager did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                self.recent_log()
            ),
        }
    }

    /// SIGKILL: the front dies without any cleanup, as in a crash.
    pub async fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit(STOP_TIMEOUT).await;
    }

    /// Starts the front again with the same flags and directories (after `kill` or
    /// `terminate`).
    pub async fn restart(&mut self) {
        self.relaunch();
        self.wait_ready().await;
    }

    /// Starts the front again without waiting for it to answer (for measuring start-up).
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "restart of a front that still runs");
        self.spawn();
    }

    /// Runs another `shim-manager serve` with this front's flags plus `extra`, expecting it to
    /// exit by itself within the start-up timeout; returns its status and output.
    pub fn run_second(&self, extra: &[&str]) -> (Option<ExitStatus>, String) {
        let out_path = self
            .dir
            .path()
            .join(format!("{}.log", crate::unique("second")));
        let out = File::create(&out_path).expect("second front log");
        let err = out.try_clone().expect("second front log");
        let mut child = self
            .command()
            .args(extra)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawning a second shim-manager");
        let status = wait_until_blocking("the second shim-manager to exit", START_TIMEOUT, || {
            child.try_wait().ok().flatten()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (
            status,
            std::fs::read_to_string(&out_path).unwrap_or_default(),
        )
    }
}

impl Front {
    /// This front's dockpod instance ID (labels everything it creates in Docker).
    pub fn instance_id(&self) -> String {
        std::fs::read_to_string(self.root_dir().join("instance-id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// PIDs of the pod shims this front started (their state lives under its root directory).
    /// The one shim socket of a front that runs one pod.
    pub fn shim_socket(&self) -> PathBuf {
        let dir = self.run_dir().join("shims");
        let sockets: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("shim directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.ends_with(".sock") && !name.ends_with(".stream.sock")
            })
            .collect();
        assert_eq!(sockets.len(), 1, "{sockets:?}");
        sockets[0].clone()
    }

    /// `shim-manager check <pod>` on this front's run directory: whether CNI CHECK passed,
    /// and what the command printed.
    pub fn check_network(&self, pod: &str) -> (bool, String) {
        let out = Command::new(binary("shim-manager"))
            .arg("check")
            .arg("--run-directory")
            .arg(self.run_dir())
            .arg(pod)
            .output()
            .expect("run shim-manager check");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    }

    /// Copies the front's log and every shim's log out of the directory `Drop` removes, so a
    /// failed test can be read afterwards; says where on stderr.
    fn keep_logs(&self) {
        let kept = std::env::temp_dir().join(format!("dockpod-failed-{}", crate::unique("front")));
        if std::fs::create_dir_all(&kept).is_err() {
            return;
        }
        let _ = std::fs::copy(self.log_path(), kept.join("front.log"));
        for pod in crate::list_dir(&self.root_dir().join("pods")) {
            let _ = std::fs::copy(
                self.root_dir().join("pods").join(&pod).join("shim.log"),
                kept.join(format!("{pod}.shim.log")),
            );
        }
        eprintln!("the front's and shims' logs are kept in {}", kept.display());
    }

    /// Waits until every removed pod's shim has been retired: no shim process, no shim
    /// socket, no pod directory. RemovePodSandbox answers once the pod is gone from Docker
    /// and its record; its shim exits, and the front deletes what is left of it, just after.
    pub async fn wait_shims_retired(&self) {
        // Generous: a shim's exit and its directory's removal take milliseconds; the bound
        // only keeps a shim that never goes from hanging the test.
        const RETIRE_TIMEOUT: Duration = Duration::from_secs(30);
        let (sockets, pods) = (self.run_dir().join("shims"), self.root_dir().join("pods"));
        let deadline = std::time::Instant::now() + RETIRE_TIMEOUT;
        loop {
            let left = (
                self.shim_pids(),
                crate::list_dir(&sockets),
                crate::list_dir(&pods),
            );
            if left.0.is_empty() && left.1.is_empty() && left.2.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "removed pods' shims not retired within {RETIRE_TIMEOUT:?}: shims {:?}, \
                 sockets {:?}, pod directories {:?}",
                left.0,
                left.1,
                left.2
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn shim_pids(&self) -> Vec<u32> {
        let root = self.root_dir().display().to_string();
        crate::procs::find(|cmdline| {
            cmdline.first().is_some_and(|a| a.ends_with("pod-shim"))
                && cmdline.iter().any(|a| a.starts_with(&root))
        })
    }
}

impl Drop for Front {
    /// Kills the front (a test's end needs no graceful stop, and a blocking wait would stall
    /// the test's runtime), then every shim it started and every container of its instance,
    /// so a failed test leaves nothing behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.keep_logs();
        }
        for pid in self.shim_pids() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let instance = self.instance_id();
        if !instance.is_empty() {
            crate::block_on_side(crate::docker::remove_instance_containers(instance));
        }
    }
}

/// `command` run the way systemd runs a socket-activated service: `listener` as fd 3, with
/// `LISTEN_FDS=1` and `LISTEN_PID` set to the process (bash sets it to its own PID and execs
/// the front, which keeps it). The listener is inheritable until the caller has spawned.
fn activated(command: &Command, listener: &UnixListener) -> Command {
    inheritable(listener, true);
    let script = r#"if [ "$DOCKPOD_TEST_FD" != 3 ]; then exec 3<&"$DOCKPOD_TEST_FD" {DOCKPOD_TEST_FD}<&-; fi
unset DOCKPOD_TEST_FD
export LISTEN_FDS=1 LISTEN_PID=$$
exec "$@""#;
    let mut wrapped = Command::new("bash");
    wrapped
        .arg("-c")
        .arg(script)
        .arg("bash")
        .arg(command.get_program())
        .args(command.get_args())
        .env("DOCKPOD_TEST_FD", listener.as_raw_fd().to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    wrapped
}

fn inheritable(listener: &UnixListener, inherit: bool) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if inherit {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(listener, FcntlArg::F_SETFD(flags)).expect("setting the socket's close-on-exec flag");
}

/// PATH with the directory of the binaries under test first.
pub fn binaries_path() -> String {
    let own = binary("shim-manager");
    let dir = own.parent().unwrap_or(Path::new("/"));
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Whether `status` is a clean exit 0 (not a signal death).
pub fn exited_cleanly(status: &ExitStatus) -> bool {
    status.code() == Some(0) && status.signal().is_none()
}
