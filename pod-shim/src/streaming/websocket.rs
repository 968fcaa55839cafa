//! Streaming over WebSocket (tokio-tungstenite), as newer Kubernetes clients speak it:
//! remote command on `v5.channel.k8s.io`, `v4.channel.k8s.io`, `channel.k8s.io` (each message
//! a channel byte and data), `v4.base64.channel.k8s.io` and `base64.channel.k8s.io` (text: a
//! channel digit and base64), the set the kubelet's own streaming server accepts; port-forward
//! on channels (`portforward.k8s.io`, `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`: per
//! port a data and an error channel, each opened by the port number) or as SPDY tunnelled in
//! binary messages (`SPDY/3.1+portforward.k8s.io`).
//!
//! Everything here reads what a client sends: no indexing or slicing that can panic.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::activity::Activity;
use super::inbound::{self, Feeder, Inflow};
use super::prefixed::Prefixed;
use super::remote::{self, Io, Outcome, ResizeDecoder};
use super::sessions::{Pending, Streams};
use super::{http, negotiate, Streaming};

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
const V1: &str = "channel.k8s.io";
const BASE64: &str = "base64.channel.k8s.io";
const V4_BASE64: &str = "v4.base64.channel.k8s.io";
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const PORT_FORWARD: &str = "portforward.k8s.io";
const WS_REMOTE: [&str; 5] = [V5, V4, V4_BASE64, V1, BASE64];
const WS_PORT_FORWARD: [&str; 5] = [SPDY_TUNNEL, PORT_FORWARD, V4, V4_BASE64, V1];
/// v5's message that closes one of the client's channels: `[CLOSE, channel]`.
const CLOSE: u8 = 255;
/// Largest WebSocket message accepted.
pub const MAX_MESSAGE: usize = 1024 * 1024;

type Ws = WebSocketStream<Prefixed<TcpStream>>;

pub async fn serve(
    streaming: &Streaming,
    mut io: Prefixed<TcpStream>,
    request: &http::Request,
    pending: Pending,
    permit: OwnedSemaphorePermit,
) {
    let Some(key) = request.header("sec-websocket-key") else {
        http::respond(&mut io, "400 Bad Request", "missing Sec-WebSocket-Key\n").await;
        return;
    };
    let offered = request.header_values("sec-websocket-protocol");
    let supported: &[&str] = match pending {
        Pending::PortForward(_) => &WS_PORT_FORWARD,
        _ => &WS_REMOTE,
    };
    let protocol = if offered.is_empty() {
        None
    } else {
        match negotiate(&offered, supported) {
            Some(p) => Some(p),
            None => {
                let body = format!("none of the offered subprotocols {offered:?} is supported\n");
                http::respond(&mut io, "403 Forbidden", &body).await;
                return;
            }
        }
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept.as_str()),
    ];
    if let Some(p) = protocol {
        headers.push(("Sec-WebSocket-Protocol", p));
    }
    if http::switching(&mut io, &headers).await.is_err() {
        return;
    }
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
    let protocol = protocol.unwrap_or(V1);
    if let Some(streams) = pending.streams() {
        let engine = streaming.pod.engine.clone();
        let idle = streaming.idle_timeout;
        ws_remote(ws, protocol, streams, idle, |io| async move {
            remote::run(&engine, &pending, io).await
        })
        .await;
    } else if protocol == SPDY_TUNNEL {
        let session = super::spdy::serve(tunnel(ws), streaming.idle_timeout);
        super::spdy_port_forward(streaming, session).await;
    } else {
        // The ports in the URL (as the clients send them), else those of the request.
        let mut ports: Vec<u16> = request
            .query("ports")
            .iter()
            .flat_map(|p| p.split(','))
            .filter_map(|p| p.trim().parse().ok())
            .collect();
        if let (true, Pending::PortForward(req)) = (ports.is_empty(), &pending) {
            ports = req
                .port
                .iter()
                .filter_map(|p| u16::try_from(*p).ok())
                .collect();
        }
        ws_port_forward(streaming, ws, ports, is_base64(protocol)).await
    }
    drop(permit);
}

