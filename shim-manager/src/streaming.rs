//! The front's streaming listener (`--streaming-bind-addr`). For each connection it reads
//! only the HTTP request head (bounded in size and time), takes the pod's shim from the URL's
//! token, and hands the connection itself over to that shim's streaming socket. From then on
//! the front is out of the data path: killing or restarting it leaves the session running.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dockpod_proto::streaming::{
    hand_over, head_end, parse_path, request_path, shim_stream_socket, token_shim, MAX_HEAD,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose head is being read at once; more wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// Binds the listener and serves it in the background; returns the base URL
/// (`http://host:port`) that streaming URLs start with.
pub async fn start(
    addr: SocketAddr,
    run_dir: PathBuf,
    tasks: &dockpod_proto::tasks::Tasks,
) -> std::io::Result<String> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // A wildcard bind still needs an address the kubelet can reach in the URL.
    let host = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_string(),
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let base = format!("http://{host}:{}", local.port());
    tracing::info!(%base, "streaming server listening");
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tasks.spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (conn, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a streaming connection");
                    if let Some(wait) = dockpod_proto::sockets::accept_backoff(&e) {
                        tokio::time::sleep(wait).await;
                    }
                    continue;
                }
            };
            let run_dir = run_dir.clone();
            // A bug in one connection's handling ends that connection alone.
            dockpod_proto::panics::spawn(async move {
                handle(conn, peer, &run_dir).await;
                drop(permit);
            });
        }
    });
    Ok(base)
}

async fn handle(mut conn: TcpStream, peer: SocketAddr, run_dir: &std::path::Path) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut conn)).await {
        Ok(Ok(head)) => head,
        Ok(Err(status)) => {
            respond(&mut conn, status).await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "dropped a streaming client that sent no request in time");
            return;
        }
    };
    let path = request_path(&head).unwrap_or_default();
    let Some((_, token)) = parse_path(&path) else {
        tracing::warn!(%peer, "streaming request for an unknown path");
        respond(&mut conn, "404 Not Found").await;
        return;
    };
    let Some(shim) = token_shim(token) else {
        respond(&mut conn, "404 Not Found").await;
        return;
    };
    let socket = shim_stream_socket(run_dir, shim);
    if !socket.exists() {
        tracing::warn!(%peer, shim, "streaming token of no running pod");
        respond(&mut conn, "404 Not Found").await;
        return;
    }
    let fd = conn.as_raw_fd();
    let handed = tokio::task::spawn_blocking(move || hand_over(&socket, fd, &head)).await;
    match handed {
        Ok(Ok(())) => {
            // The shim holds its own copy of the connection now; this one is just closed.
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, shim, "handing a streaming connection to its shim");
            respond(&mut conn, "502 Bad Gateway").await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "handing a streaming connection over");
            respond(&mut conn, "500 Internal Server Error").await;
        }
    }
}

/// Reads until the end of the request head; an HTTP status when the client misbehaves.
async fn read_head(conn: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn.read(&mut chunk).await.map_err(|_| "400 Bad Request")?;
        if n == 0 {
            return Err("400 Bad Request");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if head_end(&buf).is_some() {
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err("431 Request Header Fields Too Large");
        }
    }
}

async fn respond(conn: &mut TcpStream, status: &str) {
    let body = format!("{status}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}
