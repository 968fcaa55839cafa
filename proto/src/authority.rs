//! Any `:authority` on dockpod's unix sockets: the CRI socket and every shim's socket.
//!
//! Why this exists: the HTTP/2 layer under tonic (the `h2` crate) resets, with
//! PROTOCOL_ERROR and before any service sees it, every request whose `:authority` is not a
//! valid URI authority. Over a unix socket many real CRI clients send exactly that: grpc-go
//! dialled with a bare socket path (the kubelet did until kubernetes/kubernetes#123463 in
//! 2024, so every kubelet released before it), grpc-java with a domain-socket address,
//! `grpcurl -unix`, Python `grpcio` since 1.57 (the percent-encoded path). containerd and
//! cri-dockerd, being Go servers, accept them. The h2 maintainers declined to relax the check
//! (h2 #442, #487; hyper #3750), and a fork of h2 is not ours to keep.
//!
//! So a thin layer sits between the accepted connection and hyper. It reads the client's
//! HTTP/2 frames; every header block (HEADERS with its CONTINUATIONs) is decoded with the
//! connection's HPACK context, a request whose authority is missing, empty or invalid gets
//! `localhost`, and the block is encoded again with an HPACK context of this layer's own,
//! which h2's decoder then follows (so every block goes through it, rewritten or not). Every
//! other frame passes through byte for byte as it arrives, and the server's direction is not
//! touched at all. The cost per call is measured by `bench-authority`.
//!
//! The HPACK codec is `httlib-hpack`: its table-driven Huffman decoder takes under a
//! microsecond for a tonic request's block, where `loona-hpack` (bit by bit) took 20 µs,
//! which every call from the front to a shim would pay. It indexes its input without bounds
//! checks in places, so `fields` walks each block's structure first (integers and string
//! lengths within the block) and a block that fails it closes the connection, as h2 would.
//! Each field is then decoded on its own, which keeps the decoder's per-field copying of its
//! input linear, and the decoded list is bounded (`MAX_HEADER_LIST`) as it grows: one byte
//! of HPACK can name a table entry of kilobytes, so a block's decoded size is no bound.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::{Connected, UdsConnectInfo};

use crate::wire;

/// What the client's connection starts with, before its first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Frames written toward h2 stay within the smallest maximum frame size HTTP/2 allows, which
/// every server accepts whatever it advertised.
const MAX_FRAME: usize = 16 * 1024;
/// Largest header block accepted (compressed, HEADERS and CONTINUATIONs together). A block is
/// held whole until it ends; gRPC's own servers refuse more than 16 KiB of headers.
pub const MAX_BLOCK: usize = 256 * 1024;
/// Largest decoded header list (RFC 7541's size: name, value and 32 per field) a block may
/// expand to; far above any gRPC request, far below memory that matters.
pub const MAX_HEADER_LIST: usize = 1024 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// What a request without a usable authority is served as.
const LOCALHOST: &[u8] = b"localhost";

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("a header block of over {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("a header block interrupted by another frame")]
    Interrupted,
    #[error("a CONTINUATION frame outside a header block")]
    StrayContinuation,
    #[error("a malformed HEADERS frame")]
    Malformed,
    #[error("a header block that does not decode: {0}")]
    Hpack(String),
    #[error("a header block that decodes to over {MAX_HEADER_LIST} bytes")]
    ListTooLarge,
}

impl From<AuthorityError> for io::Error {
    fn from(e: AuthorityError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Where the client's byte stream is.
enum Stage {
    /// Inside the connection preface: this many bytes to go.
    Preface(usize),
    /// Reading a frame header.
    Head,
    /// Passing a frame's payload through: this many bytes to go.
    Pass(usize),
    /// Collecting a HEADERS or CONTINUATION payload of this length.
    Collect {
        kind: u8,
        flags: u8,
        stream: u32,
        len: usize,
    },
    /// The connection's first request had a usable authority: everything passes untouched.
    Through,
}

/// A decoded header list: names, values, and how each was represented (httlib's flags).
pub type HeaderList = Vec<(Vec<u8>, Vec<u8>, u8)>;

/// A header block being collected.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client-to-server rewrite of one connection, as pure bytes in, bytes out.
pub struct Rewriter {
    stage: Stage,
    /// The frame header or header-frame payload read so far.
    partial: Vec<u8>,
    block: Option<Block>,
    decoder: httlib_hpack::Decoder<'static>,
    encoder: httlib_hpack::Encoder<'static>,
    /// Whether a header block was seen yet.
    seen_block: bool,
    /// Requests whose authority was replaced.
    pub rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            stage: Stage::Preface(PREFACE_LEN),
            partial: Vec::new(),
            block: None,
            decoder: httlib_hpack::Decoder::default(),
            encoder: httlib_hpack::Encoder::default(),
            seen_block: false,
            rewritten: 0,
        }
    }
}

