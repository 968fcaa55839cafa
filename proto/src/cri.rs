//! The CRI (`runtime.v1`) as today's kubelets speak it: messages, clients and servers generated
//! at build time from upstream's `api.proto` (kubernetes/cri-api, through Debian's
//! golang-k8s-cri-api-dev; see `build.rs`), never from a copy that ages. A field this build
//! does not know is dropped by protobuf without a word, so the version it was built from is
//! reported (`API_VERSION`) and checked against the pin.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

use std::fmt;

tonic::include_proto!("runtime.v1");

/// The kubernetes/cri-api release the bindings were generated from (e.g. `0.36.4`).
pub const API_VERSION: &str = env!("DOCKPOD_CRI_API_VERSION");

/// Upstream's `api.proto` as the package carries it, which these bindings were generated
/// from: the tests' other clients (Python's grpcio) generate theirs from the same file.
pub const UPSTREAM_PROTO: &str = env!("DOCKPOD_CRI_API_PROTO");

/// `KeyValue.value` became `bytes` in cri-api 0.33 (an environment variable need not be
/// UTF-8); the pod records written before keep it as a JSON string, and so do the records
/// written now, for anything that reads them. The shim refuses a value that is not UTF-8
/// (Docker's API takes environment variables as strings), so a recorded one always is.
pub mod text_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// Upstream marks the secrets `debug_redact`; a credential must never reach a log line.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("auth", &redacted(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &redacted(&self.identity_token))
            .field("registry_token", &redacted(&self.registry_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> Vec<u32> {
        text.trim()
            .split('.')
            .map(|p| p.parse().expect("numeric version"))
            .collect()
    }

    #[test]
    fn bindings_are_not_older_than_the_pinned_cri_api() {
        let pinned = include_str!("../cri-api.version");
        assert!(
            version(API_VERSION) >= version(pinned),
            "generated from cri-api {API_VERSION}, pinned {pinned}"
        );
        // Fields of cri-api 0.33+ that the 1.31 definition lacked: this does not compile
        // against an older definition.
        let config = ContainerConfig {
            stop_signal: Signal::Sigterm as i32,
            ..Default::default()
        };
        assert_eq!(config.stop_signal, Signal::Sigterm as i32);
        let _ = UpdatePodSandboxResourcesRequest::default();
        let _ = StreamContainersRequest::default();
        let _ = PsiStats::default();
    }

    /// Every message with its fields, and every service with its calls, of the definition
    /// the bindings were generated from: `Message: field field ...`, one per line, sorted.
    fn inventory() -> String {
        use prost::Message as _;
        let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/cri/descriptor.bin"));
        let set = prost_types::FileDescriptorSet::decode(&bytes[..]).expect("descriptor set");
        let mut lines = Vec::new();
        for file in &set.file {
            for message in &file.message_type {
                let fields: Vec<&str> = message.field.iter().map(|f| f.name()).collect();
                lines.push(format!("{}: {}", message.name(), fields.join(" ")));
            }
            for service in &file.service {
                let calls: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
                lines.push(format!("service {}: {}", service.name(), calls.join(" ")));
            }
        }
        lines.sort();
        lines.join("\n") + "\n"
    }

    /// `Owner.name` for every name of an inventory.
    fn pairs(inventory: &str) -> impl Iterator<Item = String> + '_ {
        inventory.lines().flat_map(|line| {
            let (owner, names) = line.split_once(": ").unwrap_or((line, ""));
            names
                .split(' ')
                .filter(|n| !n.is_empty())
                .map(move |name| format!("{owner}.{name}"))
        })
    }

    /// A newer cri-api brings fields and calls that dockpod would drop unread, which is how a
    /// pod comes to run differently from its spec. Each one must be decided (honoured on
    /// Docker or refused by name, with the table in docs/cri.md) before it is listed in
    /// `cri-fields.txt`; `DOCKPOD_WRITE_CRI_FIELDS=1` writes the list anew once it is.
    #[test]
    fn every_field_of_the_cri_is_one_dockpod_has_decided_on() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/cri-fields.txt");
        let now = inventory();
        if std::env::var_os("DOCKPOD_WRITE_CRI_FIELDS").is_some() {
            std::fs::write(path, &now).expect("write cri-fields.txt");
        }
        let decided = std::fs::read_to_string(path).expect("cri-fields.txt");
        let decided: std::collections::HashSet<String> = pairs(&decided).collect();
        let new: Vec<String> = pairs(&now).filter(|p| !decided.contains(p)).collect();
        assert!(
            new.is_empty(),
            "cri-api {API_VERSION} has fields or calls dockpod has not decided on: {new:?}"
        );
    }

    #[test]
    fn auth_config_debug_redacts_secrets() {
        let auth = AuthConfig {
            username: "user".into(),
            password: "hunter2".into(),
            auth: "dXNlcjpodW50ZXIy".into(),
            identity_token: "id-token".into(),
            registry_token: "reg-token".into(),
            server_address: "127.0.0.1:5000".into(),
        };
        let text = format!("{auth:?}");
        for secret in ["hunter2", "dXNlcjpodW50ZXIy", "id-token", "reg-token"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            text.contains("user") && text.contains("127.0.0.1:5000"),
            "{text}"
        );
    }

    #[test]
    fn env_values_keep_their_json_string_form() {
        // As a record written with cri-api 0.31's bindings holds an environment variable.
        let old = r#"{"key":"GREETING","value":"hello wörld"}"#;
        let kv: KeyValue = serde_json::from_str(old).expect("old form reads");
        assert_eq!(kv.value, "hello wörld".as_bytes());
        assert_eq!(serde_json::to_string(&kv).expect("serialise"), old);
    }

    #[test]
    fn a_record_without_todays_fields_reads_with_their_defaults() {
        // A container config as the 1.31 bindings serialised it: no stop_signal, no
        // image_sub_path.
        let old = r#"{"metadata":{"name":"app","attempt":0},"image":{"image":"busybox",
            "annotations":{},"user_specified_image":"","runtime_handler":""},
            "mounts":[{"container_path":"/data","host_path":"/tmp","readonly":false,
            "selinux_relabel":false,"propagation":0,"uid_mappings":[],"gid_mappings":[],
            "recursive_read_only":false,"image":null}],"envs":[{"key":"A","value":"b"}]}"#;
        let config: ContainerConfig = serde_json::from_str(old).expect("old record reads");
        assert_eq!(config.stop_signal, Signal::RuntimeDefault as i32);
        assert_eq!(config.mounts[0].image_sub_path, "");
        assert_eq!(config.envs[0].value, b"b");
    }
}
