//! Command line and environment of `shim-manager`: one clap struct per subcommand, each flag
//! named as cri-dockerd names it where the meaning is the same, validated before any side
//! effect.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Image the sandbox ("pause") container runs unless told otherwise; `contrib/setup.sh`
/// builds it locally. The `localhost/` registry means a missing image is never fetched from
/// anywhere but this machine.
pub const DEFAULT_SANDBOX_IMAGE: &str = "localhost/dockpod/pause:1";

/// What `--version` prints: the crate's version, the commit it was built from and the
/// kubernetes/cri-api release its CRI bindings were generated from.
pub static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (commit {}, cri-api {})",
        env!("CARGO_PKG_VERSION"),
        env!("DOCKPOD_COMMIT"),
        dockpod_proto::cri::API_VERSION
    )
});

#[derive(Debug, Parser)]
#[command(
    name = "shim-manager",
    version = VERSION.as_str(),
    about = "dockpod: a CRI runtime on Docker Engine with one supervisor process per pod"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the CRI (runtime.v1 RuntimeService and ImageService) on a unix socket.
    // A flag given twice takes its last value, so wrappers can append overrides.
    #[command(args_override_self = true)]
    Serve(Box<ServeConfig>),
    /// Check the host before the first pod, with the flags `serve` would run with: one line per
    /// check (OK, WARN or FAIL, and what to do); exits non-zero on any FAIL.
    #[command(args_override_self = true)]
    Doctor {
        #[command(flatten)]
        serve: Box<ServeConfig>,
        /// The kubelet's configuration file (KubeletConfiguration), to compare its cgroup
        /// driver with Docker's.
        #[arg(long, env = "DOCKPOD_KUBELET_CONFIG")]
        kubelet_config: Option<PathBuf>,
    },
    /// One line per pod: its shim's PID, memory and uptime, the pod's containers and their
    /// restarts, and the streaming sessions (exec, attach, port-forward) open now.
    Ps(PsArgs),
    /// The processes of one pod (sandbox ID or prefix, name, or namespace/name), container by
    /// container as their cgroups hold them, below the pod's shim.
    Top {
        #[command(flatten)]
        run: RunDir,
        /// How to print them.
        #[arg(long, short = 'o', value_enum, default_value_t = TopOutput::Table)]
        output: TopOutput,
        /// The pod.
        pod: String,
    },
    /// The shim's view of one pod (sandbox ID or prefix, name, or namespace/name) as JSON.
    Inspect {
        #[command(flatten)]
        run: RunDir,
        /// The pod.
        pod: String,
    },
    /// Run CNI CHECK on one pod's network now (verbose PodSandboxStatus reports the last
    /// one); exits non-zero when it fails.
    Check {
        #[command(flatten)]
        run: RunDir,
        /// The pod: sandbox ID or prefix, name, or namespace/name.
        pod: String,
    },
    /// Run a pod with a greeting container against a running server, show it, remove it.
    Demo {
        #[command(flatten)]
        run: RunDir,
        /// The server's CRI endpoint.
        #[arg(
            long,
            env = "DOCKPOD_CONTAINER_RUNTIME_ENDPOINT",
            default_value = "unix:///run/dockpod/cri.sock"
        )]
        container_runtime_endpoint: String,
        /// Image of the greeting container.
        #[arg(long, default_value = DEFAULT_TOOL_IMAGE)]
        image: String,
    },
    /// Replace every pod's shim with the server's current pod-shim binary, one pod at a time;
    /// containers keep running. Pods with open exec, attach or port-forward sessions are
    /// skipped (and reported busy) unless --force. Exits non-zero unless every pod was done.
    UpgradeShims {
        /// The server's CRI endpoint.
        #[arg(
            long,
            env = "DOCKPOD_CONTAINER_RUNTIME_ENDPOINT",
            default_value = "unix:///run/dockpod/cri.sock"
        )]
        container_runtime_endpoint: String,
        /// Replace shims with open streaming sessions too (the sessions end).
        #[arg(long)]
        force: bool,
    },
}

/// The busybox tool image `contrib/setup.sh` builds.
pub const DEFAULT_TOOL_IMAGE: &str = "localhost/dockpod/busybox:1";

