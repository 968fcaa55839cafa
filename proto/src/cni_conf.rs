//! CNI network configurations: finding the first valid one in a configuration directory, as
//! the kubelet's CNI convention has it. The front reports readiness from it and the pod shims
//! set pods up with it, so both read the directory the same way.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A CNI network configuration that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct CniNetwork {
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// Plugin types in chain order.
    pub plugins: Vec<String>,
    /// The plugins' configurations in chain order, as the file has them.
    pub plugin_confs: Vec<Value>,
}

/// Loads the first valid network configuration in `conf_dir` (files sorted by name, `.conflist`,
/// `.conf` and `.json`, as the kubelet's CNI convention has it). On failure the message lists
/// why each candidate was rejected.
pub fn find_cni_network(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<CniNetwork, String> {
    let entries = std::fs::read_dir(conf_dir).map_err(|e| {
        format!(
            "no CNI configuration: cannot read {}: {e}",
            conf_dir.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        match load_cni_file(&file, bin_dirs) {
            Ok(net) => return Ok(net),
            Err(problem) => problems.push(format!("{}: {problem}", file.display())),
        }
    }
    if problems.is_empty() {
        Err(format!(
            "no CNI network configuration in {}",
            conf_dir.display()
        ))
    } else {
        Err(format!(
            "no valid CNI network configuration in {}: {}",
            conf_dir.display(),
            problems.join("; ")
        ))
    }
}

fn load_cni_file(file: &Path, bin_dirs: &[PathBuf]) -> Result<CniNetwork, String> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    let conf: Value = serde_json::from_slice(&text).map_err(|e| format!("invalid JSON: {e}"))?;
    let is_list = file.extension().and_then(|e| e.to_str()) == Some("conflist");
    let name = non_empty_str(&conf, "name")?;
    let cni_version = non_empty_str(&conf, "cniVersion")?;
    // The name becomes part of cache file names.
    if name.contains('/') || name.starts_with('.') {
        return Err(format!("network name {name:?} is not a plain name"));
    }
    // A single-plugin .conf is a list of one.
    let plugins: Vec<Value> = if is_list {
        match conf.get("plugins") {
            Some(Value::Array(list)) if !list.is_empty() => list.clone(),
            _ => return Err("\"plugins\" must be a non-empty list".into()),
        }
    } else {
        vec![conf.clone()]
    };
    let mut types = Vec::with_capacity(plugins.len());
    for plugin in &plugins {
        let kind = non_empty_str(plugin, "type")?;
        if kind.contains('/') || kind.contains("..") {
            return Err(format!("plugin type {kind:?} is not a plain name"));
        }
        if !bin_dirs.iter().any(|d| d.join(&kind).is_file()) {
            let dirs: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(format!("plugin {kind:?} not found in {}", dirs.join(", ")));
        }
        types.push(kind);
    }
    Ok(CniNetwork {
        file: file.to_path_buf(),
        name,
        cni_version,
        plugins: types,
        plugin_confs: plugins,
    })
}

fn non_empty_str(v: &Value, key: &str) -> Result<String, String> {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("{key:?} is missing or not a non-empty string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("net.d");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&conf).expect("mkdir");
        std::fs::create_dir_all(&bin).expect("mkdir");
        for p in ["bridge", "portmap"] {
            std::fs::write(bin.join(p), b"").expect("write plugin");
        }
        (dir, conf, bin)
    }

    #[test]
    fn picks_first_valid_file_by_name() {
        let (_d, conf, bin) = fixture();
        std::fs::write(conf.join("05-broken.conflist"), b"{not json").expect("write");
        std::fs::write(
            conf.join("10-pods.conflist"),
            br#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .expect("write");
        std::fs::write(
            conf.join("20-other.conf"),
            br#"{"cniVersion":"0.4.0","name":"other","type":"bridge"}"#,
        )
        .expect("write");
        let net = find_cni_network(&conf, &[bin]).expect("valid network");
        assert_eq!(net.name, "pods");
        assert_eq!(net.plugins, vec!["bridge", "portmap"]);
    }

    #[test]
    fn explains_why_nothing_is_valid() {
        let (_d, conf, bin) = fixture();
        assert!(find_cni_network(&conf, std::slice::from_ref(&bin))
            .unwrap_err()
            .contains("no CNI network configuration"));
        std::fs::write(
            conf.join("10-x.conflist"),
            br#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"macvlan"}]}"#,
        )
        .expect("write");
        std::fs::write(
            conf.join("11-y.conf"),
            br#"{"cniVersion":"1.0.0","type":"bridge"}"#,
        )
        .expect("write");
        let err = find_cni_network(&conf, &[bin]).unwrap_err();
        assert!(err.contains("plugin \"macvlan\" not found"), "{err}");
        assert!(err.contains("\"name\" is missing"), "{err}");
    }

    #[test]
    fn rejects_path_like_plugin_types() {
        let (_d, conf, bin) = fixture();
        std::fs::write(
            conf.join("10-x.conf"),
            br#"{"cniVersion":"1.0.0","name":"x","type":"../bridge"}"#,
        )
        .expect("write");
        assert!(find_cni_network(&conf, &[bin])
            .unwrap_err()
            .contains("not a plain name"));
    }
}