impl Rewriter {
    /// Takes the next bytes from the client and appends what h2 is to read to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        while !input.is_empty() {
            match self.stage {
                Stage::Through => {
                    out.extend_from_slice(input);
                    input = &[];
                }
                Stage::Preface(left) => {
                    let n = left.min(input.len());
                    let (now, rest) = wire::split(input, n);
                    out.extend_from_slice(now);
                    input = rest;
                    self.stage = match left - n {
                        0 => Stage::Head,
                        left => Stage::Preface(left),
                    };
                }
                Stage::Pass(left) => {
                    let n = left.min(input.len());
                    let (now, rest) = wire::split(input, n);
                    out.extend_from_slice(now);
                    input = rest;
                    self.stage = match left - n {
                        0 => Stage::Head,
                        left => Stage::Pass(left),
                    };
                }
                Stage::Head => {
                    let n = (FRAME_HEAD - self.partial.len()).min(input.len());
                    let (now, rest) = wire::split(input, n);
                    self.partial.extend_from_slice(now);
                    input = rest;
                    if self.partial.len() == FRAME_HEAD {
                        let head: [u8; FRAME_HEAD] = take_head(&mut self.partial);
                        self.frame_head(head, out)?;
                    }
                }
                Stage::Collect { len, .. } => {
                    let n = (len - self.partial.len()).min(input.len());
                    let (now, rest) = wire::split(input, n);
                    self.partial.extend_from_slice(now);
                    input = rest;
                    if self.partial.len() == len {
                        self.header_payload(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn frame_head(
        &mut self,
        head: [u8; FRAME_HEAD],
        out: &mut Vec<u8>,
    ) -> Result<(), AuthorityError> {
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        match (kind, &self.block) {
            (HEADERS, None) | (CONTINUATION, Some(_)) => {
                let held = self.block.as_ref().map_or(0, |b| b.fragment.len());
                if held + len > MAX_BLOCK {
                    return Err(AuthorityError::BlockTooLarge);
                }
                self.stage = Stage::Collect {
                    kind,
                    flags,
                    stream,
                    len,
                };
                if len == 0 {
                    self.header_payload(out)?;
                }
            }
            (CONTINUATION, None) => return Err(AuthorityError::StrayContinuation),
            (_, Some(_)) => return Err(AuthorityError::Interrupted),
            _ => {
                out.extend_from_slice(&head);
                self.stage = if len == 0 {
                    Stage::Head
                } else {
                    Stage::Pass(len)
                };
            }
        }
        Ok(())
    }

    /// A whole HEADERS or CONTINUATION payload is in `partial`.
    fn header_payload(&mut self, out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        let Stage::Collect {
            kind,
            flags,
            stream,
            ..
        } = self.stage
        else {
            return Ok(());
        };
        let payload = std::mem::take(&mut self.partial);
        self.stage = Stage::Head;
        if kind == HEADERS {
            let mut body = &payload[..];
            let mut pad = 0usize;
            if flags & PADDED != 0 {
                let (&n, rest) = body.split_first().ok_or(AuthorityError::Malformed)?;
                pad = usize::from(n);
                body = rest;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let (p, rest) = body.split_at_checked(5).ok_or(AuthorityError::Malformed)?;
                priority = Some(wire::array(p, 0).ok_or(AuthorityError::Malformed)?);
                body = rest;
            }
            let end = body
                .len()
                .checked_sub(pad)
                .ok_or(AuthorityError::Malformed)?;
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: body.get(..end).unwrap_or_default().to_vec(),
            });
        } else if let Some(block) = self.block.as_mut() {
            if block.stream != stream {
                return Err(AuthorityError::Interrupted);
            }
            block.fragment.extend_from_slice(&payload);
        }
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.emit(block, out)?;
            }
        }
        Ok(())
    }

