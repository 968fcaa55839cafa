//! Streaming sessions (exec, attach, port-forward) served by the pod's shim. The front accepts
//! the client's connection, reads its request head and hands the connection over on the
//! shim's streaming socket; from there this module owns it: it checks the token, negotiates
//! SPDY/3.1 or WebSocket and the Kubernetes subprotocol, and runs the session against Docker
//! or the pod's network namespace. The front can go away meanwhile.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

pub mod activity;
pub mod http;
pub mod inbound;
pub mod portforward;
pub mod prefixed;
pub mod remote;
pub mod sessions;
pub mod spdy;
pub mod websocket;

use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dockpod_proto::cri::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::lifecycle::Pod;
use prefixed::Prefixed;
use remote::{Io, Outcome, ResizeDecoder};
use sessions::{Pending, Refused, Sessions, Streams};

/// How long a client has to open the streams of a session.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);

/// The first remote-command subprotocol, what a client that offers none speaks.
const SPDY_REMOTE_FIRST: &str = "channel.k8s.io";
/// Remote-command subprotocols over SPDY, best first.
const SPDY_REMOTE: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    SPDY_REMOTE_FIRST,
];
const PORT_FORWARD: &str = "portforward.k8s.io";

/// The pod's streaming service.
pub struct Streaming {
    pub pod: Arc<Pod>,
    pub sessions: Sessions,
    /// A session with no traffic this long is closed.
    pub idle_timeout: Duration,
}

impl Streaming {
    /// Registers an exec and returns its URL path.
    pub fn exec(&self, req: ExecRequest) -> std::io::Result<String> {
        self.sessions.register(Pending::Exec(req))
    }

    pub fn attach(&self, req: AttachRequest) -> std::io::Result<String> {
        self.sessions.register(Pending::Attach(req))
    }

    pub fn port_forward(&self, req: PortForwardRequest) -> std::io::Result<String> {
        self.sessions.register(Pending::PortForward(req))
    }
}

/// The task that takes handed-over connections; dropping this ends it (and closes the
/// listening socket with it).
pub struct HandOvers {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HandOvers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the shim's streaming socket (0600) and accepts handed-over connections in a task on
/// `runtime`, until the returned `HandOvers` is dropped. Each hand-over (a blocking `recvmsg`
/// with a 5 s timeout, then a one-byte answer) runs on the blocking pool, so one front that
/// stalls mid-hand-over holds up no other, and an idle shim keeps no thread waiting for
/// hand-overs (a thread of its own cost every shim 0.02 MiB); the session is served on
/// `runtime`.
pub fn listen(
    socket: &Path,
    streaming: Arc<Streaming>,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<HandOvers> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::UnixListener::from_std(listener)?
    };
    let task = runtime.clone().spawn(async move {
        loop {
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a hand-over");
                    if let Some(wait) = dockpod_proto::sockets::accept_backoff(&e) {
                        tokio::time::sleep(wait).await;
                    }
                    continue;
                }
            };
            let (streaming, runtime) = (streaming.clone(), runtime.clone());
            tokio::task::spawn_blocking(move || {
                if let Some((client, head)) = take_over(conn) {
                    serve_handed_over(streaming, &runtime, client, head);
                }
            });
        }
    });
    Ok(HandOvers { task })
}

/// Receives a handed-over connection and its request head, and answers the front that it is
/// taken. Blocks: on the blocking pool.
fn take_over(conn: tokio::net::UnixStream) -> Option<(std::net::TcpStream, Vec<u8>)> {
    let mut conn = match conn.into_std().and_then(|c| {
        c.set_nonblocking(false)?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "a hand-over connection");
            return None;
        }
    };
    let (fd, head) = match dockpod_proto::streaming::receive(&mut conn) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "receiving a streaming connection");
            return None;
        }
    };
    let client = std::net::TcpStream::from(fd);
    // As Go's servers do: small frames (window updates, PING answers, a prompt's echo) must
    // not wait for Nagle's algorithm behind the peer's delayed ACK.
    if let Err(e) = client
        .set_nodelay(true)
        .and_then(|()| client.set_nonblocking(true))
    {
        tracing::warn!(error = %e, "a handed-over connection");
        return None;
    }
    if let Err(e) = dockpod_proto::streaming::accept(&mut conn) {
        tracing::warn!(error = %e, "acknowledging a hand-over");
        return None;
    }
    Some((client, head))
}

