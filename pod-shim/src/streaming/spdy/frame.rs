//! SPDY/3.1 frames: the wire constants, reading a frame off a connection, building the frames
//! this side sends, and parsing a control frame's payload into what it says. Everything but
//! `read_frame` is pure, so it is tested (and fuzzed) without a connection.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use dockpod_proto::wire;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;
// RST_STREAM status codes.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;
pub const FLOW_CONTROL_ERROR: u32 = 7;
// GOAWAY status codes.
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;
const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// Largest frame payload accepted (SPDY's length field allows 16 MiB).
pub const MAX_FRAME: usize = 1024 * 1024;
/// How much of a frame's payload is allocated before its bytes have arrived.
const READ_STEP: usize = 64 * 1024;
/// Settings read from one SETTINGS frame; the protocol defines eight.
const MAX_SETTINGS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

pub(super) fn protocol(msg: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(msg.into())
}

/// A control frame's bytes.
pub fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// A data frame's header (the payload follows it).
pub fn data_header(stream: u32, flags: u8, len: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    h[4] = flags;
    h[5..].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
    h
}

/// A control frame of two 32-bit words (RST_STREAM, GOAWAY, WINDOW_UPDATE).
fn two_words(kind: u16, first: u32, second: u32) -> Vec<u8> {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&first.to_be_bytes());
    payload[4..].copy_from_slice(&second.to_be_bytes());
    control_frame(kind, 0, &payload)
}

pub fn reset_frame(stream: u32, status: u32) -> Vec<u8> {
    two_words(RST_STREAM, stream, status)
}

/// GOAWAY naming the last stream this side accepted.
pub fn goaway_frame(last_good: u32, status: u32) -> Vec<u8> {
    two_words(GOAWAY, last_good, status)
}

pub fn window_frame(stream: u32, delta: u32) -> Vec<u8> {
    two_words(WINDOW_UPDATE, stream, delta)
}

/// One frame as read from the wire.
#[derive(Debug)]
pub enum Frame {
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        payload: Vec<u8>,
    },
}

/// What a frame's 8-byte head says.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    Control { kind: u16, flags: u8, len: usize },
    Data { stream: u32, flags: u8, len: usize },
}

/// Parses a frame's head; refuses other SPDY versions and payloads over `MAX_FRAME`.
pub fn parse_head(head: &[u8; 8]) -> Result<Head, SpdyError> {
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(protocol(format!("frame of {len} bytes")));
    }
    let flags = head[4];
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(protocol(format!("SPDY version {version}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        Ok(Head::Control { kind, flags, len })
    } else {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        Ok(Head::Data { stream, flags, len })
    }
}

/// Reads one frame; None at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let head = parse_head(&head)?;
    let len = match head {
        Head::Control { len, .. } | Head::Data { len, .. } => len,
    };
    // Grown as the bytes arrive, so a head that announces a megabyte costs little until the
    // megabyte comes; the buffer ends exactly as long as the payload (it is queued as is).
    let mut payload = Vec::with_capacity(len.min(READ_STEP));
    while payload.len() < len {
        let start = payload.len();
        payload.resize(start + (len - start).min(READ_STEP), 0);
        r.read_exact(payload.get_mut(start..).unwrap_or_default())
            .await?;
    }
    payload.shrink_to_fit();
    Ok(Some(match head {
        Head::Control { kind, flags, .. } => Frame::Control {
            kind,
            flags,
            payload,
        },
        Head::Data { stream, flags, .. } => Frame::Data {
            stream,
            flags,
            payload,
        },
    }))
}

pub(super) fn be32(b: &[u8], at: usize) -> Result<u32, SpdyError> {
    wire::array(b, at)
        .map(u32::from_be_bytes)
        .ok_or_else(|| protocol("control frame too short"))
}

/// What a control frame from the peer says. Header blocks are left compressed: they must go
/// through the connection's one decompression context in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Control<'a> {
    SynStream {
        id: u32,
        fin: bool,
        block: &'a [u8],
    },
    /// SYN_REPLY or HEADERS: only their header block matters to a server.
    HeaderBlock(&'a [u8]),
    RstStream {
        id: u32,
    },
    /// The peer's initial stream window, if this SETTINGS frame sets it.
    Settings {
        initial_window: Option<u32>,
    },
    Ping(u32),
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    GoAway,
    /// A type this server has no use for; SPDY says to ignore it.
    Other,
}