    /// Whether the rest of the connection passes through untouched.
    pub fn passing_through(&self) -> bool {
        matches!(self.stage, Stage::Through)
    }

    /// Decodes a whole block, repairs its authority and writes it out as HEADERS (and
    /// CONTINUATIONs) again.
    ///
    /// The connection's first block decides for the whole connection: a gRPC client takes
    /// the authority from its channel's target, so one whose first request is usable sends
    /// usable ones throughout, and its connection is passed through from then on at no cost
    /// (h2's HPACK context then follows the client's own, from the first block on, which is
    /// why only the first block can decide). Any other connection has every block rewritten.
    fn emit(&mut self, block: Block, out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        let Some(ranges) = fields(&block.fragment) else {
            return Err(AuthorityError::Hpack("malformed".into()));
        };
        let first = !std::mem::replace(&mut self.seen_block, true);
        let mut fields: HeaderList = Vec::new();
        let mut size = 0usize;
        for range in ranges {
            let mut input = block.fragment.get(range).unwrap_or_default().to_vec();
            let mut one = Vec::with_capacity(1);
            self.decoder
                .decode_exact(&mut input, &mut one)
                .map_err(|e| AuthorityError::Hpack(format!("{e:?}")))?;
            for (name, value, _) in &one {
                size = size.saturating_add(name.len() + value.len() + 32);
            }
            if size > MAX_HEADER_LIST {
                return Err(AuthorityError::ListTooLarge);
            }
            fields.append(&mut one);
        }
        let original = first.then_some(block.fragment);
        let is_request = fields.iter().any(|(n, _, _)| n == b":method");
        if repair(&mut fields) {
            self.rewritten += 1;
        } else if let Some(original) = original.filter(|_| is_request) {
            write_block(
                out,
                &original,
                block.stream,
                block.end_stream,
                block.priority,
            );
            self.stage = Stage::Through;
            return Ok(());
        }
        let mut encoded = Vec::with_capacity(size.min(MAX_FRAME));
        for (name, value, decoded) in fields {
            // The client's choices are kept: what it indexed is indexed, what it marked as
            // never to be indexed stays so; Huffman coding is left out (a local socket).
            let mut flags = httlib_hpack::Encoder::BEST_FORMAT;
            if decoded & httlib_hpack::Decoder::WITH_INDEXING != 0 {
                flags |= httlib_hpack::Encoder::WITH_INDEXING;
            }
            if decoded & httlib_hpack::Decoder::NEVER_INDEXED != 0 {
                flags |= httlib_hpack::Encoder::NEVER_INDEXED;
            }
            self.encoder
                .encode((name, value, flags), &mut encoded)
                .map_err(|e| AuthorityError::Hpack(format!("{e:?}")))?;
        }
        write_block(
            out,
            &encoded,
            block.stream,
            block.end_stream,
            block.priority,
        );
        Ok(())
    }
}

/// A header block as HEADERS and, past one frame's room, CONTINUATIONs.
fn write_block(
    out: &mut Vec<u8>,
    encoded: &[u8],
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
) {
    let mut first_flags = if end_stream { END_STREAM } else { 0 };
    let room = MAX_FRAME - if priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = encoded.split_at(room.min(encoded.len()));
    if rest.is_empty() {
        first_flags |= END_HEADERS;
    }
    let mut payload = Vec::with_capacity(first.len() + 5);
    if let Some(p) = priority {
        first_flags |= PRIORITY;
        payload.extend_from_slice(&p);
    }
    payload.extend_from_slice(first);
    write_frame(out, HEADERS, first_flags, stream, &payload);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(MAX_FRAME.min(rest.len()));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        write_frame(out, CONTINUATION, flags, stream, chunk);
        rest = tail;
    }
}

