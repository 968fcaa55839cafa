//! A SPDY/3.1 client session. The frame and header-block codec is the shim's (pinned to
//! recorded sessions of the real Go client); the session logic, stream bookkeeping and the
//! Kubernetes protocol use are this client's own.
//!
//! It is as strict as the library behind every Kubernetes client (moby/spdystream, in
//! client-go) where that library and the SPDY/3.1 text differ: it stops reading at GOAWAY
//! and ends every stream there, so whatever a server sends after its GOAWAY is lost here as
//! it is for kubectl, crictl and the kubelet. Data on a stream that was not answered, or that
//! already ended, is dropped. Every frame read is kept in order (`Conn::frames`) so that tests
//! can compare a server's frame order with the reference server's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pod_shim::streaming::spdy::{
    control_frame, data_header, read_frame, Frame, HeaderDecoder, HeaderEncoder, FLAG_FIN, GOAWAY,
    INITIAL_WINDOW, MAX_DATA, PING, RST_STREAM, SETTINGS, SYN_REPLY, SYN_STREAM, WINDOW_UPDATE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use super::{split_url, Exec};

/// A frame this client read, in the order read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Reply(u32),
    Data {
        stream: u32,
        len: usize,
        fin: bool,
    },
    Reset {
        stream: u32,
        status: u32,
    },
    GoAway {
        last_good: u32,
    },
    /// Any other control frame (PING, WINDOW_UPDATE, SETTINGS, ...), by type.
    Control(u16),
    /// Bytes that came after GOAWAY: not read as frames (a Go client never sees them), only
    /// counted, so a test can show what a server sent too late.
    Unread(usize),
}

struct Entry {
    data: Option<mpsc::UnboundedSender<Bytes>>,
    replied: Option<oneshot::Sender<()>>,
}

struct Writer {
    w: Box<dyn AsyncWrite + Send + Unpin>,
    headers: HeaderEncoder,
}

/// A client SPDY connection after the HTTP upgrade.
pub struct Conn {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    streams: Arc<Mutex<HashMap<u32, Entry>>>,
    next_id: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
    /// The subprotocol the server chose.
    pub protocol: String,
    /// WINDOW_UPDATE frames the server sent.
    pub window_updates: Arc<AtomicU32>,
    /// What the server granted this side to send, for `Stream::send_windowed`.
    send_windows: Arc<SendWindows>,
    /// Answers to this side's PINGs, by id.
    pongs: tokio::sync::Mutex<mpsc::UnboundedReceiver<u32>>,
    /// Every frame read, in order; nothing after a GOAWAY (reading stops there).
    pub frames: Arc<Mutex<Vec<Seen>>>,
}

/// One stream this client opened.
pub struct Stream {
    pub id: u32,
    rx: mpsc::UnboundedReceiver<Bytes>,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    send_windows: Arc<SendWindows>,
}

/// The windows the server granted (stream 0 is the session's), kept as a strict SPDY/3.1
/// sender keeps them; the SPDY default until the server says more.
#[derive(Default)]
struct SendWindows {
    granted: Mutex<HashMap<u32, i64>>,
    changed: Notify,
}

impl SendWindows {
    fn grant(&self, stream: u32, delta: u32) {
        let mut g = self.granted.lock().unwrap_or_else(|p| p.into_inner());
        *g.entry(stream).or_insert(INITIAL_WINDOW as i64) += i64::from(delta);
        self.changed.notify_waiters();
    }

    /// Takes up to `want` bytes of window on `stream` (and the session), waiting for some.
    async fn take(&self, stream: u32, want: usize) -> usize {
        loop {
            let changed = self.changed.notified();
            {
                let mut g = self.granted.lock().unwrap_or_else(|p| p.into_inner());
                let session = *g.entry(0).or_insert(INITIAL_WINDOW as i64);
                let own = *g.entry(stream).or_insert(INITIAL_WINDOW as i64);
                let n = want.min(session.min(own).max(0) as usize);
                if n > 0 {
                    for id in [0, stream] {
                        *g.entry(id).or_insert(INITIAL_WINDOW as i64) -= n as i64;
                    }
                    return n;
                }
            }
            changed.await;
        }
    }
}

