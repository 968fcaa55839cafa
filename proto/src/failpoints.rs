//! Faults a test arms in a real binary, to show what the binaries do when they happen: the
//! comma-separated names in `DOCKPOD_FAILPOINTS`, read once at the first check. Nothing is
//! armed unless a test sets the variable on the process (a shim inherits its front's).
//!
//! - `stream-session-panic`: an exec whose command is `dockpod-failpoint panic` panics in its
//!   streaming session, as a bug in a parser would (see `panics`).

use std::sync::OnceLock;

/// The variable that arms failpoints.
pub const VARIABLE: &str = "DOCKPOD_FAILPOINTS";
/// A streaming session panics on a chosen exec.
pub const STREAM_SESSION_PANIC: &str = "stream-session-panic";

/// Whether the failpoint `name` is armed in this process.
pub fn armed(name: &str) -> bool {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            std::env::var(VARIABLE)
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|armed| armed == name)
}