/// Whether an HPACK block is made of whole field representations (RFC 7541 section 6):
/// every integer ends within four bytes and within the block, every string fits in it.
pub fn well_formed(block: &[u8]) -> bool {
    fields(block).is_some()
}

/// Where each field representation of an HPACK block lies (a table size update counts as
/// one), if the block is well formed.
fn fields(block: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut ranges = Vec::new();
    let mut at = 0;
    while let Some(&first) = block.get(at) {
        let start = at;
        let (prefix, literal) = match first {
            b if b & 0x80 != 0 => (7, false), // indexed
            b if b & 0x40 != 0 => (6, true),  // literal, indexed
            b if b & 0x20 != 0 => (5, false), // table size update
            _ => (4, true),                   // literal, not indexed or never indexed
        };
        let (index, n) = block.get(at..).and_then(|rest| integer(rest, prefix))?;
        at += n;
        if literal {
            let strings = if index == 0 { 2 } else { 1 };
            for _ in 0..strings {
                let (len, n) = block.get(at..).and_then(|rest| integer(rest, 7))?;
                at += n;
                if block.len() - at < len {
                    return None;
                }
                at += len;
            }
        }
        ranges.push(start..at);
    }
    Some(ranges)
}

/// An HPACK integer with a `prefix`-bit prefix at the start of `buf`: its value and length.
/// Longer encodings than four bytes are refused (2^21 is far beyond any block here).
fn integer(buf: &[u8], prefix: u8) -> Option<(usize, usize)> {
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(*buf.first()?) & mask;
    if value < mask {
        return Some((value, 1));
    }
    for (i, &b) in buf.iter().enumerate().skip(1).take(3) {
        value += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn take_head(partial: &mut Vec<u8>) -> [u8; FRAME_HEAD] {
    let head = wire::array(partial, 0).unwrap_or([0; FRAME_HEAD]);
    partial.clear();
    head
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Whether h2 takes this `:authority` as it is.
fn usable(authority: &[u8]) -> bool {
    !authority.is_empty() && http::uri::Authority::try_from(authority).is_ok()
}

/// Gives a request without a usable `:authority` the authority `localhost`; true if it
/// changed anything. Trailers (no `:method`) are left alone.
pub fn repair(headers: &mut HeaderList) -> bool {
    if !headers.iter().any(|(n, _, _)| n == b":method") {
        return false;
    }
    match headers.iter_mut().find(|(n, _, _)| n == b":authority") {
        Some((_, value, _)) if usable(value) => false,
        Some((_, value, _)) => {
            *value = LOCALHOST.to_vec();
            true
        }
        None => {
            // Pseudo-headers come first: it goes after the last of them.
            let at = headers
                .iter()
                .position(|(n, _, _)| !n.starts_with(b":"))
                .unwrap_or(headers.len());
            headers.insert(at, (b":authority".to_vec(), LOCALHOST.to_vec(), 0));
            true
        }
    }
}

/// An accepted connection whose client-to-server bytes go through a `Rewriter`.
pub struct AuthorityFixed<S> {
    io: S,
    rewriter: Rewriter,
    scratch: Box<[u8]>,
    out: Vec<u8>,
    taken: usize,
    eof: bool,
}

impl<S> AuthorityFixed<S> {
    pub fn new(io: S) -> Self {
        AuthorityFixed {
            io,
            rewriter: Rewriter::default(),
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
            out: Vec::new(),
            taken: 0,
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.taken);
                buf.put_slice(this.out.get(this.taken..this.taken + n).unwrap_or_default());
                this.taken += n;
                if this.taken == this.out.len() {
                    this.out.clear();
                    this.taken = 0;
                    // A burst's buffer is not kept for the life of the connection.
                    if this.out.capacity() > 4 * READ_CHUNK {
                        this.out.shrink_to(READ_CHUNK);
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.passing_through() {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut raw = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut raw))?;
            if raw.filled().is_empty() {
                this.eof = true;
                continue;
            }
            // A bug in the rewriting ends this connection alone (see `panics`).
            let (rewriter, out) = (&mut this.rewriter, &mut this.out);
            crate::panics::within(|| rewriter.push(raw.filled(), out))?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for AuthorityFixed<UnixStream> {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The connections of `listener`, each with its authority repaired, for
/// `serve_with_incoming*`.
pub fn incoming(
    listener: UnixListener,
) -> impl tokio_stream::Stream<Item = io::Result<AuthorityFixed<UnixStream>>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|c| c.map(AuthorityFixed::new))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// Header lists as the tests' own client and h2's side see them. Both ends use another
    /// HPACK implementation (loona-hpack) than the layer, so neither can hide the other's bug.
    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn request(authority: Option<&str>) -> Fields {
        let mut h: Fields = vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/runtime.v1.RuntimeService/Version".to_vec(),
            ),
        ];
        if let Some(a) = authority {
            h.push((b":authority".to_vec(), a.as_bytes().to_vec()));
        }
        h.push((b"content-type".to_vec(), b"application/grpc".to_vec()));
        h.push((b"te".to_vec(), b"trailers".to_vec()));
        h
    }

    /// Frames as a client would write them, header blocks with the client's own context.
    fn client_bytes(requests: &[Fields], split: usize) -> Vec<u8> {
        let mut encoder = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        write_frame(&mut bytes, 0x4, 0, 0, &[]); // SETTINGS
        for (i, h) in requests.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            let block = encoder.encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            // Cut each block in two: HEADERS (padded, with priority) and a CONTINUATION.
            let (a, b) = block.split_at(split.min(block.len()));
            let mut payload = vec![3u8];
            payload.extend_from_slice(&[0, 0, 0, 0, 16]);
            payload.extend_from_slice(a);
            payload.extend_from_slice(&[0, 0, 0]);
            write_frame(&mut bytes, HEADERS, PADDED | PRIORITY, stream, &payload);
            write_frame(&mut bytes, CONTINUATION, END_HEADERS, stream, b);
            write_frame(&mut bytes, 0x0, END_STREAM, stream, b"\0\0\0\0\0");
        }
        bytes
    }

    /// Reads what h2 would: the header lists of every HEADERS block, and DATA payloads.
    fn server_view(bytes: &[u8]) -> (Vec<Fields>, Vec<Vec<u8>>) {
        assert_eq!(&bytes[..24], PREFACE);
        let mut decoder = loona_hpack::Decoder::new();
        let (mut blocks, mut data, mut block) = (Vec::new(), Vec::new(), Vec::new());
        let mut at = 24;
        while at < bytes.len() {
            let len = usize::from(bytes[at]) << 16
                | usize::from(bytes[at + 1]) << 8
                | usize::from(bytes[at + 2]);
            let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
            let payload = &bytes[at + 9..at + 9 + len];
            match kind {
                HEADERS | CONTINUATION => {
                    let mut body = payload;
                    if kind == HEADERS && flags & PADDED != 0 {
                        let pad = usize::from(body[0]);
                        body = &body[1..body.len() - pad];
                    }
                    if kind == HEADERS && flags & PRIORITY != 0 {
                        body = &body[5..];
                    }
                    block.extend_from_slice(body);
                    if flags & END_HEADERS != 0 {
                        blocks.push(decoder.decode(&block).expect("h2 decodes it"));
                        block.clear();
                    }
                }
                0x0 => data.push(payload.to_vec()),
                _ => {}
            }
            at += 9 + len;
        }
        (blocks, data)
    }

    fn rewrite(bytes: &[u8], chunk: usize) -> (Vec<u8>, u64) {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            r.push(piece, &mut out).expect("rewrite");
        }
        (out, r.rewritten)
    }

    fn authority(h: &[(Vec<u8>, Vec<u8>)]) -> Option<&[u8]> {
        h.iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn unusable_authorities_become_localhost_and_the_rest_is_kept() {
        let requests = vec![
            request(Some("/run/dockpod/cri.sock")),
            request(Some("%2Frun%2Fdockpod%2Fcri.sock")),
            request(Some("")),
            request(None),
            request(Some("localhost")),
            request(Some("dockpod:10010")),
            // The same bad one again: now from the client's dynamic table.
            request(Some("/run/dockpod/cri.sock")),
        ];
        for chunk in [1, 7, 4096] {
            let (out, rewritten) = rewrite(&client_bytes(&requests, 5), chunk);
            assert_eq!(rewritten, 5);
            let (blocks, data) = server_view(&out);
            let seen: Vec<_> = blocks.iter().map(|b| authority(b)).collect();
            assert_eq!(
                seen,
                [
                    Some(&b"localhost"[..]),
                    Some(b"localhost"),
                    Some(b"localhost"),
                    Some(b"localhost"),
                    Some(b"localhost"),
                    Some(b"dockpod:10010"),
                    Some(b"localhost"),
                ]
            );
            for (block, original) in blocks.iter().zip(&requests) {
                let others = |h: &[(Vec<u8>, Vec<u8>)]| -> Fields {
                    h.iter()
                        .filter(|(n, _)| n != b":authority")
                        .cloned()
                        .collect()
                };
                assert_eq!(others(block), others(original));
                // Pseudo-headers stay ahead of the others.
                let first_regular = block.iter().position(|(n, _)| !n.starts_with(b":"));
                assert!(block
                    .iter()
                    .skip(first_regular.unwrap_or(0))
                    .all(|(n, _)| !n.starts_with(b":")));
            }
            assert_eq!(data.len(), requests.len());
        }
    }

    #[test]
    fn a_connection_that_starts_with_a_usable_authority_passes_untouched() {
        let requests = vec![request(Some("localhost")), request(Some("localhost"))];
        let bytes = client_bytes(&requests, 5);
        for chunk in [1, 9, 4096] {
            let mut r = Rewriter::default();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                r.push(piece, &mut out).expect("rewrite");
            }
            assert!(r.passing_through());
            // Padding and the cut into CONTINUATION aside, the very blocks the client sent.
            let (blocks, data) = server_view(&out);
            assert_eq!(blocks, requests);
            assert_eq!(data.len(), 2);
        }
    }

    #[test]
    fn a_large_block_is_split_into_continuations() {
        let mut h = request(Some("/x"));
        h.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let (out, _) = rewrite(&client_bytes(&[h.clone()], 100), 1000);
        let (blocks, _) = server_view(&out);
        assert_eq!(authority(&blocks[0]), Some(&b"localhost"[..]));
        assert_eq!(blocks[0].last(), h.last());
    }

    #[test]
    fn broken_framing_closes_the_connection() {
        let mut bytes = PREFACE.to_vec();
        write_frame(&mut bytes, CONTINUATION, END_HEADERS, 1, b"x");
        assert!(Rewriter::default().push(&bytes, &mut Vec::new()).is_err());
        let mut bytes = PREFACE.to_vec();
        write_frame(&mut bytes, HEADERS, 0, 1, b"");
        write_frame(&mut bytes, 0x0, 0, 1, b"x");
        assert!(Rewriter::default().push(&bytes, &mut Vec::new()).is_err());
        let mut bytes = PREFACE.to_vec();
        write_frame(&mut bytes, HEADERS, PADDED | END_HEADERS, 1, &[9, 1]);
        assert!(Rewriter::default().push(&bytes, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_block_that_expands_past_the_bound_closes_the_connection() {
        // One literal of 4000 bytes indexed, then 300 one-byte references to it: a block of
        // 4 KiB that decodes to 1.2 MB.
        let mut block = vec![0x40, 1, b'x', 0x7f, 0xa1, 0x1e];
        block.extend(std::iter::repeat_n(b'v', 4000));
        block.extend(std::iter::repeat_n(0x80 | 62, 300));
        let mut bytes = PREFACE.to_vec();
        write_frame(&mut bytes, HEADERS, END_HEADERS, 1, &block);
        let mut out = Vec::new();
        let result = Rewriter::default().push(&bytes, &mut out);
        assert!(
            matches!(result, Err(AuthorityError::ListTooLarge)),
            "{result:?}"
        );
        // Fewer references stay under it and pass.
        block.truncate(block.len() - 100);
        let mut bytes = PREFACE.to_vec();
        write_frame(&mut bytes, HEADERS, END_HEADERS, 1, &block);
        assert!(Rewriter::default().push(&bytes, &mut Vec::new()).is_ok());
    }
}
