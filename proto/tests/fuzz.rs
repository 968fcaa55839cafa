//! Property tests over arbitrary input (proptest, run with the normal tests): what a CRI
//! request names goes through validation, and what arrives on the shim protocol, a state file
//! or a streaming URL goes through decoding, without a panic; and whatever validation accepts
//! stays inside the directories it is meant to (the kubelet's log directory, the run
//! directory's shim sockets).

use std::collections::HashMap;
use std::path::{Component, Path};

use dockpod_proto::cri::{PodSandboxConfig, PodSandboxMetadata};
use dockpod_proto::{layout, pod_state, streaming, validate};
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
        if let Ok(req) = dockpod_proto::cri::RunPodSandboxRequest::decode(bytes.as_slice()) {
            if let Some(config) = &req.config {
                let _ = validate::sandbox_config(config);
            }
        }
        if let Ok(req) = dockpod_proto::cri::CreateContainerRequest::decode(bytes.as_slice()) {
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

/// A client's bytes after the HTTP/2 preface: frames of any type, flags and length (some
/// HEADERS and CONTINUATIONs among them), or plain garbage.
fn h2_frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        prop_oneof![Just(1u8), Just(9u8), 0u8..12],
        any::<u8>(),
        0u32..8,
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(kind, flags, stream, payload)| {
            let len = payload.len();
            let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
            f.extend_from_slice(&stream.to_be_bytes());
            f.extend_from_slice(&payload);
            f
        });
    prop_oneof![
        proptest::collection::vec(frame, 0..8).prop_map(|f| f.concat()),
        proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

/// HPACK strings: plain or Huffman-flagged, of any content (valid Huffman codes or not).
fn hpack_string() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(huffman, bytes)| {
        let mut s = vec![(if huffman { 0x80 } else { 0 }) | bytes.len() as u8];
        s.extend_from_slice(&bytes);
        s
    })
}

/// Header blocks made of field representations of every kind (RFC 7541 section 6), with
/// indexes in and out of the tables and strings of any content.
fn hpack_block() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        (0u8..127).prop_map(|i| vec![0x80 | i]),
        (0u8..31).prop_map(|n| vec![0x20 | n]),
        (
            prop_oneof![Just(0x40u8), Just(0x00), Just(0x10)],
            0u8..15,
            hpack_string(),
            hpack_string(),
        )
            .prop_map(|(kind, index, name, value)| {
                let mut f = vec![kind | index];
                if index == 0 {
                    f.extend_from_slice(&name);
                }
                f.extend_from_slice(&value);
                f
            }),
    ];
    proptest::collection::vec(field, 0..12).prop_map(|f| f.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Whatever a client sends on a CRI or shim socket, the authority layer answers with
    /// bytes or an error, never a panic (the HPACK codec behind it indexes without checks).
    #[test]
    fn the_authority_layer_takes_any_client_bytes(frames in h2_frames(), cut in 1usize..64) {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend_from_slice(&frames);
        let mut rewriter = dockpod_proto::authority::Rewriter::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(cut) {
            if rewriter.push(piece, &mut out).is_err() {
                break;
            }
        }
    }

    /// Any header block in a well-framed HEADERS frame: decoded and re-encoded, or refused.
    #[test]
    fn the_authority_layer_takes_any_header_block(
        blocks in proptest::collection::vec(
            prop_oneof![proptest::collection::vec(any::<u8>(), 0..96), hpack_block()],
            1..4,
        ),
    ) {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for (i, block) in blocks.iter().enumerate() {
            let len = block.len();
            bytes.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 1, 4]);
            bytes.extend_from_slice(&(1 + 2 * i as u32).to_be_bytes());
            bytes.extend_from_slice(block);
        }
        let mut out = Vec::new();
        let _ = dockpod_proto::authority::Rewriter::default().push(&bytes, &mut out);
    }
}
