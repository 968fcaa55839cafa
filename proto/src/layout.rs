//! Where dockpod keeps things on disk: per-shim sockets under the run directory (0700, so only
//! root reaches a shim) and per-pod state under the root directory.

use std::path::{Path, PathBuf};

/// Directory of the shims' sockets, under `--run-directory`.
pub fn shim_socket_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("shims")
}

/// A shim's socket, named by its shim ID (not the sandbox ID, which Docker assigns only once
/// the shim has created the sandbox).
pub fn shim_socket(run_dir: &Path, shim_id: &str) -> PathBuf {
    shim_socket_dir(run_dir).join(format!("{shim_id}.sock"))
}

/// The CNI plugins' VERSION answers, shared by the node's shims (pod-shim's `cni::versions`).
pub fn cni_versions_dir(root_dir: &Path) -> PathBuf {
    root_dir.join("cni-versions")
}

/// Directory of every pod's state, under `--root-directory`.
pub fn pods_dir(root_dir: &Path) -> PathBuf {
    root_dir.join("pods")
}

/// One pod's state directory (state file, shim log).
pub fn pod_dir(root_dir: &Path, shim_id: &str) -> PathBuf {
    pods_dir(root_dir).join(shim_id)
}

/// The pod's persisted state inside its directory.
pub const STATE_FILE: &str = "state.json";
/// The shim's own log inside the pod's directory.
pub const SHIM_LOG: &str = "shim.log";
/// The running shim's PID inside the pod's directory, so the front can tell a shim that is
/// stuck from one that is gone without asking it.
pub const SHIM_PID_FILE: &str = "shim.pid";
/// Written into a pod's directory by the front before it gives the pod up (a failed
/// RunPodSandbox): a front that dies during the clean-up finds it at its next start and
/// finishes the clean-up, instead of taking the half-removed pod for a live one.
pub const ABANDONED_FILE: &str = "abandoned";

/// A fresh random ID of 16 hex digits (shim IDs, instance IDs).
pub fn random_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut urandom, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `s` has the form of a shim ID, so a directory entry can be trusted as one.
pub fn is_shim_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