/// How a session's WebSocket reads what the client sends: nothing past `MAX_MESSAGE`.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Whether a subprotocol carries its channels as text (a digit and base64).
pub fn is_base64(protocol: &str) -> bool {
    protocol == BASE64 || protocol == V4_BASE64
}

/// Channels a text (base64) message can name: its first character is `'0'` plus the channel,
/// as Kubernetes' wsstream writes it, and must be ASCII to be one byte.
pub const TEXT_CHANNELS: u8 = 128 - b'0';

/// One message on a channel, in the protocol's encoding (in text, a channel below
/// `TEXT_CHANNELS`; callers name no other).
pub fn frame(channel: u8, data: &[u8], base64: bool) -> Message {
    if base64 {
        let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        text.push(char::from(b'0' + channel.min(TEXT_CHANNELS - 1)));
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
        Message::text(text)
    } else {
        let mut bytes = Vec::with_capacity(1 + data.len());
        bytes.push(channel);
        bytes.extend_from_slice(data);
        Message::binary(bytes)
    }
}

/// The channel and data of a client message, if it is one.
pub fn unframe(message: Message, base64: bool) -> Option<(u8, Bytes)> {
    match message {
        Message::Binary(b) => {
            let (&channel, _) = b.split_first()?;
            Some((channel, b.slice(1..)))
        }
        // Bytes, not characters: a first character of several bytes is no channel digit,
        // and slicing the text after it would panic (and end the pod's shim).
        Message::Text(t) if base64 => {
            let (&digit, rest) = t.as_bytes().split_first()?;
            let channel = digit.checked_sub(b'0').filter(|_| digit.is_ascii())?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((channel, Bytes::from(data)))
        }
        _ => None,
    }
}

