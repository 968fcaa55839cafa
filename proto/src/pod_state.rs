//! The part of a pod's state file (written by its shim, `layout::STATE_FILE`) that the front
//! reads when it starts: enough to index the pod and to start a new shim for it without
//! asking the old one, which may be gone or stuck. Unknown fields are ignored, so the shim's
//! record can grow without the front following.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
struct Record {
    sandbox_id: String,
    config: Config,
    containers: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
struct Config {
    metadata: Option<Metadata>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
struct Metadata {
    name: String,
    namespace: String,
}

/// A pod as its state file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    pub sandbox_id: String,
    /// `namespace/name`
    pub display: String,
    pub container_ids: Vec<String>,
}

impl PodSummary {
    pub fn parse(bytes: &[u8]) -> Result<PodSummary, serde_json::Error> {
        let record: Record = serde_json::from_slice(bytes)?;
        let meta = record.config.metadata.unwrap_or_default();
        Ok(PodSummary {
            sandbox_id: record.sandbox_id,
            display: format!("{}/{}", meta.namespace, meta.name),
            container_ids: record.containers.into_keys().collect(),
        })
    }

    /// The summary of the pod whose state directory is `pod_dir`; `None` when it has no state
    /// file (a shim that never got as far as saving one).
    pub fn load(pod_dir: &Path) -> std::io::Result<Option<PodSummary>> {
        match std::fs::read(pod_dir.join(crate::layout::STATE_FILE)) {
            Ok(bytes) => PodSummary::parse(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The PID in a shim's PID file, if it names a live process started with this shim's ID (a
/// PID reused by some other process does not count).
pub fn live_shim_pid(pod_dir: &Path, shim_id: &str) -> Option<u32> {
    let text = std::fs::read_to_string(pod_dir.join(crate::layout::SHIM_PID_FILE)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0);
    let named = args.any(|a| a == b"--shim-id") && args.next() == Some(shim_id.as_bytes());
    (named && crate::procfs::alive(pid)).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_identity_and_containers_ignoring_the_rest() {
        let json = br#"{"shim_id":"s","sandbox_id":"abc","ready":true,
            "config":{"metadata":{"name":"web","uid":"u","namespace":"default","attempt":1},"hostname":"h"},
            "containers":{"c1":{"id":"c1"},"c2":{"id":"c2"}},"future":[1]}"#;
        let s = PodSummary::parse(json).expect("parse");
        assert_eq!(s.sandbox_id, "abc");
        assert_eq!(s.display, "default/web");
        assert_eq!(s.container_ids, vec!["c1", "c2"]);
    }

    #[test]
    fn a_missing_state_file_is_none_and_a_foreign_pid_is_not_a_shim() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(PodSummary::load(dir.path()).expect("load"), None);
        std::fs::write(
            dir.path().join(crate::layout::SHIM_PID_FILE),
            format!("{}\n", std::process::id()),
        )
        .expect("pid file");
        // This test process is alive but is no shim of that ID.
        assert_eq!(live_shim_pid(dir.path(), "0123456789abcdef"), None);
        std::fs::write(dir.path().join(crate::layout::STATE_FILE), b"{not json").expect("state");
        assert!(PodSummary::load(dir.path()).is_err());
    }
}
