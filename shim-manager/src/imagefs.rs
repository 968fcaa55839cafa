//! Usage of Docker's data root for `ImageFsInfo`: bytes and inodes, measured by walking the
//! directory (one file system only, hard links counted once). A walk over a large data root
//! is slow, so a measurement is kept for a while and reported with the time it was taken.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// How long a measurement is reused. The kubelet asks about every 10 s; image GC decisions
/// do not need fresher figures.
const MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Nanoseconds since the epoch when the walk finished.
    pub timestamp_ns: i64,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

#[derive(Clone, Default)]
pub struct UsageCache {
    last: Arc<Mutex<Option<(PathBuf, Usage)>>>,
}

impl UsageCache {
    /// Usage of `root`, measured now or at most `MAX_AGE` ago. Concurrent callers share one
    /// walk: the lock is held across it on purpose.
    pub async fn usage(&self, root: &Path) -> Result<Usage> {
        let mut last = self.last.lock().await;
        if let Some((path, usage)) = last.as_ref() {
            if path == root && age(usage.timestamp_ns) < MAX_AGE {
                return Ok(*usage);
            }
        }
        let owned = root.to_path_buf();
        let usage = tokio::task::spawn_blocking(move || measure(&owned))
            .await
            .map_err(|e| Error::io("measuring the image filesystem")(std::io::Error::other(e)))??;
        *last = Some((root.to_path_buf(), usage));
        Ok(usage)
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn age(timestamp_ns: i64) -> Duration {
    Duration::from_nanos(now_ns().saturating_sub(timestamp_ns).max(0) as u64)
}

/// Walks `root` without leaving its file system; bytes are allocated blocks, so sparse files
/// count for what they occupy.
pub fn measure(root: &Path) -> Result<Usage> {
    let top = std::fs::symlink_metadata(root)
        .map_err(Error::io(format!("reading {}", root.display())))?;
    let mut seen_links = HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    for entry in walkdir::WalkDir::new(root).same_file_system(true) {
        // Files vanish under a running dockerd; what cannot be read is simply not counted.
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.dev() != top.dev() {
            continue;
        }
        if meta.nlink() > 1 && !meta.is_dir() && !seen_links.insert(meta.ino()) {
            continue;
        }
        inodes += 1;
        bytes += meta.blocks() * 512;
    }
    Ok(Usage {
        timestamp_ns: now_ns(),
        used_bytes: bytes,
        inodes_used: inodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_dirs_and_hard_links_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(sub.join("a"), vec![7u8; 64 * 1024]).expect("write");
        std::fs::hard_link(sub.join("a"), sub.join("b")).expect("link");
        let usage = measure(dir.path()).expect("measure");
        // root dir, sub dir, one inode for a and b.
        assert_eq!(usage.inodes_used, 3);
        assert!(usage.used_bytes >= 64 * 1024, "{usage:?}");
        assert!(usage.used_bytes < 3 * 64 * 1024, "{usage:?}");
        assert!(usage.timestamp_ns > 0);
    }

    #[test]
    fn missing_root_is_an_error() {
        assert!(measure(Path::new("/nonexistent/dockpod")).is_err());
    }
}
