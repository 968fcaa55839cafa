//! One owner per state directory: an exclusive `flock` on a lock file inside it, held for the
//! owning process's life. The front takes its root directory, each shim its pod directory, so
//! a second front on one root, or a second shim for one pod, refuses to start instead of
//! supervising, logging and tearing down the same pods twice. The kernel drops the lock when
//! its holder dies, so a crash never leaves a stale one behind; the holder's PID is written
//! into the file only to name it in the refusal.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name inside the directory owned.
pub const LOCK_FILE: &str = "owner.lock";

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "{dir} is owned by another {what} (PID {holder}); stop it first, or use another directory"
    )]
    Taken {
        dir: PathBuf,
        what: String,
        holder: String,
    },
    #[error("locking {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lock, released when dropped or when the process ends.
#[derive(Debug)]
pub struct Owner {
    _lock: Flock<File>,
}

/// How long `take` waits for the holder to let go before refusing. A holder that was just
/// killed can keep the lock for a moment after its successor starts (seen in the churn test:
/// a front restarted at once after a SIGKILL found the lock still held, cause not found), and
/// a service manager restarts a crashed front just as fast; a second owner that really runs
/// is refused after this.
pub const TAKE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes `dir` for this process, `what` naming the kind of owner in the refusal; waits up to
/// `TAKE_WAIT` for a holder to let go.
pub fn take(dir: &Path, what: &str) -> Result<Owner, OwnerError> {
    take_within(dir, what, TAKE_WAIT)
}

/// `take`, waiting up to `wait` for the holder to let go.
pub fn take_within(dir: &Path, what: &str, wait: std::time::Duration) -> Result<Owner, OwnerError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match try_take(dir, what) {
            Err(OwnerError::Taken { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn try_take(dir: &Path, what: &str) -> Result<Owner, OwnerError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| OwnerError::Io {
        path: path.clone(),
        source,
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(OwnerError::Taken {
                dir: dir.to_path_buf(),
                what: what.to_string(),
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
    };
    let file: &mut File = &mut lock;
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(Owner { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = take(dir.path(), "front").expect("first owner");
        // flock locks belong to the open file description: a second open in this process
        // conflicts just as another process's would.
        match take_within(dir.path(), "front", std::time::Duration::ZERO) {
            Err(OwnerError::Taken { holder, .. }) => {
                assert_eq!(holder, std::process::id().to_string())
            }
            other => panic!("second owner: {other:?}"),
        }
        drop(first);
        take(dir.path(), "front").expect("owner after the first let go");
    }

    #[test]
    fn an_owner_that_lets_go_while_the_next_waits_hands_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = take(dir.path(), "front").expect("first owner");
        let path = dir.path().to_path_buf();
        let next = std::thread::spawn(move || take(&path, "front").map(drop));
        // Held for a while first: the next one is waiting, not refused.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            !next.is_finished(),
            "the next owner waits while the lock is held"
        );
        drop(first);
        next.join()
            .expect("thread")
            .expect("the next owner takes over once the first lets go");
    }
}
