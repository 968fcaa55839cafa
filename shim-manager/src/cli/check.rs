//! `shim-manager check <pod>`: runs CNI CHECK on one pod's network now. Verbose
//! PodSandboxStatus reports the last CHECK rather than running one per call, since CHECK
//! starts every plugin of the chain and iptables.

use std::path::Path;

use dockpod_proto::shim::CheckNetworkRequest;

/// A line saying what CHECK found; Err when it failed or could not run.
pub async fn run(run_dir: &Path, query: &str) -> Result<String, String> {
    let socket = super::shim_of(run_dir, query).await?;
    let mut client =
        dockpod_proto::shim::shim_client::ShimClient::new(dockpod_proto::sockets::channel(&socket));
    let answer = client
        .check_network(CheckNetworkRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("{}: {}", socket.display(), e.message()))?;
    match (answer.checked, answer.error.is_empty()) {
        (false, _) => Ok(format!(
            "{query}: nothing to check (no CNI network, or the sandbox is not running)"
        )),
        (true, true) => Ok(format!("{query}: network {:?}: ok", answer.network)),
        (true, false) => Err(format!(
            "{query}: network {:?}: {}",
            answer.network, answer.error
        )),
    }
}
