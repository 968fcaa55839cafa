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

/// The numbers a counting container printed as Docker's own json-file log of it holds them
/// (its `LogPath`): what Docker kept, the source dockpod's CRI file is written from.
pub async fn docker_numbers(container: &str) -> Vec<u64> {
    let docker = crate::docker::docker().await;
    let inspect = docker
        .inspect_container(container, None)
        .await
        .unwrap_or_else(|e| panic!("inspect {container}: {e}"));
    let path = inspect.log_path.expect("the container's LogPath");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["stream"] == "stdout")
        .filter_map(|entry| {
            entry["log"]
                .as_str()?
                .trim_end()
                .strip_prefix("n ")?
                .parse()
                .ok()
        })
        .collect()
}

/// Asserts the CRI file holds exactly the lines Docker's own log of the container holds, in
/// its order (a lost tail included). Lines the container printed that Docker itself never
/// logged are Docker's loss, not dockpod's: they are printed, and returned.
pub fn assert_same_as_docker(what: &str, cri: &[u64], docker: &[u64]) -> Vec<u64> {
    if cri != docker {
        let at = cri.iter().zip(docker).take_while(|(a, b)| a == b).count();
        panic!(
            "{what}: the CRI file differs from Docker's own log from entry {at} on: CRI file {:?}, Docker {:?} (CRI file {} lines, Docker {})",
            &cri[at..cri.len().min(at + 5)],
            &docker[at..docker.len().min(at + 5)],
            cri.len(),
            docker.len()
        );
    }
    let mut lost = Vec::new();
    for pair in docker.windows(2) {
        lost.extend(pair[0] + 1..pair[1]);
    }
    if !lost.is_empty() {
        eprintln!("{what}: Docker itself lost lines {lost:?} (its json-file lacks them too)");
    }
    lost
}
