//! Property tests over arbitrary input (proptest, run with the normal tests): what a CRI
//! request names goes through validation, and what arrives on the shim protocol, a state file
//! or a streaming URL goes through decoding, without a panic; and whatever validation accepts
//! stays inside the directories it is meant to (the kubelet's log directory, the run
//! directory's shim sockets).

use std::collections::HashMap;
use std::path::{Component, Path};

use dockpod_proto::{layout, pod_state, streaming, validate};
use k8s_cri::v1::{PodSandboxConfig, PodSandboxMetadata};
use proptest::prelude::*;
use prost::Message;

/// Strings that look like paths, names and IDs, including the tricky parts: separators, dots,
/// NULs, non-ASCII and long runs.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,64}",
        "[a-z0-9._/-]{0,40}",
        proptest::collection::vec(
            prop_oneof![
                Just("..".to_string()),
                Just(".".to_string()),
                Just("/".to_string()),
                Just("\0".to_string()),
                Just("_".to_string()),
                "[a-z]{1,8}",
            ],
            0..12
        )
        .prop_map(|parts| parts.concat()),
        (250usize..5000).prop_map(|n| "a".repeat(n)),
    ]
}

fn no_parent(path: &Path) -> bool {
    !path.components().any(|c| c == Component::ParentDir)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_log_file_never_leaves_its_log_directory(dir in nasty(), file in nasty()) {
        if let Ok(Some(path)) = validate::log_file(&dir, &file) {
            prop_assert!(path.is_absolute());
            prop_assert!(path.starts_with(&dir), "{path:?} outside {dir:?}");
            prop_assert!(no_parent(&path), "{path:?}");
            prop_assert!(!path.as_os_str().as_encoded_bytes().contains(&0));
        }
    }

    #[test]
    fn accepted_ids_and_names_are_single_path_components(s in nasty()) {
        if validate::id("container", &s).is_ok() {
            prop_assert!(!s.contains('/') && s != "." && s != ".." && !s.is_empty());
            prop_assert_eq!(Path::new(&s).components().count(), 1);
        }
        if validate::name("pod name", &s).is_ok() {
            // Docker names are built as k8s_<name>_..., so '_' would shift the fields.
            prop_assert!(!s.contains('_') && !s.contains('/') && s.len() <= validate::MAX_NAME);
        }
    }

    #[test]
    fn sandbox_configs_are_validated_without_panics(
        name in nasty(),
        namespace in nasty(),
        uid in nasty(),
        hostname in nasty(),
        log_directory in nasty(),
        labels in proptest::collection::hash_map(nasty(), nasty(), 0..8),
        annotations in proptest::collection::hash_map(nasty(), nasty(), 0..8),
    ) {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name, namespace, uid, attempt: 0 }),
            hostname,
            log_directory,
            labels,
            annotations,
            ..Default::default()
        };
        if let Ok(meta) = validate::sandbox_config(&config) {
            for part in [&meta.name, &meta.namespace, &meta.uid] {
                prop_assert!(validate::name("part", part).is_ok());
            }
            prop_assert!(config.log_directory.is_empty() || Path::new(&config.log_directory).is_absolute());
            prop_assert!(no_parent(Path::new(&config.log_directory)));
        }
    }

    #[test]
    fn label_maps_are_bounded(count in 0usize..600, key_len in 0usize..1100, value_len in 0usize..70_000) {
        // Many small labels, then one of the drawn key and value sizes.
        let mut labels: HashMap<String, String> =
            (0..count).map(|i| (format!("k{i}"), "v".into())).collect();
        labels.insert("x".repeat(key_len), "v".repeat(value_len));
        let ok = validate::labels("labels", &labels).is_ok();
        let within = labels.len() <= validate::MAX_LABELS
            && labels.keys().all(|k| !k.is_empty() && k.len() <= validate::MAX_LABEL_KEY)
            && labels.values().all(|v| v.len() <= validate::MAX_LABEL_VALUE);
        prop_assert_eq!(ok, within);
    }

    /// The front routes a streaming request to `<run>/shims/<token prefix>.stream.sock`: only
    /// a well-formed token may name that socket.
    #[test]
    fn a_streaming_path_names_a_socket_inside_the_run_directory(path in prop_oneof![
        nasty(),
        "/(exec|attach|portforward)/[0-9a-fA-F./]{40,56}(\\?.{0,20})?",
    ]) {
        if let Some((_, token)) = streaming::parse_path(&path) {
            let shim = streaming::token_shim(token).expect("a parsed token has a shim");
            prop_assert!(layout::is_shim_id(shim));
            let run = Path::new("/run/dockpod");
            let socket = streaming::shim_stream_socket(run, shim);
            let dir = layout::shim_socket_dir(run);
            prop_assert_eq!(socket.parent(), Some(dir.as_path()));
        }
    }

    #[test]
    fn shim_and_manager_messages_decode_arbitrary_bytes_without_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = dockpod_proto::shim::InfoResponse::decode(bytes.as_slice());
        let _ = dockpod_proto::shim::InspectResponse::decode(bytes.as_slice());
        let _ = dockpod_proto::manager::ShimUpgrade::decode(bytes.as_slice());
        let _ = dockpod_proto::manager::UpgradeShimsRequest::decode(bytes.as_slice());
        if let Ok(req) = k8s_cri::v1::RunPodSandboxRequest::decode(bytes.as_slice()) {
            if let Some(config) = &req.config {
                let _ = validate::sandbox_config(config);
            }
        }
        if let Ok(req) = k8s_cri::v1::CreateContainerRequest::decode(bytes.as_slice()) {
            let _ = validate::id("pod sandbox", &req.pod_sandbox_id);
            let log_path = req.config.as_ref().map(|c| c.log_path.clone()).unwrap_or_default();
            let dir = req.sandbox_config.as_ref().map(|c| c.log_directory.clone()).unwrap_or_default();
            let _ = validate::log_file(&dir, &log_path);
        }
    }

    #[test]
    fn pod_state_files_parse_arbitrary_bytes_without_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = pod_state::PodSummary::parse(&bytes);
    }

    #[test]
    fn pod_state_files_of_any_shape_parse_without_panics(
        sandbox in nasty(),
        name in nasty(),
        ids in proptest::collection::vec(nasty(), 0..5),
    ) {
        let containers: serde_json::Map<String, serde_json::Value> =
            ids.iter().map(|i| (i.clone(), serde_json::json!({}))).collect();
        let json = serde_json::json!({
            "sandbox_id": sandbox,
            "config": {"metadata": {"name": name, "namespace": 7}},
            "containers": containers,
        });
        let _ = pod_state::PodSummary::parse(json.to_string().as_bytes());
    }
}
