//! SPDY/3.1, server side, as the Kubernetes streaming clients speak it: frames, header blocks
//! compressed with zlib and the SPDY/3 dictionary (one context per direction for the whole
//! connection), SYN_STREAM answered with SYN_REPLY, DATA with FIN, RST_STREAM, PING, GOAWAY,
//! SETTINGS and WINDOW_UPDATE.
//!
//! Written here: the Rust SPDY crates are client-only or unmaintained, and the subset the
//! Kubernetes protocols use is small.
//!
//! Flow control: as a receiver this side always returns window with WINDOW_UPDATE as it takes
//! data in. As a sender it honours the peer's windows once the peer shows it keeps them (it
//! sent SETTINGS or WINDOW_UPDATE). The Go library behind kubectl, crictl and the kubelet never
//! sends either, so a sender that waited for window from it would stall after 64 KiB.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status codes used here.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;
/// GOAWAY status codes.
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;
const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
const INITIAL_WINDOW: i64 = 64 * 1024;
/// Largest frame payload accepted (SPDY's length field allows 16 MiB).
const MAX_FRAME: usize = 1024 * 1024;
/// Largest DATA payload sent in one frame.
pub const MAX_DATA: usize = 32 * 1024;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Control frames (answers, window updates) queued for a peer that does not read them before
/// the session is closed.
const MAX_CONTROL_BACKLOG: usize = 4096;
/// Streams the peer may open in one session.
const MAX_STREAMS: usize = 1024;
/// Bytes queued for the peer beyond its window before senders wait.
const MAX_PENDING: usize = 1024 * 1024;

/// The SPDY/3 header dictionary: the specification's length-prefixed words, then its tail.
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for word in WORDS {
        d.extend_from_slice(&(word.len() as u32).to_be_bytes());
        d.extend_from_slice(word.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
});

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn protocol(msg: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(msg.into())
}

/// Header names and values of a stream, names lowercase; a value may hold several,
/// NUL-separated.
pub type Headers = Vec<(String, String)>;

/// Decodes the header blocks of one direction of a connection.
pub struct HeaderDecoder {
    inflate: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            inflate: Decompress::new(true),
        }
    }
}

