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

/// A shim's streaming socket, beside its gRPC socket (`stream_socket_beside`).
pub fn shim_stream_socket(run_dir: &Path, shim_id: &str) -> PathBuf {
    stream_socket_beside(&shim_socket(run_dir, shim_id), shim_id)
}

/// The streaming socket of shim `shim_id` whose gRPC socket is `socket`: the one place its
/// name is made, for the shim that binds it and the front that connects to it.
pub fn stream_socket_beside(socket: &Path, shim_id: &str) -> PathBuf {
    socket.with_file_name(format!("{shim_id}.stream.sock"))
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

/// Where a removed pod's directory is renamed to, beside it, until it is deleted: a name that
/// is no shim ID, so nothing takes it for a pod. RemovePodSandbox answers once the rename is
/// done; the front deletes the directory once the shim has exited (`removed_pod`).
pub fn removed_pod_dir(pod_dir: &Path) -> PathBuf {
    let mut name = pod_dir.file_name().unwrap_or_default().to_os_string();
    name.push(REMOVED_SUFFIX);
    pod_dir.with_file_name(name)
}

const REMOVED_SUFFIX: &str = ".removed";

/// The shim ID of a directory entry under the pods directory that `removed_pod_dir` named.
pub fn removed_pod(name: &str) -> Option<&str> {
    name.strip_suffix(REMOVED_SUFFIX)
        .filter(|id| is_shim_id(id))
}

/// The pod's persisted record inside its directory: the base, replaced atomically...
pub const STATE_FILE: &str = "state.json";
/// ...and the newer records written after it (`state_journal`).
pub const JOURNAL_FILE: &str = "state.journal";
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

/// Whether the pod of shim `shim_id` (a container label's value) is surely gone: the value is
/// a shim ID and its directory under `pods_dir` does not exist. Every shim has its directory
/// from before it starts until its pod is removed or given up, so a container labelled with
/// such a shim belongs to no pod. An unreadable directory counts as present: only a sure
/// absence lets anything be removed.
pub fn pod_is_gone(pods_dir: &Path, shim_id: &str) -> bool {
    is_shim_id(shim_id) && matches!(pods_dir.join(shim_id).try_exists(), Ok(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_pod_directory_is_named_for_its_shim_and_taken_for_no_pod() {
        let pod = pod_dir(Path::new("/var/lib/dockpod"), "0123456789abcdef");
        let removed = removed_pod_dir(&pod);
        assert_eq!(
            removed,
            Path::new("/var/lib/dockpod/pods/0123456789abcdef.removed")
        );
        let name = removed.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(!is_shim_id(name));
        assert_eq!(removed_pod(name), Some("0123456789abcdef"));
        assert_eq!(removed_pod("0123456789abcdef"), None);
        assert_eq!(removed_pod("x.removed"), None);
    }

    #[test]
    fn only_a_shim_whose_pod_directory_is_surely_absent_is_gone() {
        let root = tempfile::tempdir().expect("tempdir");
        let pods = pods_dir(root.path());
        let live = "0123456789abcdef";
        let gone = "fedcba9876543210";
        std::fs::create_dir_all(pod_dir(root.path(), live)).expect("mkdir");
        assert!(!pod_is_gone(&pods, live));
        assert!(pod_is_gone(&pods, gone));
        // Not a shim ID of dockpod's: never taken for a gone pod's.
        assert!(!pod_is_gone(&pods, "../../etc"));
        assert!(!pod_is_gone(&pods, ""));
    }
}