/// What `ps` prints and in which order.
#[derive(Debug, Clone, Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub run: RunDir,
    /// How to print the pods: a table, a wider table (full sandbox IDs, the shims' tasks,
    /// versions and sockets), or JSON with every figure in plain units.
    #[arg(long, short = 'o', value_enum, default_value_t = PsOutput::Table)]
    pub output: PsOutput,
    /// Order of the pods: by name or PID ascending, by any other figure descending (largest
    /// first); ties go by name.
    #[arg(long, value_enum, default_value_t = PsSort::Name)]
    pub sort: PsSort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PsOutput {
    Table,
    Wide,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PsSort {
    /// namespace/name
    Name,
    /// The shim's PID.
    Pid,
    Rss,
    Pss,
    Uptime,
    /// Containers running.
    Containers,
    Restarts,
    /// Open streaming sessions.
    Sessions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopOutput {
    Table,
    Json,
}

/// Where the shims' sockets are: the server's `--run-directory`.
#[derive(Debug, Clone, Args)]
pub struct RunDir {
    /// The server's run directory.
    #[arg(long, env = "DOCKPOD_RUN_DIRECTORY", default_value = "/run/dockpod")]
    pub run_directory: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// CRI endpoint the kubelet connects to (unix:///path); created with mode 0660.
    #[arg(
        long,
        env = "DOCKPOD_CONTAINER_RUNTIME_ENDPOINT",
        default_value = "unix:///run/dockpod/cri.sock"
    )]
    pub container_runtime_endpoint: String,

    /// Group (name or GID) that owns the CRI socket; its members may use the runtime as fully
    /// as root. Unset: the server's own group.
    #[arg(long, env = "DOCKPOD_CRI_SOCKET_GROUP", value_parser = parse_group)]
    pub cri_socket_group: Option<u32>,

    /// Docker Engine API endpoint (unix:///path or tcp://host:port).
    #[arg(
        long,
        env = "DOCKPOD_DOCKER_ENDPOINT",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker_endpoint: String,

    /// Directory for persisted state (pod records, runtime configuration, instance identity).
    #[arg(
        long,
        env = "DOCKPOD_ROOT_DIRECTORY",
        default_value = "/var/lib/dockpod"
    )]
    pub root_directory: PathBuf,

    /// Directory for sockets and pid files; emptied by a reboot.
    #[arg(long, env = "DOCKPOD_RUN_DIRECTORY", default_value = "/run/dockpod")]
    pub run_directory: PathBuf,

    /// Image of each pod's sandbox ("pause") container. It is reported as pinned so the
    /// kubelet's image garbage collection keeps it.
    #[arg(long, env = "DOCKPOD_POD_INFRA_CONTAINER_IMAGE", default_value = DEFAULT_SANDBOX_IMAGE)]
    pub pod_infra_container_image: String,

    /// Address of the streaming server for exec, attach and port-forward: an IP (a free port
    /// is chosen) or IP:PORT.
    #[arg(long, env = "DOCKPOD_STREAMING_BIND_ADDR", default_value = "127.0.0.1", value_parser = parse_bind_addr)]
    pub streaming_bind_addr: SocketAddr,

    /// Seconds a streaming session may go without traffic before it is closed (the kubelet's
    /// `--streaming-connection-idle-timeout`, 4 hours by default).
    #[arg(long, env = "DOCKPOD_STREAMING_IDLE_TIMEOUT", default_value_t = 4 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub streaming_idle_timeout: u64,

    /// Seconds a pod's shim may go without answering the front's liveness probe before it is
    /// killed and replaced (a deadlocked shim); 0 never replaces a live shim. Generous by
    /// default: a shim slowed down by a loaded node or a slow disk is not dead.
    #[arg(long, env = "DOCKPOD_SHIM_LIVENESS_TIMEOUT", default_value_t = 60)]
    pub shim_liveness_timeout: u64,

    /// Seconds between sweeps for containers of this runtime that no pod holds (a create Docker
    /// finished after its pod was given up), which are removed; the first sweep runs at start.
    /// 0 never sweeps.
    #[arg(long, env = "DOCKPOD_STRAY_SWEEP_INTERVAL", default_value_t = 60)]
    pub stray_sweep_interval: u64,

    /// Address (IP:PORT) to serve Prometheus metrics on, at /metrics; none when unset.
    #[arg(long, env = "DOCKPOD_METRICS_BIND_ADDR")]
    pub metrics_bind_addr: Option<SocketAddr>,

    /// Network plugin for pods: empty for Docker's default bridge, or `cni`.
    #[arg(long, env = "DOCKPOD_NETWORK_PLUGIN", default_value = "", value_parser = parse_network_plugin)]
    pub network_plugin: NetworkPlugin,

    /// Directory of CNI network configurations (.conflist, .conf, .json).
    #[arg(long, env = "DOCKPOD_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,

    /// Comma-separated directories searched for CNI plugin binaries.
    #[arg(
        long,
        env = "DOCKPOD_CNI_BIN_DIR",
        default_value = "/opt/cni/bin,/usr/lib/cni",
        value_delimiter = ','
    )]
    pub cni_bin_dir: Vec<PathBuf>,

    /// libcni's cache directory (cri-dockerd's `--cni-cache-dir`): read, never written, to
    /// delete the networks of pods adopted from cri-dockerd. dockpod records its own
    /// attachments in each pod's state directory.
    #[arg(
        long,
        env = "DOCKPOD_CNI_CACHE_DIR",
        default_value = "/var/lib/cni/cache"
    )]
    pub cni_cache_dir: PathBuf,

    /// At start, give a shim to every pod sandbox on this dockerd that cri-dockerd (or the
    /// kubelet's dockershim) created, so they are served from then on. Without it, dockpod
    /// never touches containers it did not create.
    #[arg(long, env = "DOCKPOD_ADOPT_CRI_DOCKERD")]
    pub adopt_cri_dockerd: bool,

    /// cri-dockerd's `--root-directory`, where its sandbox checkpoints are.
    #[arg(
        long,
        env = "DOCKPOD_CRI_DOCKERD_ROOT_DIRECTORY",
        default_value = "/var/lib/cri-dockerd"
    )]
    pub cri_dockerd_root_directory: PathBuf,

    /// Log verbosity.
    #[arg(long, env = "DOCKPOD_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Log line format: `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, env = "DOCKPOD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The pod-shim binary started for each pod [default: pod-shim beside this binary].
    #[arg(long, env = "DOCKPOD_POD_SHIM_BINARY")]
    pub pod_shim_binary: Option<PathBuf>,
}