impl HeaderDecoder {
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(256);
        let mut input = block;
        loop {
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(protocol("header block too large"));
            }
            out.reserve(1024);
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let status = match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(s) => s,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| protocol(format!("header dictionary: {e}")))?;
                    Status::Ok
                }
                Err(e) => return Err(protocol(format!("header block: {e}"))),
            };
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            let produced = self.inflate.total_out() - before_out;
            if matches!(status, Status::StreamEnd) || (input.is_empty() && produced == 0) {
                break;
            }
            if used == 0 && produced == 0 && !matches!(status, Status::Ok) {
                // zlib took nothing and gave nothing with room to spare: no later round would
                // differ, so this block cannot be decoded.
                return Err(protocol("header block makes no progress"));
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let mut at = 0usize;
    let take_u32 = |at: &mut usize| -> Result<u32, SpdyError> {
        let s = b
            .get(*at..*at + 4)
            .ok_or_else(|| protocol("truncated header block"))?;
        *at += 4;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    };
    let count = take_u32(&mut at)? as usize;
    if count > 1024 {
        return Err(protocol("too many headers"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let field = |at: &mut usize| -> Result<String, SpdyError> {
            let len = take_u32(at)? as usize;
            let s = b
                .get(*at..*at + len)
                .ok_or_else(|| protocol("truncated header block"))?;
            *at += len;
            Ok(String::from_utf8_lossy(s).into_owned())
        };
        let name = field(&mut at)?;
        let value = field(&mut at)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// Encodes the header blocks of one direction of a connection.
pub struct HeaderEncoder {
    deflate: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh compressor accepts a dictionary; failing that is a bug in the library.
        let _ = deflate.set_dictionary(&DICTIONARY);
        HeaderEncoder { deflate }
    }
}

impl HeaderEncoder {
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for s in [name, value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            if self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
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

/// Reads one frame; None at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(protocol(format!("frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    let flags = head[4];
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(protocol(format!("SPDY version {version}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        Ok(Some(Frame::Control {
            kind,
            flags,
            payload,
        }))
    } else {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        Ok(Some(Frame::Data {
            stream,
            flags,
            payload,
        }))
    }
}

fn be32(b: &[u8], at: usize) -> Result<u32, SpdyError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| protocol("control frame too short"))
}

/// A stream the peer opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// What the peer sends on the stream; ends at its FIN or RST_STREAM.
    pub data: mpsc::Receiver<Bytes>,
    pub out: Sender,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What goes to the writer.
enum Out {
    Reply(u32),
    Data {
        stream: u32,
        bytes: Bytes,
        fin: bool,
    },
    Reset {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    Window {
        stream: u32,
        delta: u32,
    },
    /// The peer reset this stream.
    PeerReset(u32),
    /// A protocol error: GOAWAY with that status at once, ahead of anything queued.
    GoAway(u32),
    /// Flush what is queued before it, reset the open streams, send GOAWAY and close.
    Close,
    /// The peer keeps windows; from now on they are honoured.
    PeerWindows {
        initial: Option<i64>,
        stream: u32,
        delta: i64,
    },
}

/// Sends frames on a session; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    data: mpsc::Sender<Out>,
    control: mpsc::UnboundedSender<Out>,
    /// Control frames queued and not yet written. The queue is unbounded so that answering
    /// never waits, and this count bounds it instead: a peer that keeps sending without
    /// reading what it is answered is cut off (see `read_loop`).
    backlog: Arc<AtomicUsize>,
    stream: u32,
}

impl Sender {
    /// Sends bytes on this stream (in frames of at most `MAX_DATA`); false once the session
    /// is gone.
    pub async fn send(&self, bytes: Bytes) -> bool {
        let mut rest = bytes;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(MAX_DATA));
            let out = Out::Data {
                stream: self.stream,
                bytes: piece,
                fin: false,
            };
            if self.data.send(out).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends this side of the stream (an empty DATA frame with FIN).
    pub async fn finish(&self) {
        let out = Out::Data {
            stream: self.stream,
            bytes: Bytes::new(),
            fin: true,
        };
        let _ = self.data.send(out).await;
    }

    pub fn reset(&self, status: u32) {
        self.queue(Out::Reset {
            stream: self.stream,
            status,
        });
    }

    fn queue(&self, out: Out) {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        let _ = self.control.send(out);
    }

    /// Ends the session as the Kubernetes streaming server does: once everything sent before
    /// is written (data held back by the peer's windows too), every stream still open is reset
    /// (CANCEL), then GOAWAY goes out, last, and the connection is closed. The order matters:
    /// the Go clients' SPDY library (moby/spdystream) stops reading at GOAWAY, so a stream's
    /// bytes behind it, an exit status above all, would never be read.
    pub async fn close(&self) {
        let _ = self.data.send(Out::Close).await;
    }
}

/// A served SPDY session: the streams the peer opens, in order.
pub struct Session {
    pub streams: mpsc::Receiver<Stream>,
    /// Becomes true once the connection is over (the peer left, it idled out, or it was
    /// closed from this side).
    pub closed: watch::Receiver<bool>,
    /// Ends once the connection is closed.
    pub done: tokio::task::JoinHandle<()>,
    sender: Sender,
}

impl Session {
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }
}