/// Why the upgrade did not happen: the server's status line and body.
#[derive(Debug)]
pub struct Refused {
    pub status: String,
    pub body: String,
}

/// Connects and upgrades to SPDY/3.1, offering `protocols` in order.
pub async fn connect(url: &str, protocols: &[&str]) -> Result<Conn, Refused> {
    let (host, path) = split_url(url);
    let mut tcp = TcpStream::connect(&host).await.map_err(|e| Refused {
        status: format!("connect: {e}"),
        body: String::new(),
    })?;
    // Go's dialer turns Nagle's algorithm off, and so does this client.
    let _ = tcp.set_nodelay(true);
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dockpod-tests\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for p in protocols {
        request.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| Refused {
            status: format!("write: {e}"),
            body: String::new(),
        })?;
    let (status, headers) = read_response_head(&mut tcp).await;
    if !status.contains(" 101 ") {
        let mut body = String::new();
        let _ = tcp.read_to_string(&mut body).await;
        return Err(Refused { status, body });
    }
    let protocol = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-stream-protocol-version"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Ok(over(tcp, protocol))
}

/// A SPDY client session on an already upgraded byte stream (SPDY tunnelled in WebSocket, say).
pub fn over<S>(io: S, protocol: String) -> Conn
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, w) = tokio::io::split(io);
    let streams: Arc<Mutex<HashMap<u32, Entry>>> = Arc::default();
    let window_updates = Arc::new(AtomicU32::new(0));
    let send_windows: Arc<SendWindows> = Arc::default();
    let (pong_tx, pongs) = mpsc::unbounded_channel();
    let frames: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let reader = {
        let streams = streams.clone();
        let window_updates = window_updates.clone();
        let send_windows = send_windows.clone();
        let frames = frames.clone();
        tokio::spawn(async move {
            let mut headers = HeaderDecoder::default();
            let mut gone_away = false;
            while let Ok(Some(frame)) = read_frame(&mut read).await {
                let seen = see(&frame);
                frames
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(seen.clone());
                let mut streams = streams.lock().unwrap_or_else(|p| p.into_inner());
                match (seen, frame) {
                    // spdystream's read loop breaks out at GOAWAY: nothing after it is read.
                    (Seen::GoAway { .. }, _) => {
                        gone_away = true;
                        break;
                    }
                    (Seen::Reply(id), Frame::Control { payload, .. }) => {
                        headers
                            .decode(&payload[4..])
                            .expect("SYN_REPLY header block");
                        if let Some(tx) = streams.get_mut(&id).and_then(|e| e.replied.take()) {
                            let _ = tx.send(());
                        }
                    }
                    (Seen::Reset { stream, .. }, _) => {
                        if let Some(e) = streams.get_mut(&stream) {
                            e.data = None;
                        }
                    }
                    (Seen::Control(WINDOW_UPDATE), Frame::Control { payload, .. }) => {
                        window_updates.fetch_add(1, Ordering::Relaxed);
                        send_windows.grant(be32(&payload, 0), be32(&payload, 4));
                    }
                    (Seen::Control(PING), Frame::Control { payload, .. }) => {
                        let _ = pong_tx.send(be32(&payload, 0));
                    }
                    (
                        _,
                        Frame::Data {
                            stream,
                            flags,
                            payload,
                        },
                    ) => {
                        // Data on a stream not yet answered is dropped, as spdystream does.
                        if let Some(e) = streams.get_mut(&stream).filter(|e| e.replied.is_none()) {
                            if let Some(tx) = &e.data {
                                if !payload.is_empty() {
                                    let _ = tx.send(Bytes::from(payload));
                                }
                            }
                            if flags & FLAG_FIN != 0 {
                                e.data = None;
                            }
                        }
                    }
                    _ => {}
                }
            }
            // The connection is over, or went away: every stream ends.
            for e in streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values_mut()
            {
                e.data = None;
            }
            let mut buf = [0u8; 4096];
            if gone_away {
                while let Ok(n @ 1..) = read.read(&mut buf).await {
                    frames
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Seen::Unread(n));
                }
            }
        })
    };
    Conn {
        writer: Arc::new(tokio::sync::Mutex::new(Writer {
            w: Box::new(w),
            headers: HeaderEncoder::default(),
        })),
        streams,
        next_id: AtomicU32::new(1),
        reader,
        protocol,
        window_updates,
        send_windows,
        pongs: tokio::sync::Mutex::new(pongs),
        frames,
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        .unwrap_or_default()
}

