//! Command line of `pod-shim`. The front starts it; the pod's identity is on the command line
//! so that `ps` shows which process supervises which pod.

use std::path::PathBuf;

use clap::Parser;

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

    /// Image of the sandbox container.
    #[arg(long)]
    pub sandbox_image: String,

    /// Fork into the background (new session), print `ready <pid>` on stdout once serving.
    #[arg(long)]
    pub daemonize: bool,

    /// Log verbosity (error, warn, info, debug, trace).
    #[arg(long, env = "DOCKPOD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}
