//! Docker's `json-file` log of one container, read straight from the files Docker writes: one
//! JSON object per entry and line (`{"log":"…","stream":"stdout","time":"…"}`), the file at
//! inspect's `LogPath` renamed to `<LogPath>.1` (and on) when Docker rotates it.
//!
//! Reading the file costs dockerd nothing, where its logs API reads and re-encodes every entry
//! for the shim. The file stays the durable buffer it was: what the shim has not yet copied is
//! still there after a crash. Rotation is learnt from inotify on the container's directory and
//! growth from a one-shot watch on the file, armed only while the reader waits (through nix, as
//! the front's listing does: drained in place; no crate adds to that). A standing watch for
//! writes would make the kernel queue an event on every write Docker makes, a cost charged to
//! dockerd that bench-logs measured at a quarter of Docker's own CPU for the log.
//!
//! Each reader needs an inotify instance of its own, and a user has 128 by default
//! (`fs.inotify.max_user_instances`), which a node with more containers than that uses up.
//! A reader that gets none looks at the file again after a pause instead, as Docker's own
//! log reader falls back to polling: doubling from 250 ms to 2 s while nothing changes.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, Inotify, InotifyEvent};
use serde::Deserialize;
use tokio::io::unix::AsyncFd;

use crate::docker::parse_time;
use crate::inotify::{out_of_inotify, registered};

/// One entry of the log.
pub struct Entry<'a> {
    pub stderr: bool,
    /// Docker's timestamp, nanoseconds since the epoch.
    pub time_ns: i64,
    pub content: Cow<'a, str>,
}

/// An entry as Docker writes it (its `attrs`, when log options add them, are not needed).
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// How much is read from the file at a time.
const READ_CHUNK: usize = 256 * 1024;
/// Longest line kept while its end has not been read. Docker's entries hold at most 16 KiB of
/// output, which JSON escaping can grow sixfold; anything longer is not Docker's and is
/// dropped up to its newline.
const MAX_LINE: usize = 1024 * 1024;

/// The first and the longest pause of a reader without inotify between two looks at the file.
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_LAST: Duration = Duration::from_secs(2);

/// The inotify instance as tokio wants it. It is closed on tokio's blocking pool, never on the
/// thread that dropped it: closing an inotify instance waits for the kernel to free its
/// watches (an RCU grace period, 13 to 16 ms measured here), and a follower ends on the
/// shim's one event-loop thread exactly when a stopped container's exit is being recorded,
/// which StopContainer waits for.
struct Watch(Option<Inotify>);

impl Watch {
    fn inotify(&self) -> &Inotify {
        // Taken only by `drop`.
        self.0
            .as_ref()
            .expect("the inotify instance is open until dropped")
    }
}

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify().as_fd().as_raw_fd()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(inotify) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(inotify))),
            Err(_) => drop(inotify),
        }
    }
}

/// A container's json-file log, read from where the caller's position asks on, as it grows.
pub struct JsonLog {
    path: PathBuf,
    /// Files still to read, oldest first; the last is the one Docker writes.
    files: Vec<Opened>,
    /// Read but not yet complete: the start of a line whose end Docker has not written yet.
    pending: Vec<u8>,
    /// Dropping bytes up to the next newline (a line longer than `MAX_LINE`).
    skipping: bool,
    /// `None` without inotify: the file is polled.
    watch: Option<AsyncFd<Watch>>,
}

/// Once per shim: the operator can raise the limit.
fn warn_polling(e: Errno) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(error = %e, "no inotify instance or watch left for a container's log (fs.inotify.max_user_instances, max_user_watches); polling Docker's log files instead");
    });
}

/// An inotify instance watching `dir` for files made in it (Docker's rotations).
fn watch_dir(dir: &Path) -> Result<AsyncFd<Watch>, Errno> {
    let watch = registered(|inotify| Watch(Some(inotify)))?;
    // Only events on the directory itself: one for its files would make every write to them
    // an event again.
    watch
        .get_ref()
        .inotify()
        .add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)?;
    Ok(watch)
}

struct Opened {
    file: File,
    identity: (u64, u64),
}

fn open_file(path: &Path) -> io::Result<Opened> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    Ok(Opened {
        identity: (meta.dev(), meta.ino()),
        file,
    })
}

