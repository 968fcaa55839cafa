//! The operator's subcommands beside `serve`: per-pod process inspection (`ps`, `inspect`,
//! `top`) and network checks (`check`), asked straight of the pods' shims, `upgrade-shims` and
//! a `demo` against a running server, and the host's checks before the first pod (`doctor`).

pub mod check;
pub mod demo;
pub mod doctor;
pub mod inspect;
pub mod ps;
pub mod top;
pub mod upgrade;

use std::path::Path;

use dockpod_proto::shim::InfoResponse;

use crate::shim::shim_sockets;

/// Every live shim under `run_dir` with its Info (shims that do not answer are skipped and
/// reported on stderr).
pub async fn shims(run_dir: &Path) -> Vec<(std::path::PathBuf, InfoResponse)> {
    let mut found = Vec::new();
    for socket in shim_sockets(run_dir) {
        let mut client = dockpod_proto::shim::shim_client::ShimClient::new(
            dockpod_proto::sockets::channel(&socket),
        );
        let ask = client.info(dockpod_proto::shim::InfoRequest::default());
        match tokio::time::timeout(std::time::Duration::from_secs(2), ask).await {
            Ok(Ok(info)) => found.push((socket, info.into_inner())),
            Ok(Err(e)) => eprintln!("{}: {}", socket.display(), e.message()),
            Err(_) => eprintln!("{}: no answer within 2s", socket.display()),
        }
    }
    found
}

/// The socket of the one shim whose pod `query` names (see `inspect::names`).
pub async fn shim_of(run_dir: &Path, query: &str) -> Result<std::path::PathBuf, String> {
    let matches: Vec<_> = shims(run_dir)
        .await
        .into_iter()
        .filter(|(_, info)| inspect::names(query, info))
        .collect();
    match matches.as_slice() {
        [(socket, _)] => Ok(socket.clone()),
        [] => Err(format!("no pod named {query:?}")),
        _ => Err(format!(
            "{query:?} names {} pods; use the sandbox ID",
            matches.len()
        )),
    }
}
