//! CRI log files. For every container with a log path the shim follows Docker's own log (the
//! durable source, whatever the log driver keeps) and writes the kubelet's format:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>`, `P` for a piece of a line (Docker
//! splits lines at 16 KiB, and so does this writer), `F` for the end of one.
//!
//! With Docker's `json-file` driver (its default) the shim reads Docker's file itself
//! (`json_file`); with any other driver it reads Docker's logs API. After a restart the
//! follower learns from `log_position` which entries are written and reads Docker's log from
//! the oldest of them on, skipping what is already written, so no line is lost or written
//! twice. `ReopenContainerLog` closes the file and opens a fresh one at the same path (after
//! the kubelet renamed the old one).
#![deny(clippy::indexing_slicing, clippy::string_slice)]

pub mod json_file;

use std::collections::HashMap;
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::docker::{docker_time, parse_time, Engine};
use crate::error::{Error, Result};
use crate::log_position::{Key, LogTarget, Position, Replay};
use json_file::JsonLog;

/// Longest content of one record; longer lines become `P` records ending in an `F` record.
pub const MAX_RECORD: usize = 16 * 1024;

/// Makes the CRI log file (and its directory) if it is not there yet, on the blocking pool.
/// StartContainer does before Docker starts the container, as containerd opens it before it
/// starts the task: the kubelet and `kubectl logs` read the path once the start has answered,
/// however long the follower takes to write the first line.
pub async fn create_file(path: PathBuf) -> Result<()> {
    let shown = path.display().to_string();
    let created = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)
            .map(drop)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    created.map_err(Error::io(format!("creating log file {shown}")))
}

/// The log followers of one pod's containers: at most one per container, each stopped when
/// it is taken out (or the pod's shim ends).
#[derive(Default)]
pub struct Followers(Mutex<HashMap<String, Follower>>);

impl Followers {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Follower>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts following `container`'s log into `path`, unless it is followed already.
    pub fn follow(&self, engine: &Engine, container: &str, path: PathBuf, checkpoint: PathBuf) {
        let mut map = self.map();
        if !map.contains_key(container) {
            let follower = Follower::start(engine.clone(), container.to_string(), path, checkpoint);
            map.insert(container.to_string(), follower);
        }
    }

    pub fn follows(&self, container: &str) -> bool {
        self.map().contains_key(container)
    }

    pub fn handle(&self, container: &str) -> Option<LogHandle> {
        self.map().get(container).map(Follower::handle)
    }

    /// Stops following `container`'s log.
    pub fn stop(&self, container: &str) {
        self.map().remove(container);
    }
}

/// A running follower of one container's log; dropping it stops the follower.
pub struct Follower {
    handle: LogHandle,
    task: tokio::task::JoinHandle<()>,
}

/// What callers hold of a follower: cheap to clone, usable without any lock held.
#[derive(Clone)]
pub struct LogHandle {
    /// Becomes true once Docker's log stream has ended (the container stopped) and every
    /// record of it is in the file.
    done: watch::Receiver<bool>,
    /// Set once the container is known to have stopped: Docker has then written its whole log.
    stopped: watch::Sender<bool>,
    reopen: mpsc::Sender<oneshot::Sender<Result<()>>>,
}

impl Follower {
    /// Starts following `container`'s log into `path`, keeping its checkpoint at `checkpoint`.
    pub fn start(
        engine: Engine,
        container: String,
        path: PathBuf,
        checkpoint: PathBuf,
    ) -> Follower {
        let (done_tx, done) = watch::channel(false);
        let (stopped, stopped_rx) = watch::channel(false);
        let (reopen, reopen_rx) = mpsc::channel(4);
        let span = tracing::info_span!("log", container = %container);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let target = LogTarget::new(path, checkpoint);
                let signals = Signals {
                    reopen: reopen_rx,
                    stopped: stopped_rx,
                };
                follow_until_stopped(&engine, &container, target, signals).await;
                let _ = done_tx.send(true);
            },
            span,
        ));
        Follower {
            handle: LogHandle {
                done,
                stopped,
                reopen,
            },
            task,
        }
    }

    pub fn handle(&self) -> LogHandle {
        self.handle.clone()
    }
}

