//! Puts the pod's short sandbox ID on the shim's command line once Docker has assigned it, so
//! `ps` shows which process supervises which pod. The front starts the shim with a placeholder
//! argument of the same length; the shim overwrites those bytes of its own argv through
//! `/proc/self/mem` (no privilege needed, unlike `prctl(PR_SET_MM)`).

use std::io::{self, Seek, SeekFrom, Write};

/// Argument the front passes before the sandbox exists: as long as a short ID.
pub const PLACEHOLDER: &str = "............";
/// Length of a short Docker ID.
pub const SHORT_ID: usize = 12;

/// Replaces the placeholder argument with the first 12 characters of `sandbox_id`.
pub fn show_sandbox(sandbox_id: &str) -> io::Result<()> {
    let short = sandbox_id.get(..SHORT_ID).unwrap_or(sandbox_id);
    if short.len() != PLACEHOLDER.len() {
        return Ok(());
    }
    let cmdline = std::fs::read("/proc/self/cmdline")?;
    let Some(offset) = arg_offset(&cmdline, PLACEHOLDER.as_bytes()) else {
        return Ok(());
    };
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let arg_start = arg_start(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no arg_start in /proc/self/stat",
        )
    })?;
    let mut mem = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")?;
    mem.seek(SeekFrom::Start(arg_start + offset as u64))?;
    mem.write_all(short.as_bytes())
}

/// Byte offset of the NUL-delimited argument equal to `arg`.
fn arg_offset(cmdline: &[u8], arg: &[u8]) -> Option<usize> {
    let mut offset = 0;
    for a in cmdline.split(|b| *b == 0) {
        if a == arg {
            return Some(offset);
        }
        offset += a.len() + 1;
    }
    None
}

/// Field 48 of `/proc/PID/stat` (the address of argv); fields are counted after the command
/// name, which is parenthesised and may contain spaces.
fn arg_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace()
        .nth(48 - 3)
        .and_then(|f| f.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_arguments_and_argv_address() {
        let cmdline = b"pod-shim\0--sandbox\0............\0";
        assert_eq!(arg_offset(cmdline, PLACEHOLDER.as_bytes()), Some(19));
        assert_eq!(arg_offset(cmdline, b"x"), None);
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        assert!(arg_start(&stat).expect("arg_start") > 0);
    }
}
