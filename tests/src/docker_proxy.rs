//! `DockerProxy`: a unix-socket proxy owned by a test, placed between dockpod and dockerd with
//! the front's `--docker-endpoint` (the front hands the same endpoint to every shim). It
//! records every request (method and path) and can delay, hold, fail or cut the requests a
//! test chooses, matched by method and path, or hold back Docker's answer to them: a Docker
//! that is slow, stuck or broken for one call, and a dockpod that dies after Docker acted and
//! before it heard back.
//!
//! Written here rather than taken from a crate: the proxy must see each request's head before
//! forwarding it and must stay out of the bytes of hijacked (attach, exec) connections, which
//! a general HTTP proxy does not offer. It parses only what a client sends (request heads with
//! httparse, bodies by Content-Length or chunked framing); answers are relayed as bytes, which
//! is sound because Docker's clients do not pipeline requests.
//!
//! The proxy runs on a thread and runtime of its own, so a test that blocks its own runtime
//! does not stall dockpod's Docker traffic.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Notify};

/// A request head larger than this is not Docker's client talking.
const MAX_HEAD: usize = 64 << 10;

/// One request as a client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The path without the API version prefix (`/containers/create`, not
    /// `/v1.41/containers/create`) and without the query.
    pub path: String,
    pub query: String,
}

/// What the proxy does to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Forwarded after this long.
    Delay(Duration),
    /// Forwarded once the gate opens (never, if it never does: a stuck dockerd).
    Hold(Gate),
    /// Forwarded at once; Docker's answer is relayed once the gate opens. Docker acts, the
    /// caller does not hear of it meanwhile.
    HoldAnswer(Gate),
    /// Answered by the proxy with this HTTP status and Docker's error body, not forwarded.
    Fail(u16),
    /// The connection is closed without forwarding.
    Cut,
}

/// A gate that holds requests or answers until a test opens it.
#[derive(Clone, Debug)]
pub struct Gate(watch::Sender<bool>);

