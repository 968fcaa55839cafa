//! The front's persisted state under `--root-directory`: the identity of this dockpod instance
//! (several instances may share one dockerd, and each only ever touches what carries its own
//! identity) and the runtime configuration the kubelet last sent.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dockpod_proto::files::{atomic_write, ensure_dir};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const INSTANCE_FILE: &str = "instance-id";
const RUNTIME_CONFIG_FILE: &str = "runtime-config.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// Pod CIDRs from UpdateRuntimeConfig, comma-separated for dual-stack.
    #[serde(default)]
    pub pod_cidr: String,
}

pub struct RootDir {
    path: PathBuf,
    instance_id: String,
    runtime: Mutex<RuntimeConfig>,
}

impl RootDir {
    /// Opens (creating it 0700 if needed) the root directory, with its instance identity.
    pub fn open(path: &Path) -> Result<Self> {
        ensure_dir(path, 0o700).map_err(Error::io(format!(
            "creating root directory {}",
            path.display()
        )))?;
        let instance_id = load_or_create_instance_id(&path.join(INSTANCE_FILE))?;
        let config_path = path.join(RUNTIME_CONFIG_FILE);
        let runtime = match std::fs::read(&config_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::FailedPrecondition(format!(
                    "runtime configuration {} is corrupt: {e}",
                    config_path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RuntimeConfig::default(),
            Err(e) => {
                return Err(Error::io(format!("reading {}", config_path.display()))(e));
            }
        };
        Ok(RootDir {
            path: path.to_path_buf(),
            instance_id,
            runtime: Mutex::new(runtime),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn runtime_config(&self) -> RuntimeConfig {
        self.runtime.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Validates and records the pod CIDR(s) the kubelet sent, durably.
    pub fn set_pod_cidr(&self, pod_cidr: &str) -> Result<()> {
        validate_cidrs(pod_cidr)?;
        let config = RuntimeConfig {
            pod_cidr: pod_cidr.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::io("encoding runtime configuration")(std::io::Error::other(e)))?;
        let path = self.path.join(RUNTIME_CONFIG_FILE);
        atomic_write(&path, &bytes, 0o600)
            .map_err(Error::io(format!("writing {}", path.display())))?;
        if let Ok(mut current) = self.runtime.lock() {
            *current = config;
        }
        Ok(())
    }
}

fn load_or_create_instance_id(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(id) if is_instance_id(id.trim()) => return Ok(id.trim().to_string()),
        Ok(_) => {
            return Err(Error::FailedPrecondition(format!(
                "instance identity {} is corrupt (expected 16 hex digits)",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    }
    let id = dockpod_proto::layout::random_id().map_err(Error::io("reading /dev/urandom"))?;
    atomic_write(path, id.as_bytes(), 0o600)
        .map_err(Error::io(format!("writing {}", path.display())))?;
    Ok(id)
}

fn is_instance_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Accepts empty, or comma-separated `ADDRESS/PREFIX` with a prefix that fits the family.
fn validate_cidrs(cidrs: &str) -> Result<()> {
    if cidrs.is_empty() {
        return Ok(());
    }
    for cidr in cidrs.split(',') {
        let bad = || Error::InvalidArgument(format!("pod CIDR {cidr:?} is not ADDRESS/PREFIX"));
        let (addr, prefix) = cidr.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_config_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = RootDir::open(dir.path()).expect("open");
        let id = root.instance_id().to_string();
        assert!(is_instance_id(&id));
        root.set_pod_cidr("10.88.0.0/16,fd00:88::/64")
            .expect("set cidr");
        drop(root);
        let again = RootDir::open(dir.path()).expect("reopen");
        assert_eq!(again.instance_id(), id);
        assert_eq!(again.runtime_config().pod_cidr, "10.88.0.0/16,fd00:88::/64");
    }

    #[test]
    fn rejects_bad_cidrs() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "x/8",
            "fd00::/129",
            "10.0.0.0/8,",
        ] {
            assert!(validate_cidrs(bad).is_err(), "{bad}");
        }
        assert!(validate_cidrs("").is_ok());
    }
}
