//! The `:authority` rewriter in front of every gRPC socket, fed a client's HTTP/2 bytes:
//! preface, frames, HPACK blocks with dynamic-table-size updates, CONTINUATIONs, padding and
//! priority.
//!
//! Promises checked: bytes cut anywhere give the same output and verdict as the same bytes
//! at once (the rewriter is a stream parser); what it writes is made of whole frames whose
//! header blocks are well formed; nothing grows past its bound.
#![no_main]

use dockpod_proto::authority::{self, Rewriter, MAX_HEADER_LIST};
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    // Real connections start with the preface; the fuzzer need not rediscover it.
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(rest);

    let mut whole = Vec::new();
    let at_once = Rewriter::default().push(&input, &mut whole);

    let mut pieces = Vec::new();
    let mut rewriter = Rewriter::default();
    let mut in_pieces = Ok(());
    for chunk in input.chunks(usize::from(cut) + 1) {
        in_pieces = rewriter.push(chunk, &mut pieces);
        if in_pieces.is_err() {
            break;
        }
    }
    assert_eq!(
        at_once.is_ok(),
        in_pieces.is_ok(),
        "{at_once:?} / {in_pieces:?}"
    );
    if at_once.is_err() {
        return;
    }
    assert_eq!(whole, pieces);
    // Each block written is at most its decoded list's bound and its frames' heads; each
    // block came in at least one frame of nine bytes.
    let blocks = 1 + input.len() / 9;
    let per_block = MAX_HEADER_LIST + 9 * (1 + MAX_HEADER_LIST / (16 * 1024));
    assert!(whole.len() <= input.len() + blocks * per_block);
    if !rewriter.passing_through() {
        check_frames(&whole);
    }
});

/// The output is the preface and whole frames, each header block well formed.
fn check_frames(out: &[u8]) {
    let mut at = PREFACE.len();
    let mut block = Vec::new();
    while let Some(head) = out.get(at..at + 9) {
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let Some(payload) = out.get(at + 9..at + 9 + len) else {
            // The input's last frame, still arriving: passed on as it came.
            return;
        };
        if kind == 0x1 || kind == 0x9 {
            let body = if kind == 0x1 && flags & 0x20 != 0 {
                &payload[5..]
            } else {
                payload
            };
            block.extend_from_slice(body);
            if flags & 0x4 != 0 {
                assert!(authority::well_formed(&block), "a malformed block written");
                block.clear();
            }
        }
        at += 9 + len;
    }
}