impl Gate {
    pub fn new() -> Gate {
        Gate(watch::channel(false).0)
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn passed(&self) {
        let mut rx = self.0.subscribe();
        // Err means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

struct Rule {
    method: String,
    pattern: String,
    fault: Fault,
    /// How many more matches it applies to; `None` for every one.
    left: Option<usize>,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    rules: Mutex<Vec<Rule>>,
    arrived: Notify,
    /// Client connections accepted so far.
    opened: AtomicUsize,
    /// The path of the last request of each open client connection (empty before its first).
    open: Mutex<std::collections::HashMap<usize, String>>,
}

impl Shared {
    /// Records `seen` and returns the fault of the first rule it matches, using up one of
    /// that rule's matches.
    fn admit(&self, seen: &Seen) -> Option<Fault> {
        lock(&self.seen).push(seen.clone());
        self.arrived.notify_waiters();
        let mut rules = lock(&self.rules);
        let index = rules.iter().position(|r| {
            r.method.eq_ignore_ascii_case(&seen.method) && path_matches(&r.pattern, &seen.path)
        })?;
        let fault = rules[index].fault.clone();
        if let Some(left) = rules[index].left.as_mut() {
            *left -= 1;
            if *left == 0 {
                rules.remove(index);
            }
        }
        Some(fault)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `path` matches `pattern`, segment by segment, where a `*` segment matches any one.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.trim_matches('/').split('/');
    let mut have = path.trim_matches('/').split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) if w == "*" || w == h => {}
            _ => return false,
        }
    }
}

/// Splits a request target into the path without its API version prefix and the query.
fn split_target(target: &str) -> (String, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let unversioned = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(version, _)| version.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(|(_, rest)| format!("/{rest}"))
        .unwrap_or_else(|| path.to_string());
    (unversioned, query.to_string())
}

pub struct DockerProxy {
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DockerProxy {
    /// A proxy to the host's dockerd, listening in a directory of its own.
    pub fn start() -> DockerProxy {
        crate::reaper::reap_once();
        let dir = tempfile::Builder::new()
            .prefix(&crate::reaper::front_dir_prefix())
            .tempdir_in("/tmp")
            .expect("proxy directory");
        let socket = dir.path().join("docker.sock");
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let shared = shared.clone();
            let socket = socket.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let listener = UnixListener::bind(&socket).expect("bind the proxy socket");
                    let _ = ready_tx.send(());
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept(listener, shared) => {}
                    }
                });
                // Dropping the runtime ends every connection's task.
            })
        };
        ready_rx.recv().expect("the proxy thread started");
        DockerProxy {
            dir,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The endpoint to give dockpod's `--docker-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// Applies `fault` to every request matching `method` and `pattern` (see
    /// [`path_matches`]) from now on, until [`DockerProxy::clear`].
    pub fn on(&self, method: &str, pattern: &str, fault: Fault) {
        self.add(method, pattern, fault, None);
    }

    /// Applies `fault` to the next request matching `method` and `pattern` only.
    pub fn once(&self, method: &str, pattern: &str, fault: Fault) {
        self.add(method, pattern, fault, Some(1));
    }

    fn add(&self, method: &str, pattern: &str, fault: Fault, left: Option<usize>) {
        lock(&self.shared.rules).push(Rule {
            method: method.to_string(),
            pattern: pattern.to_string(),
            fault,
            left,
        });
    }

    /// Removes every rule; requests held by a gate stay held until it opens.
    pub fn clear(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Every request so far, in the order they arrived.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// Client connections accepted so far.
    pub fn connections_opened(&self) -> usize {
        self.shared.opened.load(Ordering::SeqCst)
    }

    /// Client connections open now whose last request was not a subscription to Docker's
    /// events: with no request in flight, the connections a client keeps idle.
    pub fn connections_open_besides_events(&self) -> usize {
        lock(&self.shared.open)
            .values()
            .filter(|path| path.as_str() != "/events")
            .count()
    }

    /// Waits until a request matching `method` and `pattern` has arrived and returns it.
    pub async fn arrival(&self, method: &str, pattern: &str, timeout: Duration) -> Seen {
        let found = |seen: &[Seen]| {
            seen.iter()
                .find(|s| s.method.eq_ignore_ascii_case(method) && path_matches(pattern, &s.path))
                .cloned()
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            if let Some(seen) = found(&self.seen()) {
                return seen;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("no {method} {pattern} reached Docker within {timeout:?}");
            }
        }
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let connection = shared.opened.fetch_add(1, Ordering::SeqCst);
        lock(&shared.open).insert(connection, String::new());
        tokio::spawn(async move {
            if let Ok(upstream) = UnixStream::connect(crate::docker::socket_path()).await {
                let _ = relay(client, upstream, connection, shared.clone()).await;
            }
            lock(&shared.open).remove(&connection);
        });
    }
}

/// How a request's body is framed.
#[derive(Clone, Copy, Debug)]
enum Body {
    Length(usize),
    Chunked,
}

type ClientWriter = Arc<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>;

/// Relays one client connection: requests one by one, answers as bytes.
async fn relay(
    client: UnixStream,
    upstream: UnixStream,
    connection: usize,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let (mut from_client, to_client) = client.into_split();
    let to_client: ClientWriter = Arc::new(tokio::sync::Mutex::new(to_client));
    let (from_upstream, mut to_upstream) = upstream.into_split();
    // The gate the answer to the request last forwarded waits for, if any.
    let (answer_gate, answer_gate_rx) = watch::channel::<Option<Gate>>(None);
    let answers = tokio::spawn(relay_answers(
        from_upstream,
        to_client.clone(),
        answer_gate_rx,
    ));
    let mut buf = Vec::with_capacity(8192);
    let result: std::io::Result<bool> = async {
        loop {
            let Some((head_len, seen, body, upgrade)) =
                read_head(&mut from_client, &mut buf).await?
            else {
                return Ok(false);
            };
            let head: Vec<u8> = buf.drain(..head_len).collect();
            if let Some(last) = lock(&shared.open).get_mut(&connection) {
                last.clone_from(&seen.path);
            }
            let fault = shared.admit(&seen);
            match &fault {
                Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
                Some(Fault::Hold(gate)) => gate.passed().await,
                Some(Fault::Cut) => return Ok(false),
                Some(Fault::Fail(code)) => {
                    forward_body(&mut from_client, &mut tokio::io::sink(), &mut buf, body).await?;
                    let message = serde_json::json!({
                        "message": format!(
                            "fault injected by the test's Docker proxy into {} {}",
                            seen.method, seen.path
                        )
                    })
                    .to_string();
                    let answer = format!(
                        "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n{message}",
                        message.len()
                    );
                    to_client.lock().await.write_all(answer.as_bytes()).await?;
                    continue;
                }
                Some(Fault::HoldAnswer(_)) | None => {}
            }
            answer_gate.send_replace(match fault {
                Some(Fault::HoldAnswer(gate)) => Some(gate),
                _ => None,
            });
            to_upstream.write_all(&head).await?;
            forward_body(&mut from_client, &mut to_upstream, &mut buf, body).await?;
            if upgrade {
                // A hijacked connection (attach, exec): raw bytes from here on.
                to_upstream.write_all(&buf).await?;
                tokio::io::copy(&mut from_client, &mut to_upstream).await?;
                return Ok(true);
            }
        }
    }
    .await;
    if let Ok(true) = result {
        // The client closed its side of a hijacked stream (stdin's end) and may still read.
        let _ = to_upstream.shutdown().await;
        let _ = answers.await;
    } else {
        answers.abort();
    }
    result.map(drop)
}

/// Relays Docker's answers, each after the gate of the request it answers opens.
async fn relay_answers(
    mut from_upstream: impl AsyncRead + Unpin,
    to_client: ClientWriter,
    gate: watch::Receiver<Option<Gate>>,
) {
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = match from_upstream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let held = gate.borrow().clone();
        if let Some(held) = held {
            held.passed().await;
        }
        if to_client.lock().await.write_all(&chunk[..n]).await.is_err() {
            break;
        }
    }
    let _ = to_client.lock().await.shutdown().await;
}

