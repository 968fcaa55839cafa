//! The shim's own log as tracing writes it: its stderr, which the front opened on `shim.log`
//! in the pod's directory. Every `CHECK_EVERY` bytes written, the file is rotated once it has
//! grown past its bound (`shim_log::rotate_stderr`), so the bound holds without a timer
//! waking an idle shim to look.
//!
//! The lines are written by a thread of their own (tracing-appender's non-blocking writer),
//! from a queue of at most `QUEUED_LINES`: the pod's state directory may sit on a disk that
//! stalls, and a log line must never stall the shim's one runtime thread with it. While the
//! disk stalls and the queue is full, lines are dropped (and counted by tracing-appender).

use std::io::{self, Write};
use std::path::PathBuf;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Bytes written between two looks at the file's size: what the log can pass its bound by.
const CHECK_EVERY: u64 = 256 * 1024;
/// Lines waiting for the writer thread: the queue's bound (a line is a few hundred bytes).
const QUEUED_LINES: usize = 2048;

pub struct OwnLog {
    path: PathBuf,
    written: u64,
    look: fn(&std::path::Path) -> io::Result<bool>,
}

impl OwnLog {
    /// Writes to stderr, rotating `path` when stderr is that file (a shim the front started).
    pub fn new(path: PathBuf) -> OwnLog {
        OwnLog {
            path,
            written: 0,
            look: dockpod_proto::shim_log::rotate_stderr,
        }
    }

    /// The writer for tracing, and the guard that flushes what is queued when dropped.
    pub fn non_blocking(self) -> (NonBlocking, WorkerGuard) {
        NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUED_LINES)
            .thread_name("shim-log")
            .finish(self)
    }

    fn wrote(&mut self, n: usize) {
        let before = self.written;
        self.written += n as u64;
        if before / CHECK_EVERY != self.written / CHECK_EVERY {
            // Not logged through tracing: this runs inside its writer. A failure leaves the
            // log growing until the next look.
            let _ = (self.look)(&self.path);
        }
    }
}

impl Write for OwnLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = io::stderr().write(buf)?;
        self.wrote(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static LOOKS: AtomicUsize = AtomicUsize::new(0);

    fn count(_: &std::path::Path) -> io::Result<bool> {
        LOOKS.fetch_add(1, Ordering::Relaxed);
        Ok(false)
    }

    #[test]
    fn the_size_is_looked_at_once_per_check_interval_written() {
        let mut log = OwnLog {
            path: PathBuf::from("shim.log"),
            written: 0,
            look: count,
        };
        log.wrote((CHECK_EVERY / 2) as usize);
        assert_eq!(LOOKS.load(Ordering::Relaxed), 0, "not yet a check interval");
        log.wrote((CHECK_EVERY / 2) as usize);
        log.wrote(1);
        assert_eq!(LOOKS.load(Ordering::Relaxed), 1);
        // Two intervals more, in pieces that straddle their ends.
        for _ in 0..=2 * CHECK_EVERY / 1000 {
            log.wrote(1000);
        }
        assert_eq!(
            LOOKS.load(Ordering::Relaxed),
            3,
            "one look per interval, however written"
        );
    }
}
