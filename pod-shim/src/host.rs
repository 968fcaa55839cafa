//! What this host lets dockpod ask of Docker. Without `CAP_SYS_RESOURCE` no process may lower
//! an OOM score below its own, so a container asked to run at -998 fails to start; like
//! containerd's `restrict_oom_score_adj`, dockpod then raises such requests to the lowest
//! score it may set, and says so once.

use std::sync::Once;

use dockpod_proto::procfs::{capability_effective, CAP_SYS_RESOURCE};

#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Lowest OOM score adjustment containers may get; `None` when unrestricted.
    pub min_oom_score_adj: Option<i64>,
}

impl Host {
    pub fn detect() -> Host {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let can_lower = capability_effective(&status, CAP_SYS_RESOURCE).unwrap_or(true);
        let own = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        Host {
            min_oom_score_adj: (!can_lower).then_some(own),
        }
    }

    /// The OOM score adjustment to give Docker for a requested one.
    pub fn oom_score_adj(&self, requested: i64) -> i64 {
        match self.min_oom_score_adj {
            Some(min) if requested < min => {
                static WARN: Once = Once::new();
                WARN.call_once(|| {
                    tracing::warn!(
                        requested,
                        allowed = min,
                        "this host lacks CAP_SYS_RESOURCE: OOM score adjustments below {min} are raised to {min}"
                    )
                });
                min
            }
            _ => requested,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_only_when_restricted() {
        let restricted = Host {
            min_oom_score_adj: Some(0),
        };
        assert_eq!(restricted.oom_score_adj(-998), 0);
        assert_eq!(restricted.oom_score_adj(500), 500);
        let free = Host {
            min_oom_score_adj: None,
        };
        assert_eq!(free.oom_score_adj(-998), -998);
    }
}