impl LogHandle {
    /// Opens a fresh file at the log path and continues there.
    pub async fn reopen(&self) -> Result<()> {
        let gone = || Error::FailedPrecondition("the container's log is no longer followed".into());
        let (tx, rx) = oneshot::channel();
        self.reopen.send(tx).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Waits (at most `timeout`) until everything Docker logged is in the file; to be called
    /// once the container has stopped.
    pub async fn wait_done(&self, timeout: Duration) -> bool {
        self.stopped.send_replace(true);
        let mut done = self.done.clone();
        let finished = tokio::time::timeout(timeout, done.wait_for(|d| *d)).await;
        finished.is_ok()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The CRI log file and the records not yet in it. Records collect in memory and reach the
/// file in large writes, made on the blocking pool; whoever adds records writes them out once
/// `WRITE_BUFFER` is reached, so this holds at most that and one entry's records. The buffer
/// is taken when records come and given back once they are written: a container that is
/// silent most of the time costs its shim nothing for it.
struct LogFile {
    file: std::fs::File,
    pending: Vec<u8>,
}

/// What a burst of output collects before it is written.
const WRITE_BUFFER: usize = 64 * 1024;

/// Where a copy stands and what it writes to. Its disk work (opening files and checkpoints,
/// writing records, reading Docker's file) runs on the blocking pool (`off_thread`), so a slow
/// disk holds up this container's log and nothing else of the shim. The lock is held by one
/// step at a time: the follower awaits each step before it takes the next, and its own
/// accesses on the shim's thread touch only memory.
struct LogCopy {
    target: LogTarget,
    position: Position,
    file: Option<LogFile>,
    /// What of the current read of Docker's log is already written.
    replay: Replay,
}

type SharedCopy = Arc<Mutex<LogCopy>>;

fn lock(copy: &SharedCopy) -> MutexGuard<'_, LogCopy> {
    copy.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one step of disk work on the copy, on the blocking pool.
async fn off_thread<R: Send + 'static>(
    copy: &SharedCopy,
    step: impl FnOnce(&mut LogCopy) -> R + Send + 'static,
) -> Result<R> {
    let copy = copy.clone();
    crate::memory::busy();
    tokio::task::spawn_blocking(move || step(&mut lock(&copy)))
        .await
        .map_err(|e| Error::io("copying the container's log")(std::io::Error::other(e)))
}

impl LogCopy {
    fn new(target: LogTarget) -> LogCopy {
        LogCopy {
            target,
            position: Position::default(),
            file: None,
            replay: Replay::default(),
        }
    }

    fn resume(&mut self) -> Result<()> {
        self.position = self.target.resume().map_err(Error::io(format!(
            "reading where the log {} stands",
            self.target.path().display()
        )))?;
        Ok(())
    }

    /// Opens the file at the log path, unless one is open.
    fn open(&mut self) -> Result<()> {
        if self.file.is_none() {
            let file = self.target.open(&self.position).map_err(Error::io(format!(
                "opening log file {}",
                self.target.path().display()
            )))?;
            self.file = Some(LogFile {
                file,
                pending: Vec::new(),
            });
        }
        Ok(())
    }

    /// Starts a read of Docker's log from `position.since_ns()`.
    fn begin_read(&mut self) {
        self.replay = self.position.replay();
    }

    fn full(&self) -> bool {
        self.file
            .as_ref()
            .is_some_and(|f| f.pending.len() >= WRITE_BUFFER)
    }

    /// Writes the pending records to the file. Blocks: only in a step on the blocking pool.
    /// What a failed write (a full disk) left is kept, without the part that was written, for
    /// the next try.
    fn spill(&mut self) -> std::io::Result<()> {
        let Some(f) = &mut self.file else {
            return Ok(());
        };
        while !f.pending.is_empty() {
            match f.file.write(&f.pending) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => drop(f.pending.drain(..n)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        f.pending = Vec::new();
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        self.spill().map_err(Error::io(format!(
            "writing {}",
            self.target.path().display()
        )))
    }

    /// Finishes the current file and continues in a fresh one at the log path.
    fn reopen(&mut self) -> Result<()> {
        self.write_out()?;
        self.file = None;
        self.open()
    }

    /// Adds one entry's CRI records, unless the file holds it already.
    fn write(
        &mut self,
        key: Key,
        ts: impl Display,
        stream: &str,
        content: &[u8],
    ) -> std::io::Result<()> {
        if self.replay.written(&self.position, key) {
            return Ok(());
        }
        let Some(f) = &mut self.file else {
            return Err(std::io::Error::other("the log file is not open"));
        };
        if f.pending.capacity() == 0 {
            f.pending.reserve(WRITE_BUFFER);
        }
        write_records(&mut f.pending, ts, stream, content)?;
        self.position.record(key);
        Ok(())
    }

    /// Adds one entry of the logs API (`<timestamp> <content>`).
    fn entry(&mut self, stream: &str, entry: &[u8]) -> Result<()> {
        let Some(space) = entry.iter().position(|b| *b == b' ') else {
            return Ok(());
        };
        let (ts, content) = dockpod_proto::wire::split(entry, space);
        let content = content.get(1..).unwrap_or_default();
        let ts = std::str::from_utf8(ts).unwrap_or_default();
        let key = (parse_time(ts), stream == "stderr");
        self.write(key, ts, stream, content)
            .map_err(Error::io("writing the container's log"))
    }
}

/// Finishes the current file and continues in a fresh one at the log path.
async fn reopen(copy: &SharedCopy) -> Result<()> {
    off_thread(copy, LogCopy::reopen).await?
}

/// What reaches a follower from outside: ReopenContainerLog's requests, and the news that the
/// container stopped.
struct Signals {
    reopen: mpsc::Receiver<oneshot::Sender<Result<()>>>,
    stopped: watch::Receiver<bool>,
}

/// Follows the log until the container has stopped and its log is written; a failure (dockerd
/// restarting, say) is picked up again from the last entry written, with back-off, for as long
/// as Docker still has the container. Once the container has stopped, a failure (a log
/// directory the kubelet never made, say) gets one more try: nothing new will come, and the
/// exit is not announced until this follower ends.
async fn follow_until_stopped(
    engine: &Engine,
    container: &str,
    target: LogTarget,
    mut signals: Signals,
) {
    let path = target.path().to_path_buf();
    let copy = Arc::new(Mutex::new(LogCopy::new(target)));
    if let Err(e) = off_thread(&copy, LogCopy::resume)
        .await
        .and_then(|resumed| resumed)
    {
        tracing::warn!(error = %e, path = %path.display(), "reading where the log stands");
        return;
    }
    let mut delay = Duration::from_millis(200);
    let mut retried_after_exit = false;
    loop {
        let followed = match json_file_path(engine, container).await {
            Some(docker_log) => follow_file(docker_log, &copy, &mut signals).await,
            None => follow_api(engine, container, &copy, &mut signals).await,
        };
        let failure = match followed {
            Ok(()) => return,
            Err(e) => e,
        };
        let running = match engine.inspect(container).await {
            Ok(None) => return,
            Ok(Some(c)) => c.state.and_then(|s| s.running).unwrap_or(false),
            // Docker is not answering (restarting): keep trying as for a running container.
            Err(_) => true,
        };
        if !running {
            if retried_after_exit {
                tracing::warn!(error = %failure, path = %path.display(), "giving up on the log of a stopped container");
                return;
            }
            retried_after_exit = true;
            continue;
        }
        tracing::warn!(error = %failure, retry_in = ?delay, "following the container's log");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Docker's own file of the container's log, when its driver is `json-file`.
async fn json_file_path(engine: &Engine, container: &str) -> Option<PathBuf> {
    let inspect = engine.inspect(container).await.ok()??;
    let driver = inspect.host_config?.log_config?.typ?;
    let path = inspect.log_path.filter(|p| !p.is_empty())?;
    (driver == "json-file").then(|| PathBuf::from(path))
}

/// How long a follower of Docker's file lets output collect after a write wakes it: what a
/// reader of the CRI file may lag behind Docker's file at most, beyond the copy itself.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

fn copying(docker_log: &Path) -> impl FnOnce(std::io::Error) -> Error {
    Error::io(format!("copying Docker's log {}", docker_log.display()))
}

/// Copies Docker's json-file log as it grows, until the container has stopped. Each round of
/// reading Docker's file and writing the CRI file is one step on the blocking pool.
async fn follow_file(docker_log: PathBuf, copy: &SharedCopy, signals: &mut Signals) -> Result<()> {
    let opening = docker_log.clone();
    let mut log = off_thread(copy, move |c| {
        let log = JsonLog::open(&opening, c.position.since_ns()).map_err(Error::io(format!(
            "opening Docker's log {}",
            opening.display()
        )))?;
        c.open()?;
        c.begin_read();
        Ok::<_, Error>(log)
    })
    .await??;
    loop {
        let reopen_asked = signals.reopen.try_recv().ok();
        // Read before the file: Docker has written the whole log before it reports the
        // container stopped, so a read after this answer finds everything.
        let stopped = *signals.stopped.borrow_and_update();
        let reading = docker_log.clone();
        let round;
        (log, round) = off_thread(copy, move |c| {
            if let Some(reply) = reopen_asked {
                let _ = reply.send(c.reopen());
            }
            let read = log.read_available(|e| {
                let stream = if e.stderr { "stderr" } else { "stdout" };
                let ts = humantime::format_rfc3339_nanos(
                    std::time::UNIX_EPOCH + Duration::from_nanos(e.time_ns.max(0) as u64),
                );
                c.write((e.time_ns, e.stderr), ts, stream, e.content.as_bytes())?;
                if c.full() {
                    c.spill()?;
                }
                Ok(())
            });
            let round = read.map_err(copying(&reading)).and_then(|()| c.write_out());
            (log, round)
        })
        .await?;
        round?;
        if stopped {
            return Ok(());
        }
        tokio::select! {
            changed = log.changed() => {
                changed.map_err(copying(&docker_log))?;
                // Docker writes entry by entry; a moment's wait lets a burst collect, so it
                // is read and written in a few large calls instead of one wake-up per line.
                // A stop ends the wait: its caller is waiting for the rest of the log.
                tokio::select! {
                    _ = tokio::time::sleep(BATCH_WINDOW) => {}
                    _ = signals.stopped.changed() => {}
                }
            }
            _ = signals.stopped.changed() => {}
            Some(reply) = signals.reopen.recv() => {
                let _ = reply.send(reopen(copy).await);
            }
        }
    }
}

/// Copies the log through Docker's logs API (any driver that can be read back). Entries are
/// added in memory on the shim's thread; their records are written out on the blocking pool.
async fn follow_api(
    engine: &Engine,
    container: &str,
    copy: &SharedCopy,
    signals: &mut Signals,
) -> Result<()> {
    off_thread(copy, LogCopy::open).await??;
    // Docker may end a follow stream at the container's exit before it has delivered the last
    // entries; a second, non-following read from the oldest remembered entry picks them up.
    for follow in [true, false] {
        let since_ns = {
            let mut c = lock(copy);
            c.begin_read();
            c.position.since_ns()
        };
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            since: (since_ns / 1_000_000_000) as i32,
            ..Default::default()
        };
        let mut stream = std::pin::pin!(engine.logs(container, options));
        let mut console = Console::default();
        loop {
            // A rotation is served even while output keeps coming.
            if let Ok(reply) = signals.reopen.try_recv() {
                let _ = reply.send(reopen(copy).await);
            }
            let item = match futures_util::FutureExt::now_or_never(stream.next()) {
                Some(item) => item,
                None => {
                    off_thread(copy, LogCopy::write_out).await??;
                    tokio::select! {
                        item = stream.next() => item,
                        Some(reply) = signals.reopen.recv() => {
                            let _ = reply.send(reopen(copy).await);
                            continue;
                        }
                    }
                }
            };
            let Some(item) = item else { break };
            let output = item?;
            let full = {
                let mut c = lock(copy);
                match output {
                    LogOutput::StdOut { message } => c.entry("stdout", &message)?,
                    LogOutput::StdErr { message } => c.entry("stderr", &message)?,
                    LogOutput::Console { message } => {
                        console.push(&message, |entry| c.entry("stdout", entry))?;
                    }
                    LogOutput::StdIn { .. } => {}
                }
                c.full()
            };
            if full {
                off_thread(copy, LogCopy::write_out).await??;
            }
        }
        let mut c = lock(copy);
        console.finish(|entry| c.entry("stdout", entry))?;
        drop(c);
    }
    off_thread(copy, LogCopy::write_out).await?
}

/// A TTY container's output through the logs API: one byte stream, cut anywhere, with
/// Docker's timestamp and a space before each of its messages. Lines are handed on whole; a
/// line still without its end once it holds more than `MAX_RECORD` bytes is handed on in
/// pieces of that size (partial records), as any stream's long line is. So the buffer holds
/// at most one record and a timestamp, whatever a container prints without a newline.
///
/// Docker itself logs such a line as partial messages of its copy buffer's 16 KiB, each with
/// a timestamp of its own (`<ts> <16 KiB><ts> <16 KiB><ts> <rest>\n`, as `docker logs -t`
/// shows for the local and journald drivers): a piece cut where the next message's timestamp
/// follows ends there, and the next piece is that message. A piece cut inside a message
/// (an engine with a larger buffer) goes on with the timestamp the message began with.
#[derive(Default)]
pub struct Console(Vec<u8>);

/// Where a timestamp's space must come by: Docker's are about 30 bytes.
pub const TIMESTAMP_MAX: usize = 64;

impl Console {
    pub fn push(
        &mut self,
        message: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.0.extend_from_slice(message);
        loop {
            let header = header_end(&self.0);
            let body = header.map_or(0, |space| space + 1);
            let limit = body + MAX_RECORD;
            // A line that ends within one record is handed on whole; one that ends later (or
            // only in a later message of Docker's) is cut at the record's size first.
            let within = self
                .0
                .get(body..self.0.len().min(limit + 1))
                .unwrap_or_default();
            if let Some(end) = within.iter().position(|b| *b == b'\n') {
                let entry: Vec<u8> = self.0.drain(..=body + end).collect();
                each(&entry)?;
                continue;
            }
            if self.0.len() <= limit {
                return Ok(());
            }
            if header.is_none() {
                // No timestamp: nothing the writer could place (it drops such entries).
                self.0.clear();
                return Ok(());
            }
            let rest = self.0.split_off(limit);
            each(&self.0)?;
            if starts_with_timestamp(&rest) {
                self.0 = rest;
            } else {
                self.0.truncate(body);
                self.0.extend_from_slice(&rest);
            }
        }
    }

    /// Hands on what is left at the end of the stream.
    pub fn finish(self, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        each(&self.0)
    }
}

/// Where the space after a message's timestamp is, if it comes soon enough to be one.
fn header_end(bytes: &[u8]) -> Option<usize> {
    bytes.iter().take(TIMESTAMP_MAX).position(|b| *b == b' ')
}

/// Whether `bytes` begin with a message's header: Docker's timestamp and a space.
fn starts_with_timestamp(bytes: &[u8]) -> bool {
    header_end(bytes).is_some_and(|space| {
        let ts = bytes.get(..space).unwrap_or_default();
        std::str::from_utf8(ts).is_ok_and(|ts| docker_time(ts).is_some())
    })
}

/// Writes the CRI records of one log entry: pieces of at most `MAX_RECORD` bytes, all `P`
/// but the last, which is `F` when the entry ends a line.
pub fn write_records(
    out: &mut impl Write,
    ts: impl Display,
    stream: &str,
    content: &[u8],
) -> std::io::Result<()> {
    let (body, full) = match content.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (content, false),
    };
    let pieces: Vec<&[u8]> = if body.is_empty() {
        vec![body]
    } else {
        body.chunks(MAX_RECORD).collect()
    };
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let tag = if i == last && full { "F" } else { "P" };
        write!(out, "{ts} {stream} {tag} ")?;
        out.write_all(piece)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const TS: &str = "2026-11-27T01:00:21.241566924Z";

    fn records(ts: &str, stream: &str, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_records(&mut out, ts, stream, content).expect("in memory");
        out
    }

    #[test]
    fn full_and_partial_records() {
        assert_eq!(
            records(TS, "stdout", b"hello\n"),
            format!("{TS} stdout F hello\n").into_bytes()
        );
        assert_eq!(
            records(TS, "stderr", b"no newline"),
            format!("{TS} stderr P no newline\n").into_bytes()
        );
        assert_eq!(
            records(TS, "stdout", b"\n"),
            format!("{TS} stdout F \n").into_bytes()
        );
        let long = vec![b'x'; MAX_RECORD * 2 + 5];
        let mut line = long.clone();
        line.push(b'\n');
        let out = String::from_utf8(records(TS, "stdout", &line)).expect("utf8");
        let tags: Vec<&str> = out
            .lines()
            .map(|l| l.split(' ').nth(2).expect("tag"))
            .collect();
        assert_eq!(tags, vec!["P", "P", "F"]);
        let joined: String = out
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).expect("content"))
            .collect();
        assert_eq!(joined.len(), long.len());
    }

    /// The stream `docker logs -t` gives for a TTY container that printed 40,000 bytes
    /// without a newline, then `\n` and `END\n` (Docker 20.10, local driver): Docker's
    /// 16 KiB partial messages, each with its timestamp, the line's last part ending it.
    #[test]
    fn a_console_line_docker_logged_in_partial_messages_keeps_no_timestamp_in_its_content() {
        let line = "2026-12-03T06:44:35.929127368Z ";
        let next = "2026-12-03T06:44:35.929547972Z ";
        let mut stream = Vec::new();
        for part in [MAX_RECORD, MAX_RECORD, 40_000 - 2 * MAX_RECORD] {
            stream.extend_from_slice(line.as_bytes());
            stream.extend(std::iter::repeat_n(b'x', part));
        }
        stream.push(b'\n');
        stream.extend_from_slice(format!("{next}END\n").as_bytes());
        // Cut as Docker's stream cuts it: anywhere, across message boundaries or not at all.
        for cut in [4000, stream.len()] {
            let mut handed: Vec<Vec<u8>> = Vec::new();
            let mut console = Console::default();
            for piece in stream.chunks(cut) {
                console
                    .push(piece, |e| {
                        handed.push(e.to_vec());
                        Ok(())
                    })
                    .expect("push");
            }
            console
                .finish(|e| {
                    handed.push(e.to_vec());
                    Ok(())
                })
                .expect("finish");
            let mut out = Vec::new();
            for entry in &handed {
                let space = entry.iter().position(|b| *b == b' ').expect("a timestamp");
                write_records(&mut out, "ts", "stdout", &entry[space + 1..]).expect("in memory");
            }
            let records: Vec<&[u8]> = out
                .split(|b| *b == b'\n')
                .filter(|r| !r.is_empty())
                .collect();
            // `ts stdout P <content>`
            let tags: Vec<&[u8]> = records.iter().map(|r| &r[10..11]).collect();
            assert_eq!(tags, [b"P", b"P", b"F", b"F"], "cut {cut}");
            let content: Vec<u8> = records[..3].iter().flat_map(|r| r[12..].to_vec()).collect();
            assert_eq!(content.len(), 40_000, "cut {cut}");
            assert!(
                content.iter().all(|b| *b == b'x'),
                "timestamp text in the content (cut {cut})"
            );
            assert_eq!(&records[3][12..], b"END");
            assert!(handed[0].starts_with(line.as_bytes()));
            assert!(handed[3].starts_with(next.as_bytes()));
        }
    }

    #[test]
    fn a_console_line_without_its_end_is_handed_on_in_records_of_bounded_size() {
        let ts = "2026-12-02T11:40:00.000000001Z ";
        let mut handed: Vec<Vec<u8>> = Vec::new();
        let mut hand = |e: &[u8]| {
            handed.push(e.to_vec());
            Ok(())
        };
        let mut console = Console::default();
        let long = vec![b'a'; 2 * MAX_RECORD + 100];
        // Arriving in pieces, as Docker's stream cuts it.
        let mut first = ts.as_bytes().to_vec();
        first.extend_from_slice(&long[..1000]);
        console.push(&first, &mut hand).expect("push");
        for piece in long[1000..].chunks(4096) {
            console.push(piece, &mut hand).expect("push");
            assert!(
                console.0.len() <= ts.len() + MAX_RECORD,
                "the buffer stays bounded"
            );
        }
        console.push(b"end\nnext", &mut hand).expect("push");
        console.finish(&mut hand).expect("finish");
        assert_eq!(
            handed.len(),
            4,
            "two full pieces, the line's end, the unended rest"
        );
        for piece in &handed[..2] {
            assert!(
                piece.starts_with(ts.as_bytes()),
                "each piece keeps the line's timestamp"
            );
            assert_eq!(piece.len(), ts.len() + MAX_RECORD);
            assert!(!piece.ends_with(b"\n"), "a piece is a partial record");
        }
        let mut content: Vec<u8> = handed[..3]
            .iter()
            .flat_map(|p| p[ts.len()..].to_vec())
            .collect();
        assert_eq!(content.split_off(long.len()), b"end\n");
        assert_eq!(content, long);
        assert_eq!(handed[3], b"next");
    }
}