impl JsonLog {
    /// Opens the log at `path`, with the rotated files before it that were still written to at
    /// or after `since_ns` (what a follower that stopped there has not copied yet).
    pub fn open(path: &Path, since_ns: i64) -> io::Result<JsonLog> {
        let dir = path
            .parent()
            .ok_or_else(|| io::Error::other(format!("{} has no directory", path.display())))?;
        // Watched before anything is read, so no rotation after the first read goes unnoticed.
        let watch = match watch_dir(dir) {
            Ok(watch) => Some(watch),
            Err(e) if out_of_inotify(e) => {
                warn_polling(e);
                None
            }
            Err(e) => return Err(e.into()),
        };
        let mut files = Vec::new();
        for n in 1.. {
            let rotated = PathBuf::from(format!("{}.{n}", path.display()));
            let Ok(meta) = std::fs::metadata(&rotated) else {
                // Compressed rotations (`.1.gz`) are not read: Docker compresses a file only
                // once it holds nothing newer than the one after it.
                break;
            };
            let written_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
            if written_ns < since_ns {
                break;
            }
            match open_file(&rotated) {
                Ok(f) => files.push(f),
                // Rotated away meanwhile: whatever it held is older still.
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        files.reverse();
        let current = open_file(path)?;
        if !files.iter().any(|f| f.identity == current.identity) {
            files.push(current);
        }
        Ok(JsonLog {
            path: path.to_path_buf(),
            files,
            pending: Vec::new(),
            skipping: false,
            watch,
        })
    }

    /// Reads everything the files hold now, handing each entry to `each`, and returns at the
    /// end of the file Docker writes. A file Docker has rotated away is read to its end before
    /// the next one.
    pub fn read_available(
        &mut self,
        mut each: impl FnMut(Entry<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            self.read_to_end(&mut chunk, &mut each)?;
            if self.files.len() > 1 {
                self.next_file();
                continue;
            }
            // Docker renames a file only after its last write to it, and makes the next one at
            // the path: a different file there means the one read is complete once read again.
            let Some(newer) = self.newer_file()? else {
                return Ok(());
            };
            self.read_to_end(&mut chunk, &mut each)?;
            self.files.push(newer);
            self.next_file();
        }
    }

    /// Waits until the log may have grown or been rotated. Called once what the files hold
    /// has been read.
    pub async fn changed(&mut self) -> io::Result<()> {
        let Some(watch) = &self.watch else {
            return self.polled().await;
        };
        if let Some(opened) = self.files.last() {
            // One event, then the watch is gone until the next wait: Docker's writes while
            // the reader is busy cost nothing.
            let fd = format!("/proc/self/fd/{}", opened.file.as_raw_fd());
            match watch.get_ref().inotify().add_watch(
                fd.as_str(),
                AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ONESHOT,
            ) {
                Ok(_) => {}
                Err(e) if out_of_inotify(e) => {
                    warn_polling(e);
                    return self.polled().await;
                }
                Err(e) => return Err(e.into()),
            }
            // Written between the last read and the watch: no event will say so.
            if self.grown()? {
                return Ok(());
            }
        }
        loop {
            let mut ready = watch.readable().await?;
            match ready.get_inner().inotify().read_events() {
                Ok(events) if events.iter().any(|e| self.concerns_the_log(e)) => return Ok(()),
                Ok(_) => {}
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Without inotify: returns once the file Docker writes has grown or another has taken
    /// its path, looking after a pause that doubles while nothing changes.
    async fn polled(&self) -> io::Result<()> {
        let mut pause = POLL_FIRST;
        loop {
            if self.grown()? || self.newer_file()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_LAST);
        }
    }

    /// Whether the file Docker writes holds more than has been read of it.
    fn grown(&self) -> io::Result<bool> {
        let Some(opened) = self.files.last() else {
            return Ok(false);
        };
        let mut file = &opened.file;
        Ok(file.metadata()?.len() > file.stream_position()?)
    }

    /// Whether an event may mean more to read: growth of the file, a file made at the log's
    /// path (Docker's rotation), or lost events. Docker also writes the container's other
    /// files in that directory (its config, renamed into place on every state change, a stop
    /// among them); those are not the log.
    fn concerns_the_log(&self, event: &InotifyEvent) -> bool {
        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
            || event.mask.contains(AddWatchFlags::IN_MODIFY)
        {
            return true;
        }
        event
            .mask
            .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
            && event.name.as_deref() == self.path.file_name()
    }

    fn next_file(&mut self) {
        if !self.pending.is_empty() {
            tracing::warn!(path = %self.path.display(), bytes = self.pending.len(), "a rotated log file ends in an unfinished entry; it is dropped");
            self.pending.clear();
        }
        self.skipping = false;
        self.files.remove(0);
    }

    /// The file now at the path, when it is not the one being read.
    fn newer_file(&self) -> io::Result<Option<Opened>> {
        let current = self.files.last().map(|f| f.identity);
        match open_file(&self.path) {
            Ok(f) if Some(f.identity) != current => Ok(Some(f)),
            Ok(_) => Ok(None),
            // Between Docker's rename and its create, or the container removed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_to_end(
        &mut self,
        chunk: &mut [u8],
        each: &mut impl FnMut(Entry<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(opened) = self.files.first_mut() else {
            return Ok(());
        };
        loop {
            let n = match opened.file.read(chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut data = chunk.get(..n).unwrap_or_default();
            while let Some(end) = data.iter().position(|b| *b == b'\n') {
                let (line, rest) = dockpod_proto::wire::split(data, end);
                data = rest.get(1..).unwrap_or_default();
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                if self.pending.is_empty() {
                    entry(line, &self.path, each)?;
                } else {
                    self.pending.extend_from_slice(line);
                    let whole = std::mem::take(&mut self.pending);
                    entry(&whole, &self.path, each)?;
                }
            }
            if self.skipping {
                continue;
            }
            self.pending.extend_from_slice(data);
            if self.pending.len() > MAX_LINE {
                tracing::warn!(path = %self.path.display(), "a line longer than any Docker writes is dropped");
                self.pending.clear();
                self.skipping = true;
            }
        }
    }
}

fn entry(
    line: &[u8],
    path: &Path,
    each: &mut impl FnMut(Entry<'_>) -> io::Result<()>,
) -> io::Result<()> {
    match parse(line) {
        Some(e) => each(e),
        None => {
            tracing::warn!(path = %path.display(), line = %String::from_utf8_lossy(line), "not a json-file entry; skipped");
            Ok(())
        }
    }
}

/// Reads one line of the file.
pub fn parse(line: &[u8]) -> Option<Entry<'_>> {
    let raw: Raw<'_> = serde_json::from_slice(line).ok()?;
    let time_ns = parse_time(&raw.time);
    (time_ns > 0).then_some(Entry {
        stderr: raw.stream == "stderr",
        time_ns,
        content: raw.log,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(log: &str, stream: &str, time: &str) -> String {
        let raw = serde_json::json!({"log": log, "stream": stream, "time": time});
        format!("{raw}\n")
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open to append");
        f.write_all(text.as_bytes()).expect("append");
    }

    fn read(log: &mut JsonLog) -> Vec<(bool, i64, String)> {
        let mut out = Vec::new();
        log.read_available(|e| {
            out.push((e.stderr, e.time_ns, e.content.into_owned()));
            Ok(())
        })
        .expect("read");
        out
    }

    #[test]
    fn parses_what_docker_writes() {
        // As Docker 20.10 wrote it: Go escapes HTML characters and trims the time's zeros.
        let written =
            br#"{"log":"a \u003cb\u003e \"q\" \\ \u0026\n","stream":"stderr","time":"2026-12-01T18:25:31.1234Z"}"#;
        let e = parse(written).expect("an entry");
        assert!(e.stderr);
        assert_eq!(e.content, "a <b> \"q\" \\ &\n");
        assert_eq!(e.time_ns % 1_000_000_000, 123_400_000);
        let attrs =
            br#"{"log":"x","stream":"stdout","attrs":{"tag":"t"},"time":"2026-12-01T18:25:31Z"}"#;
        assert!(parse(attrs).is_some_and(|e| !e.stderr && e.content == "x"));
        assert!(parse(b"not json").is_none());
        assert!(parse(br#"{"log":"x","stream":"stdout","time":"never"}"#).is_none());
    }

    #[tokio::test]
    async fn lines_written_in_pieces_and_rotations_are_read_whole_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c-json.log");
        let t = |s: u32| format!("2026-12-01T18:25:{s:02}.5Z");
        append(&path, &line("one\n", "stdout", &t(1)));
        let mut log = JsonLog::open(&path, 0).expect("open");
        let two = line("two\n", "stderr", &t(2));
        let (head, tail) = two.split_at(10);
        append(&path, head);
        let first = read(&mut log);
        assert_eq!(first.len(), 1, "only the complete line: {first:?}");
        assert_eq!(first[0].2, "one\n");
        append(&path, tail);
        append(&path, &line("three\n", "stdout", &t(3)));
        // Docker's rotation: the file renamed, a new one made at the path.
        std::fs::rename(&path, format!("{}.1", path.display())).expect("rotate");
        append(&path, &line("four\n", "stdout", &t(4)));
        let rest: Vec<String> = read(&mut log).into_iter().map(|e| e.2).collect();
        assert_eq!(rest, vec!["two\n", "three\n", "four\n"]);
        assert!(read(&mut log).is_empty());

        // A reader that starts again finds the rotated file it had not finished.
        let again: Vec<String> = read(&mut JsonLog::open(&path, 0).expect("reopen"))
            .into_iter()
            .map(|e| e.2)
            .collect();
        assert_eq!(again, vec!["one\n", "two\n", "three\n", "four\n"]);
        let now = crate::docker::now_ns() + 60_000_000_000;
        let newest: Vec<String> = read(&mut JsonLog::open(&path, now).expect("reopen"))
            .into_iter()
            .map(|e| e.2)
            .collect();
        assert_eq!(
            newest,
            vec!["four\n"],
            "rotated files written before the start are not read"
        );
    }

    /// An empty log in a directory of its own, opened and read to its end.
    fn empty_log() -> (tempfile::TempDir, PathBuf, JsonLog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c-json.log");
        append(&path, "");
        let mut log = JsonLog::open(&path, 0).expect("open");
        assert!(read(&mut log).is_empty());
        (dir, path, log)
    }

    /// Waits for `changed`; generous, as the bound only keeps a lost wake-up from hanging the
    /// test run.
    async fn woken(changed: impl std::future::Future<Output = io::Result<()>>) {
        tokio::time::timeout(std::time::Duration::from_secs(60), changed)
            .await
            .expect("inotify reports the write")
            .expect("inotify");
    }

    #[tokio::test]
    async fn growth_wakes_the_reader() {
        let (_dir, path, mut log) = empty_log();
        let writer = std::thread::spawn(move || {
            append(&path, &line("late\n", "stdout", "2026-12-01T18:25:31Z"))
        });
        woken(log.changed()).await;
        writer.join().expect("writer");
        assert_eq!(read(&mut log).len(), 1);
    }

    #[tokio::test]
    async fn a_reader_without_inotify_polls_for_growth_and_rotation() {
        let (_dir, path, mut log) = empty_log();
        // As when the user's inotify instances are used up.
        log.watch = None;
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                append(&path, &line("late\n", "stdout", "2026-12-01T18:25:31Z"))
            })
        };
        woken(log.changed()).await;
        writer.join().expect("writer");
        assert_eq!(read(&mut log).len(), 1);
        std::fs::rename(&path, format!("{}.1", path.display())).expect("rotate");
        append(&path, &line("after\n", "stdout", "2026-12-01T18:25:32Z"));
        woken(log.changed()).await;
        let rest: Vec<String> = read(&mut log).into_iter().map(|e| e.2).collect();
        assert_eq!(rest, vec!["after\n"]);
    }

    #[tokio::test]
    async fn writes_while_the_reader_is_busy_queue_no_events() {
        let (_dir, path, mut log) = empty_log();
        {
            let wait = log.changed();
            tokio::pin!(wait);
            assert!(
                futures_util::poll!(&mut wait).is_pending(),
                "nothing written yet"
            );
            append(&path, &line("one\n", "stdout", "2026-12-01T18:25:31Z"));
            woken(wait).await;
        }
        for _ in 0..100 {
            append(&path, &line("more\n", "stdout", "2026-12-01T18:25:32Z"));
        }
        assert_eq!(
            log.watch
                .as_ref()
                .expect("inotify")
                .get_ref()
                .inotify()
                .read_events()
                .err(),
            Some(Errno::EAGAIN),
            "writes made while nobody waits leave no event behind"
        );
        assert_eq!(read(&mut log).len(), 101);
    }

    #[tokio::test]
    async fn dockers_other_files_in_the_directory_do_not_wake_the_reader() {
        let (dir, path, mut log) = empty_log();
        let wait = log.changed();
        tokio::pin!(wait);
        // What Docker does to the container's config on a stop: a new file renamed into place.
        let temp = dir.path().join(".tmp-config.v2.json");
        append(&temp, "{}");
        std::fs::rename(&temp, dir.path().join("config.v2.json")).expect("rename");
        // Long enough for inotify to deliver on an idle machine; on a loaded one this can
        // only pass wrongly, never fail wrongly.
        let woken_early =
            tokio::time::timeout(std::time::Duration::from_millis(200), &mut wait).await;
        assert!(
            woken_early.is_err(),
            "the config's rename woke the log's reader"
        );
        append(&path, &line("one\n", "stdout", "2026-12-01T18:25:31Z"));
        woken(wait).await;
    }
}