/// Reads more of the client's bytes into `buf`; false at the end of the stream.
async fn fill(reader: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 8192];
    let n = reader.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

fn invalid(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Reads the next request head: its length in `buf`, what it asks, how its body is framed
/// and whether it hijacks the connection. `None` when the client closed between requests.
async fn read_head(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(usize, Seen, Body, bool)>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let (path, query) = split_target(request.path.unwrap_or("/"));
                let seen = Seen {
                    method: request.method.unwrap_or("").to_string(),
                    path,
                    query,
                };
                let value = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                };
                let body = if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                    Body::Chunked
                } else {
                    let length = value("content-length").unwrap_or_default();
                    Body::Length(length.trim().parse().unwrap_or(0))
                };
                let upgrade = value("upgrade").is_some()
                    || value("connection").is_some_and(|v| v.contains("upgrade"));
                return Ok(Some((len, seen, body, upgrade)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(invalid("request head too large")),
            Err(e) => return Err(invalid(format!("request head: {e}"))),
        }
        if !fill(reader, buf).await? {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(invalid("the client closed inside a request head"))
            };
        }
    }
}

/// Moves one request body from `buf` and `reader` to `writer`, leaving in `buf` what follows.
async fn forward_body(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    buf: &mut Vec<u8>,
    body: Body,
) -> std::io::Result<()> {
    match body {
        Body::Length(len) => forward_exactly(reader, writer, buf, len).await,
        Body::Chunked => loop {
            let (line, size) = loop {
                match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((line, size))) => break (line, size),
                    Ok(httparse::Status::Partial) => {
                        if !fill(reader, buf).await? {
                            return Err(invalid("the client closed inside a chunked body"));
                        }
                    }
                    Err(_) => return Err(invalid("bad chunk size")),
                }
            };
            let size = usize::try_from(size).map_err(|_| invalid("chunk too large"))?;
            if size == 0 {
                // The last chunk, then trailers up to an empty line.
                let mut end = line;
                loop {
                    match buf[end..].windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            end += 2;
                            break;
                        }
                        Some(at) => end += at + 2,
                        None => {
                            if !fill(reader, buf).await? {
                                return Err(invalid("the client closed inside trailers"));
                            }
                        }
                    }
                }
                writer.write_all(&buf[..end]).await?;
                buf.drain(..end);
                return Ok(());
            }
            forward_exactly(reader, writer, buf, line + size + 2).await?;
        },
    }
}

/// Moves exactly `len` bytes from `buf`, then `reader`, to `writer`.
async fn forward_exactly(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    buf: &mut Vec<u8>,
    len: usize,
) -> std::io::Result<()> {
    let from_buf = len.min(buf.len());
    writer.write_all(&buf[..from_buf]).await?;
    buf.drain(..from_buf);
    let rest = (len - from_buf) as u64;
    let copied = tokio::io::copy(&mut reader.take(rest), writer).await?;
    if copied < rest {
        return Err(invalid("the client closed inside a body"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_segment_by_segment() {
        assert!(path_matches("/containers/*/stop", "/containers/abc/stop"));
        assert!(path_matches("/containers/create", "/containers/create/"));
        assert!(!path_matches("/containers/*/stop", "/containers/abc/start"));
        assert!(!path_matches("/containers/*", "/containers/abc/stop"));
        assert!(!path_matches("/containers/*/stop", "/containers/stop"));
    }

    #[test]
    fn targets_lose_their_api_version() {
        assert_eq!(
            split_target("/v1.41/containers/create?name=x"),
            ("/containers/create".to_string(), "name=x".to_string())
        );
        assert_eq!(
            split_target("/version"),
            ("/version".to_string(), String::new())
        );
        assert_eq!(
            split_target("/volumes/v1/x"),
            ("/volumes/v1/x".to_string(), String::new())
        );
    }
}