/// What a frame is, for the record of a session.
pub fn see(frame: &Frame) -> Seen {
    match frame {
        Frame::Data {
            stream,
            flags,
            payload,
        } => Seen::Data {
            stream: *stream,
            len: payload.len(),
            fin: flags & FLAG_FIN != 0,
        },
        Frame::Control { kind, payload, .. } => match *kind {
            SYN_REPLY => Seen::Reply(be32(payload, 0) & 0x7fff_ffff),
            RST_STREAM => Seen::Reset {
                stream: be32(payload, 0) & 0x7fff_ffff,
                status: be32(payload, 4),
            },
            GOAWAY => Seen::GoAway {
                last_good: be32(payload, 0) & 0x7fff_ffff,
            },
            other => Seen::Control(other),
        },
    }
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed).
async fn read_response_head(tcp: &mut TcpStream) -> (String, Vec<(String, String)>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
        match tcp.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers)
}

impl Conn {
    /// Opens a stream with `headers` and waits for the server's SYN_REPLY.
    pub async fn open(&self, headers: &[(&str, &str)]) -> Stream {
        let id = self.next_id.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let (replied_tx, replied) = oneshot::channel();
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Entry {
                    data: Some(tx),
                    replied: Some(replied_tx),
                },
            );
        {
            let mut w = self.writer.lock().await;
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&0u32.to_be_bytes());
            payload.extend_from_slice(&[0, 0]);
            let block = w.headers.encode(headers);
            payload.extend_from_slice(&block);
            let frame = control_frame(SYN_STREAM, 0, &payload);
            w.w.write_all(&frame).await.expect("write SYN_STREAM");
        }
        tokio::time::timeout(Duration::from_secs(10), replied)
            .await
            .expect("no SYN_REPLY within 10 s")
            .expect("connection closed before SYN_REPLY");
        Stream {
            id,
            rx,
            writer: self.writer.clone(),
            send_windows: self.send_windows.clone(),
        }
    }

    /// Sends a PING and waits for its answer; how long that took. Panics when no answer comes
    /// within `limit`.
    pub async fn ping(&self, id: u32, limit: Duration) -> Duration {
        let mut pongs = self.pongs.lock().await;
        let sent = tokio::time::Instant::now();
        {
            let mut w = self.writer.lock().await;
            w.w.write_all(&control_frame(PING, 0, &id.to_be_bytes()))
                .await
                .expect("write PING");
        }
        loop {
            match tokio::time::timeout_at(sent + limit, pongs.recv()).await {
                Ok(Some(answered)) if answered == id => return sent.elapsed(),
                Ok(Some(_)) => {}
                Ok(None) => panic!("the connection ended before PING {id} was answered"),
                Err(_) => panic!("PING {id} not answered within {limit:?}"),
            }
        }
    }

    /// Announces that this client keeps flow-control windows (SPDY/3.1 SETTINGS with an
    /// initial window), as a strict SPDY/3.1 peer does.
    pub async fn announce_window(&self, initial: u32) {
        let mut payload = 1u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&7u32.to_be_bytes());
        payload.extend_from_slice(&initial.to_be_bytes());
        let mut w = self.writer.lock().await;
        w.w.write_all(&control_frame(SETTINGS, 0, &payload))
            .await
            .expect("write SETTINGS");
    }

    /// Gives the server `delta` more bytes of window on `stream` (0 for the session).
    pub async fn window_update(&self, stream: u32, delta: u32) {
        let mut payload = stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&delta.to_be_bytes());
        let mut w = self.writer.lock().await;
        // The server may have closed after its last byte; a late grant is harmless then.
        let _ =
            w.w.write_all(&control_frame(WINDOW_UPDATE, 0, &payload))
                .await;
    }

    /// The frames read so far.
    pub fn frames(&self) -> Vec<Seen> {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Closes the connection from this side.
    pub async fn close(self) {
        let mut w = self.writer.lock().await;
        let _ = w.w.shutdown().await;
        self.reader.abort();
    }
}

