//! A WebSocket client (tokio-tungstenite) for the channel protocols: remote command on
//! `v5`/`v4.channel.k8s.io`, `channel.k8s.io` and `base64.channel.k8s.io`, and port-forward
//! on channels.

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{split_url, Exec};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects offering `protocols`; the socket and the subprotocol the server chose, or the
/// HTTP status it refused with.
pub async fn connect(url: &str, protocols: &[&str]) -> Result<(Ws, String), String> {
    let (host, path) = split_url(url);
    let mut request = format!("ws://{host}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if !protocols.is_empty() {
        let value = protocols.join(", ");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            value.parse().map_err(|e| format!("{e}"))?,
        );
    }
    // Without Nagle's algorithm, as Go's clients dial.
    let (ws, response) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => format!("HTTP {}", r.status()),
            e => e.to_string(),
        })?;
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((ws, chosen))
}

/// A channel message in the protocol's encoding.
pub fn frame(channel: u8, data: &[u8], base64: bool) -> Message {
    if base64 {
        let text = format!(
            "{}{}",
            char::from(b'0' + channel),
            base64::engine::general_purpose::STANDARD.encode(data)
        );
        Message::text(text)
    } else {
        let mut bytes = vec![channel];
        bytes.extend_from_slice(data);
        Message::binary(bytes)
    }
}

fn unframe(message: &Message, base64: bool) -> Option<(u8, Vec<u8>)> {
    match message {
        Message::Binary(b) if !b.is_empty() => Some((b[0], b[1..].to_vec())),
        Message::Text(t) if base64 && !t.is_empty() => {
            let s = t.as_str();
            let data = base64::engine::general_purpose::STANDARD
                .decode(&s[1..])
                .ok()?;
            Some((s.as_bytes()[0] - b'0', data))
        }
        _ => None,
    }
}

/// A whole exec over WebSocket with `protocol`: sends `input` on stdin (and, on v5, closes
/// stdin), then collects the output channels until the server closes.
pub async fn exec(url: &str, protocol: &str, input: Option<&[u8]>) -> Exec {
    let (mut ws, chosen) = connect(url, &[protocol])
        .await
        .unwrap_or_else(|e| panic!("websocket upgrade refused: {e}"));
    assert_eq!(chosen, protocol);
    let base64 = protocol.contains("base64");
    if let Some(input) = input {
        ws.send(frame(0, input, base64)).await.expect("send stdin");
        if protocol == "v5.channel.k8s.io" {
            ws.send(Message::binary(vec![255u8, 0]))
                .await
                .expect("close stdin");
        }
    }
    let mut out = Exec::default();
    let collect = async {
        while let Some(Ok(message)) = ws.next().await {
            if let Some((channel, data)) = unframe(&message, base64) {
                match channel {
                    1 => out.stdout.extend_from_slice(&data),
                    2 => out.stderr.extend_from_slice(&data),
                    3 => out.status.extend_from_slice(&data),
                    _ => {}
                }
            }
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .expect("websocket exec did not end within 60 s");
    out
}

/// Port-forward on channels to each of `ports`: checks the port-number preamble of every
/// channel, sends `request` on each data channel, and returns what came back per port (data
/// until the connection went quiet for a while, and errors).
pub async fn forward(
    url: &str,
    protocol: &str,
    ports: &[u16],
    request: &[u8],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let query: Vec<String> = ports.iter().map(|p| format!("ports={p}")).collect();
    let url = format!("{url}?{}", query.join("&"));
    let (mut ws, chosen) = connect(&url, &[protocol])
        .await
        .unwrap_or_else(|e| panic!("websocket upgrade refused: {e}"));
    assert_eq!(chosen, protocol);
    let mut results = vec![(Vec::new(), Vec::new()); ports.len()];
    let mut preamble = vec![0u8; ports.len() * 2];
    for i in 0..ports.len() {
        ws.send(frame((2 * i) as u8, request, false))
            .await
            .expect("send request");
    }
    // Each HTTP reply ends with the server closing its side; wait until every port answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !results
        .iter()
        .all(|(data, err)| !err.is_empty() || ends_reply(data))
    {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        let Some((channel, data)) = unframe(&message, false) else {
            continue;
        };
        let (i, is_error) = ((channel / 2) as usize, channel % 2 == 1);
        let Some(slot) = results.get_mut(i) else {
            continue;
        };
        let seen = &mut preamble[channel as usize];
        if *seen == 0 {
            *seen = 1;
            assert_eq!(data, ports[i].to_le_bytes(), "channel {channel} preamble");
            continue;
        }
        if is_error {
            slot.1.extend_from_slice(&data);
        } else {
            slot.0.extend_from_slice(&data);
        }
    }
    let _ = ws.close(None).await;
    results
}

/// Whether an HTTP/1.0 reply is complete (busybox httpd sends Content-Length).
fn ends_reply(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

/// A byte stream over the socket's binary messages, for SPDY tunnelled in WebSocket.
pub fn tunnel(ws: Ws) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
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
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 || sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        };
        tokio::join!(inbound, outbound);
    });
    theirs
}