/// Serves a connection taken over, as a session of its own on `runtime`.
fn serve_handed_over(
    streaming: Arc<Streaming>,
    runtime: &tokio::runtime::Handle,
    client: std::net::TcpStream,
    head: Vec<u8>,
) {
    // A session's bug ends that session alone (see `dockpod_proto::panics`).
    dockpod_proto::panics::spawn_session(runtime, async move {
        match TcpStream::from_std(client) {
            Ok(client) => serve(streaming.clone(), client, head).await,
            Err(e) => tracing::warn!(error = %e, "a handed-over connection"),
        }
        if streaming.sessions.running() == 0 {
            crate::memory::trim();
        }
    });
}

/// Serves one client connection whose request head is `head`.
async fn serve(streaming: Arc<Streaming>, client: TcpStream, head: Vec<u8>) {
    let mut client = client;
    let (request, len) = match http::parse(&head) {
        Ok(r) => r,
        Err(e) => {
            http::respond(&mut client, "400 Bad Request", &e).await;
            return;
        }
    };
    let Some((kind, token)) = dockpod_proto::streaming::parse_path(&request.path) else {
        http::respond(&mut client, "404 Not Found", "no such streaming session\n").await;
        return;
    };
    let (pending, permit) = match streaming.sessions.take(kind, token) {
        Ok(p) => p,
        Err(Refused::NotFound) => {
            tracing::warn!(path = %kind, "refused an unknown, used or expired streaming token");
            http::respond(&mut client, "404 Not Found", "no such streaming session\n").await;
            return;
        }
        Err(Refused::Busy) => {
            http::respond(
                &mut client,
                "429 Too Many Requests",
                "too many streaming sessions in this pod\n",
            )
            .await;
            return;
        }
    };
    let io = Prefixed::new(head.get(len..).unwrap_or_default().to_vec(), client);
    if request.upgrades_to("websocket") {
        websocket::serve(&streaming, io, &request, pending, permit).await;
    } else if request.upgrades_to("spdy/3.1") {
        serve_spdy(&streaming, io, &request, pending, permit).await;
    } else {
        let mut io = io;
        http::respond(
            &mut io,
            "400 Bad Request",
            "streaming needs an upgrade to SPDY/3.1 or websocket\n",
        )
        .await;
    }
}

/// The first protocol the client offers that this side speaks (the Kubernetes rule).
pub fn negotiate<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    offered.iter().find_map(|o| {
        supported
            .iter()
            .find(|s| s.eq_ignore_ascii_case(o))
            .copied()
    })
}

async fn serve_spdy(
    streaming: &Streaming,
    mut io: Prefixed<TcpStream>,
    request: &http::Request,
    pending: Pending,
    permit: OwnedSemaphorePermit,
) {
    let offered = request.header_values("x-stream-protocol-version");
    // A client that offers nothing speaks the first version of its protocol.
    let (supported, first): (&[&str], &str) = match pending {
        Pending::PortForward(_) => (&[PORT_FORWARD], PORT_FORWARD),
        _ => (&SPDY_REMOTE, SPDY_REMOTE_FIRST),
    };
    let protocol = if offered.is_empty() {
        first
    } else {
        match negotiate(&offered, supported) {
            Some(p) => p,
            None => {
                let body = format!(
                    "none of the offered protocols {offered:?} is supported ({supported:?})\n"
                );
                http::respond(&mut io, "403 Forbidden", &body).await;
                return;
            }
        }
    };
    let headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", protocol),
    ];
    if http::switching(&mut io, &headers).await.is_err() {
        return;
    }
    let session = spdy::serve(io, streaming.idle_timeout);
    match pending.streams() {
        Some(streams) => {
            let engine = streaming.pod.engine.clone();
            spdy_remote(session, protocol, streams, |io| async move {
                remote::run(&engine, &pending, io).await
            })
            .await
        }
        None => spdy_port_forward(streaming, session).await,
    }
    drop(permit);
}