impl Stream {
    pub async fn send(&self, data: &[u8]) {
        let mut w = self.writer.lock().await;
        w.w.write_all(&data_header(self.id, 0, data.len()))
            .await
            .expect("write DATA");
        w.w.write_all(data).await.expect("write DATA");
    }

    /// Sends `data` as a sender that keeps the server's windows: never more than granted,
    /// waiting for WINDOW_UPDATE when the window is spent.
    pub async fn send_windowed(&self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            let n = self
                .send_windows
                .take(self.id, rest.len().min(MAX_DATA))
                .await;
            self.send(&rest[..n]).await;
            rest = &rest[n..];
        }
    }

    /// Ends this side of the stream.
    pub async fn finish(&self) {
        let mut w = self.writer.lock().await;
        w.w.write_all(&data_header(self.id, FLAG_FIN, 0))
            .await
            .expect("write FIN");
    }

    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// Everything the server sends on this stream until its end.
    pub async fn read_all(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(b) = self.rx.recv().await {
            all.extend_from_slice(&b);
        }
        all
    }

    /// Reads until `needle` has arrived (or the stream ends); everything read so far.
    pub async fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        // Generous for a loaded machine; it turns a lost answer into a failure, not a hang.
        const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
        let mut all = Vec::new();
        let until = tokio::time::Instant::now() + DEADLINE;
        while !all.windows(needle.len()).any(|w| w == needle) {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(b)) => all.extend_from_slice(&b),
                Ok(None) => break,
                Err(_) => panic!(
                    "{:?} not read within {DEADLINE:?}; read {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&all)
                ),
            }
        }
        all
    }
}

/// The streams of a remote-command session, opened in the Go client's order.
pub struct Remote {
    pub conn: Conn,
    pub error: Stream,
    pub stdin: Option<Stream>,
    pub stdout: Stream,
    pub stderr: Option<Stream>,
    pub resize: Option<Stream>,
}

/// The remote-command subprotocols the Go clients offer, in their order.
pub const REMOTE_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Opens an exec or attach session on `url`.
pub async fn remote(url: &str, stdin: bool, tty: bool) -> Remote {
    let conn = connect(url, &REMOTE_PROTOCOLS)
        .await
        .unwrap_or_else(|r| panic!("upgrade refused: {r:?}"));
    assert_eq!(conn.protocol, "v4.channel.k8s.io");
    open_remote(conn, stdin, tty).await
}

/// Opens the streams of a remote-command session on `conn`, one after another as the Go
/// client does (each waits for its SYN_REPLY).
pub async fn open_remote(conn: Conn, stdin: bool, tty: bool) -> Remote {
    let error = conn.open(&[("streamtype", "error")]).await;
    let stdin = match stdin {
        true => Some(conn.open(&[("streamtype", "stdin")]).await),
        false => None,
    };
    let stdout = conn.open(&[("streamtype", "stdout")]).await;
    let (stderr, resize) = if tty {
        (None, Some(conn.open(&[("streamtype", "resize")]).await))
    } else {
        (Some(conn.open(&[("streamtype", "stderr")]).await), None)
    };
    Remote {
        conn,
        error,
        stdin,
        stdout,
        stderr,
        resize,
    }
}

