//! Reading CRI log files the way the kubelet does, strictly, and checking a counting
//! container's lines.

use std::collections::BTreeMap;
use std::path::Path;

/// A container command that prints `n 0`, `n 1`, ... every 20 ms until stopped.
pub const COUNTER: &str = "i=0; while :; do echo \"n $i\"; i=$((i+1)); sleep 0.02; done";

/// One CRI log record.
#[derive(Debug, Clone)]
pub struct Record {
    pub stream: String,
    pub full: bool,
    pub content: String,
}

/// Parses a CRI log file strictly: every line must be `<RFC3339Nano> <stream> <F|P> <content>`.
pub fn parse(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (ts, stream, tag) = (
                parts.next().expect("timestamp"),
                parts.next().expect("stream"),
                parts.next().expect("tag"),
            );
            let content = parts.next().unwrap_or_default();
            assert!(
                ts.ends_with('Z') && ts.contains('T') && ts.contains('.'),
                "bad timestamp in {line:?}"
            );
            assert!(
                humantime::parse_rfc3339(ts).is_ok(),
                "timestamp {ts:?} is not RFC 3339"
            );
            assert!(
                matches!(stream, "stdout" | "stderr"),
                "bad stream in {line:?}"
            );
            assert!(matches!(tag, "F" | "P"), "bad tag in {line:?}");
            Record {
                stream: stream.into(),
                full: tag == "F",
                content: content.into(),
            }
        })
        .collect()
}

/// Whole lines of one stream, P pieces joined with their F.
pub fn lines(records: &[Record], stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for r in records.iter().filter(|r| r.stream == stream) {
        current.push_str(&r.content);
        if r.full {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The numbers a counting container printed (`n <i>` lines), in file order.
pub fn numbers(paths: &[&Path]) -> Vec<u64> {
    paths
        .iter()
        .flat_map(|p| lines(&parse(p), "stdout"))
        .filter_map(|l| l.strip_prefix("n ").and_then(|n| n.parse().ok()))
        .collect()
}

pub fn assert_each_once(numbers: &[u64]) {
    let mut counts = BTreeMap::new();
    for n in numbers {
        *counts.entry(*n).or_insert(0) += 1;
    }
    let max = *counts.keys().last().expect("some lines");
    for i in 0..=max {
        assert_eq!(
            counts.get(&i),
            Some(&1),
            "line {i} appears {:?} times",
            counts.get(&i)
        );
    }
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "lines out of order"
    );
}
