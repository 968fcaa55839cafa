//! Figures of a process read from `/proc`: memory, for the per-pod accounting that `ps` shows
//! and the shim budget (PSS from `smaps_rollup`, RSS from `status`), and capabilities, for
//! what the host lets dockpod ask of Docker.

use std::io;
use std::path::PathBuf;

/// Resident and proportional set size of one process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss_bytes: u64,
    pub pss_bytes: u64,
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Reads RSS and PSS of `pid`. PSS needs `smaps_rollup` (Linux 4.14+); where it is missing the
/// PSS is reported as 0 rather than failing the whole reading.
pub fn memory(pid: u32) -> io::Result<Memory> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(base.join("status"))?;
    let rss_bytes = kib_field(&status, "VmRSS:").unwrap_or(0) * 1024;
    let pss_bytes = match std::fs::read_to_string(base.join("smaps_rollup")) {
        Ok(rollup) => kib_field(&rollup, "Pss:").unwrap_or(0) * 1024,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok(Memory {
        rss_bytes,
        pss_bytes,
    })
}

/// Finds `name  <n> kB` in a `/proc` key-value file and returns `n`.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Bit of CAP_SYS_RESOURCE in the capability sets of `/proc/<pid>/status`: without it no
/// process may lower an OOM score below its own.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Whether capability `bit` is in the effective set of a `/proc/<pid>/status` text; `None`
/// when the text has no readable `CapEff` line.
pub fn capability_effective(status: &str, bit: u32) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let mask = u64::from_str_radix(hex, 16).ok()?;
    Some(mask & (1 << bit) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capability_bits() {
        let without = "CapEff:\t000001fffeffffff\n";
        assert_eq!(capability_effective(without, CAP_SYS_RESOURCE), Some(false));
        let with = "CapEff:\t000001ffffffffff\n";
        assert_eq!(capability_effective(with, CAP_SYS_RESOURCE), Some(true));
        assert_eq!(capability_effective("", CAP_SYS_RESOURCE), None);
    }

    #[test]
    fn parses_kib_fields() {
        let text = "Name:\tx\nVmRSS:\t    2048 kB\nPss:   12 kB\n";
        assert_eq!(kib_field(text, "VmRSS:"), Some(2048));
        assert_eq!(kib_field(text, "Pss:"), Some(12));
        assert_eq!(kib_field(text, "Missing:"), None);
    }

    #[test]
    fn reads_own_memory() {
        let m = memory(std::process::id()).expect("own /proc entry");
        assert!(m.rss_bytes > 0);
    }
}