impl Remote {
    pub async fn resize(&self, width: u16, height: u16) {
        let msg = format!("{{\"Width\":{width},\"Height\":{height}}}\n");
        self.resize
            .as_ref()
            .expect("a tty session")
            .send(msg.as_bytes())
            .await;
    }

    /// Reads every output stream and the status to their end.
    pub async fn finish(self) -> Exec {
        self.finish_with_frames().await.0
    }

    /// `finish`, and every frame the server sent, in order.
    pub async fn finish_with_frames(mut self) -> (Exec, Vec<Seen>) {
        let stderr = async {
            match self.stderr.as_mut() {
                Some(s) => s.read_all().await,
                None => Vec::new(),
            }
        };
        let (stdout, stderr, status) =
            tokio::join!(self.stdout.read_all(), stderr, self.error.read_all());
        // The server closes the connection after its GOAWAY: every frame is in by then.
        let _ = (&mut self.conn.reader).await;
        let frames = self.conn.frames();
        self.conn.close().await;
        let exec = Exec {
            stdout,
            stderr,
            status,
        };
        (exec, frames)
    }
}

/// A whole exec over SPDY: sends `input` on stdin and closes it.
pub async fn exec(url: &str, input: Option<&[u8]>) -> Exec {
    let session = remote(url, input.is_some(), false).await;
    if let (Some(stdin), Some(input)) = (&session.stdin, input) {
        stdin.send(input).await;
        stdin.finish().await;
    }
    tokio::time::timeout(Duration::from_secs(60), session.finish())
        .await
        .expect("exec session did not end within 60 s")
}

/// One port-forward connection: sends `request` to `port` in the pod, then reads the reply
/// to its end; the error stream's content too.
pub async fn forward(
    conn: &Conn,
    port: u16,
    request_id: u32,
    request: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let port = port.to_string();
    let id = request_id.to_string();
    let mut error = conn
        .open(&[("streamtype", "error"), ("port", &port), ("requestid", &id)])
        .await;
    error.finish().await;
    let mut data = conn
        .open(&[("streamtype", "data"), ("port", &port), ("requestid", &id)])
        .await;
    data.send(request).await;
    data.finish().await;
    let (reply, error) = tokio::join!(data.read_all(), error.read_all());
    (reply, error)
}

/// Asserts a session ended as the reference server ends one: every stream it answered ended
/// (FIN or RST_STREAM) before GOAWAY, and GOAWAY was the last frame.
pub fn assert_ended_like_the_reference(frames: &[Seen]) {
    let goaway = frames
        .iter()
        .position(|f| matches!(f, Seen::GoAway { .. }))
        .unwrap_or_else(|| panic!("no GOAWAY: {frames:?}"));
    assert_eq!(
        goaway,
        frames.len() - 1,
        "the server sent more after GOAWAY: {frames:?}"
    );
    for f in frames {
        if let Seen::Reply(id) = f {
            let ended = frames[..goaway].iter().any(|g| match g {
                Seen::Data { stream, fin, .. } => stream == id && *fin,
                Seen::Reset { stream, .. } => stream == id,
                _ => false,
            });
            assert!(ended, "stream {id} did not end before GOAWAY: {frames:?}");
        }
    }
}

/// The recorded sessions of the Kubernetes reference client and server
/// (`tests/fixtures/streaming`, copied from the project's shared fixtures so a clone stands alone).
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/streaming");