/// A WebSocket split into a writer task fed by a channel and the stream of client messages;
/// the writer marks `activity` with every message it sends.
fn split(
    ws: Ws,
    activity: Activity,
) -> (
    mpsc::Sender<Message>,
    futures_util::stream::SplitStream<Ws>,
    tokio::task::JoinHandle<()>,
) {
    let (mut sink, stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let writer = dockpod_proto::panics::spawn(async move {
        while let Some(message) = rx.recv().await {
            activity.touch();
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (tx, stream, writer)
}

/// The next message from the client, or None when the connection is over or nothing went
/// either way for `idle`. Pings are answered by tungstenite as it reads, so a reader that
/// keeps reading keeps them answered. A client that breaks the protocol (a message past
/// `MAX_MESSAGE`, a malformed frame, text that is not UTF-8) is told why in a Close frame
/// sent on `out`, as RFC 6455 asks, before its session ends.
async fn next_message(
    incoming: &mut futures_util::stream::SplitStream<Ws>,
    activity: &Activity,
    idle: Duration,
    out: &mpsc::Sender<Message>,
) -> Option<Message> {
    tokio::select! {
        message = incoming.next() => match message {
            Some(Ok(Message::Close(_))) | None => None,
            Some(Err(e)) => {
                if let Some(close) = refusal(&e) {
                    tracing::info!(error = %e, "closing a WebSocket session that broke the protocol");
                    let _ = out.send(Message::Close(Some(close))).await;
                }
                None
            }
            Some(Ok(message)) => {
                activity.touch();
                Some(message)
            }
        },
        () = activity.idle_for(idle) => {
            tracing::info!(?idle, "closing an idle streaming session");
            None
        }
    }
}

/// The Close frame that tells a client why its bytes ended the session, for errors of its
/// making (not for a connection that just went away).
fn refusal(e: &tokio_tungstenite::tungstenite::Error) -> Option<CloseFrame> {
    use tokio_tungstenite::tungstenite::Error;
    let code = match e {
        Error::Capacity(_) => CloseCode::Size,
        Error::Utf8(_) => CloseCode::Invalid,
        Error::Protocol(_) => CloseCode::Protocol,
        _ => return None,
    };
    Some(CloseFrame {
        code,
        // A Close frame's reason has room for 123 bytes.
        reason: e
            .to_string()
            .chars()
            .filter(char::is_ascii)
            .take(120)
            .collect::<String>()
            .into(),
    })
}

/// Hands `data` to a channel's consumer, waiting while its buffer is full (WebSocket has no
/// flow control: TCP holds the client back); false once the consumer is gone.
async fn feed(feeder: &Feeder, data: Bytes) -> bool {
    feeder.room(data.len()).await;
    feeder.push(data)
}

async fn ws_remote<F, Fut>(ws: Ws, protocol: &str, streams: Streams, idle: Duration, run: F)
where
    F: FnOnce(Io) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let Streams {
        stdin: want_stdin,
        stdout: want_stdout,
        stderr: want_stderr,
        tty,
    } = streams;
    let base64 = is_base64(protocol);
    let activity = Activity::new();
    let (out, mut incoming, writer) = split(ws, activity.clone());
    let (closed_tx, closed) = watch::channel(false);
    let inflow = Arc::new(Inflow::default());
    let (stdin_feeder, stdin_rx) = inbound::open(&inflow, None);
    let (resize_tx, resize_rx) = mpsc::channel(4);
    let v5 = protocol == V5;
    let refusals = out.clone();
    let reader = dockpod_proto::panics::spawn(async move {
        let mut stdin = Some(stdin_feeder);
        let mut sizes = ResizeDecoder::default();
        while let Some(message) = next_message(&mut incoming, &activity, idle, &refusals).await {
            let Some((channel, data)) = unframe(message, base64) else {
                continue;
            };
            match channel {
                0 => {
                    if let Some(feeder) = &stdin {
                        if !feed(feeder, data).await {
                            stdin = None;
                        }
                    }
                }
                4 => {
                    for size in sizes.push(&data) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                CLOSE if v5 && data.first() == Some(&0) => stdin = None,
                _ => {}
            }
        }
        let _ = closed_tx.send(true);
    });
    let mut forwarders = Vec::new();
    let mut output = |channel: u8| {
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let out = out.clone();
        forwarders.push(dockpod_proto::panics::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if out.send(frame(channel, &bytes, base64)).await.is_err() {
                    break;
                }
            }
        }));
        tx
    };
    let io = Io {
        stdin: want_stdin.then_some(stdin_rx),
        stdout: want_stdout.then(|| output(1)),
        stderr: (want_stderr && !tty).then(|| output(2)),
        resize: tty.then_some(resize_rx),
        closed,
    };
    let outcome = run(io).await;
    if outcome != Outcome::ClientGone {
        for f in forwarders {
            let _ = f.await;
        }
        let status = if protocol == V4 || protocol == V4_BASE64 || v5 {
            remote::status_json(&outcome)
        } else {
            remote::status_text(&outcome)
        };
        if !status.is_empty() {
            let _ = out.send(frame(3, &status, base64)).await;
        }
        let _ = out
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    }
    drop(out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), writer).await;
    reader.abort();
}

