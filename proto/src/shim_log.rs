//! A shim's own log (`shim.log` in its pod directory, the shim's stderr): bounded in size with
//! one older file kept beside it (`shim.log.1`), and read back only by its tail. A shim lives as
//! long as its pod, which is weeks; its log may not grow for as long.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Size past which the log is rotated: the current file and one older one are kept, so a pod's
/// shim logs take at most about twice this.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// How much of the log's end `tail` reads.
const TAIL_BYTES: u64 = 16 * 1024;

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Opens the log to append (0600), rotating it first when it has grown past `MAX_BYTES`.
pub fn open(path: &Path) -> io::Result<File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_BYTES) {
        std::fs::rename(path, rotated(path))?;
    }
    OpenOptions::new()
        .mode(0o600)
        .create(true)
        .append(true)
        .open(path)
}

/// For a shim whose stderr is the log at `path`: rotates it once it has grown past
/// `MAX_BYTES` and points stderr at the fresh file. Returns whether it rotated; a stderr that
/// is not that file (a shim run by hand) is left alone.
pub fn rotate_stderr(path: &Path) -> io::Result<bool> {
    let stderr = io::stderr();
    let own = nix::sys::stat::fstat(&stderr).map_err(io::Error::from)?;
    let Ok(file) = std::fs::metadata(path) else {
        return Ok(false);
    };
    let is_log = own.st_dev == file.dev() && own.st_ino == file.ino();
    if !is_log || file.len() <= MAX_BYTES {
        return Ok(false);
    }
    let fresh = open(path)?;
    nix::unistd::dup2_stderr(&fresh).map_err(io::Error::from)?;
    Ok(true)
}

/// The last `lines` lines of the log (from its last 16 KiB), oldest first; empty when there
/// is none.
pub fn tail(path: &Path, lines: usize) -> Vec<String> {
    let read = || -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
        let mut end = Vec::new();
        file.read_to_end(&mut end)?;
        Ok(end)
    };
    let end = read().unwrap_or_default();
    let text = String::from_utf8_lossy(&end);
    let mut last: Vec<String> = text.lines().rev().take(lines).map(str::to_string).collect();
    last.reverse();
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_large_log_is_rotated_when_opened_and_only_its_tail_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shim.log");
        let mut log = open(&path).expect("open");
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..(MAX_BYTES / 100 + 1) {
            log.write_all(line.as_bytes()).expect("write");
        }
        log.write_all(b"second to last\nlast\n").expect("write");
        assert_eq!(tail(&path, 2), vec!["second to last", "last"]);
        drop(log);
        let mut log = open(&path).expect("open again");
        log.write_all(b"fresh\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "fresh\n");
        assert!(std::fs::metadata(rotated(&path)).expect("kept").len() > MAX_BYTES);
        assert!(tail(&dir.path().join("none"), 5).is_empty());
    }
}
