//! The front-to-shim hand-over as the shim receives it on its streaming socket: a preamble
//! (mark, version, head length), the head's bytes, and the client's socket as SCM_RIGHTS,
//! over a real socket pair, arriving in one piece or several.
//!
//! Promises checked: a hand-over is taken exactly when its preamble is this version's and
//! announces at most `MAX_HEAD` bytes that all came, and then the head is those bytes; the
//! preamble written for a length reads back as that length.
#![no_main]

use std::io::{IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use dockpod_proto::streaming::{self, MAX_HEAD, PREAMBLE};
use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

fuzz_target!(|data: &[u8]| {
    let Some((&first_len, bytes)) = data.split_first() else {
        return;
    };
    // The length encoder and decoder agree.
    let len = bytes.len() as u32;
    let parsed = streaming::parse_preamble(&streaming::preamble(len));
    assert_eq!(
        parsed.ok(),
        (bytes.len() <= MAX_HEAD).then_some(bytes.len())
    );

    let (mut front, mut shim) = UnixStream::pair().expect("socket pair");
    let first = usize::from(first_len).max(1).min(bytes.len());
    let (opening, rest) = bytes.split_at(first);
    let passed = [front.as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&passed)];
    if sendmsg::<()>(
        front.as_raw_fd(),
        &[IoSlice::new(opening)],
        &rights,
        MsgFlags::empty(),
        None,
    )
    .is_err()
    {
        return;
    }
    let _ = front.write_all(rest);
    let _ = front.shutdown(std::net::Shutdown::Write);

    let received = streaming::receive(&mut shim);
    let preamble: Option<[u8; PREAMBLE]> = bytes.get(..PREAMBLE).and_then(|p| p.try_into().ok());
    let announced = preamble.and_then(|p| streaming::parse_preamble(&p).ok());
    let complete = announced.filter(|len| bytes.len() >= PREAMBLE + len);
    match (received, complete) {
        (Ok((_fd, head)), Some(len)) => assert_eq!(head, &bytes[PREAMBLE..PREAMBLE + len]),
        (Err(_), None) => {}
        (got, expected) => panic!(
            "received {:?}, expected a head of {expected:?} bytes",
            got.map(|(_, h)| h.len())
        ),
    }
});
