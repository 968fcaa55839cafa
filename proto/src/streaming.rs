//! What the front and the shims share about streaming (exec, attach, port-forward): the URL
//! paths and tokens, reading an HTTP request head with a bound, and the hand-over of an
//! accepted connection from the front to the pod's shim: the socket itself travels as a file
//! descriptor (`SCM_RIGHTS`) over the shim's streaming socket, with the bytes the front already
//! read, so that the front is out of the data path and a session outlives it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The largest request head accepted; real clients send well under 1 KiB.
pub const MAX_HEAD: usize = 16 * 1024;
/// What the shim answers once it owns the connection.
const ACCEPTED: u8 = b'k';
/// The shim's answer to a hand-over framed in a version it does not speak.
const OTHER_VERSION: u8 = b'v';
/// What opens every hand-over: a mark and the framing's version. A shim and a front of
/// different builds then refuse each other's hand-over by name instead of misreading it (the
/// protocol revision check replaces such a shim).
const HAND_OVER_MAGIC: [u8; 3] = *b"DPH";
pub const HAND_OVER_VERSION: u8 = 1;
/// Mark, version, then the head's length.
pub const PREAMBLE: usize = 4 + 4;

/// The kinds of session, as they appear first in the URL path (`/<kind>/<token>`).
pub const KINDS: [&str; 3] = ["exec", "attach", "portforward"];

/// A session token: the owning shim's ID (16 hex digits) followed by 32 random hex digits.
/// The front routes by the prefix alone, so a token outlives a front restart.
pub fn new_token(shim_id: &str) -> io::Result<String> {
    Ok(format!(
        "{shim_id}{}{}",
        crate::layout::random_id()?,
        crate::layout::random_id()?
    ))
}

/// The shim a well-formed token belongs to.
pub fn token_shim(token: &str) -> Option<&str> {
    let valid = token.len() == 48 && token.bytes().all(|b| b.is_ascii_hexdigit());
    token.get(..16).filter(|_| valid)
}

/// `(kind, token)` of a streaming request path such as `/exec/<token>?command=...`.
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    let path = path.split('?').next().unwrap_or(path);
    let mut parts = path.strip_prefix('/')?.splitn(2, '/');
    let kind = parts.next()?;
    let token = parts.next()?.trim_end_matches('/');
    (KINDS.contains(&kind) && token_shim(token).is_some()).then_some((kind, token))
}

/// The path of a request head's request line (`METHOD SP path SP version`), as the front
/// reads it to route the connection.
pub fn request_path(head: &[u8]) -> Option<String> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let _method = parts.next()?;
    parts.next().map(str::to_string)
}

pub use crate::layout::shim_stream_socket;

/// Where an HTTP head ends (`\r\n\r\n`), if it does within `buf`.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Hands `conn` (an accepted client connection) with the bytes already read from it to the
/// shim listening on `socket`, and waits for the shim to take it. Blocking.
pub fn hand_over(socket: &Path, conn: RawFd, read: &[u8]) -> io::Result<()> {
    let mut shim = UnixStream::connect(socket)?;
    shim.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let len = u32::try_from(read.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request head too long"))?;
    let preamble = preamble(len);
    let fds = [conn];
    let iov = [IoSlice::new(&preamble), IoSlice::new(read)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(shim.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    // The descriptor went with the first byte; the rest of the bytes may need more writes.
    let total = preamble.len() + read.len();
    if sent < total {
        let mut rest = Vec::with_capacity(total - sent);
        rest.extend_from_slice(&preamble);
        rest.extend_from_slice(read);
        shim.write_all(rest.get(sent..).unwrap_or_default())?;
    }
    let mut answer = [0u8; 1];
    shim.read_exact(&mut answer)?;
    match answer[0] {
        ACCEPTED => Ok(()),
        OTHER_VERSION => Err(io::Error::other(format!(
            "the shim does not speak hand-over version {HAND_OVER_VERSION}"
        ))),
        _ => Err(io::Error::other("the shim refused the connection")),
    }
}

/// Receives one handed-over connection on `shim` (an accepted connection on the shim's
/// streaming socket): the client's socket and the bytes the front read from it. Blocking.
pub fn receive(shim: &mut UnixStream) -> io::Result<(OwnedFd, Vec<u8>)> {
    shim.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut buf = vec![0u8; PREAMBLE + MAX_HEAD];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (got, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            shim.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fd = None;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY-free ownership: the kernel just created this descriptor for us.
                    let owned = owned_fd(raw);
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        (msg.bytes, fd)
    };
    let fd = fd.ok_or_else(|| io::Error::other("no connection came with the hand-over"))?;
    let mut have = got;
    read_up_to(shim, &mut buf, &mut have, PREAMBLE)?;
    let preamble: [u8; PREAMBLE] = crate::wire::array(&buf, 0).unwrap_or_default();
    let len = match parse_preamble(&preamble) {
        Ok(len) => len,
        Err(e) => {
            if e.kind() == io::ErrorKind::InvalidData {
                // The front learns why; the connection goes back to it with the refusal.
                let _ = shim.write_all(&[OTHER_VERSION]);
            }
            return Err(e);
        }
    };
    read_up_to(shim, &mut buf, &mut have, PREAMBLE + len)?;
    buf.truncate(PREAMBLE + len);
    buf.drain(..PREAMBLE);
    Ok((fd, buf))
}

/// What opens a hand-over of a head of `len` bytes.
pub fn preamble(len: u32) -> [u8; PREAMBLE] {
    let [m0, m1, m2] = HAND_OVER_MAGIC;
    let [l0, l1, l2, l3] = len.to_be_bytes();
    [m0, m1, m2, HAND_OVER_VERSION, l0, l1, l2, l3]
}

/// The head's length a hand-over's preamble announces: refused (`InvalidData`) when framed as
/// another version, and past `MAX_HEAD`.
pub fn parse_preamble(preamble: &[u8; PREAMBLE]) -> io::Result<usize> {
    let (mark, len) = preamble.split_at(4);
    if mark.get(..3) != Some(&HAND_OVER_MAGIC[..]) || mark.get(3) != Some(&HAND_OVER_VERSION) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a hand-over framed as {mark:?}, not as version {HAND_OVER_VERSION}"),
        ));
    }
    let len = crate::wire::array(len, 0).map_or(usize::MAX, |b| u32::from_be_bytes(b) as usize);
    if len > MAX_HEAD {
        return Err(io::Error::other("handed-over head too long"));
    }
    Ok(len)
}

