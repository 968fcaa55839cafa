//! A pod record's journal as a reader finds it on disk after any crash or corruption: any
//! bytes at all.
//!
//! Promises checked: reading never panics; the frames read end within the bytes, and what is
//! read is the last of them (the bytes up to their end read the same); a frame written right
//! after them, whatever its payload, is what is read then.
#![no_main]

use dockpod_proto::state_journal::{frame, last_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (last, end) = last_frame(data);
    assert!(end <= data.len());
    let Some(kept) = data.get(..end) else {
        return;
    };
    assert_eq!(last_frame(kept), (last, end));
    if end == 0 {
        assert_eq!(last, None);
    }
    let payload = data.get(end..).unwrap_or_default();
    let next = frame(payload).expect("a frame of a short payload");
    let mut journal = kept.to_vec();
    journal.extend_from_slice(&next);
    assert_eq!(last_frame(&journal), (Some(payload), journal.len()));
});
