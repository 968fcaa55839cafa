//! Unix socket hygiene shared by the CRI socket and the shim sockets: endpoint parsing,
//! binding with stale-socket replacement (but never over a live server), permissions, and
//! tonic channels over a unix socket.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

/// Longest path a `sockaddr_un` holds (108 bytes including the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("endpoint {0:?} is not a unix socket endpoint (expected unix:///absolute/path)")]
    NotUnixEndpoint(String),
    #[error("socket path {} is longer than {MAX_SOCKET_PATH} bytes", .0.display())]
    PathTooLong(PathBuf),
    #[error("another server is already listening on {}", .0.display())]
    InUse(PathBuf),
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SocketError {
    let path = path.to_path_buf();
    move |source| SocketError::Io { what, path, source }
}

/// Parses `unix:///run/x.sock` (the kubelet's form) or a bare absolute path.
pub fn parse_unix_endpoint(endpoint: &str) -> Result<PathBuf, SocketError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !path.starts_with('/') {
        return Err(SocketError::NotUnixEndpoint(endpoint.to_string()));
    }
    let path = PathBuf::from(path);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(SocketError::PathTooLong(path));
    }
    Ok(path)
}

/// Binds `path` with permission bits `mode`. A socket left behind by a dead server is
/// replaced; a socket some live server still answers on is not (`InUse`), nor is a file that
/// is not a socket. The parent directory is created if missing.
pub async fn bind_exclusive(path: &Path, mode: u32) -> Result<UnixListener, SocketError> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(SocketError::PathTooLong(path.to_path_buf()));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("creating directory", parent))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io_err("removing stale socket", path))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspecting", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("binding", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("setting permissions on", path))?;
    Ok(listener)
}

/// Removes the socket at `path` if it is still the one this process bound (same inode), so a
/// server that lost its socket to a successor does not delete the successor's.
pub fn remove_if_same(path: &Path, bound_ino: u64) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.ino() == bound_ino {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A socket file this process bound, deleted when this is dropped unless a successor has
/// bound the path since: a server that stops for any reason, an error on its way up
/// included, leaves no socket behind.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    ino: Option<u64>,
}

impl BoundSocket {
    /// Takes charge of the socket just bound at `path`.
    pub fn at(path: &Path) -> BoundSocket {
        use std::os::unix::fs::MetadataExt;
        BoundSocket {
            path: path.to_path_buf(),
            ino: std::fs::symlink_metadata(path).ok().map(|m| m.ino()),
        }
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Some(ino) = self.ino {
            remove_if_same(&self.path, ino);
        }
    }
}

/// A lazily connecting tonic channel to the gRPC server on the unix socket at `path`.
pub fn channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    // The URI is required by tonic but unused: every connection goes to `path`.
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            parse_unix_endpoint("unix:///run/dockpod/cri.sock").ok(),
            Some(PathBuf::from("/run/dockpod/cri.sock"))
        );
        assert_eq!(
            parse_unix_endpoint("/tmp/x.sock").ok(),
            Some(PathBuf::from("/tmp/x.sock"))
        );
        assert!(parse_unix_endpoint("tcp://127.0.0.1:1").is_err());
        assert!(parse_unix_endpoint("unix://relative.sock").is_err());
        let long = format!("unix:///{}", "a".repeat(200));
        assert!(matches!(
            parse_unix_endpoint(&long),
            Err(SocketError::PathTooLong(_))
        ));
    }

    #[tokio::test]
    async fn replaces_stale_socket_but_not_live_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let live = bind_exclusive(&path, 0o660).await.expect("first bind");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        assert!(matches!(
            bind_exclusive(&path, 0o660).await,
            Err(SocketError::InUse(_))
        ));
        drop(live);
        // The file is still there, but nobody answers: it is stale and gets replaced.
        assert!(path.exists());
        bind_exclusive(&path, 0o600)
            .await
            .expect("rebind over stale");
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        std::fs::write(&path, b"data").expect("write");
        assert!(matches!(
            bind_exclusive(&path, 0o660).await,
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&path).expect("read"), b"data");
    }
}

/// How long an accept loop waits after `error` before it accepts again. Running out of file
/// descriptors or memory does not pass by retrying at once: the loop would spin a core and
/// flood the log until a descriptor is freed. Other errors (a client that gave up before it
/// was accepted) pass at once.
pub fn accept_backoff(error: &io::Error) -> Option<std::time::Duration> {
    use nix::errno::Errno;
    let exhausted = [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM];
    let errno = error.raw_os_error().map(Errno::from_raw)?;
    exhausted
        .contains(&errno)
        .then_some(std::time::Duration::from_millis(100))
}

#[cfg(test)]
mod accept_tests {
    use super::*;

    #[test]
    fn only_exhaustion_waits() {
        let emfile = io::Error::from_raw_os_error(nix::libc::EMFILE);
        assert!(accept_backoff(&emfile).is_some());
        let aborted = io::Error::from_raw_os_error(nix::libc::ECONNABORTED);
        assert!(accept_backoff(&aborted).is_none());
        assert!(accept_backoff(&io::Error::other("no errno")).is_none());
    }
}