/// Port-forward on channels: for port `i` of `ports`, data on channel `2i` and errors on
/// channel `2i+1`, each opened with the port number (two bytes, little-endian); one
/// connection per port for the whole session.
async fn ws_port_forward(streaming: &Streaming, ws: Ws, ports: Vec<u16>, base64: bool) {
    let most = if base64 { TEXT_CHANNELS / 2 } else { 64 };
    let activity = Activity::new();
    let (out, mut incoming, writer) = split(ws, activity.clone());
    let inflow = Arc::new(Inflow::default());
    let mut to_pod: HashMap<u8, Feeder> = HashMap::new();
    let mut relays = tokio::task::JoinSet::new();
    for (i, port) in ports.iter().copied().enumerate().take(usize::from(most)) {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        for channel in [data, error] {
            let _ = out.send(frame(channel, &port.to_le_bytes(), base64)).await;
        }
        let (feeder, from_client) = inbound::open(&inflow, None);
        to_pod.insert(data, feeder);
        let out = out.clone();
        let pod = streaming.pod.clone();
        relays.spawn(dockpod_proto::panics::Isolated::new(async move {
            let connected = match super::port_target(&pod).await {
                Ok(target) => super::portforward::connect(&target, port)
                    .await
                    .map_err(|e| format!("error forwarding port {port}: {e}")),
                Err(e) => Err(e),
            };
            match connected {
                Ok(tcp) => {
                    let (to_client, mut rx) = mpsc::channel::<Bytes>(8);
                    let forward = async {
                        while let Some(bytes) = rx.recv().await {
                            if out.send(frame(data, &bytes, base64)).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::join!(
                        super::portforward::relay(tcp, from_client, to_client),
                        forward
                    );
                }
                Err(message) => {
                    let _ = out.send(frame(error, message.as_bytes(), base64)).await;
                }
            }
        }));
    }
    let idle = streaming.idle_timeout;
    while let Some(message) = next_message(&mut incoming, &activity, idle, &out).await {
        if let Some((channel, data)) = unframe(message, base64) {
            if let Some(feeder) = to_pod.get(&channel) {
                if !feed(feeder, data).await {
                    to_pod.remove(&channel);
                }
            }
        }
    }
    drop(to_pod);
    relays.abort_all();
    while relays.join_next().await.is_some() {}
    drop(out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
}

/// A byte pipe over the WebSocket's binary messages, for SPDY tunnelled in WebSocket.
fn tunnel(ws: Ws) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    dockpod_proto::panics::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut read, mut write) = tokio::io::split(ours);
        let inbound = async {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Binary(b) if write.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = write.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let read = buf.get(..n).unwrap_or_default().to_vec();
                        if sink.send(Message::binary(read)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        };
        tokio::select! {
            _ = inbound => {},
            _ = outbound => {},
        }
    });
    theirs
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn channel_framing_binary_and_base64() {
        let m = frame(1, b"hi", false);
        assert_eq!(unframe(m, false), Some((1, Bytes::from_static(b"hi"))));
        let m = frame(2, b"hello", true);
        assert_eq!(m.to_text().expect("text"), "2aGVsbG8=");
        assert_eq!(unframe(m, true), Some((2, Bytes::from_static(b"hello"))));
        assert_eq!(unframe(Message::binary(Vec::new()), false), None);
        assert_eq!(unframe(Message::text("x!!"), true), None);
    }

    #[test]
    fn a_text_frame_whose_first_character_is_several_bytes_is_no_message() {
        // "éAAAA" killed the shim once: `&s[1..]` inside a two-byte character.
        for text in ["éAAAA", "é", "€", "0é", "\u{10348}AAAA", ""] {
            assert_eq!(unframe(Message::text(text), true), None, "{text:?}");
        }
        assert_eq!(unframe(Message::text("0"), true), Some((0, Bytes::new())));
    }

    #[test]
    fn text_channels_are_what_wsstream_writes_and_round_trip() {
        // wsstream writes '0' + channel: port-forward's channels past 9 are ':', ';' and on.
        assert_eq!(
            unframe(Message::text(":aGk="), true),
            Some((10, Bytes::from_static(b"hi")))
        );
        for channel in 0..TEXT_CHANNELS {
            let m = frame(channel, b"data", true);
            assert_eq!(
                unframe(m, true),
                Some((channel, Bytes::from_static(b"data")))
            );
        }
        assert_eq!(unframe(Message::text("/AAAA"), true), None, "below '0'");
        assert_eq!(unframe(Message::text("0!!!!"), true), None, "not base64");
    }
}
