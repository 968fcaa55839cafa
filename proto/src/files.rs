//! Durable small-file writes for persisted state: write to a temporary file beside the target,
//! fsync, rename over the target, fsync the directory. A reader sees the old or the new
//! content, never a torn one, even across a crash. (And the same without the fsyncs, for the
//! files a crash of the machine makes meaningless anyway, or with them left for later.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Atomically replaces `path` with `data`, created with permission bits `mode`.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    replace(path, data, mode, true).map(drop)
}

/// `atomic_write` without its fsyncs, for a file that describes a running process (a PID):
/// readers still see the old or the new content whole, and a crash of the machine, which
/// could lose it, ends the process it describes too.
pub fn replace_volatile(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    replace(path, data, mode, false).map(drop)
}

/// `atomic_write` in two steps, for a record whose flush may run beside other work: the
/// file is replaced as `replace_volatile` does (readers, and a process that restarts after
/// this one died, see the new content whole), and `Replaced::flush` then puts it on the disk.
/// A machine that crashes before the flush has ended may leave the file empty.
pub fn replace_for_flush(path: &Path, data: &[u8], mode: u32) -> io::Result<Replaced> {
    replace(path, data, mode, false)
}

/// A file replaced and not yet flushed (`replace_for_flush`).
pub struct Replaced {
    file: File,
    dir: PathBuf,
}

impl Replaced {
    /// The file's content, then its name in the directory, on the disk.
    pub fn flush(self) -> io::Result<()> {
        self.file.sync_data()?;
        File::open(&self.dir)?.sync_all()
    }
}

fn replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> io::Result<Replaced> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(Replaced {
            file: f,
            dir: dir.to_path_buf(),
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (and parents) and sets its mode, also when it already existed.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_with_mode_and_leaves_no_temporaries() {
        fn flushed(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
            replace_for_flush(path, data, mode)?.flush()
        }
        for write in [atomic_write, replace_volatile, flushed] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("state.json");
            write(&path, b"one", 0o600).expect("first write");
            write(&path, b"two", 0o600).expect("second write");
            assert_eq!(fs::read(&path).expect("read"), b"two");
            let mode = fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let names: Vec<_> = fs::read_dir(dir.path())
                .expect("readdir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        }
    }

    /// The file is in place before its flush, and flushing one that a later write replaced
    /// meanwhile is no error.
    #[test]
    fn a_file_replaced_for_a_flush_is_read_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cni.json");
        let first = replace_for_flush(&path, b"one", 0o600).expect("first");
        assert_eq!(fs::read(&path).expect("read"), b"one");
        let second = replace_for_flush(&path, b"two", 0o600).expect("second");
        first.flush().expect("the replaced file's flush");
        second.flush().expect("flush");
        assert_eq!(fs::read(&path).expect("read"), b"two");
    }
}