/// When the session last saw a frame in either direction.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Returns once nothing happened for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// Serves SPDY on `io` (after the HTTP upgrade). Every stream the peer opens is answered with
/// SYN_REPLY and handed out through `Session::streams`. A session with no frame in either
/// direction for `idle` is closed.
pub fn serve<S>(io: S, idle: Duration) -> Session
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (data_tx, data_rx) = mpsc::channel(64);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (streams_tx, streams_rx) = mpsc::channel(MAX_STREAMS);
    let (closed_tx, closed) = watch::channel(false);
    let sender = Sender {
        data: data_tx,
        control: control_tx,
        backlog: Arc::new(AtomicUsize::new(0)),
        stream: 0,
    };
    let activity = Activity::new();
    let mut reader = tokio::spawn(read_loop(
        read,
        sender.clone(),
        streams_tx,
        activity.clone(),
    ));
    let mut writer = tokio::spawn(write_loop(
        write,
        data_rx,
        (control_rx, sender.backlog.clone()),
        activity.clone(),
    ));
    let control = sender.clone();
    let done = tokio::spawn(async move {
        let writer_done = tokio::select! {
            _ = &mut reader => false,
            result = &mut writer => {
                if let Ok(Err(e)) = result {
                    tracing::debug!(error = %e, "SPDY session writer ended");
                }
                true
            }
            _ = activity.idle_for(idle) => {
                tracing::info!(?idle, "closing an idle streaming session");
                false
            }
        };
        reader.abort();
        let _ = closed_tx.send(true);
        if !writer_done {
            control.queue(Out::Close);
            if tokio::time::timeout(Duration::from_secs(5), &mut writer)
                .await
                .is_err()
            {
                // A peer that reads nothing would hold the writer, and the connection with
                // it, for ever.
                writer.abort();
            }
        }
    });
    Session {
        streams: streams_rx,
        closed,
        done,
        sender,
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    sender: Sender,
    streams: mpsc::Sender<Stream>,
    activity: Activity,
) {
    let mut decoder = HeaderDecoder::default();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut opened = 0usize;
    let mut last_id = 0u32;
    loop {
        let frame = match read_frame(&mut r).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "SPDY session reader ended");
                break;
            }
        };
        activity.touch();
        match frame {
            Frame::Control {
                kind,
                flags,
                payload,
            } => {
                let result = control(
                    kind,
                    flags,
                    &payload,
                    &sender,
                    &streams,
                    &mut decoder,
                    &mut open,
                    (&mut opened, &mut last_id),
                )
                .await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "SPDY protocol error; closing the session");
                    sender.queue(Out::GoAway(GOAWAY_PROTOCOL_ERROR));
                    break;
                }
            }
            Frame::Data {
                stream,
                flags,
                payload,
            } => {
                let len = payload.len() as u32;
                if let Some(tx) = open.get(&stream) {
                    if !payload.is_empty() && tx.send(Bytes::from(payload)).await.is_err() {
                        open.remove(&stream);
                    }
                }
                if len > 0 {
                    // Window returned as the data is taken in; the bounded channel above
                    // already pushed back on the connection if the consumer is slow.
                    sender.queue(Out::Window { stream, delta: len });
                    sender.queue(Out::Window {
                        stream: 0,
                        delta: len,
                    });
                }
                if flags & FLAG_FIN != 0 {
                    open.remove(&stream);
                }
            }
        }
        if sender.backlog.load(Ordering::Relaxed) > MAX_CONTROL_BACKLOG {
            tracing::info!("streaming client does not read its answers; closing the session");
            break;
        }
    }
    // Dropping the senders ends every stream's data.
}

#[allow(clippy::too_many_arguments)]
async fn control(
    kind: u16,
    flags: u8,
    payload: &[u8],
    sender: &Sender,
    streams: &mpsc::Sender<Stream>,
    decoder: &mut HeaderDecoder,
    open: &mut HashMap<u32, mpsc::Sender<Bytes>>,
    (opened, last_id): (&mut usize, &mut u32),
) -> Result<(), SpdyError> {
    match kind {
        SYN_STREAM => {
            let id = be32(payload, 0)? & 0x7fff_ffff;
            let block = payload
                .get(10..)
                .ok_or_else(|| protocol("short SYN_STREAM"))?;
            // The decoder must see every block, in order, even of refused streams.
            let headers = decoder.decode(block)?;
            if id == 0 || id % 2 == 0 || id <= *last_id {
                sender.reset_stream(id, PROTOCOL_ERROR);
                return Ok(());
            }
            *last_id = id;
            if *opened >= MAX_STREAMS {
                sender.reset_stream(id, REFUSED_STREAM);
                return Ok(());
            }
            *opened += 1;
            let (tx, rx) = mpsc::channel(16);
            if flags & FLAG_FIN == 0 {
                open.insert(id, tx);
            }
            sender.queue(Out::Reply(id));
            let stream = Stream {
                id,
                headers,
                data: rx,
                out: Sender {
                    stream: id,
                    ..sender.clone()
                },
            };
            if streams.send(stream).await.is_err() {
                sender.reset_stream(id, REFUSED_STREAM);
            }
        }
        RST_STREAM => {
            let id = be32(payload, 0)? & 0x7fff_ffff;
            open.remove(&id);
            // A reset stream is over on both sides: it is not reset back.
            sender.queue(Out::PeerReset(id));
        }
        SETTINGS => {
            let count = be32(payload, 0)? as usize;
            for i in 0..count.min(64) {
                let id = be32(payload, 4 + i * 8)? & 0x00ff_ffff;
                let value = be32(payload, 8 + i * 8)?;
                if id == SETTINGS_INITIAL_WINDOW_SIZE {
                    sender.queue(Out::PeerWindows {
                        initial: Some(i64::from(value)),
                        stream: 0,
                        delta: 0,
                    });
                }
            }
        }
        PING => {
            sender.queue(Out::Ping(be32(payload, 0)?));
        }
        WINDOW_UPDATE => {
            let stream = be32(payload, 0)? & 0x7fff_ffff;
            let delta = i64::from(be32(payload, 4)? & 0x7fff_ffff);
            sender.queue(Out::PeerWindows {
                initial: None,
                stream,
                delta,
            });
        }
        SYN_REPLY | HEADERS => {
            // Header blocks keep the decompression context in step.
            let at = 4;
            if let Some(block) = payload.get(at..) {
                decoder.decode(block)?;
            }
        }
        GOAWAY => {}
        _ => {}
    }
    Ok(())
}

