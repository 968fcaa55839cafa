//! Where a container's CRI log stands: which of Docker's log entries are already in a file, so
//! that a follower that starts again (after a shim crash, a dockerd restart or an upgrade)
//! neither loses nor repeats a line.
//!
//! The log file is mostly its own checkpoint: its tail says which entries it holds. What it
//! cannot say is what the files before it held once the kubelet rotated them away. So whenever
//! the follower starts a new file it records, in a small checkpoint in the pod's state
//! directory, that file's identity (device and inode) and the position everything before it
//! reached. On resume the file the checkpoint names is found again (at the log path, or renamed
//! beside it when the shim died between the kubelet's rename and its ReopenContainerLog) and its
//! tail is laid over the checkpoint.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::docker::parse_time;

/// An entry's timestamp and stream (true for stderr). Docker gives every piece of a split
/// line the same timestamp, so one key may stand for several entries.
pub type Key = (i64, bool);

/// The maps of keys hash with foldhash, not the standard library's SipHash: every line of
/// every container's log goes through them, and the keys are Docker's timestamps, nothing a
/// container's output chooses (bench-logs measured SipHash at 7 % of the shim's copying).
type Keys<V> = HashMap<Key, V, foldhash::fast::RandomState>;

/// Entries recently written, counted by key. Docker's log interleaves the two streams in the
/// order their copiers wrote, so timestamps are not monotonic in it: an entry counts as written
/// when its key is among the last `WINDOW` written (as often as it was written), or older than
/// all of them. Kept as runs of one key in the order written (the pieces of a split line come
/// one after the other): no map beside them, which cost every logging container 50 KiB more
/// than the 16 KiB of the runs, for lookups only a fresh read of Docker's log makes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "Saved", from = "Saved")]
pub struct Position {
    /// Each key with the number of entries it stood for in a row, oldest first.
    runs: VecDeque<(Key, u32)>,
    /// Entries older than this are taken as written.
    floor_ns: i64,
}

/// Runs of keys remembered; about what the file's tail read on resume holds.
const WINDOW: usize = 1024;
/// How much of a file's end is read to find where to resume: more than `WINDOW` short records.
const TAIL_READ: u64 = 64 * 1024;

/// Tells, entry by entry, which entries of a fresh read of Docker's log (from `since_ns` on)
/// are already written. Only the keys remembered when the read began need counting, so its
/// memory is bounded by the window however long the read goes on.
#[derive(Default)]
pub struct Replay {
    pending: Keys<usize>,
}

impl Replay {
    /// Whether the next entry with `key` in the read is already written.
    pub fn written(&mut self, position: &Position, key: Key) -> bool {
        if key.0 < position.floor_ns {
            return true;
        }
        let Some(left) = self.pending.get_mut(&key) else {
            return false;
        };
        *left -= 1;
        if *left == 0 {
            self.pending.remove(&key);
            if self.pending.is_empty() {
                // The table keeps its size when emptied; a read that went past everything
                // written has no use for it.
                self.pending = Keys::default();
            }
        }
        true
    }
}

impl Position {
    /// Starts a read of Docker's log from `since_ns`.
    pub fn replay(&self) -> Replay {
        Replay {
            pending: self
                .runs
                .iter()
                .fold(Keys::default(), |mut pending, (key, n)| {
                    *pending.entry(*key).or_insert(0) += *n as usize;
                    pending
                }),
        }
    }

    pub fn record(&mut self, key: Key) {
        if let Some((last, n)) = self.runs.back_mut() {
            if *last == key {
                *n = n.saturating_add(1);
                return;
            }
        }
        // Room made before the push, so the queue never outgrows the window (its capacity
        // would double to hold one more).
        if self.runs.len() >= WINDOW {
            if let Some((old, _)) = self.runs.pop_front() {
                // Forgotten entries count as written: the evicted ones, and all older ones
                // (a later run of the same key among them).
                self.floor_ns = self.floor_ns.max(old.0 + 1);
            }
        }
        self.runs.push_back((key, 1));
    }

    /// Where to ask Docker to start: the oldest remembered entry.
    pub fn since_ns(&self) -> i64 {
        self.runs
            .iter()
            .map(|(k, _)| k.0)
            .min()
            .unwrap_or(self.floor_ns)
    }

    /// Everything before the oldest remembered entry, and nothing of what is remembered.
    fn floor_only(&self) -> Position {
        Position {
            floor_ns: self.since_ns(),
            ..Position::default()
        }
    }
}

/// How a position is stored: JSON has no tuple keys, and the order matters.
#[derive(Serialize, Deserialize)]
struct Saved {
    floor_ns: i64,
    /// `(timestamp, stderr, count)`, oldest first.
    entries: Vec<(i64, bool, usize)>,
}

impl From<Position> for Saved {
    fn from(p: Position) -> Saved {
        let entries = p
            .runs
            .iter()
            .map(|((ts, stderr), n)| (*ts, *stderr, *n as usize))
            .collect();
        Saved {
            floor_ns: p.floor_ns,
            entries,
        }
    }
}

