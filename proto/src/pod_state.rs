//! The part of a pod's saved record (written by its shim, `state_journal`) that the front
//! reads when it starts: enough to index the pod and to start a new shim for it without
//! asking the old one, which may be gone or stuck. The record is read as the shim's own
//! `PodRecord`.

use std::path::Path;

use crate::pod_record::PodRecord;

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
        let record: PodRecord = serde_json::from_slice(bytes)?;
        Ok(PodSummary {
            display: record.display_name(),
            sandbox_id: record.sandbox_id,
            container_ids: record.containers.into_keys().collect(),
        })
    }

    /// The summary of the pod whose state directory is `pod_dir`; `None` when it has no saved
    /// record (a shim that never got as far as saving one).
    pub fn load(pod_dir: &Path) -> std::io::Result<Option<PodSummary>> {
        match crate::state_journal::read(pod_dir)? {
            Some(bytes) => PodSummary::parse(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            None => Ok(None),
        }
    }
}

/// The PID in a shim's PID file, if it names a live process started with this shim's ID (a
/// PID reused by some other process does not count).
pub fn live_shim_pid(pod_dir: &Path, shim_id: &str) -> Option<u32> {
    let text = std::fs::read_to_string(pod_dir.join(crate::layout::SHIM_PID_FILE)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (serves_shim(&cmdline, shim_id) && crate::procfs::alive(pid)).then_some(pid)
}

/// Every live process started as a serving shim of `shim_id` (a `--clean-up` run does not
/// count), found in /proc. Unlike the PID file, which a shim writes once its sockets are
/// bound, this sees a shim from its first instruction: a front that starts while a shim of
/// an unfinished pod is still starting must not take it for dead.
pub fn shim_processes(shim_id: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| serves_shim(&cmdline, shim_id))
                && crate::procfs::alive(*pid)
        })
        .collect()
}

/// Whether a NUL-separated command line is that of a serving shim of `shim_id`.
fn serves_shim(cmdline: &[u8], shim_id: &str) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let named = args
        .windows(2)
        .any(|w| w[0] == b"--shim-id" && w[1] == shim_id.as_bytes());
    named && !args.contains(&&b"--clean-up"[..])
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
    fn a_shim_is_named_by_its_id_and_a_clean_up_run_is_not_one() {
        let id = "0123456789abcdef";
        let serving = format!("/usr/bin/pod-shim\0--shim-id\0{id}\0--daemonize\0");
        assert!(serves_shim(serving.as_bytes(), id));
        assert!(!serves_shim(serving.as_bytes(), "fedcba9876543210"));
        let cleaning = format!("/usr/bin/pod-shim\0--shim-id\0{id}\0--clean-up\0");
        assert!(!serves_shim(cleaning.as_bytes(), id));
        assert!(!serves_shim(format!("sleep\0{id}\0").as_bytes(), id));
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
