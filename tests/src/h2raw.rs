//! A bare HTTP/2 gRPC client for one unary call, written for the tests: it sends exactly the
//! `:authority` it is told (a socket path, a percent-encoded one, an empty one, or none), which
//! no Rust HTTP/2 client can, since they all build requests from valid URIs. It is what the
//! grpc-go, grpc-java and grpcio clients put on the wire over a unix socket.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// How the server answered one call.
#[derive(Debug)]
pub struct Answer {
    pub status: String,
    pub grpc_status: String,
    /// The response message, without gRPC's 5-byte prefix.
    pub message: Vec<u8>,
}

/// Calls `path` (`/package.Service/Method`) on the gRPC server at `socket` with `message` (an
/// encoded protobuf), sending `authority` as given (`None`: no `:authority` at all). The
/// answer, or what went wrong (`RST_STREAM code 1` is h2's refusal of an authority).
pub async fn unary(
    socket: &Path,
    authority: Option<&str>,
    path: &str,
    message: &[u8],
) -> Result<Answer, String> {
    tokio::time::timeout(
        Duration::from_secs(30),
        call(socket, authority, path, message),
    )
    .await
    .map_err(|_| "no answer within 30 s".to_string())?
}

async fn call(
    socket: &Path,
    authority: Option<&str>,
    path: &str,
    message: &[u8],
) -> Result<Answer, String> {
    let mut io = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let mut headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
    ];
    if let Some(a) = authority {
        headers.push((b":authority", a.as_bytes()));
    }
    headers.extend([
        (&b"content-type"[..], &b"application/grpc"[..]),
        (b"te", b"trailers"),
    ]);
    let block = loona_hpack::Encoder::new().encode(headers);
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    out.extend(frame(DATA, END_STREAM, 1, &body));
    io.write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;

    let mut decoder = loona_hpack::Decoder::new();
    let mut block = Vec::new();
    let mut answer = Answer {
        status: String::new(),
        grpc_status: String::new(),
        message: Vec::new(),
    };
    let mut data = Vec::new();
    loop {
        let mut head = [0u8; 9];
        io.read_exact(&mut head)
            .await
            .map_err(|e| format!("connection ended: {e}"))?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload)
            .await
            .map_err(|e| format!("connection ended: {e}"))?;
        match kind {
            SETTINGS if flags & ACK == 0 => {
                io.write_all(&frame(SETTINGS, ACK, 0, &[]))
                    .await
                    .map_err(|e| format!("write: {e}"))?;
            }
            PING if flags & ACK == 0 => {
                io.write_all(&frame(PING, ACK, 0, &payload))
                    .await
                    .map_err(|e| format!("write: {e}"))?;
            }
            GOAWAY => return Err(format!("GOAWAY {payload:?}")),
            RST_STREAM if stream == 1 => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                return Err(format!("RST_STREAM code {code}"));
            }
            HEADERS | CONTINUATION if stream == 1 => {
                block.extend_from_slice(&payload);
                if flags & END_HEADERS != 0 {
                    let fields = decoder
                        .decode(&block)
                        .map_err(|e| format!("response headers: {e:?}"))?;
                    block.clear();
                    for (n, v) in fields {
                        let v = String::from_utf8_lossy(&v).into_owned();
                        match n.as_slice() {
                            b":status" => answer.status = v,
                            b"grpc-status" => answer.grpc_status = v,
                            _ => {}
                        }
                    }
                }
                if flags & END_STREAM != 0 {
                    break;
                }
            }
            DATA if stream == 1 => {
                data.extend_from_slice(&payload);
                if flags & END_STREAM != 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    if data.len() >= 5 {
        answer.message = data[5..].to_vec();
    }
    Ok(answer)
}