impl From<Saved> for Position {
    fn from(s: Saved) -> Position {
        let mut p = Position {
            floor_ns: s.floor_ns,
            ..Position::default()
        };
        // A file of an older version held each key once, with all its entries' count.
        for (ts, stderr, count) in s.entries.into_iter().rev().take(WINDOW).rev() {
            let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
            p.runs.push_back(((ts, stderr), count));
        }
        p
    }
}

/// The checkpoint: which file is being written, and what the files before it held.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    dev: u64,
    ino: u64,
    before: Position,
}

/// One container's log file at the kubelet's path, and its checkpoint.
pub struct LogTarget {
    path: PathBuf,
    checkpoint: PathBuf,
    /// Device and inode of the file the checkpoint names.
    current: Option<(u64, u64)>,
}

impl LogTarget {
    pub fn new(path: PathBuf, checkpoint: PathBuf) -> LogTarget {
        LogTarget {
            path,
            checkpoint,
            current: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads which entries are already written: the checkpoint, with the tail of the file it
    /// names laid over it.
    pub fn resume(&mut self) -> io::Result<Position> {
        let saved = self.load();
        self.current = saved.as_ref().map(|c| (c.dev, c.ino));
        let source = match &saved {
            None => Some(self.path.clone()),
            Some(c) => find_file(&self.path, c.dev, c.ino)?,
        };
        let (tail, cut) = match &source {
            Some(file) => read_tail(file)?,
            None => {
                // The kubelet compressed or deleted the file before the shim came back: what it
                // held is unknown, so lines since the last rotation may be written again.
                tracing::warn!(path = %self.path.display(), "the log file being written is gone");
                (Vec::new(), false)
            }
        };
        let mut position = match saved {
            Some(c) if !cut => c.before,
            _ => Position::default(),
        };
        let oldest_is_floor = cut || position == Position::default();
        for key in tail_keys(&tail, cut) {
            position.record(key);
        }
        if oldest_is_floor {
            position.floor_ns = position.since_ns();
        }
        Ok(position)
    }

    /// Opens the file at the log path for appending (creating it). A file other than the one the
    /// checkpoint names is recorded there, with `position` as what came before it.
    pub fn open(&mut self, position: &Position) -> io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)?;
        let meta = file.metadata()?;
        let id = (meta.dev(), meta.ino());
        if self.current != Some(id) {
            let before = if meta.len() == 0 {
                position.clone()
            } else {
                position.floor_only()
            };
            let checkpoint = Checkpoint {
                dev: id.0,
                ino: id.1,
                before,
            };
            let data = serde_json::to_vec(&checkpoint).map_err(io::Error::other)?;
            if let Some(dir) = self.checkpoint.parent() {
                dockpod_proto::files::ensure_dir(dir, 0o700)?;
            }
            dockpod_proto::files::atomic_write(&self.checkpoint, &data, 0o600)?;
            self.current = Some(id);
        }
        Ok(file)
    }

    fn load(&self) -> Option<Checkpoint> {
        let data = match std::fs::read(&self.checkpoint) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(error = %e, path = %self.checkpoint.display(), "reading the log checkpoint");
                return None;
            }
        };
        serde_json::from_slice(&data)
            .inspect_err(|e| {
                tracing::warn!(error = %e, path = %self.checkpoint.display(), "a damaged log checkpoint is ignored")
            })
            .ok()
    }
}