impl<'a> Control<'a> {
    pub fn parse(kind: u16, flags: u8, payload: &'a [u8]) -> Result<Control<'a>, SpdyError> {
        Ok(match kind {
            SYN_STREAM => Control::SynStream {
                id: be32(payload, 0)? & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                block: payload
                    .get(10..)
                    .ok_or_else(|| protocol("short SYN_STREAM"))?,
            },
            SYN_REPLY | HEADERS => {
                Control::HeaderBlock(payload.get(4..).ok_or_else(|| protocol("short header"))?)
            }
            RST_STREAM => Control::RstStream {
                id: be32(payload, 0)? & 0x7fff_ffff,
            },
            SETTINGS => {
                let count = be32(payload, 0)? as usize;
                let mut initial_window = None;
                for i in 0..count.min(MAX_SETTINGS) {
                    let id = be32(payload, 4 + i * 8)? & 0x00ff_ffff;
                    let value = be32(payload, 8 + i * 8)?;
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        initial_window = Some(value);
                    }
                }
                Control::Settings { initial_window }
            }
            PING => Control::Ping(be32(payload, 0)?),
            WINDOW_UPDATE => Control::WindowUpdate {
                stream: be32(payload, 0)? & 0x7fff_ffff,
                delta: be32(payload, 4)? & 0x7fff_ffff,
            },
            GOAWAY => Control::GoAway,
            _ => Control::Other,
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(super) mod tests {
    use super::super::header::{HeaderDecoder, Headers};
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/streaming");

    /// A small deterministic generator (xorshift64) for the fuzzed tests: the same inputs on
    /// every run, so a failure can be replayed.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Every frame of a recorded client's byte stream, with its header blocks decoded.
    fn client_frames(dir: &str) -> Vec<(Frame, Option<Headers>)> {
        let path = std::path::Path::new(FIXTURES)
            .join(dir)
            .join("conn0-client-to-server.bin");
        let bytes = std::fs::read(&path).expect("fixture");
        let head = crate::streaming::http::head_len(&bytes).expect("HTTP head");
        let mut rest = &bytes[head..];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut decoder = HeaderDecoder::default();
        let mut frames = Vec::new();
        while let Some(frame) = rt.block_on(read_frame(&mut rest)).expect("frame") {
            let headers = match &frame {
                Frame::Control {
                    kind,
                    flags,
                    payload,
                } if *kind == SYN_STREAM => match Control::parse(*kind, *flags, payload) {
                    Ok(Control::SynStream { block, .. }) => {
                        Some(decoder.decode(block).expect("header block"))
                    }
                    other => panic!("{other:?}"),
                },
                _ => None,
            };
            frames.push((frame, headers));
        }
        frames
    }

    #[test]
    fn parses_a_recorded_exec_session() {
        let frames = client_frames("exec-spdy");
        let types: Vec<String> = frames
            .iter()
            .filter_map(|(_, h)| h.as_ref())
            .map(|h| h[0].1.clone())
            .collect();
        assert_eq!(types, vec!["error", "stdin", "stdout", "stderr"]);
        let stdin: Vec<u8> = frames
            .iter()
            .filter_map(|(f, _)| match f {
                Frame::Data {
                    stream: 3, payload, ..
                } => Some(payload.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(stdin, b"hello-stdin\n");
        assert!(frames.iter().any(|(f, _)| matches!(
            f,
            Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                ..
            }
        )));
    }

    #[test]
    fn parses_a_recorded_port_forward_session() {
        let frames = client_frames("portforward-spdy");
        let headers: Vec<&Headers> = frames.iter().filter_map(|(_, h)| h.as_ref()).collect();
        assert_eq!(headers.len(), 4);
        assert!(headers[1].contains(&("streamtype".into(), "data".into())));
        assert!(headers[1].contains(&("port".into(), "8080".into())));
        assert!(headers[3].contains(&("requestid".into(), "1".into())));
        assert!(frames
            .iter()
            .any(|(f, _)| matches!(f, Frame::Control { kind: GOAWAY, .. })));
    }

    #[test]
    fn parses_a_recorded_tty_session_with_resize() {
        let frames = client_frames("exec-tty-spdy");
        let types: Vec<String> = frames
            .iter()
            .filter_map(|(_, h)| h.as_ref())
            .map(|h| h[0].1.clone())
            .collect();
        assert_eq!(types, vec!["error", "stdin", "stdout", "resize"]);
    }

    #[test]
    fn control_frames_say_what_they_carry() {
        let mut settings = 1u32.to_be_bytes().to_vec();
        settings.extend_from_slice(&SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes());
        settings.extend_from_slice(&16384u32.to_be_bytes());
        assert_eq!(
            Control::parse(SETTINGS, 0, &settings).expect("SETTINGS"),
            Control::Settings {
                initial_window: Some(16384)
            }
        );
        let update = window_frame(3, 100);
        assert_eq!(
            Control::parse(WINDOW_UPDATE, 0, &update[8..]).expect("WINDOW_UPDATE"),
            Control::WindowUpdate {
                stream: 3,
                delta: 100
            }
        );
        assert_eq!(
            Control::parse(RST_STREAM, 0, &reset_frame(5, CANCEL)[8..]).expect("RST_STREAM"),
            Control::RstStream { id: 5 }
        );
        assert!(Control::parse(PING, 0, &[0, 0]).is_err());
        assert!(Control::parse(SYN_STREAM, 0, &[0; 9]).is_err());
        let mut head = [0u8; 8];
        head.copy_from_slice(&control_frame(PING, 0, &[0; 4])[..8]);
        assert_eq!(
            parse_head(&head).expect("head"),
            Head::Control {
                kind: PING,
                flags: 0,
                len: 4
            }
        );
        head[1] = 2;
        assert!(parse_head(&head).is_err(), "SPDY/2 is refused");
        assert!(parse_head(&data_header(1, 0, MAX_FRAME + 1)).is_err());
    }

    /// Random heads and payloads of every control type: each is parsed or refused, none
    /// panics, and no parse reads outside its payload.
    #[test]
    fn fuzzed_frames_are_parsed_or_refused() {
        let mut rng = Rng(0x0dd_ba11);
        for _ in 0..20_000 {
            let mut head = [0u8; 8];
            head.iter_mut().for_each(|b| *b = rng.next() as u8);
            if let Ok(Head::Control { len, .. } | Head::Data { len, .. }) = parse_head(&head) {
                assert!(len <= MAX_FRAME);
            }
            let kind = rng.below(12) as u16;
            let payload: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            match Control::parse(kind, rng.next() as u8, &payload) {
                Ok(Control::SynStream { block, .. }) => assert_eq!(block.len(), payload.len() - 10),
                Ok(Control::HeaderBlock(block)) => assert_eq!(block.len(), payload.len() - 4),
                Ok(_) | Err(_) => {}
            }
        }
    }
}
