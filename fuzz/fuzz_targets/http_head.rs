//! The request head a streaming client opens with, as the front reads it (its end, the
//! request line's path it routes by) and the shim parses it: the request line and headers,
//! the session path and its token, query
//! parameters (ports, commands), upgrade and subprotocol headers and their negotiation; and the
//! front's reading of a gRPC client's `grpc-timeout` header.
//!
//! Promises checked: the parsed head lies within the bytes; a path accepted names a known
//! kind and a well-formed token whose shim prefix is its first 16 hex digits; negotiation
//! picks only what this side speaks; a timeout accepted is at most 8 digits and a unit, and
//! never longer than 99999999 hours.
#![no_main]

use dockpod_proto::streaming::{self, KINDS, MAX_HEAD};
use libfuzzer_sys::fuzz_target;
use pod_shim::streaming::{http, negotiate};

const SPOKEN: [&str; 4] = [
    "v5.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "SPDY/3.1+portforward.k8s.io",
    "portforward.k8s.io",
];

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_HEAD)];
    if let Some(timeout) = shim_manager::deadline::parse_timeout(data) {
        assert!(data.len() <= 9);
        assert!(timeout <= std::time::Duration::from_secs(99_999_999 * 3600));
    }
    if let Some(end) = streaming::head_end(data) {
        assert!(end <= data.len() && data[..end].ends_with(b"\r\n\r\n"));
    }
    if let Some(path) = streaming::request_path(data) {
        assert!(!path.contains(' ') && !path.contains('\r'));
        let _ = streaming::parse_path(&path);
    }
    let Ok((request, len)) = http::parse(data) else {
        return;
    };
    assert!(len <= data.len());
    if let Some((kind, token)) = streaming::parse_path(&request.path) {
        assert!(KINDS.contains(&kind));
        let shim = streaming::token_shim(token).expect("an accepted path has a valid token");
        assert!(token.starts_with(shim) && shim.len() == 16);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    for name in ["command", "ports", "stdin", "tty", "container"] {
        for value in request.query(name) {
            assert!(!value.contains('&'));
        }
    }
    let _ = request.upgrades_to("websocket");
    let _ = request.header("sec-websocket-key");
    for header in ["sec-websocket-protocol", "x-stream-protocol-version"] {
        let offered = request.header_values(header);
        assert!(offered.iter().all(|o| !o.is_empty() && !o.contains(',')));
        if let Some(chosen) = negotiate(&offered, &SPOKEN) {
            assert!(SPOKEN.contains(&chosen));
            assert!(offered.iter().any(|o| o.eq_ignore_ascii_case(chosen)));
        }
    }
});
