//! The shim's own log as tracing writes it: its stderr, which the front opened on `shim.log`
//! in the pod's directory. Every `CHECK_EVERY` bytes written, the file is rotated once it has
//! grown past its bound (`shim_log::rotate_stderr`), so the bound holds without a timer
//! waking an idle shim to look.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::fmt::MakeWriter;

/// Bytes written between two looks at the file's size: what the log can pass its bound by.
const CHECK_EVERY: u64 = 256 * 1024;

pub struct OwnLog {
    path: PathBuf,
    written: AtomicU64,
    look: fn(&std::path::Path) -> io::Result<bool>,
}

impl OwnLog {
    /// Writes to stderr, rotating `path` when stderr is that file (a shim the front started).
    pub fn new(path: PathBuf) -> OwnLog {
        OwnLog {
            path,
            written: AtomicU64::new(0),
            look: dockpod_proto::shim_log::rotate_stderr,
        }
    }

    fn wrote(&self, n: usize) {
        let before = self.written.fetch_add(n as u64, Ordering::Relaxed);
        if before / CHECK_EVERY != (before + n as u64) / CHECK_EVERY {
            // Not logged through tracing: this runs inside its writer. A failure leaves the
            // log growing until the next look.
            let _ = (self.look)(&self.path);
        }
    }
}

pub struct Counted<'a> {
    log: &'a OwnLog,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = io::stderr().write(buf)?;
        self.log.wrote(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for OwnLog {
    type Writer = Counted<'a>;

    fn make_writer(&'a self) -> Counted<'a> {
        Counted { log: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static LOOKS: AtomicUsize = AtomicUsize::new(0);

    fn count(_: &std::path::Path) -> io::Result<bool> {
        LOOKS.fetch_add(1, Ordering::Relaxed);
        Ok(false)
    }

    #[test]
    fn the_size_is_looked_at_once_per_check_interval_written() {
        let log = OwnLog {
            path: PathBuf::from("shim.log"),
            written: AtomicU64::new(0),
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
