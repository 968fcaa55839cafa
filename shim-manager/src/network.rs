//! Whether pod networking is ready on this node, as `Status` reports it: Docker's default
//! bridge when no plugin is configured, or the first valid CNI network configuration in the
//! configuration directory (re-read on every check, so a configuration dropped in later is
//! picked up without a restart).

use std::path::PathBuf;

use dockpod_proto::cni_conf::find_cni_network;

use crate::config::NetworkPlugin;
use crate::docker::Engine;

/// Network readiness with the reason and message the kubelet shows when not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

impl Readiness {
    fn ready(message: String) -> Self {
        Readiness {
            ready: true,
            reason: String::new(),
            message,
        }
    }

    fn not_ready(reason: &str, message: String) -> Self {
        Readiness {
            ready: false,
            reason: reason.to_string(),
            message,
        }
    }
}

pub struct Network {
    pub plugin: NetworkPlugin,
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

impl Network {
    pub async fn readiness(&self, engine: &Engine) -> Readiness {
        match self.plugin {
            NetworkPlugin::DockerBridge => bridge_readiness(engine).await,
            NetworkPlugin::Cni => {
                let conf_dir = self.conf_dir.clone();
                let bin_dirs = self.bin_dirs.clone();
                match tokio::task::spawn_blocking(move || find_cni_network(&conf_dir, &bin_dirs))
                    .await
                {
                    Ok(Ok(net)) => Readiness::ready(format!(
                        "CNI network {:?} ({}) from {}",
                        net.name,
                        net.plugins.join(" -> "),
                        net.file.display()
                    )),
                    Ok(Err(problem)) => Readiness::not_ready("NetworkPluginNotReady", problem),
                    Err(e) => Readiness::not_ready(
                        "NetworkPluginNotReady",
                        format!("reading the CNI configuration failed: {e}"),
                    ),
                }
            }
        }
    }
}

/// From the daemon's facts: its default bridge network is part of its configuration, read
/// whenever the connection to it is (re-)established.
async fn bridge_readiness(engine: &Engine) -> Readiness {
    let bridge = match engine.facts().await {
        Ok(facts) => facts.default_bridge.clone(),
        Err(e) => Err(e.to_string()),
    };
    match bridge {
        Ok(id) => Readiness::ready(format!(
            "Docker's default bridge network ({})",
            &id[..id.len().min(12)]
        )),
        Err(e) => Readiness::not_ready(
            "DockerBridgeUnavailable",
            format!("docker's default bridge network is not available: {e}"),
        ),
    }
}
