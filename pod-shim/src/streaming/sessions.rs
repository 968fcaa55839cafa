//! Pending streaming sessions: what an Exec, Attach or PortForward call asked for, under a
//! single-use, unguessable token that expires if unused, and the cap on sessions running at
//! once.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dockpod_proto::cri::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a token waits for its connection.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Sessions one pod may have running at once.
pub const MAX_SESSIONS: usize = 128;
/// Tokens one pod may have waiting (each call makes one; unused ones expire).
const MAX_PENDING: usize = 1024;

/// What a token stands for.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

/// Which streams a remote-command session (exec or attach) has.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Pending {
    /// The streams of an exec or attach; None for a port-forward.
    pub fn streams(&self) -> Option<Streams> {
        let (stdin, stdout, stderr, tty) = match self {
            Pending::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::PortForward(_) => return None,
        };
        Some(Streams {
            stdin,
            stdout,
            stderr,
            tty,
        })
    }

    /// The URL path segment of this kind of session.
    pub fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

pub struct Sessions {
    shim_id: String,
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
    running: Arc<Semaphore>,
}

/// Why a token was not honoured.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Unknown, already used, expired, or of another kind of session.
    NotFound,
    /// Too many sessions are running.
    Busy,
}

impl Sessions {
    pub fn new(shim_id: &str) -> Sessions {
        Sessions {
            shim_id: shim_id.to_string(),
            pending: Mutex::new(HashMap::new()),
            running: Arc::new(Semaphore::new(MAX_SESSIONS)),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Pending, Instant)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session and returns the URL path for it (`/<kind>/<token>`).
    pub fn register(&self, request: Pending) -> std::io::Result<String> {
        let token = dockpod_proto::streaming::new_token(&self.shim_id)?;
        let path = format!("/{}/{token}", request.kind());
        let mut pending = self.pending();
        pending.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(std::io::Error::other("too many streaming sessions waiting"));
        }
        pending.insert(token, (request, Instant::now()));
        Ok(path)
    }

    /// Takes the session of `token` (once) if it is of `kind` and has not expired, with a slot
    /// among the running sessions.
    pub fn take(
        &self,
        kind: &str,
        token: &str,
    ) -> Result<(Pending, OwnedSemaphorePermit), Refused> {
        let request = {
            let mut pending = self.pending();
            match pending.remove(token) {
                Some((request, at)) if at.elapsed() < TOKEN_TTL && request.kind() == kind => {
                    request
                }
                _ => return Err(Refused::NotFound),
            }
        };
        let permit = self
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy)?;
        Ok((request, permit))
    }

    /// Sessions running now.
    pub fn running(&self) -> usize {
        MAX_SESSIONS - self.running.available_permits()
    }

    /// Sessions running now plus those handed out and not yet expired: a shim replaced now
    /// would end the one and refuse the other.
    pub fn open(&self) -> usize {
        let waiting = self
            .pending()
            .values()
            .filter(|(_, at)| at.elapsed() < TOKEN_TTL)
            .count();
        self.running() + waiting
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_typed() {
        let s = Sessions::new("0123456789abcdef");
        let path = s
            .register(Pending::Exec(ExecRequest::default()))
            .expect("register");
        let token = path.rsplit('/').next().expect("token");
        assert!(path.starts_with("/exec/0123456789abcdef"));
        assert_eq!(s.take("attach", token).err(), Some(Refused::NotFound));
        let path = s
            .register(Pending::Exec(ExecRequest::default()))
            .expect("register");
        let token = path.rsplit('/').next().expect("token");
        let (_, permit) = s.take("exec", token).expect("first use");
        assert_eq!(s.running(), 1);
        assert_eq!(s.take("exec", token).err(), Some(Refused::NotFound));
        drop(permit);
        assert_eq!(s.running(), 0);
        assert_eq!(s.take("exec", "nonsense").err(), Some(Refused::NotFound));
    }

    #[test]
    fn expired_tokens_are_refused_and_not_counted_as_open() {
        let s = Sessions::new("0123456789abcdef");
        let path = s
            .register(Pending::Exec(ExecRequest::default()))
            .expect("register");
        let token = path.rsplit('/').next().expect("token").to_string();
        assert_eq!(s.open(), 1);
        let issued = Instant::now()
            .checked_sub(TOKEN_TTL + Duration::from_secs(1))
            .expect("a monotonic clock this far from its start");
        if let Some(entry) = s.pending().get_mut(&token) {
            entry.1 = issued;
        }
        assert_eq!(s.open(), 0);
        assert_eq!(s.take("exec", &token).err(), Some(Refused::NotFound));
    }
}