/// One direction of a recorded connection: its HTTP head, then its SPDY frames, each whole.
pub fn recorded(session: &str, direction: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let path = format!("{FIXTURES}/{session}/conn0-{direction}.bin");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let head = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
        .unwrap_or_else(|| panic!("{path}: no HTTP head"));
    let mut frames = Vec::new();
    let mut at = head;
    while at + 8 <= bytes.len() {
        let len = (be32(&bytes, at + 4) & 0x00ff_ffff) as usize;
        let end = (at + 8 + len).min(bytes.len());
        frames.push(bytes[at..end].to_vec());
        at = end;
    }
    (bytes[..head].to_vec(), frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays `frames` (a recorded server's, after its 101) to a client on the other end of
    /// `io`, answering each stream only once the client opened it, as a live server would.
    async fn play_server(io: tokio::io::DuplexStream, frames: Vec<Vec<u8>>) {
        let (mut read, mut write) = tokio::io::split(io);
        let (opened_tx, mut opened) = tokio::sync::watch::channel(0u32);
        let reader = tokio::spawn(async move {
            while let Ok(Some(frame)) = read_frame(&mut read).await {
                if let Frame::Control {
                    kind: SYN_STREAM,
                    payload,
                    ..
                } = frame
                {
                    let _ = opened_tx.send(be32(&payload, 0) & 0x7fff_ffff);
                }
            }
        });
        for frame in frames {
            if frame[0] & 0x80 != 0 && u16::from_be_bytes([frame[2], frame[3]]) == SYN_REPLY {
                let id = be32(&frame, 8) & 0x7fff_ffff;
                opened.wait_for(|o| *o >= id).await.expect("client opened");
            }
            write.write_all(&frame).await.expect("write a frame");
        }
        let _ = write.shutdown().await;
        let _ = reader.await;
    }

    /// The Kubernetes client's exec (stdin, stdout, stderr) against recorded server frames.
    async fn exec_against(frames: Vec<Vec<u8>>) -> (Exec, Vec<Seen>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(play_server(server, frames));
        let conn = over(client, "v4.channel.k8s.io".into());
        let session = open_remote(conn, true, false).await;
        if let Some(stdin) = &session.stdin {
            stdin.send(b"hello-stdin\n").await;
            stdin.finish().await;
        }
        let out = tokio::time::timeout(Duration::from_secs(10), session.finish_with_frames())
            .await
            .expect("the session ends");
        server.await.expect("server");
        out
    }

    fn is_goaway(frame: &[u8]) -> bool {
        frame[0] & 0x80 != 0 && u16::from_be_bytes([frame[2], frame[3]]) == GOAWAY
    }

    #[tokio::test]
    async fn the_reference_servers_session_reads_as_exit_code_3() {
        let (_, frames) = recorded("exec-spdy", "server-to-client");
        let (out, seen) = exec_against(frames).await;
        assert_eq!(out.stdout(), "hello-stdin\n");
        assert_eq!(out.stderr(), "to-stderr\n");
        out.assert_exit(3);
        assert!(matches!(seen.last(), Some(Seen::GoAway { .. })), "{seen:?}");
    }

    /// What dockpod's shim once sent: GOAWAY ahead of the error stream's status. A client as
    /// strict as spdystream never sees the status, and reports success.
    #[tokio::test]
    async fn a_status_behind_goaway_is_lost_as_it_is_for_client_go() {
        let (_, mut frames) = recorded("exec-spdy", "server-to-client");
        let goaway = frames.iter().position(|f| is_goaway(f)).expect("GOAWAY");
        let goaway = frames.remove(goaway);
        let first_data = frames
            .iter()
            .position(|f| f[0] & 0x80 == 0 && be32(f, 0) == 1)
            .expect("the error stream's data");
        frames.insert(first_data, goaway);
        let (out, _) = exec_against(frames).await;
        assert_eq!(out.stdout(), "hello-stdin\n");
        assert!(out.status.is_empty(), "{:?}", out.status_text());
        assert_eq!(out.outcome(), Ok(0));
    }
}
