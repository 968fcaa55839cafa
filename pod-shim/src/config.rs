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
    /// Unix socket to serve dockpod.shim.v1 on (created 0600; its directory 0700).
    #[arg(long, env = "DOCKPOD_SHIM_SOCKET")]
    pub socket: PathBuf,

    /// Namespace/name of the pod this shim supervises.
    #[arg(long, default_value = "")]
    pub pod: String,

    /// Sandbox ID of the pod.
    #[arg(long, default_value = "")]
    pub sandbox_id: String,

    /// Log verbosity (error, warn, info, debug, trace).
    #[arg(long, env = "DOCKPOD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}