/// Reads from `shim` into `buf` until `have` reaches `want` (at most `buf`'s length).
fn read_up_to(
    shim: &mut UnixStream,
    buf: &mut [u8],
    have: &mut usize,
    want: usize,
) -> io::Result<()> {
    while *have < want {
        let Some(space) = buf.get_mut(*have..want) else {
            return Err(io::Error::other("a hand-over longer than its buffer"));
        };
        let n = shim.read(space)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        *have += n;
    }
    Ok(())
}

/// Tells the front the connection is the shim's now.
pub fn accept(shim: &mut UnixStream) -> io::Result<()> {
    shim.write_all(&[ACCEPTED])
}

/// Takes ownership of a descriptor received with `SCM_RIGHTS`.
fn owned_fd(raw: RawFd) -> OwnedFd {
    #[allow(unsafe_code)]
    // SAFETY: `raw` was just installed in this process by recvmsg and nothing else owns it.
    unsafe {
        OwnedFd::from_raw_fd(raw)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_tokens() {
        let token = new_token("0123456789abcdef").expect("token");
        assert_eq!(token_shim(&token), Some("0123456789abcdef"));
        let path = format!("/exec/{token}?command=sh&stdin=1");
        assert_eq!(parse_path(&path), Some(("exec", token.as_str())));
        assert_eq!(
            parse_path(&format!("/portforward/{token}")),
            Some(("portforward", token.as_str()))
        );
        assert_eq!(parse_path(&format!("/shell/{token}")), None);
        assert_eq!(parse_path("/exec/short"), None);
        assert_eq!(
            parse_path("/exec/../../etc/passwdxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            None
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(
            request_path(b"POST /exec/abc HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(),
            Some("/exec/abc")
        );
        assert_eq!(request_path(b"\xff\xfe"), None);
    }

    #[test]
    fn a_connection_and_its_head_travel_to_the_shim() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let shim = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let (fd, head) = receive(&mut conn).expect("receive");
            accept(&mut conn).expect("ack");
            let mut client = UnixStream::from(fd);
            client.write_all(b"from the shim").expect("write to client");
            head
        });
        let (client, server_side) = UnixStream::pair().expect("pair");
        let head = vec![b'h'; 9000];
        hand_over(&socket, server_side.as_raw_fd(), &head).expect("hand over");
        drop(server_side);
        assert_eq!(shim.join().expect("shim thread"), head);
        let mut got = String::new();
        let mut client = client;
        client.read_to_string(&mut got).expect("read");
        assert_eq!(got, "from the shim");
    }

    #[test]
    fn a_hand_over_in_another_framing_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let shim = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            receive(&mut conn).map(|(_, head)| head)
        });
        // An unversioned hand-over, as a build before the framing had a version sent it: the
        // head's length first.
        let mut front = UnixStream::connect(&socket).expect("connect");
        let (_client, server_side) = UnixStream::pair().expect("pair");
        let len = 3u32.to_be_bytes();
        let fds = [server_side.as_raw_fd()];
        let iov = [IoSlice::new(&len), IoSlice::new(b"GET")];
        sendmsg::<()>(
            front.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("send");
        // Four more bytes, so the shim has a whole preamble to judge.
        front.write_all(b"....").expect("pad");
        let mut answer = [0u8; 1];
        front.read_exact(&mut answer).expect("an answer");
        assert_eq!(answer[0], OTHER_VERSION);
        let refused = shim.join().expect("shim thread").expect_err("refused");
        assert!(refused.to_string().contains("version 1"), "{refused}");
    }
}