impl Sender {
    fn reset_stream(&self, stream: u32, status: u32) {
        self.queue(Out::Reset { stream, status });
    }
}

/// The peer's windows, once it shows it keeps them.
#[derive(Default)]
struct Windows {
    active: bool,
    initial: i64,
    session: i64,
    streams: HashMap<u32, i64>,
    pending: VecDeque<(u32, Bytes, bool)>,
    pending_bytes: usize,
}

impl Windows {
    fn stream(&mut self, id: u32) -> &mut i64 {
        let initial = self.initial;
        self.streams.entry(id).or_insert(initial)
    }

    /// How much of `len` bytes for `id` may go now.
    fn allowance(&mut self, id: u32, len: usize) -> usize {
        if !self.active {
            return len;
        }
        let session = self.session;
        let stream = *self.stream(id);
        len.min(session.min(stream).max(0) as usize)
    }

    fn spend(&mut self, id: u32, n: usize) {
        if self.active {
            self.session -= n as i64;
            *self.stream(id) -= n as i64;
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut data: mpsc::Receiver<Out>,
    (mut control, backlog): (mpsc::UnboundedReceiver<Out>, Arc<AtomicUsize>),
    activity: Activity,
) -> std::io::Result<()> {
    let mut encoder = HeaderEncoder::default();
    let mut windows = Windows {
        initial: INITIAL_WINDOW,
        session: INITIAL_WINDOW,
        ..Default::default()
    };
    let mut goaway_sent = false;
    // Streams answered and not reset: each is reset when the session closes.
    let mut open: BTreeSet<u32> = BTreeSet::new();
    // Closing waits for data still held back by the peer's windows.
    let mut closing = false;
    loop {
        if closing && windows.pending.is_empty() {
            break;
        }
        let accept_data = windows.pending_bytes < MAX_PENDING && !closing;
        let out = tokio::select! {
            biased;
            out = control.recv() => {
                backlog.fetch_sub(1, Ordering::Relaxed);
                out
            }
            out = data.recv(), if accept_data => out,
        };
        let Some(out) = out else { break };
        activity.touch();
        match out {
            Out::Reply(id) => {
                open.insert(id);
                let mut payload = id.to_be_bytes().to_vec();
                payload.extend_from_slice(&encoder.encode(&[]));
                w.write_all(&control_frame(SYN_REPLY, 0, &payload)).await?;
            }
            Out::Data { stream, bytes, fin } => {
                let queued = windows.pending.iter().any(|(id, _, _)| *id == stream);
                if queued {
                    windows.pending_bytes += bytes.len();
                    windows.pending.push_back((stream, bytes, fin));
                } else {
                    write_data(&mut w, &mut windows, stream, bytes, fin).await?;
                }
            }
            Out::Reset { stream, status } => {
                open.remove(&stream);
                w.write_all(&reset_frame(stream, status)).await?;
            }
            Out::Ping(id) => {
                w.write_all(&control_frame(PING, 0, &id.to_be_bytes()))
                    .await?;
            }
            Out::Window { stream, delta } => {
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend_from_slice(&delta.to_be_bytes());
                w.write_all(&control_frame(WINDOW_UPDATE, 0, &payload))
                    .await?;
            }
            Out::PeerReset(stream) => {
                open.remove(&stream);
            }
            Out::Close => closing = true,
            Out::GoAway(status) => {
                if !goaway_sent {
                    goaway_sent = true;
                    let last = open.last().copied().unwrap_or(0);
                    w.write_all(&goaway_frame(last, status)).await?;
                }
            }
            Out::PeerWindows {
                initial,
                stream,
                delta,
            } => {
                windows.active = true;
                if let Some(initial) = initial {
                    let change = initial - windows.initial;
                    windows.initial = initial;
                    for w in windows.streams.values_mut() {
                        *w += change;
                    }
                } else if stream == 0 {
                    windows.session += delta;
                } else {
                    *windows.stream(stream) += delta;
                }
                flush_pending(&mut w, &mut windows).await?;
            }
        }
        if data.is_empty() && control.is_empty() {
            w.flush().await?;
        }
    }
    // Every byte of every stream is out: the streams end, then the session, in the reference
    // server's order.
    let last = open.last().copied().unwrap_or(0);
    for stream in std::mem::take(&mut open) {
        w.write_all(&reset_frame(stream, CANCEL)).await?;
    }
    if !goaway_sent {
        w.write_all(&goaway_frame(last, GOAWAY_OK)).await?;
    }
    w.flush().await?;
    w.shutdown().await
}

fn reset_frame(stream: u32, status: u32) -> Vec<u8> {
    let mut payload = stream.to_be_bytes().to_vec();
    payload.extend_from_slice(&status.to_be_bytes());
    control_frame(RST_STREAM, 0, &payload)
}

/// GOAWAY naming the last stream this side accepted.
fn goaway_frame(last_good: u32, status: u32) -> Vec<u8> {
    let mut payload = last_good.to_be_bytes().to_vec();
    payload.extend_from_slice(&status.to_be_bytes());
    control_frame(GOAWAY, 0, &payload)
}

/// Writes what the windows allow of a DATA frame and queues the rest.
async fn write_data<W: AsyncWrite + Unpin>(
    w: &mut W,
    windows: &mut Windows,
    stream: u32,
    mut bytes: Bytes,
    fin: bool,
) -> std::io::Result<()> {
    let n = windows.allowance(stream, bytes.len());
    if n < bytes.len() {
        let now = bytes.split_to(n);
        if !now.is_empty() {
            windows.spend(stream, n);
            w.write_all(&data_header(stream, 0, now.len())).await?;
            w.write_all(&now).await?;
        }
        windows.pending_bytes += bytes.len();
        windows.pending.push_back((stream, bytes, fin));
        return Ok(());
    }
    windows.spend(stream, n);
    let flags = if fin { FLAG_FIN } else { 0 };
    w.write_all(&data_header(stream, flags, bytes.len()))
        .await?;
    w.write_all(&bytes).await
}

async fn flush_pending<W: AsyncWrite + Unpin>(
    w: &mut W,
    windows: &mut Windows,
) -> std::io::Result<()> {
    let queued = std::mem::take(&mut windows.pending);
    windows.pending_bytes = 0;
    let mut blocked: Vec<u32> = Vec::new();
    for (stream, bytes, fin) in queued {
        if blocked.contains(&stream) {
            windows.pending_bytes += bytes.len();
            windows.pending.push_back((stream, bytes, fin));
            continue;
        }
        let before = windows.pending.len();
        write_data(w, windows, stream, bytes, fin).await?;
        if windows.pending.len() > before {
            blocked.push(stream);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncRead, AsyncWriteExt};

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/streaming"
    );

    #[test]
    fn the_dictionary_is_the_specifications() {
        assert_eq!(DICTIONARY.len(), 1423);
        // zlib names a preset dictionary by its Adler-32; real clients' streams carry this one.
        let mut adler = (1u32, 0u32);
        for b in DICTIONARY.iter() {
            adler.0 = (adler.0 + u32::from(*b)) % 65521;
            adler.1 = (adler.1 + adler.0) % 65521;
        }
        assert_eq!((adler.1 << 16) | adler.0, 0xe3c6_a7c2);
    }

    #[test]
    fn headers_round_trip_through_one_context() {
        let mut enc = HeaderEncoder::default();
        let mut dec = HeaderDecoder::default();
        for i in 0..3 {
            let port = format!("{}", 8080 + i);
            let block = enc.encode(&[("streamtype", "data"), ("port", &port)]);
            let headers = dec.decode(&block).expect("decode");
            assert_eq!(
                headers,
                vec![
                    ("streamtype".to_string(), "data".to_string()),
                    ("port".to_string(), port)
                ]
            );
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
                Frame::Control { kind, payload, .. } if *kind == SYN_STREAM => {
                    Some(decoder.decode(&payload[10..]).expect("header block"))
                }
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

    /// Frames from the server until one of `kind` (control) or a DATA frame (kind 0).
    async fn next_of<R: AsyncRead + Unpin>(r: &mut R, kind: u16) -> Frame {
        loop {
            let frame = read_frame(r).await.expect("frame").expect("not the end");
            match (&frame, kind) {
                (Frame::Data { .. }, 0) => return frame,
                (Frame::Control { kind: k, .. }, want) if *k == want => return frame,
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_sends_pings_and_never_reads_is_cut_off() {
        // A small pipe: the answers stop being written as soon as it is full.
        let (client, server) = tokio::io::duplex(1024);
        let mut session = serve(server, Duration::from_secs(60));
        let (_read, mut write) = tokio::io::split(client);
        let flood = async {
            for i in 0..(MAX_CONTROL_BACKLOG as u32 * 2) {
                if write
                    .write_all(&control_frame(PING, 0, &i.to_be_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(flood, &mut session.done)
        })
        .await;
        assert!(ended.is_ok(), "the session kept queueing answers");
        assert!(*session.closed.borrow());
    }

    #[tokio::test]
    async fn a_session_answers_pings_honours_resets_and_closes_with_goaway() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut session = serve(server, Duration::from_secs(60));
        let (mut read, mut write) = tokio::io::split(client);
        let mut headers = HeaderEncoder::default();
        let mut payload = 1u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0; 6]);
        payload.extend_from_slice(&headers.encode(&[("streamtype", "data")]));
        write
            .write_all(&control_frame(SYN_STREAM, 0, &payload))
            .await
            .expect("SYN_STREAM");
        let mut stream = session.streams.recv().await.expect("stream");
        assert_eq!(stream.header("streamtype"), Some("data"));
        assert!(matches!(
            next_of(&mut read, SYN_REPLY).await,
            Frame::Control { .. }
        ));

        write
            .write_all(&control_frame(PING, 0, &7u32.to_be_bytes()))
            .await
            .expect("PING");
        match next_of(&mut read, PING).await {
            Frame::Control { payload, .. } => assert_eq!(payload, 7u32.to_be_bytes()),
            other => panic!("{other:?}"),
        }

        write.write_all(&data_header(1, 0, 3)).await.expect("DATA");
        write.write_all(b"abc").await.expect("DATA");
        let mut rst = 1u32.to_be_bytes().to_vec();
        rst.extend_from_slice(&CANCEL.to_be_bytes());
        write
            .write_all(&control_frame(RST_STREAM, 0, &rst))
            .await
            .expect("RST_STREAM");
        assert_eq!(stream.data.recv().await.as_deref(), Some(&b"abc"[..]));
        assert_eq!(stream.data.recv().await, None, "a reset stream ends");

        // A second stream, still open when the session closes.
        let mut payload = 3u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0; 6]);
        payload.extend_from_slice(&headers.encode(&[("streamtype", "error")]));
        write
            .write_all(&control_frame(SYN_STREAM, 0, &payload))
            .await
            .expect("SYN_STREAM");
        let second = session.streams.recv().await.expect("stream");
        stream.out.send(Bytes::from_static(b"xyz")).await;
        second.out.send(Bytes::from_static(b"status")).await;
        session.sender().close().await;
        // Everything queued, then a reset of the stream still open (not of the one the peer
        // reset), then GOAWAY naming the last stream, then the end of the connection.
        let mut seen = Vec::new();
        while let Some(frame) = read_frame(&mut read).await.expect("frame") {
            match frame {
                Frame::Data {
                    stream, payload, ..
                } => seen.push(format!(
                    "data {stream} {}",
                    String::from_utf8_lossy(&payload)
                )),
                Frame::Control {
                    kind: RST_STREAM,
                    payload,
                    ..
                } => seen.push(format!("rst {}", be32(&payload, 0).expect("id"))),
                Frame::Control {
                    kind: GOAWAY,
                    payload,
                    ..
                } => seen.push(format!("goaway {}", be32(&payload, 0).expect("id"))),
                _ => {}
            }
        }
        assert_eq!(
            seen,
            ["data 1 xyz", "data 3 status", "rst 3", "goaway 3"],
            "frames after the SYN_REPLYs"
        );
        tokio::time::timeout(Duration::from_secs(5), session.done)
            .await
            .expect("the session ends")
            .expect("join");
        assert!(*session.closed.borrow());
    }
}
