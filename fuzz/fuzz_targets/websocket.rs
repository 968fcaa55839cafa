//! What a client sends on a WebSocket streaming session: raw bytes through tungstenite with
//! the session's own limits, or messages as given; each message through the channel framing
//! of the binary and the text (base64) subprotocols, and the resize channel's decoder.
//!
//! Promises checked: no message past `MAX_MESSAGE`; a channel's data is shorter than its
//! message; what `unframe` accepts, `frame` writes back the same (text channels stay below
//! `TEXT_CHANNELS`); the resize decoder holds at most `RESIZE_PENDING` bytes.
#![no_main]

use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use pod_shim::streaming::remote::{ResizeDecoder, RESIZE_PENDING};
use pod_shim::streaming::websocket::{self, MAX_MESSAGE, TEXT_CHANNELS};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let base64 = mode & 1 != 0;
    let messages = if mode & 2 != 0 {
        read_raw(rest)
    } else {
        as_messages(rest)
    };
    let mut sizes = ResizeDecoder::default();
    for message in messages {
        let len = message.len();
        assert!(len <= MAX_MESSAGE, "a message of {len} bytes");
        let text = message.is_text();
        let Some((channel, body)) = websocket::unframe(message, base64) else {
            continue;
        };
        assert!(body.len() < len, "{} bytes of data from {len}", body.len());
        // Binary messages are read as binary in every subprotocol, as wsstream reads them.
        if text {
            assert!(channel < TEXT_CHANNELS);
        }
        let written = websocket::frame(channel, &body, base64 && text);
        let again = websocket::unframe(written, base64);
        assert_eq!(again, Some((channel, body.clone())));
        if channel == 4 {
            let _ = sizes.push(&body);
            assert!(sizes.buffered() <= RESIZE_PENDING);
        }
    }
});

/// Messages as tungstenite reads them from `bytes`, as a shim's session is configured.
fn read_raw(bytes: &[u8]) -> Vec<Message> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let io = tokio::io::join(bytes, tokio::io::sink());
        let mut ws =
            WebSocketStream::from_raw_socket(io, Role::Server, Some(websocket::config())).await;
        let mut messages = Vec::new();
        while let Some(Ok(message)) = ws.next().await {
            messages.push(message);
        }
        messages
    })
}

/// Messages cut out of `bytes`: a kind byte (odd: text), a length byte, that many bytes.
fn as_messages(mut bytes: &[u8]) -> Vec<Message> {
    let mut messages = Vec::new();
    while let [kind, len, rest @ ..] = bytes {
        let (body, tail) = rest.split_at(usize::from(*len).min(rest.len()));
        bytes = tail;
        messages.push(if kind & 1 != 0 {
            Message::text(String::from_utf8_lossy(body).into_owned())
        } else {
            Message::binary(body.to_vec())
        });
    }
    messages
}
