//! What a Docker engine can do, decided by the Engine API version negotiated with it. This is
//! the one place where dockpod's behaviour depends on the engine's version: the front (for
//! what Status advertises) and the shims (for how requests are translated) both ask here.
//!
//! Supported: API 1.41 (Docker 20.10) up to what the engine speaks (1.51 for Docker 28).

use std::fmt;

/// An Engine API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: usize,
    pub minor: usize,
}

impl ApiVersion {
    pub const fn new(major: usize, minor: usize) -> ApiVersion {
        ApiVersion { major, minor }
    }

    /// Parses `1.45` (as the engine reports it).
    pub fn parse(text: &str) -> Option<ApiVersion> {
        let (major, minor) = text.trim().split_once('.')?;
        Some(ApiVersion::new(major.parse().ok()?, minor.parse().ok()?))
    }

    /// Read-only binds are recursively read-only unless the request says otherwise, and the
    /// Mounts API takes `BindOptions.ReadOnlyNonRecursive` and `ReadOnlyForceRecursive`
    /// (API 1.44, Docker 25). Before, every read-only bind was read-only on its top mount
    /// only, and nothing could make it recursive.
    pub fn recursive_read_only_binds(self) -> bool {
        self >= ApiVersion::new(1, 44)
    }

    /// Mounts of `Type: image` (an image's filesystem, read-only, in another container) with
    /// `ImageOptions.Subpath`: API 1.48 (Docker 28). The CRI's image volumes (KEP-4639).
    pub fn image_mounts(self) -> bool {
        self >= IMAGE_MOUNTS
    }

    /// `docker info` reports `CDISpecDirs` (API 1.46, Docker 27.1): empty there when the
    /// daemon has CDI off, and CDI device requests (driver `cdi`) are refused by the daemon.
    pub fn reports_cdi(self) -> bool {
        self >= ApiVersion::new(1, 46)
    }
}

/// The first API version with image mounts (see `ApiVersion::image_mounts`).
pub const IMAGE_MOUNTS: ApiVersion = ApiVersion::new(1, 48);

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The first Linux release with `mount_setattr`, which makes a mount recursively read-only.
pub const MOUNT_SETATTR_KERNEL: (u32, u32) = (5, 12);

/// Whether the kernel can make a mount recursively read-only (`mount_setattr`), from its
/// release string (`uname -r`). An unreadable release counts as too old.
pub fn kernel_has_mount_setattr(release: &str) -> bool {
    kernel_version(release).is_some_and(|v| v >= MOUNT_SETATTR_KERNEL)
}

/// A kernel's `(major, minor)` from its release string: `5.10.0-28-amd64` → (5, 10).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

/// The running kernel's release string.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        let v = ApiVersion::parse("1.45").expect("parse");
        assert_eq!(v, ApiVersion::new(1, 45));
        assert!(v.recursive_read_only_binds());
        assert!(!ApiVersion::parse("1.41")
            .expect("parse")
            .recursive_read_only_binds());
        assert!(ApiVersion::new(1, 9) < ApiVersion::new(1, 41));
        assert_eq!(ApiVersion::parse("1"), None);
        assert_eq!(ApiVersion::new(1, 51).to_string(), "1.51");
        assert!(!ApiVersion::new(1, 45).image_mounts());
        assert!(ApiVersion::new(1, 48).image_mounts() && ApiVersion::new(1, 51).image_mounts());
        assert!(!ApiVersion::new(1, 45).reports_cdi() && ApiVersion::new(1, 46).reports_cdi());
    }

    #[test]
    fn mount_setattr_arrived_in_5_12() {
        assert!(kernel_has_mount_setattr("6.1.0-28-amd64"));
        assert!(kernel_has_mount_setattr("5.12.0"));
        assert!(!kernel_has_mount_setattr("5.10.0-30-amd64"));
        assert!(!kernel_has_mount_setattr("4.19.0"));
        assert!(!kernel_has_mount_setattr(""));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(kernel_version("5.4.0-generic"), Some((5, 4)));
        assert_eq!(kernel_version("4.19rc1"), Some((4, 19)));
        assert_eq!(kernel_version("6.18.44-fc-v1098\n"), Some((6, 18)));
        assert_eq!(kernel_version("garbage"), None);
    }
}
