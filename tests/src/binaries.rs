//! Finds the dockpod binaries the tests run: `target/<profile>/` beside this test executable
//! (or `$DOCKPOD_BIN_DIR`), refusing one older than its sources so a test never passes or
//! fails on stale code.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Path of the built binary `name` (`shim-manager` or `pod-shim`).
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("DOCKPOD_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            // Tests run from target/<profile>/deps/, benchmark binaries from target/<profile>/.
            let dir = exe.parent().expect("executable has a directory");
            if dir.ends_with("deps") {
                dir.parent().expect("target/<profile>").to_path_buf()
            } else {
                dir.to_path_buf()
            }
        }
    };
    let path = dir.join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: build it with `cargo build --bins` in the same profile as the tests \
                 (contrib/setup.sh builds the release ones)",
                path.display()
            )
        });
    let workspace = crate::workspace();
    // Each binary is built from the shared crate and its own: their sources, protocol files,
    // build scripts and manifests. Not their tests (a failing property test writes its
    // regressions beside them, which changes no binary).
    for krate in ["proto", name] {
        for part in ["src", "proto", "build.rs", "Cargo.toml"] {
            let src = workspace.join(krate).join(part);
            if let Some(newest) = newest_mtime(&src) {
                assert!(
                    newest <= built,
                    "{} is older than {}: rebuild with `cargo build --bins` in the tests' profile",
                    path.display(),
                    src.display()
                );
            }
        }
    }
    path
}

/// The newest modification time of a file, or of anything under a directory.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(dir).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if let Ok(m) = meta.modified() {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}
