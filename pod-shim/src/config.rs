//! Command line of `pod-shim`. The front starts it; the pod's identity is on the command line
//! so that `ps` shows which process supervises which pod.

use std::path::PathBuf;

use clap::Parser;
use dockpod_proto::engine_api::ApiVersion;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "pod-shim",
    version,
    about = "dockpod's supervisor of one pod sandbox"
)]
pub struct ShimConfig {
    /// Namespace/name of the pod this shim supervises (for `ps`).
    #[arg(long, default_value = "")]
    pub pod: String,

    /// Short sandbox ID of the pod (for `ps`); a placeholder until the sandbox exists.
    #[arg(long, default_value = "")]
    pub sandbox: String,

    /// Unix socket to serve on (created 0600; its directory 0700).
    #[arg(long, env = "DOCKPOD_SHIM_SOCKET")]
    pub socket: PathBuf,

    /// The pod's state directory (state file, created 0700).
    #[arg(long)]
    pub state_dir: PathBuf,

    /// This shim's ID (its state directory's and socket's name).
    #[arg(long)]
    pub shim_id: String,

    /// The dockpod instance that owns the pod; labels every container.
    #[arg(long)]
    pub instance: String,

    /// Docker Engine API endpoint.
    #[arg(long, default_value = "unix:///var/run/docker.sock")]
    pub docker_endpoint: String,

    /// Engine API version to speak (`1.41`), as the front negotiated it with the same daemon;
    /// without it the shim asks the daemon.
    #[arg(long, value_parser = parse_api_version)]
    pub docker_api_version: Option<ApiVersion>,

    /// Image of the sandbox container.
    #[arg(long)]
    pub sandbox_image: String,

    /// Pod network: `cni`, or empty for Docker's default bridge.
    #[arg(long, default_value = "")]
    pub network_plugin: String,

    /// Directory of CNI network configurations.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,

    /// Comma-separated directories of CNI plugin binaries.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/opt/cni/bin,/usr/lib/cni"
    )]
    pub cni_bin_dir: Vec<PathBuf>,

    /// libcni's cache directory, where cri-dockerd recorded its pods' CNI attachments: read
    /// (never written) to delete the networks of adopted pods.
    #[arg(long, default_value = "/var/lib/cni/cache")]
    pub cni_cache_dir: PathBuf,

    /// Where the node's shims keep the CNI plugins' VERSION answers (see `cni::versions`);
    /// without it every RunPodSandbox asks each plugin.
    #[arg(long)]
    pub cni_versions_dir: Option<PathBuf>,

    /// The node's pod CIDRs (comma-separated), offered to CNI plugins as `ipRanges`.
    #[arg(long, default_value = "")]
    pub pod_cidr: String,

    /// Seconds a streaming session may go without traffic before it is closed.
    #[arg(long, default_value_t = 4 * 3600)]
    pub stream_idle_timeout: u64,

    /// Adopt this sandbox, which cri-dockerd created, instead of starting an empty pod: the
    /// record is rebuilt from Docker (used only when the state directory has none yet).
    #[arg(long)]
    pub adopt: Option<String>,

    /// cri-dockerd's checkpoint of the adopted sandbox (host network, port mappings).
    #[arg(long)]
    pub adopt_checkpoint: Option<PathBuf>,

    /// Do not serve: delete what a shim of this pod left when it died inside RunPodSandbox
    /// (the containers labelled with this shim ID, the CNI attachments recorded in the state
    /// directory), then exit. The front runs this for a pod it gives up on.
    #[arg(long)]
    pub clean_up: bool,

    /// Fork into the background (new session), print `ready <pid>` on stdout once serving.
    #[arg(long)]
    pub daemonize: bool,

    /// Log verbosity (error, warn, info, debug, trace).
    #[arg(long, env = "DOCKPOD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// How `shim.log` is written: text, or one JSON object per line (the front's
    /// `--log-format`, for log shippers).
    #[arg(long, env = "DOCKPOD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ShimConfig {
    /// CNI settings when pods are networked through CNI.
    pub fn cni(&self) -> Option<crate::cni::Cni> {
        (self.network_plugin == "cni").then(|| crate::cni::Cni {
            conf_dir: self.cni_conf_dir.clone(),
            bin_dirs: self.cni_bin_dir.clone(),
            records_dir: self.state_dir.clone(),
            libcni_cache_dir: self.cni_cache_dir.clone(),
            pod_cidr: self.pod_cidr.clone(),
            versions: crate::cni::VersionCache {
                dir: self.cni_versions_dir.clone(),
            },
        })
    }
}

fn parse_api_version(text: &str) -> Result<ApiVersion, String> {
    ApiVersion::parse(text).ok_or_else(|| format!("{text:?} is not an API version like 1.41"))
}