/// The file with this device and inode: the one at `path`, or one renamed beside it.
fn find_file(path: &Path, dev: u64, ino: u64) -> io::Result<Option<PathBuf>> {
    let same = |m: &std::fs::Metadata| m.is_file() && m.dev() == dev && m.ino() == ino;
    if std::fs::symlink_metadata(path).is_ok_and(|m| same(&m)) {
        return Ok(Some(path.to_path_buf()));
    }
    let Some(dir) = path.parent() else {
        return Ok(None);
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.metadata().is_ok_and(|m| same(&m)) {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// The end of the file (empty for a missing one), and whether it was cut short.
fn read_tail(path: &Path) -> io::Result<(Vec<u8>, bool)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_READ);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok((tail, start > 0))
}

/// The keys of the records in a file's tail, in file order; with `cut`, the first line may be
/// a fragment and is left out.
pub fn tail_keys(tail: &[u8], cut: bool) -> impl Iterator<Item = Key> + '_ {
    tail.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .skip(usize::from(cut))
        .filter_map(|line| {
            let mut fields = line.splitn(3, |b| *b == b' ');
            let (ts, stream) = (fields.next()?, fields.next()?);
            let ns = std::str::from_utf8(ts).map(parse_time).unwrap_or(0);
            (ns > 0).then_some((ns, stream == b"stderr"))
        })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const T1: &str = "2026-11-27T01:00:21.000000001Z";
    const T2: &str = "2026-11-27T01:00:21.000000002Z";
    const T3: &str = "2026-11-27T01:00:21.000000003Z";

    /// Whether the `nth` entry (from 1) with `key` in a read of Docker's log is written.
    fn written(p: &Position, key: Key, nth: usize) -> bool {
        let mut replay = p.replay();
        (1..nth).for_each(|_| {
            replay.written(p, key);
        });
        replay.written(p, key)
    }

    fn from_tail(tail: &str, cut: bool) -> Position {
        let mut p = Position::default();
        for key in tail_keys(tail.as_bytes(), cut) {
            p.record(key);
        }
        p.floor_ns = p.since_ns();
        p
    }

    #[test]
    fn position_from_the_files_tail() {
        // Streams interleave out of timestamp order, and the pieces of a split line share
        // their timestamp, as in Docker's log.
        let tail = format!("cut-line\n{T2} stdout F a\n{T1} stderr P b\n{T1} stderr F c\n");
        let p = from_tail(&tail, true);
        assert!(written(&p, (parse_time(T1), true), 1));
        assert!(written(&p, (parse_time(T1), true), 2));
        assert!(
            !written(&p, (parse_time(T1), true), 3),
            "a third piece was never written"
        );
        assert!(written(&p, (parse_time(T2), false), 1));
        assert!(!written(&p, (parse_time(T3), false), 1));
        assert!(
            !written(&p, (parse_time(T2), true), 1),
            "same time, other stream"
        );
        assert_eq!(p.since_ns(), parse_time(T1));
        assert!(from_tail("", false).runs.is_empty());
    }

    #[test]
    fn the_pieces_of_a_line_count_when_another_stream_came_between() {
        let tail = format!("{T1} stdout P a\n{T2} stderr F b\n{T1} stdout F c\n");
        let p = from_tail(&tail, false);
        assert!(written(&p, (parse_time(T1), false), 2));
        assert!(!written(&p, (parse_time(T1), false), 3));
        assert!(written(&p, (parse_time(T2), true), 1));
    }

    #[test]
    fn window_forgets_the_oldest_but_keeps_them_written() {
        let mut p = Position::default();
        for i in 0..(WINDOW as i64 + 10) {
            p.record((1000 + i, false));
        }
        assert_eq!(p.runs.len(), WINDOW);
        assert!(written(&p, (1000, false), 1));
        assert!(written(&p, (1009, false), 1), "the last one forgotten");
        assert!(written(&p, (1010, false), 1), "the oldest remembered");
        assert!(!written(&p, (1010, false), 2));
        assert!(!written(&p, (1000 + WINDOW as i64 + 10, false), 1));
    }

    #[test]
    fn a_position_survives_its_json_form() {
        let mut p = Position::default();
        p.record((5, true));
        p.record((5, true));
        p.record((3, false));
        p.floor_ns = 2;
        let json = serde_json::to_string(&p).expect("serialize");
        let back: Position = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, p);
    }

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        let mut f = OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open to append");
        f.write_all(text.as_bytes()).expect("append");
    }

    #[test]
    fn a_rotated_file_is_remembered_through_its_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let checkpoint = dir.path().join("state/logs/c.json");
        let mut target = LogTarget::new(path.clone(), checkpoint.clone());
        let start = target.resume().expect("resume");
        assert_eq!(start, Position::default());
        target.open(&start).expect("open");
        append(&path, &format!("{T1} stdout F one\n"));
        let mut position = target.resume().expect("resume");
        assert!(written(&position, (parse_time(T1), false), 1));

        // The kubelet renames, the follower reopens with what it wrote so far.
        std::fs::rename(&path, dir.path().join("0.log.1")).expect("rotate");
        position.record((parse_time(T2), false));
        append(&dir.path().join("0.log.1"), &format!("{T2} stdout F two\n"));
        target.open(&position).expect("reopen");
        append(&path, &format!("{T3} stdout F three\n"));

        // A new follower (a new shim) knows all three, though the file holds only the last.
        let mut again = LogTarget::new(path.clone(), checkpoint.clone());
        let p = again.resume().expect("resume");
        for t in [T1, T2, T3] {
            assert!(written(&p, (parse_time(t), false), 1), "{t}");
            assert!(!written(&p, (parse_time(t), false), 2), "{t}");
        }
    }

    #[test]
    fn a_file_renamed_before_the_reopen_is_found_by_its_inode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let checkpoint = dir.path().join("c.json");
        let mut target = LogTarget::new(path.clone(), checkpoint.clone());
        target.open(&Position::default()).expect("open");
        append(&path, &format!("{T1} stdout F one\n{T2} stdout F two\n"));
        // The shim dies; the kubelet renames; a new shim starts before any reopen.
        std::fs::rename(&path, dir.path().join("0.log.20261127-000000")).expect("rotate");
        let mut again = LogTarget::new(path.clone(), checkpoint);
        let p = again.resume().expect("resume");
        assert!(written(&p, (parse_time(T2), false), 1));
        assert!(!written(&p, (parse_time(T3), false), 1));
        // The fresh file at the path starts after what the renamed one holds.
        again.open(&p).expect("open");
        let p = again.resume().expect("resume");
        assert!(written(&p, (parse_time(T2), false), 1));
    }
}
