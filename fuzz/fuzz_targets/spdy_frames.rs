//! SPDY/3.1 frames as a client sends them: the frame reader, each control frame's parse, and
//! every header block through the connection's one decompression context.
//!
//! Promises checked: no payload past `MAX_FRAME`; each frame read writes back to exactly its
//! bytes; a decoded header block has at most `MAX_HEADERS` fields and encodes and decodes
//! again to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_shim::streaming::spdy::{
    self, Control, Frame, HeaderDecoder, HeaderEncoder, MAX_FRAME, MAX_HEADERS, MAX_HEADER_BLOCK,
};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut input = data;
        let mut decoder = HeaderDecoder::default();
        loop {
            let before = input;
            let frame = match spdy::read_frame(&mut input).await {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => return,
            };
            let raw = &before[..before.len() - input.len()];
            match frame {
                Frame::Data {
                    stream,
                    flags,
                    payload,
                } => {
                    assert!(payload.len() <= MAX_FRAME);
                    let mut written = spdy::data_header(stream, flags, payload.len()).to_vec();
                    written.extend_from_slice(&payload);
                    assert_eq!(written, raw);
                }
                Frame::Control {
                    kind,
                    flags,
                    payload,
                } => {
                    assert!(payload.len() <= MAX_FRAME);
                    assert_eq!(spdy::control_frame(kind, flags, &payload), raw);
                    let block = match Control::parse(kind, flags, &payload) {
                        Ok(Control::SynStream { block, .. }) | Ok(Control::HeaderBlock(block)) => {
                            block
                        }
                        _ => continue,
                    };
                    if let Ok(headers) = decoder.decode(block) {
                        assert!(headers.len() <= MAX_HEADERS);
                        round_trip(&headers);
                    }
                }
            }
        }
    });
});

/// Decoded fields, encoded by a fresh context, decode to themselves.
fn round_trip(headers: &[(String, String)]) {
    let raw: usize = 4 + headers
        .iter()
        .map(|(n, v)| 8 + n.len() + v.len())
        .sum::<usize>();
    if raw >= MAX_HEADER_BLOCK {
        return;
    }
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let block = HeaderEncoder::default().encode(&pairs);
    let again = HeaderDecoder::default()
        .decode(&block)
        .expect("what the encoder wrote decodes");
    assert_eq!(again, headers);
}
