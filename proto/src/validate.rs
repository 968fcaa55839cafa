//! Checks on what a CRI request names, before any side effect: object IDs, Kubernetes names,
//! label maps, and log paths that must stay inside the kubelet's log directory.

use std::path::{Component, Path, PathBuf};

/// Longest ID accepted; Docker's are 64 hex digits.
pub const MAX_ID: usize = 128;
/// Longest Kubernetes object name (a DNS subdomain).
pub const MAX_NAME: usize = 253;
/// Most labels or annotations on one object, and the longest key and value.
pub const MAX_LABELS: usize = 512;
pub const MAX_LABEL_KEY: usize = 1024;
pub const MAX_LABEL_VALUE: usize = 64 * 1024;
/// Longest path accepted (PATH_MAX).
pub const MAX_PATH: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// An object ID: non-empty, bounded, letters, digits, `-`, `_` and `.` only (so it is safe in a
/// path and a Docker filter).
pub fn id(kind: &str, id: &str) -> Result<(), Invalid> {
    if id.is_empty() {
        return Err(Invalid(format!("{kind} ID is empty")));
    }
    if id.len() > MAX_ID {
        return Err(Invalid(format!(
            "{kind} ID of {} bytes is too long",
            id.len()
        )));
    }
    if id.starts_with('.')
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Invalid(format!(
            "{kind} ID {id:?} has characters other than letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// The image ID `name` is, as Docker gives IDs (`sha256:<64 lowercase hex digits>`), when it
/// is one: written so, or as the bare hex digits, which Docker also takes for an ID. None for
/// anything else (a reference, or a malformed ID, which the caller refuses or passes on).
pub fn image_id(name: &str) -> Option<String> {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| format!("sha256:{hex}"))
}

/// A Kubernetes name as it appears in Docker names (`k8s_..._...`): non-empty, bounded, and
/// free of `_` (the separator) and anything Docker's names do not allow.
pub fn name(kind: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid(format!("{kind} is empty")));
    }
    if name.len() > MAX_NAME {
        return Err(Invalid(format!(
            "{kind} {name:?} is longer than {MAX_NAME} bytes"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    {
        return Err(Invalid(format!(
            "{kind} {name:?} may only contain letters, digits, '-' and '.'"
        )));
    }
    Ok(())
}

/// Labels or annotations: bounded count and sizes.
pub fn labels<'a>(
    kind: &str,
    map: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), Invalid> {
    for (n, (k, v)) in map.into_iter().enumerate() {
        if n >= MAX_LABELS {
            return Err(Invalid(format!("more than {MAX_LABELS} {kind}")));
        }
        if k.is_empty() || k.len() > MAX_LABEL_KEY {
            return Err(Invalid(format!("{kind} key {k:?} is empty or too long")));
        }
        if v.len() > MAX_LABEL_VALUE {
            return Err(Invalid(format!(
                "{kind} {k:?} has a value longer than {MAX_LABEL_VALUE} bytes"
            )));
        }
    }
    Ok(())
}

/// The kubelet's log directory of a pod: empty (no logs) or absolute, with no `..`.
pub fn log_directory(dir: &str) -> Result<(), Invalid> {
    if dir.is_empty() {
        return Ok(());
    }
    if dir.len() > MAX_PATH {
        return Err(Invalid("log directory is too long".into()));
    }
    let path = Path::new(dir);
    if !path.is_absolute() {
        return Err(Invalid(format!("log directory {dir:?} is not absolute")));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Invalid(format!("log directory {dir:?} contains '..'")));
    }
    if dir.contains('\0') {
        return Err(Invalid(format!("log directory {dir:?} contains NUL")));
    }
    Ok(())
}

/// The full log file of a container: `log_path` is relative to the pod's `log_directory` and
/// may not leave it (no absolute path, no `..`). Empty `log_path` means no log file.
pub fn log_file(log_directory: &str, log_path: &str) -> Result<Option<PathBuf>, Invalid> {
    if log_path.is_empty() {
        return Ok(None);
    }
    self::log_directory(log_directory)?;
    if log_directory.is_empty() {
        return Err(Invalid(format!(
            "container log path {log_path:?} given but the pod has no log directory"
        )));
    }
    if log_path.len() > MAX_PATH {
        return Err(Invalid("container log path is too long".into()));
    }
    let rel = Path::new(log_path);
    let escapes = rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes || log_path.contains('\0') {
        return Err(Invalid(format!(
            "container log path {log_path:?} escapes the pod's log directory {log_directory:?}"
        )));
    }
    Ok(Some(Path::new(log_directory).join(rel)))
}

/// A pod sandbox configuration: metadata present, names usable in Docker names, log
/// directory absolute, labels bounded. Returns the metadata.
pub fn sandbox_config(
    config: &crate::cri::PodSandboxConfig,
) -> Result<&crate::cri::PodSandboxMetadata, Invalid> {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| Invalid("pod sandbox metadata is missing".into()))?;
    name("pod name", &meta.name)?;
    name("pod namespace", &meta.namespace)?;
    name("pod uid", &meta.uid)?;
    log_directory(&config.log_directory)?;
    labels("labels", &config.labels)?;
    labels("annotations", &config.annotations)?;
    if !config.hostname.is_empty() {
        name("hostname", &config.hostname)?;
    }
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    user_namespace("pod sandbox", options)?;
    Ok(meta)
}

/// Refuses a user namespace of the pod's (or container's) own: Docker runs every container of
/// an engine in one user namespace (the node's, or the daemon-wide `userns-remap`) and cannot
/// give a pod ID mappings of its own, so such a request is never run as something else. Mode
/// NODE without mappings is what every pod gets.
pub fn user_namespace(
    what: &str,
    options: Option<&crate::cri::NamespaceOption>,
) -> Result<(), Invalid> {
    use crate::cri::NamespaceMode;
    let Some(userns) = options.and_then(|o| o.userns_options.as_ref()) else {
        return Ok(());
    };
    let mode = NamespaceMode::try_from(userns.mode)
        .map(|m| m.as_str_name())
        .unwrap_or("unknown");
    if userns.mode != NamespaceMode::Node as i32 {
        return Err(Invalid(format!(
            "{what} asks for a user namespace in mode {mode}: Docker cannot give a pod user ID mappings of its own, so dockpod runs pods only in the node's user namespace (hostUsers: true)"
        )));
    }
    if !userns.uids.is_empty() || !userns.gids.is_empty() {
        return Err(Invalid(format!(
            "{what} gives user namespace ID mappings with mode NODE: the node's user namespace has no mappings to set"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_image_id_is_an_image_id() {
        let hex = "0123456789abcdef".repeat(4);
        let id = format!("sha256:{hex}");
        assert_eq!(image_id(&id), Some(id.clone()));
        assert_eq!(image_id(&hex), Some(id));
        for name in [
            "busybox",
            "busybox:latest",
            "sha256:0123",
            &format!("sha256:{}", "0123456789ABCDEF".repeat(4)),
            &format!("sha256:{hex}0"),
            &format!("sha256:sha256:{hex}"),
            &format!("localhost/x@sha256:{hex}"),
        ] {
            assert_eq!(image_id(name), None, "{name}");
        }
    }

    #[test]
    fn ids() {
        assert!(id("container", &"a".repeat(64)).is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(id("container", bad).is_err(), "{bad}");
        }
        assert!(id("container", &"a".repeat(200)).is_err());
    }

    #[test]
    fn names() {
        assert!(name("pod name", "web-0.x").is_ok());
        for bad in ["", "a_b", "a/b", "A B"] {
            assert!(name("pod name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_paths_stay_inside_the_directory() {
        assert_eq!(
            log_file("/var/log/pods/x", "app/0.log").expect("ok"),
            Some(PathBuf::from("/var/log/pods/x/app/0.log"))
        );
        assert_eq!(log_file("/var/log/pods/x", "").expect("ok"), None);
        for bad in ["../0.log", "/etc/passwd", "app/../../0.log"] {
            assert!(log_file("/var/log/pods/x", bad).is_err(), "{bad}");
        }
        assert!(log_file("relative", "0.log").is_err());
        assert!(log_file("/var/log/../x", "0.log").is_err());
        assert!(log_file("", "0.log").is_err());
        assert!(
            log_file("/var/log/\0x", "0.log").is_err(),
            "found by the fuzz test"
        );
    }
}
