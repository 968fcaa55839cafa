//! Port-forward connections into the pod: a TCP connection to a port on the pod's loopback
//! (IPv4, else IPv6), made from a thread that has entered the pod's network namespace
//! (`setns`; no socat or nsenter), then relayed to the client's stream in both directions.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::inbound::Inbound;
#[cfg(test)]
use super::inbound::{self, Inflow};

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer per relayed connection.
const CHUNK: usize = 32 * 1024;

/// Where the pod's ports are.
#[derive(Debug, Clone)]
pub enum Target {
    /// A host-network pod: the node's own loopback.
    Host,
    /// The network namespace file of the sandbox's process (`/proc/<pid>/ns/net`).
    Netns(PathBuf),
}

/// Connects to `port` on the pod's loopback.
pub async fn connect(target: &Target, port: u16) -> io::Result<TcpStream> {
    let target = target.clone();
    let (tx, rx) = oneshot::channel();
    // A thread of its own: setns changes the calling thread's namespace for good, so it must
    // never be a thread that goes back to a pool. The socket stays in the pod's namespace.
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            dockpod_proto::panics::isolate_thread();
            let _ = tx.send(connect_blocking(&target, port));
        })?;
    let stream = rx
        .await
        .map_err(|_| io::Error::other("the connecting thread died"))??;
    stream.set_nonblocking(true)?;
    // As Go's dialer does: a relayed small write goes out at once.
    stream.set_nodelay(true)?;
    TcpStream::from_std(stream)
}

fn connect_blocking(target: &Target, port: u16) -> io::Result<std::net::TcpStream> {
    if let Target::Netns(path) = target {
        let ns = std::fs::File::open(path)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e4)
        }
    }
}

/// Relays between `tcp` and the client until both directions ended: the client's EOF
/// half-closes the connection, the pod's EOF ends `to_client` (dropping it).
pub async fn relay(tcp: TcpStream, mut from_client: Inbound, to_client: mpsc::Sender<Bytes>) {
    let (mut read, mut write) = tcp.into_split();
    let upstream = async move {
        while let Some(bytes) = from_client.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to_client
                        .send(Bytes::copy_from_slice(buf.get(..n).unwrap_or_default()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(upstream, downstream);
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_on_the_hosts_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            s.write_all(&got).await.expect("echo");
        });
        let tcp = connect(&Target::Host, port).await.expect("connect");
        let inflow = std::sync::Arc::new(Inflow::default());
        let (to_pod, from_client) = inbound::open(&inflow, None);
        let (to_client, mut client_rx) = mpsc::channel(4);
        let relay = tokio::spawn(relay(tcp, from_client, to_client));
        assert!(to_pod.push(Bytes::from_static(b"ping")));
        drop(to_pod);
        let mut echoed = Vec::new();
        while let Some(b) = client_rx.recv().await {
            echoed.extend_from_slice(&b);
        }
        assert_eq!(echoed, b"ping");
        relay.await.expect("relay");
        server.await.expect("server");
        assert!(connect(&Target::Host, 1).await.is_err());
    }
}