impl ServeConfig {
    /// The pod-shim binary: as given, or the one installed beside this binary.
    pub fn pod_shim_binary(&self) -> crate::error::Result<PathBuf> {
        if let Some(path) = &self.pod_shim_binary {
            return Ok(path.clone());
        }
        let exe = std::env::current_exe()
            .map_err(crate::error::Error::io("locating the shim-manager binary"))?;
        Ok(exe.with_file_name("pod-shim"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkPlugin {
    /// No plugin: pods join Docker's default bridge network.
    DockerBridge,
    Cni,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogLevel {
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A group name or numeric GID, resolved now so an unknown name fails before any side effect.
fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no group named {s:?}")),
        Err(e) => Err(format!("looking up group {s:?}: {e}")),
    }
}

fn parse_bind_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| format!("{s:?} is neither an IP address nor IP:PORT"))
}

fn parse_network_plugin(s: &str) -> Result<NetworkPlugin, String> {
    match s {
        "" => Ok(NetworkPlugin::DockerBridge),
        "cni" => Ok(NetworkPlugin::Cni),
        other => Err(format!(
            "unsupported network plugin {other:?} (use \"cni\" or leave empty for Docker's bridge)"
        )),
    }
}

impl std::fmt::Display for NetworkPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetworkPlugin::DockerBridge => "",
            NetworkPlugin::Cni => "cni",
        })
    }
}

impl ServeConfig {
    /// The pod shim's arguments that say how pods are networked.
    pub fn shim_network_args(&self) -> Vec<std::ffi::OsString> {
        if self.network_plugin != NetworkPlugin::Cni {
            return Vec::new();
        }
        let bins: Vec<_> = self
            .cni_bin_dir
            .iter()
            .map(|d| d.to_string_lossy())
            .collect();
        [
            "--network-plugin".into(),
            "cni".into(),
            "--cni-conf-dir".into(),
            self.cni_conf_dir.clone().into_os_string(),
            "--cni-bin-dir".into(),
            bins.join(",").into(),
            "--cni-cache-dir".into(),
            self.cni_cache_dir.clone().into_os_string(),
            "--cni-versions-dir".into(),
            dockpod_proto::layout::cni_versions_dir(&self.root_directory).into_os_string(),
        ]
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeConfig, clap::Error> {
        let mut argv = vec!["shim-manager", "serve"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).and_then(|cli| match cli.command {
            Command::Serve(c) => Ok(*c),
            _ => Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand)),
        })
    }

    #[test]
    fn defaults_match_cri_dockerd_conventions() {
        let c = serve(&[]).expect("defaults parse");
        assert_eq!(c.container_runtime_endpoint, "unix:///run/dockpod/cri.sock");
        assert_eq!(c.streaming_bind_addr, "127.0.0.1:0".parse().expect("addr"));
        assert_eq!(c.network_plugin, NetworkPlugin::DockerBridge);
        assert_eq!(c.pod_infra_container_image, DEFAULT_SANDBOX_IMAGE);
        assert_eq!(c.cni_bin_dir.len(), 2);
    }

    #[test]
    fn last_occurrence_of_a_flag_wins() {
        let c = serve(&["--root-directory", "/a", "--root-directory", "/b"]).expect("parse");
        assert_eq!(c.root_directory, PathBuf::from("/b"));
    }

    #[test]
    fn validates_flags() {
        assert!(serve(&["--network-plugin", "kubenet"]).is_err());
        assert!(serve(&["--streaming-bind-addr", "nowhere"]).is_err());
        assert!(serve(&["--cri-socket-group", "no-such-group-here"]).is_err());
        assert_eq!(
            serve(&["--cri-socket-group", "4242"])
                .map(|c| c.cri_socket_group)
                .ok(),
            Some(Some(4242))
        );
        assert_eq!(
            serve(&["--cri-socket-group", "root"])
                .map(|c| c.cri_socket_group)
                .ok(),
            Some(Some(0))
        );
        let c = serve(&[
            "--streaming-bind-addr",
            "[::1]:10010",
            "--network-plugin",
            "cni",
        ])
        .expect("parse");
        assert_eq!(c.streaming_bind_addr.port(), 10010);
        assert_eq!(c.network_plugin, NetworkPlugin::Cni);
    }
}
