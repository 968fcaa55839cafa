//! A served SPDY session: a reader task that takes frames in and never waits on any one
//! stream's consumer (see `flow`), a writer task that sends replies, data and control frames
//! in order, and the end of the session in the reference server's order.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};

use super::super::activity::Activity;
use super::super::inbound::{self, Admit, Feeder, Inbound, Inflow, SESSION_BUFFER};
use super::flow::{Windows, INITIAL_WINDOW};
use super::frame::{
    control_frame, data_header, goaway_frame, read_frame, reset_frame, window_frame, Control,
    Frame, SpdyError, CANCEL, FLAG_FIN, FLOW_CONTROL_ERROR, GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, PING,
    PROTOCOL_ERROR, REFUSED_STREAM, SYN_REPLY,
};
use super::header::{HeaderDecoder, HeaderEncoder, Headers};

/// Largest DATA payload sent in one frame.
pub const MAX_DATA: usize = 32 * 1024;
/// Control frames (answers, window updates) queued for the peer: a peer that lets this many
/// go unread is cut off.
pub(super) const MAX_CONTROL_BACKLOG: usize = 4096;
/// Streams the peer may open in one session.
const MAX_STREAMS: usize = 1024;
/// Bytes queued for the peer beyond its window before senders wait.
const MAX_PENDING: usize = 1024 * 1024;
/// Data frames queued for the writer before senders wait.
const DATA_QUEUE: usize = 64;
/// How long a closing session's writer may take to get its last frames out.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A stream the peer opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    data: Option<Inbound>,
    pub out: Sender,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What the peer sends on the stream, for one consumer; None once taken. Taking bytes
    /// from it returns their window to the peer; dropping it gives back the session window of
    /// what it held.
    pub fn take_data(&mut self) -> Option<Inbound> {
        self.data.take()
    }

    /// The next bytes the peer sent, unless the data was taken or ended (the unit tests' way
    /// in; the streaming handlers take the data).
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.data.as_mut()?.recv().await
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
    /// Answers and window updates, ahead of data. Bounded: when a peer lets it fill, it does
    /// not read, and `choked` ends the session.
    control: mpsc::Sender<Out>,
    choked: Arc<Notify>,
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
        self.reset_stream(self.stream, status);
    }

    fn reset_stream(&self, stream: u32, status: u32) {
        self.queue(Out::Reset { stream, status });
    }

    /// Returns `len` bytes of window on `stream` and on the session (only the session's for
    /// stream 0).
    fn grant(&self, stream: u32, len: usize) {
        let delta = len as u32;
        if delta == 0 {
            return;
        }
        if stream != 0 {
            self.queue(Out::Window { stream, delta });
        }
        self.queue(Out::Window { stream: 0, delta });
    }

    fn queue(&self, out: Out) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.control.try_send(out) {
            self.choked.notify_one();
        }
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

