//! A small ext4 filesystem on a loop device, for tests of a shim whose state directory sits
//! on a disk that stalls (`fsfreeze`: every write waits until the filesystem is thawed) or
//! is full. Needs root, as the whole suite does.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct LoopFs {
    dir: tempfile::TempDir,
}

impl LoopFs {
    /// A fresh filesystem of `mib` MiB, mounted.
    pub fn new(mib: u64) -> LoopFs {
        let dir = tempfile::Builder::new()
            .prefix("dockpod-loopfs-")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        let image = dir.path().join("image");
        let file = std::fs::File::create(&image).expect("image file");
        file.set_len(mib << 20).expect("image size");
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let fs = LoopFs { dir };
        std::fs::create_dir(fs.path()).expect("mount point");
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(fs.path()));
        fs
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Freezes the filesystem: every write to it waits until the guard is dropped.
    pub fn freeze(&self) -> Frozen<'_> {
        run(Command::new("fsfreeze").arg("-f").arg(self.path()));
        Frozen { fs: self }
    }

    /// Fills the filesystem to the last block with a file at `name`.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.path().join(name);
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        // Big pieces while they fit, then smaller ones down to the last free block.
        let mut piece = block.len();
        while piece >= 512 {
            match f.write_all(&block[..piece]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => piece /= 2,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let _ = f.sync_all();
        path
    }
}

fn thaw(path: &Path) {
    let _ = Command::new("fsfreeze").arg("-u").arg(path).output();
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        thaw(&self.path());
        // Lazily: a process that still has a file open there lets go later, and the loop
        // device is released with the last reference.
        let _ = Command::new("umount").arg("-l").arg(self.path()).output();
    }
}

/// A frozen filesystem, thawed when dropped (also when a test fails meanwhile).
pub struct Frozen<'a> {
    fs: &'a LoopFs,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        thaw(&self.fs.path());
    }
}
