//! Property tests over arbitrary input on the streaming side of a shim (proptest, run with
//! the normal tests): SPDY frames, compressed header blocks, HTTP request heads and resize
//! messages as a hostile client may send them. Nothing panics, nothing hangs, and buffers
//! stay bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pod_shim::streaming::http;
use pod_shim::streaming::remote::ResizeDecoder;
use pod_shim::streaming::spdy::{self, HeaderDecoder, HeaderEncoder};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

/// Set by a panic anywhere, including inside tasks the SPDY session spawns (tokio would
/// otherwise swallow those).
static PANICKED: AtomicBool = AtomicBool::new(false);

fn watch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A frame a hostile client might send: valid framing with any kind, flags and payload, or
/// any bytes at all.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            0u16..12,
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(kind, flags, payload)| spdy::control_frame(kind, flags, &payload)),
        (
            any::<u32>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(stream, flags, payload)| {
                let mut f = spdy::data_header(stream, flags, payload.len()).to_vec();
                f.extend_from_slice(&payload);
                f
            }),
        // SYN_STREAM with a real compressed header block (the decoder's state carries over).
        (
            1u32..64,
            proptest::collection::vec(("[a-z]{0,8}", ".{0,16}"), 0..4)
        )
            .prop_map(|(id, headers)| {
                let pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut payload = id.to_be_bytes().to_vec();
                payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                payload.extend_from_slice(&HeaderEncoder::default().encode(&pairs));
                spdy::control_frame(spdy::SYN_STREAM, 0, &payload)
            }),
        proptest::collection::vec(any::<u8>(), 0..32),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_spdy_session_survives_any_frames_and_ends_when_the_client_leaves(
        frames in proptest::collection::vec(frame(), 0..16)
    ) {
        watch_panics();
        runtime().block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let mut session = spdy::serve(server, Duration::from_secs(30));
            for f in &frames {
                if client.write_all(f).await.is_err() {
                    break;
                }
            }
            drop(client);
            // Streams the client opened are handed out; take them so nothing waits on us.
            let drain = async { while session.streams.recv().await.is_some() {} };
            let ended = tokio::time::timeout(Duration::from_secs(10), async {
                tokio::join!(drain, &mut session.done)
            })
            .await;
            assert!(ended.is_ok(), "the session did not end after the client left");
        });
        prop_assert!(!PANICKED.load(Ordering::SeqCst), "a task panicked");
    }

    #[test]
    fn header_blocks_decode_or_fail_without_panics(
        blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 1..6),
        valid_first in any::<bool>(),
    ) {
        let mut decoder = HeaderDecoder::default();
        if valid_first {
            let block = HeaderEncoder::default().encode(&[("streamtype", "stdout")]);
            prop_assert_eq!(
                decoder.decode(&block).ok(),
                Some(vec![("streamtype".to_string(), "stdout".to_string())])
            );
        }
        for block in &blocks {
            let _ = decoder.decode(block);
        }
    }

    #[test]
    fn frames_read_from_any_bytes_end(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        runtime().block_on(async {
            let mut input = bytes.as_slice();
            for _ in 0..=bytes.len() {
                match spdy::read_frame(&mut input).await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return,
                }
            }
            panic!("read_frame kept returning frames from {} bytes", bytes.len());
        });
    }

    #[test]
    fn request_heads_parse_or_fail_without_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = http::head_len(&bytes);
        if let Ok((request, len)) = http::parse(&bytes) {
            prop_assert!(len <= bytes.len());
            let _ = request.query("command");
            let _ = request.upgrades_to("SPDY/3.1");
        }
    }

    #[test]
    fn resize_messages_keep_the_buffer_bounded(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..3000),
                (any::<u16>(), any::<u16>())
                    .prop_map(|(w, h)| format!("{{\"Width\":{w},\"Height\":{h}}}").into_bytes()),
            ],
            0..12,
        )
    ) {
        let mut decoder = ResizeDecoder::default();
        for chunk in &chunks {
            let _ = decoder.push(chunk);
            prop_assert!(decoder.buffered() <= 4096);
        }
    }

    #[test]
    fn cgroup_files_parse_without_panics(text in "\\PC{0,400}") {
        let _ = pod_shim::kernel_stats::parse_pressure(&text);
        let (read, written) = pod_shim::kernel_stats::parse_io_stat(&text);
        let _ = read.saturating_add(written);
        let _ = pod_shim::kernel_stats::parse_blkio_bytes(&text);
    }
}
