//! What Docker sends a container's log copier: json-file lines, the logs API's timestamped
//! entries, a TTY container's console stream cut anywhere, Docker's RFC 3339 times; and the
//! CRI log records dockpod writes, read back from a file's tail when a shim resumes.
//!
//! Promises checked: a json-file entry read has a real time; the console splitter hands on
//! entries of at most one record and a timestamp, in the stream's order, losing no byte of a
//! line it can place; records written for any content read back as that many records of the
//! entry's time and stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_shim::docker::{docker_time, parse_time};
use pod_shim::log_position::tail_keys;
use pod_shim::logs::{json_file, write_records, Console, MAX_RECORD, TIMESTAMP_MAX};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            for line in rest.split(|b| *b == b'\n') {
                if let Some(entry) = json_file::parse(line) {
                    assert!(entry.time_ns > 0);
                }
            }
        }
        1 => console(rest),
        2 => records(rest),
        _ => {
            let text = String::from_utf8_lossy(rest);
            let ns = parse_time(&text);
            assert!(ns >= 0);
            assert_eq!(docker_time(&text).is_some() && ns > 0, ns > 0);
            let _ = tail_keys(rest, mode & 4 != 0).count();
        }
    }
});

/// The console stream cut into messages at the lengths the first bytes give.
fn console(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut console = Console::default();
    let mut entries: Vec<Vec<u8>> = Vec::new();
    for message in stream.chunks(usize::from(cut) * 64 + 1) {
        console
            .push(message, |entry| {
                entries.push(entry.to_vec());
                Ok(())
            })
            .expect("collecting entries does not fail");
    }
    console
        .finish(|entry| {
            entries.push(entry.to_vec());
            Ok(())
        })
        .expect("collecting entries does not fail");
    for entry in &entries {
        assert!(
            entry.len() <= TIMESTAMP_MAX + 1 + MAX_RECORD + 1,
            "an entry of {} bytes",
            entry.len()
        );
    }
    // A stream of whole lines that each start with a timestamp comes out as those lines.
    let lines: Vec<&[u8]> = stream.split_inclusive(|b| *b == b'\n').collect();
    let simple = stream.ends_with(b"\n")
        && lines.iter().all(|l| {
            l.len() <= MAX_RECORD
                && l.iter()
                    .take(TIMESTAMP_MAX)
                    .position(|b| *b == b' ')
                    .is_some()
        });
    if simple {
        let got: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        assert_eq!(got, lines);
    }
}

/// One entry's CRI records at a time of the fuzzer's choosing, read back.
fn records(data: &[u8]) {
    let Some((seconds, content)) = data.split_first_chunk::<5>() else {
        return;
    };
    let mut secs = [0u8; 8];
    secs[3..].copy_from_slice(seconds);
    // Up to about 36,000 years: Docker's times have four-digit years.
    let secs = u64::from_be_bytes(secs) % 253_402_300_799;
    let nanos = u32::from(seconds[4]) * 3_906_250;
    let time = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    let ts = humantime::format_rfc3339_nanos(time).to_string();
    let ns = parse_time(&ts);
    // One entry is one line: Docker cuts its output at newlines.
    let body: Vec<u8> = content.iter().copied().filter(|b| *b != b'\n').collect();
    let stderr = seconds[0] & 1 == 1;
    let stream = if stderr { "stderr" } else { "stdout" };
    let mut out = Vec::new();
    write_records(&mut out, &ts, stream, &body).expect("in memory");
    let expected = body.len().div_ceil(MAX_RECORD).max(1);
    assert_eq!(out.iter().filter(|b| **b == b'\n').count(), expected);
    if ns > 0 {
        let keys: Vec<_> = tail_keys(&out, false).collect();
        assert_eq!(keys, vec![(ns, stderr); expected]);
    }
}
