//! The CNI versions each plugin binary speaks (its answer to VERSION), kept on disk for every
//! shim of the node. A shim lives for one pod, so a cache of its own would ask again for each
//! pod: one plugin process per plugin of the chain on every RunPodSandbox, 4 ms each here.
//! An answer is used only while the binary is the one that gave it (same device, inode, size
//! and modification time), so an upgraded plugin is asked again.
//!
//! One small JSON file per binary, replaced by rename: a shim that reads while another writes
//! sees the old answer or the new one. The files are not synced: a torn one fails to parse
//! and the plugin is asked again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What tells one build of a plugin binary from another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

impl Identity {
    /// The binary's identity now; `None` when it cannot be read (the plugin is then asked).
    pub async fn of(binary: &Path) -> Option<Identity> {
        let meta = tokio::fs::metadata(binary).await.ok()?;
        Some(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    binary: PathBuf,
    identity: Identity,
    supported: Vec<String>,
}

/// The node's cache of VERSION answers; `dir` is `None` when there is none (every ADD asks).
#[derive(Debug, Clone, Default)]
pub struct VersionCache {
    pub dir: Option<PathBuf>,
}

impl VersionCache {
    fn file(&self, binary: &Path) -> Option<PathBuf> {
        let name: String = binary
            .to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Some(self.dir.as_ref()?.join(format!("{name}.json")))
    }

    /// The versions `binary` answered when it was `identity`, if they are kept.
    pub async fn get(&self, binary: &Path, identity: &Identity) -> Option<Vec<String>> {
        let bytes = tokio::fs::read(self.file(binary)?).await.ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        (entry.binary == binary && entry.identity == *identity).then_some(entry.supported)
    }

    /// Keeps the answer of `binary` as it was `identity` (read before it was asked). A cache
    /// that cannot be written costs only the next ask; it is logged, not an error.
    pub async fn put(&self, binary: &Path, identity: Identity, supported: &[String]) {
        let (Some(dir), Some(file)) = (self.dir.as_ref(), self.file(binary)) else {
            return;
        };
        let entry = Entry {
            binary: binary.to_path_buf(),
            identity,
            supported: supported.to_vec(),
        };
        let written = async {
            tokio::fs::create_dir_all(dir).await?;
            let bytes = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
            // Unique per process, so two shims writing at once do not share a temporary file.
            let temp = file.with_extension(format!("json.{}", std::process::id()));
            tokio::fs::write(&temp, bytes).await?;
            tokio::fs::rename(&temp, &file).await
        };
        if let Err(e) = written.await {
            tracing::warn!(error = %e, file = %file.display(), "keeping a CNI plugin's versions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_holds_while_the_binary_is_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("bridge");
        std::fs::write(&binary, b"one build").expect("binary");
        let cache = VersionCache {
            dir: Some(dir.path().join("cache")),
        };
        let identity = Identity::of(&binary).await.expect("identity");
        assert_eq!(cache.get(&binary, &identity).await, None);
        let supported = vec!["0.4.0".to_string(), "1.0.0".to_string()];
        cache.put(&binary, identity.clone(), &supported).await;
        assert_eq!(cache.get(&binary, &identity).await, Some(supported));

        // An upgrade writes a new file in its place.
        std::fs::write(dir.path().join("bridge.new"), b"another, longer build").expect("new");
        std::fs::rename(dir.path().join("bridge.new"), &binary).expect("replace");
        let upgraded = Identity::of(&binary).await.expect("identity");
        assert_ne!(upgraded, identity);
        assert_eq!(cache.get(&binary, &upgraded).await, None);

        // A torn file is a miss, not an error.
        std::fs::write(cache.file(&binary).expect("file"), b"{\"binary\":").expect("torn");
        assert_eq!(cache.get(&binary, &identity).await, None);
    }
}