/// Serves SPDY on `io` (after the HTTP upgrade). Every stream the peer opens is answered with
/// SYN_REPLY and handed out through `Session::streams`. A session with no frame in either
/// direction for `idle` is closed.
pub fn serve<S>(io: S, idle: Duration) -> Session
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
    let (control_tx, control_rx) = mpsc::channel(MAX_CONTROL_BACKLOG);
    let (streams_tx, streams_rx) = mpsc::channel(MAX_STREAMS);
    let (closed_tx, closed) = watch::channel(false);
    let choked = Arc::new(Notify::new());
    let sender = Sender {
        data: data_tx,
        control: control_tx,
        choked: choked.clone(),
        stream: 0,
    };
    let activity = Activity::new();
    let reader = Reader {
        sender: sender.clone(),
        streams: streams_tx,
        activity: activity.clone(),
        decoder: HeaderDecoder::default(),
        open: HashMap::new(),
        inflow: Arc::new(Inflow::default()),
        opened: 0,
        last_id: 0,
        peer_keeps_windows: false,
        session_window_raised: false,
    };
    let mut reader = dockpod_proto::panics::spawn(reader.run(read));
    let mut writer =
        dockpod_proto::panics::spawn(write_loop(write, data_rx, control_rx, activity.clone()));
    let control = sender.clone();
    let done = dockpod_proto::panics::spawn(async move {
        let mut writer_done = false;
        let mut flush = true;
        tokio::select! {
            _ = &mut reader => {}
            result = &mut writer => {
                if let Ok(Err(e)) = result {
                    tracing::debug!(error = %e, "SPDY session writer ended");
                }
                writer_done = true;
            }
            _ = activity.idle_for(idle) => {
                tracing::info!(?idle, "closing an idle streaming session");
            }
            () = choked.notified() => {
                tracing::info!("streaming client does not read its answers; closing the session");
                flush = false;
            }
        }
        reader.abort();
        let _ = closed_tx.send(true);
        if !writer_done {
            if flush {
                control.queue(Out::Close);
            }
            // A peer that reads nothing would hold the writer, and the connection with it,
            // for ever.
            if !flush
                || tokio::time::timeout(CLOSE_GRACE, &mut writer)
                    .await
                    .is_err()
            {
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

/// The session's reading side and what it knows of the streams.
struct Reader {
    sender: Sender,
    streams: mpsc::Sender<Stream>,
    activity: Activity,
    decoder: HeaderDecoder,
    open: HashMap<u32, Feeder>,
    inflow: Arc<Inflow>,
    opened: usize,
    last_id: u32,
    peer_keeps_windows: bool,
    session_window_raised: bool,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut r: R) {
        loop {
            let frame = match read_frame(&mut r).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY session reader ended");
                    break;
                }
            };
            self.activity.touch();
            match frame {
                Frame::Control {
                    kind,
                    flags,
                    payload,
                } => {
                    if let Err(e) = self.control(kind, flags, &payload).await {
                        tracing::debug!(error = %e, "SPDY protocol error; closing the session");
                        self.sender.queue(Out::GoAway(GOAWAY_PROTOCOL_ERROR));
                        break;
                    }
                }
                Frame::Data {
                    stream,
                    flags,
                    payload,
                } => {
                    self.data(stream, payload).await;
                    if flags & FLAG_FIN != 0 {
                        self.open.remove(&stream);
                    }
                }
            }
        }
        // Dropping the senders ends every stream's data.
    }

    async fn data(&mut self, stream: u32, payload: Vec<u8>) {
        let len = payload.len();
        if len == 0 {
            return;
        }
        if !self.session_window_raised {
            // From the SPDY default to this side's bound, once: the peer may then have that
            // much in flight across its streams, each stream still only its own window.
            self.session_window_raised = true;
            self.sender.grant(0, SESSION_BUFFER - INITIAL_WINDOW);
        }
        if let Some(feeder) = self.open.get(&stream) {
            match feeder.admit(len, self.peer_keeps_windows) {
                Admit::Now => {}
                Admit::Wait => feeder.room(len).await,
                Admit::Overrun => {
                    tracing::debug!(stream, "SPDY peer overran its window or its buffer");
                    self.sender.reset_stream(stream, FLOW_CONTROL_ERROR);
                    self.open.remove(&stream);
                    self.sender.grant(0, len);
                    return;
                }
            }
            if feeder.push(Bytes::from(payload)) {
                return;
            }
            self.open.remove(&stream);
        }
        // Nobody will take these bytes: their window comes back at once.
        self.sender.grant(stream, len);
    }

    async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> Result<(), SpdyError> {
        match Control::parse(kind, flags, payload)? {
            Control::SynStream { id, fin, block } => {
                // The decoder must see every block, in order, even of refused streams.
                let headers = self.decoder.decode(block)?;
                if id == 0 || id % 2 == 0 || id <= self.last_id {
                    self.sender.reset_stream(id, PROTOCOL_ERROR);
                    return Ok(());
                }
                self.last_id = id;
                if self.opened >= MAX_STREAMS {
                    self.sender.reset_stream(id, REFUSED_STREAM);
                    return Ok(());
                }
                self.opened += 1;
                let out = Sender {
                    stream: id,
                    ..self.sender.clone()
                };
                let granter = out.clone();
                let on_take: inbound::OnTake = Box::new(move |len, taken| {
                    // Taken: the stream may send that much more. Dropped unread: the stream is
                    // over for its consumer, only the session's share comes back.
                    granter.grant(if taken { id } else { 0 }, len);
                });
                let (feeder, data) = inbound::open(&self.inflow, Some(on_take));
                if !fin {
                    self.open.insert(id, feeder);
                }
                self.sender.queue(Out::Reply(id));
                let stream = Stream {
                    id,
                    headers,
                    data: Some(data),
                    out,
                };
                if self.streams.send(stream).await.is_err() {
                    self.sender.reset_stream(id, REFUSED_STREAM);
                }
            }
            Control::RstStream { id } => {
                self.open.remove(&id);
                // A reset stream is over on both sides: it is not reset back.
                self.sender.queue(Out::PeerReset(id));
            }
            Control::Settings { initial_window } => {
                if let Some(initial) = initial_window {
                    self.peer_keeps_windows = true;
                    self.sender.queue(Out::PeerWindows {
                        initial: Some(i64::from(initial)),
                        stream: 0,
                        delta: 0,
                    });
                }
            }
            Control::Ping(id) => self.sender.queue(Out::Ping(id)),
            Control::WindowUpdate { stream, delta } => {
                self.peer_keeps_windows = true;
                self.sender.queue(Out::PeerWindows {
                    initial: None,
                    stream,
                    delta: i64::from(delta),
                });
            }
            // Header blocks keep the decompression context in step.
            Control::HeaderBlock(block) => drop(self.decoder.decode(block)?),
            Control::GoAway | Control::Other => {}
        }
        Ok(())
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut data: mpsc::Receiver<Out>,
    mut control: mpsc::Receiver<Out>,
    activity: Activity,
) -> std::io::Result<()> {
    let mut encoder = HeaderEncoder::default();
    let mut windows = Windows::default();
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
            out = control.recv() => out,
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
                windows.forget(stream);
                w.write_all(&reset_frame(stream, status)).await?;
            }
            Out::Ping(id) => {
                w.write_all(&control_frame(PING, 0, &id.to_be_bytes()))
                    .await?;
            }
            Out::Window { stream, delta } => {
                w.write_all(&window_frame(stream, delta)).await?;
            }
            Out::PeerReset(stream) => {
                open.remove(&stream);
                windows.forget(stream);
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
                    windows.set_initial(initial);
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
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::super::super::inbound::STREAM_BUFFER;
    use super::super::frame::{GOAWAY, RST_STREAM, SETTINGS, SYN_STREAM, WINDOW_UPDATE};
    use super::*;
    use std::time::Instant;
    use tokio::io::AsyncRead;

    fn word(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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
        assert_eq!(stream.recv().await.as_deref(), Some(&b"abc"[..]));
        assert_eq!(stream.recv().await, None, "a reset stream ends");

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
                } => seen.push(format!("rst {}", word(&payload, 0))),
                Frame::Control {
                    kind: GOAWAY,
                    payload,
                    ..
                } => seen.push(format!("goaway {}", word(&payload, 0))),
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

    /// The client side of a test session: frames it writes, and what the server's frames
    /// told it (window granted per stream, PING answers, resets).
    struct Peer {
        write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        headers: HeaderEncoder,
        granted: Arc<std::sync::Mutex<HashMap<u32, i64>>>,
        grants: Arc<Notify>,
        pongs: mpsc::UnboundedReceiver<u32>,
        resets: mpsc::UnboundedReceiver<(u32, u32)>,
    }

    impl Peer {
        fn new(client: tokio::io::DuplexStream) -> Peer {
            let (mut read, write) = tokio::io::split(client);
            let granted = Arc::new(std::sync::Mutex::new(HashMap::from([(
                0u32,
                INITIAL_WINDOW as i64,
            )])));
            let grants = Arc::new(Notify::new());
            let (pong_tx, pongs) = mpsc::unbounded_channel();
            let (reset_tx, resets) = mpsc::unbounded_channel();
            let (g, n) = (granted.clone(), grants.clone());
            tokio::spawn(async move {
                while let Ok(Some(frame)) = read_frame(&mut read).await {
                    let Frame::Control { kind, payload, .. } = frame else {
                        continue;
                    };
                    match kind {
                        WINDOW_UPDATE => {
                            let mut g = g.lock().expect("windows");
                            *g.entry(word(&payload, 0)).or_insert(INITIAL_WINDOW as i64) +=
                                i64::from(word(&payload, 4));
                            n.notify_waiters();
                        }
                        PING => drop(pong_tx.send(word(&payload, 0))),
                        RST_STREAM => drop(reset_tx.send((word(&payload, 0), word(&payload, 4)))),
                        _ => {}
                    }
                }
            });
            Peer {
                write,
                headers: HeaderEncoder::default(),
                granted,
                grants,
                pongs,
                resets,
            }
        }

        async fn open(&mut self, id: u32) {
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&[0; 6]);
            payload.extend_from_slice(&self.headers.encode(&[("streamtype", "data")]));
            let frame = control_frame(SYN_STREAM, 0, &payload);
            self.write.write_all(&frame).await.expect("SYN_STREAM");
        }

        /// Sends `len` bytes on `stream` in frames of `MAX_DATA`; with `windowed`, never more
        /// than the server granted.
        async fn send(&mut self, stream: u32, len: usize, windowed: bool) {
            let mut left = len;
            while left > 0 {
                let mut n = left.min(MAX_DATA);
                if windowed {
                    loop {
                        let waiting = self.grants.notified();
                        let allowed = {
                            let mut g = self.granted.lock().expect("windows");
                            let session = g[&0];
                            let own = *g.entry(stream).or_insert(INITIAL_WINDOW as i64);
                            session.min(own)
                        };
                        if allowed > 0 {
                            n = n.min(allowed as usize);
                            break;
                        }
                        waiting.await;
                    }
                    let mut g = self.granted.lock().expect("windows");
                    for id in [0, stream] {
                        *g.entry(id).or_insert(INITIAL_WINDOW as i64) -= n as i64;
                    }
                }
                self.write
                    .write_all(&data_header(stream, 0, n))
                    .await
                    .expect("DATA");
                self.write.write_all(&vec![b'x'; n]).await.expect("DATA");
                left -= n;
            }
        }

        async fn ping(&mut self, id: u32) -> Duration {
            let sent = Instant::now();
            let frame = control_frame(PING, 0, &id.to_be_bytes());
            self.write.write_all(&frame).await.expect("PING");
            // Generous for a loaded machine: a reader held up by the unread stream would
            // never answer at all.
            let answer = tokio::time::timeout(Duration::from_secs(10), self.pongs.recv()).await;
            assert_eq!(answer.expect("PING answered").expect("connection"), id);
            sent.elapsed()
        }
    }

    #[tokio::test]
    async fn a_stream_nobody_reads_holds_up_neither_other_streams_nor_pings() {
        for keeps_windows in [false, true] {
            let (client, server) = tokio::io::duplex(256 * 1024);
            let mut session = serve(server, Duration::from_secs(60));
            let mut peer = Peer::new(client);
            if keeps_windows {
                let mut settings = 1u32.to_be_bytes().to_vec();
                settings.extend_from_slice(&7u32.to_be_bytes());
                settings.extend_from_slice(&(INITIAL_WINDOW as u32).to_be_bytes());
                let frame = control_frame(SETTINGS, 0, &settings);
                peer.write.write_all(&frame).await.expect("SETTINGS");
            }
            peer.open(1).await;
            peer.open(3).await;
            let unread = session.streams.recv().await.expect("stream 1");
            let mut busy = session.streams.recv().await.expect("stream 3");
            const TOTAL: usize = 8 * 1024 * 1024;
            let consumer = tokio::spawn(async move {
                let mut got = 0;
                while let Some(b) = busy.recv().await {
                    got += b.len();
                }
                got
            });
            // Stream 1 gets all its window, and nobody ever takes it.
            peer.send(1, INITIAL_WINDOW, keeps_windows).await;
            let mut slowest = Duration::ZERO;
            for mib in 0..TOTAL / (1024 * 1024) {
                peer.send(3, 1024 * 1024, keeps_windows).await;
                slowest = slowest.max(peer.ping(mib as u32 * 2 + 1).await);
            }
            peer.write
                .write_all(&data_header(3, FLAG_FIN, 0))
                .await
                .expect("FIN");
            let got = tokio::time::timeout(Duration::from_secs(30), consumer)
                .await
                .expect("stream 3 delivered")
                .expect("consumer");
            assert_eq!(got, TOTAL, "keeps windows: {keeps_windows}");
            tracing::debug!(?slowest, keeps_windows, "slowest PING answer");
            if keeps_windows {
                // A peer that keeps windows and goes far past them loses the stream.
                peer.send(1, STREAM_BUFFER, false).await;
                let reset = tokio::time::timeout(Duration::from_secs(10), peer.resets.recv())
                    .await
                    .expect("a reset");
                assert_eq!(reset, Some((1, FLOW_CONTROL_ERROR)));
            }
            drop(unread);
            session.sender().close().await;
        }
    }
}
