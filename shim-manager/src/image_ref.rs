//! What the kubelet may name an image by, checked before anything reaches Docker: an image ID
//! (`sha256:<64 hex>` or the bare 64 hex digits) or a reference in the distribution grammar
//! (`[registry/]repository[:tag][@digest]`, with `:latest` implied when neither is given).

use oci_spec::distribution::Reference;

use crate::error::{Error, Result};

/// Longest image name accepted; references are at most 255 characters of repository plus a
/// registry, tag and digest, so anything longer is garbage.
const MAX_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    /// A full image ID, normalised to `sha256:<hex>`.
    Id(String),
    Reference(Reference),
}

impl ImageName {
    pub fn parse(name: &str) -> Result<Self> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("image reference is empty".into()));
        }
        if name.len() > MAX_LEN {
            return Err(Error::InvalidArgument(format!(
                "image reference of {} bytes is longer than {MAX_LEN}",
                name.len()
            )));
        }
        if let Some(id) = dockpod_proto::validate::image_id(name) {
            return Ok(ImageName::Id(id));
        }
        if name.starts_with("sha256:") {
            return Err(Error::InvalidArgument(format!(
                "image ID {name:?} is not sha256: followed by 64 lowercase hex digits"
            )));
        }
        let reference = Reference::try_from(name).map_err(|e| {
            Error::InvalidArgument(format!("image reference {name:?} is invalid: {e}"))
        })?;
        // The grammar lets an upper-case first component through as a would-be registry host;
        // when it is not one, it is part of the repository, which must be lower case.
        if reference
            .repository()
            .bytes()
            .any(|b| b.is_ascii_uppercase())
        {
            return Err(Error::InvalidArgument(format!(
                "image reference {name:?} is invalid: repository name must be lowercase"
            )));
        }
        Ok(ImageName::Reference(reference))
    }

    /// The `fromImage` and `tag` parameters of Docker's pull: the repository with its registry,
    /// and the digest if there is one, else the tag (never empty, or Docker pulls every tag).
    pub fn pull_parameters(&self) -> Option<(String, String)> {
        match self {
            ImageName::Id(_) => None,
            ImageName::Reference(r) => {
                let from = format!("{}/{}", r.registry(), r.repository());
                let tag = r.digest().or(r.tag()).unwrap_or("latest").to_string();
                Some((from, tag))
            }
        }
    }

    /// How Docker lists an image this reference names, in its `RepoTags` (a tag) or
    /// `RepoDigests` (a digest): the familiar form, without Docker Hub's `docker.io/` and
    /// `library/`. `None` for an image ID.
    pub fn listed_as(&self) -> Option<String> {
        let ImageName::Reference(r) = self else {
            return None;
        };
        let repository = if r.registry() == "docker.io" {
            r.repository()
                .strip_prefix("library/")
                .unwrap_or(r.repository())
                .to_string()
        } else {
            format!("{}/{}", r.registry(), r.repository())
        };
        Some(match (r.digest(), r.tag()) {
            (Some(digest), _) => format!("{repository}@{digest}"),
            (None, tag) => format!("{repository}:{}", tag.unwrap_or("latest")),
        })
    }

    /// Whether the name given was a plain image ID or an abbreviation of `full_id` (Docker's
    /// short IDs), rather than a tag or digest reference.
    pub fn names_id(name: &str, full_id: &str) -> bool {
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        hex.len() >= 12
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && full_id
                .strip_prefix("sha256:")
                .unwrap_or(full_id)
                .starts_with(hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "6c9d214a117e0b2a7f5a5d0c2e1b8e8c8c0b8a9f1d3e2c4b5a697887766554433";

    #[test]
    fn parses_ids_and_references() {
        let hex = &HEX[..64];
        assert_eq!(
            ImageName::parse(hex).expect("bare id"),
            ImageName::Id(format!("sha256:{hex}"))
        );
        assert_eq!(
            ImageName::parse(&format!("sha256:{hex}")).expect("prefixed id"),
            ImageName::Id(format!("sha256:{hex}"))
        );
        let cases = [
            ("busybox", "docker.io/library/busybox", "latest"),
            ("127.0.0.1:5000/t/app:v1", "127.0.0.1:5000/t/app", "v1"),
            ("localhost/dockpod/pause:1", "localhost/dockpod/pause", "1"),
        ];
        for (name, from, tag) in cases {
            let parsed = ImageName::parse(name).expect(name);
            assert_eq!(
                parsed.pull_parameters(),
                Some((from.to_string(), tag.to_string())),
                "{name}"
            );
        }
        let digest = format!("registry.local/app@sha256:{hex}");
        let parsed = ImageName::parse(&digest).expect("digest");
        assert_eq!(
            parsed.pull_parameters(),
            Some(("registry.local/app".into(), format!("sha256:{hex}")))
        );
    }

    #[test]
    fn names_images_as_docker_lists_them() {
        let hex = &HEX[..64];
        let cases = [
            ("busybox", "busybox:latest".to_string()),
            ("docker.io/library/busybox:1", "busybox:1".to_string()),
            ("someone/app", "someone/app:latest".to_string()),
            (
                "registry.k8s.io/pause:3.9",
                "registry.k8s.io/pause:3.9".to_string(),
            ),
            (
                "localhost/dockpod/pause:1",
                "localhost/dockpod/pause:1".to_string(),
            ),
            (
                "127.0.0.1:5000/app@sha256:HEX",
                format!("127.0.0.1:5000/app@sha256:{hex}"),
            ),
        ];
        for (name, listed) in cases {
            let name = name.replace("HEX", hex);
            let parsed = ImageName::parse(&name).expect("a reference");
            assert_eq!(parsed.listed_as(), Some(listed), "{name}");
        }
        let id = ImageName::parse(hex).expect("an ID");
        assert_eq!(id.listed_as(), None);
    }

    #[test]
    fn rejects_garbage_with_invalid_argument() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "::",
            "x@sha256:12",
            "sha256:xyz",
            &"a".repeat(2000),
        ] {
            let err = ImageName::parse(bad).expect_err(bad);
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn recognises_short_ids() {
        let full = format!("sha256:{}", &HEX[..64]);
        assert!(ImageName::names_id(&HEX[..12], &full));
        assert!(ImageName::names_id(&full, &full));
        assert!(!ImageName::names_id("busybox", &full));
        assert!(!ImageName::names_id(&HEX[..8], &full));
    }
}