/// Protocol version number of a remote-command subprotocol (`channel.k8s.io` is 1).
fn version(protocol: &str) -> u8 {
    protocol
        .strip_prefix('v')
        .and_then(|p| p.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// Runs an exec or attach over a SPDY session: waits for the client's streams, runs the
/// command, then ends the output streams, writes the status on the error stream and closes.
async fn spdy_remote<F, Fut>(mut session: spdy::Session, protocol: &str, remote: Streams, run: F)
where
    F: FnOnce(Io) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let resize_expected = remote.tty && version(protocol) >= 3;
    let mut wanted: Vec<&str> = vec!["error"];
    for (want, kind) in [
        (remote.stdin, "stdin"),
        (remote.stdout, "stdout"),
        (remote.stderr && !remote.tty, "stderr"),
        (resize_expected, "resize"),
    ] {
        if want {
            wanted.push(kind);
        }
    }
    let mut streams: HashMap<String, spdy::Stream> = HashMap::new();
    let collected = tokio::time::timeout(STREAMS_TIMEOUT, async {
        while !wanted.iter().all(|w| streams.contains_key(*w)) {
            let Some(stream) = session.streams.recv().await else {
                return false;
            };
            let kind = stream.header("streamtype").unwrap_or_default().to_string();
            streams.insert(kind, stream);
        }
        true
    })
    .await;
    let sender = session.sender();
    if !matches!(collected, Ok(true)) {
        tracing::info!("a streaming client did not open its streams");
        sender.close().await;
        let _ = session.done.await;
        return;
    }
    let mut forwarders = Vec::new();
    let mut output = |name: &str| -> Option<mpsc::Sender<Bytes>> {
        let stream = streams.get(name)?;
        let out = stream.out.clone();
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        forwarders.push(dockpod_proto::panics::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if !out.send(bytes).await {
                    break;
                }
            }
        }));
        Some(tx)
    };
    let stdout = output("stdout");
    let stderr = output("stderr");
    let resize = streams.get_mut("resize").map(|s| {
        let data = s.take_data();
        let (tx, rx) = mpsc::channel(4);
        dockpod_proto::panics::spawn(async move {
            let mut decoder = ResizeDecoder::default();
            let Some(mut data) = data else { return };
            while let Some(bytes) = data.recv().await {
                for size in decoder.push(&bytes) {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    });
    let stdin = streams.get_mut("stdin").and_then(spdy::Stream::take_data);
    let io = Io {
        stdin,
        stdout,
        stderr,
        resize,
        closed: session.closed.clone(),
    };
    let outcome = run(io).await;
    if outcome != Outcome::ClientGone {
        // The reference server's order: all output, then the status, then every stream ends,
        // and the session's GOAWAY comes last of all (`Sender::close`).
        for f in forwarders {
            let _ = f.await;
        }
        if let Some(error) = streams.get("error") {
            let status = if version(protocol) >= 4 {
                remote::status_json(&outcome)
            } else {
                remote::status_text(&outcome)
            };
            if !status.is_empty() {
                error.out.send(Bytes::from(status)).await;
            }
        }
        for name in ["stdout", "stderr", "error", "stdin", "resize"] {
            if let Some(s) = streams.get(name) {
                s.out.finish().await;
            }
        }
    }
    sender.close().await;
    drop(streams);
    let _ = tokio::time::timeout(Duration::from_secs(10), session.done).await;
}

/// Where the pod's ports are reached from, now.
async fn port_target(pod: &Pod) -> Result<portforward::Target, String> {
    let record = pod.snapshot();
    let host_network = record
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|o| o.network == dockpod_proto::cri::NamespaceMode::Node as i32);
    if host_network {
        return Ok(portforward::Target::Host);
    }
    let inspect = pod
        .engine
        .inspect(&record.sandbox_id)
        .await
        .map_err(|e| e.to_string())?;
    let pid = inspect
        .and_then(|c| c.state)
        .and_then(|s| s.pid)
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("sandbox {} is not running", record.sandbox_id))?;
    Ok(portforward::Target::Netns(
        format!("/proc/{pid}/ns/net").into(),
    ))
}

/// Port-forward over SPDY: the client opens an error and a data stream per connection, both
/// with the `port` and a shared `requestid`; each pair becomes one TCP connection in the pod.
async fn spdy_port_forward(streaming: &Streaming, mut session: spdy::Session) {
    let mut halves: HashMap<String, (Option<spdy::Stream>, Option<spdy::Stream>)> = HashMap::new();
    let mut connections = tokio::task::JoinSet::new();
    while let Some(stream) = session.streams.recv().await {
        let request = stream
            .header("requestid")
            .map(str::to_string)
            .unwrap_or_else(|| stream.header("port").unwrap_or_default().to_string());
        let entry = halves.entry(request.clone()).or_default();
        match stream.header("streamtype") {
            Some("error") => entry.0 = Some(stream),
            Some("data") => entry.1 = Some(stream),
            _ => {
                stream.out.reset(spdy::PROTOCOL_ERROR);
                continue;
            }
        }
        if matches!(halves.get(&request), Some((Some(_), Some(_)))) {
            if let Some((Some(error), Some(data))) = halves.remove(&request) {
                let pod = streaming.pod.clone();
                connections.spawn(dockpod_proto::panics::Isolated::new(async move {
                    forward_pair(&pod, error, data).await
                }));
            }
        }
        while connections.try_join_next().is_some() {}
    }
    // The connection is gone: the pairs still relaying see their streams end.
    while connections.join_next().await.is_some() {}
    let _ = session.done.await;
}

async fn forward_pair(pod: &Pod, error: spdy::Stream, mut data: spdy::Stream) {
    let port: Option<u16> = data.header("port").and_then(|p| p.parse().ok());
    let result = match port {
        Some(port) => match port_target(pod).await {
            Ok(target) => portforward::connect(&target, port).await.map_err(|e| {
                format!(
                    "error forwarding port {port} to pod {}: {e}",
                    pod.view().sandbox_id
                )
            }),
            Err(e) => Err(e),
        },
        None => Err("port-forward stream without a valid port header".to_string()),
    };
    match result {
        Ok(tcp) => {
            // A stream's data is taken once, here: it is always there.
            let Some(from_client) = data.take_data() else {
                return;
            };
            let (to_client, mut rx) = mpsc::channel::<Bytes>(8);
            let out = data.out.clone();
            let forward = async move {
                while let Some(bytes) = rx.recv().await {
                    if !out.send(bytes).await {
                        break;
                    }
                }
            };
            tokio::join!(portforward::relay(tcp, from_client, to_client), forward);
        }
        Err(message) => {
            tracing::info!(%message, "port-forward connection failed");
            error.out.send(Bytes::from(message)).await;
        }
    }
    data.out.finish().await;
    error.out.finish().await;
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_preference_wins() {
        let offered: Vec<String> = ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]
            .map(String::from)
            .into();
        assert_eq!(negotiate(&offered, &SPDY_REMOTE), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate(&["x".to_string()], &SPDY_REMOTE), None);
        assert_eq!(version("v4.channel.k8s.io"), 4);
        assert_eq!(version("channel.k8s.io"), 1);
    }
}
