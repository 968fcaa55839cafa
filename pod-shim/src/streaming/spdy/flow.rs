//! Flow control, both ways.
//!
//! Receiving: each stream may hold at most its window of bytes the peer sent and its
//! consumer has not taken; the window is returned (WINDOW_UPDATE) as the consumer takes
//! them, not as they arrive, so a peer that keeps windows never gets ahead of a slow
//! consumer and the session's reader never waits for one. The session window is raised to
//! `SESSION_BUFFER` with the first data, so streams whose consumers stall hold only their own
//! windows' worth of it and the others go on.
//!
//! The Go library behind kubectl, crictl and the kubelet (moby/spdystream) keeps no windows
//! at all. From such a peer a stream may buffer up to `STREAM_BUFFER` and the session up to
//! `SESSION_BUFFER`; past that the reader waits for consumers to take data, which holds the
//! peer back through TCP as the reference server does, rather than drop what it sent. A peer
//! that keeps windows and still goes past those bounds has its stream reset
//! (FLOW_CONTROL_ERROR).
//!
//! Sending: this side honours the peer's windows once the peer shows it keeps them (it sent
//! SETTINGS or WINDOW_UPDATE). A sender that waited for window from spdystream would stall
//! after 64 KiB, since it never sends any.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

/// The SPDY/3.1 initial window, both ways, until SETTINGS says otherwise; this side never
/// changes its own.
pub const INITIAL_WINDOW: usize = 64 * 1024;
/// Bytes one stream may hold that its consumer has not taken yet (for a peer that keeps
/// windows, never more than `INITIAL_WINDOW`).
pub const STREAM_BUFFER: usize = 1024 * 1024;
/// Bytes the whole session may hold that consumers have not taken yet; also the session
/// window this side grants.
pub const SESSION_BUFFER: usize = 4 * 1024 * 1024;

/// Received bytes not yet taken by their consumers, for a whole session.
#[derive(Default)]
pub struct Inflow {
    buffered: AtomicUsize,
    /// Signalled whenever a consumer takes data, for a reader waiting on a peer that keeps no
    /// windows.
    drained: Notify,
}

/// Received bytes not yet taken on one stream.
#[derive(Default)]
pub struct StreamInflow {
    buffered: AtomicUsize,
}

/// Whether the reader may hand `len` more bytes to a stream's consumer now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Now,
    /// Only once consumers have taken some of what they hold.
    Wait,
    /// Never: a peer that keeps windows went past them.
    Overrun,
}

impl Inflow {
    pub fn admit(&self, stream: &StreamInflow, len: usize, peer_keeps_windows: bool) -> Admit {
        let held = stream.buffered.load(Ordering::Acquire);
        let total = self.buffered.load(Ordering::Acquire);
        if held + len <= STREAM_BUFFER && total + len <= SESSION_BUFFER {
            Admit::Now
        } else if peer_keeps_windows {
            Admit::Overrun
        } else {
            Admit::Wait
        }
    }

    pub fn add(&self, stream: &StreamInflow, len: usize) {
        stream.buffered.fetch_add(len, Ordering::AcqRel);
        self.buffered.fetch_add(len, Ordering::AcqRel);
    }

    /// `len` bytes left the buffers (taken by the consumer, or dropped with it).
    pub fn taken(&self, stream: &StreamInflow, len: usize) {
        stream.buffered.fetch_sub(len, Ordering::AcqRel);
        self.buffered.fetch_sub(len, Ordering::AcqRel);
        self.drained.notify_one();
    }

    /// Waits until some consumer takes data (or already did since the last wait).
    pub async fn drained(&self) {
        self.drained.notified().await;
    }
}

/// The peer's windows, once it shows it keeps them, and the data they hold back.
pub struct Windows {
    pub active: bool,
    pub initial: i64,
    pub session: i64,
    streams: HashMap<u32, i64>,
    pub pending: VecDeque<(u32, Bytes, bool)>,
    pub pending_bytes: usize,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            active: false,
            initial: INITIAL_WINDOW as i64,
            session: INITIAL_WINDOW as i64,
            streams: HashMap::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
        }
    }
}

impl Windows {
    pub fn stream(&mut self, id: u32) -> &mut i64 {
        let initial = self.initial;
        self.streams.entry(id).or_insert(initial)
    }

    /// How much of `len` bytes for `id` may go now.
    pub fn allowance(&mut self, id: u32, len: usize) -> usize {
        if !self.active {
            return len;
        }
        let session = self.session;
        let stream = *self.stream(id);
        len.min(session.min(stream).max(0) as usize)
    }

    pub fn spend(&mut self, id: u32, n: usize) {
        if self.active {
            self.session -= n as i64;
            *self.stream(id) -= n as i64;
        }
    }

    /// A stream is over: its window is forgotten.
    pub fn forget(&mut self, id: u32) {
        self.streams.remove(&id);
    }

    /// The peer changed its initial window: every stream's window moves by the difference.
    pub fn set_initial(&mut self, initial: i64) {
        let change = initial - self.initial;
        self.initial = initial;
        for w in self.streams.values_mut() {
            *w += change;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_keeps_windows_is_reset_past_the_bounds_and_one_that_does_not_waits() {
        let inflow = Inflow::default();
        let (slow, other) = (StreamInflow::default(), StreamInflow::default());
        assert_eq!(inflow.admit(&slow, 32 * 1024, true), Admit::Now);
        inflow.add(&slow, STREAM_BUFFER);
        assert_eq!(inflow.admit(&slow, 1, true), Admit::Overrun);
        assert_eq!(inflow.admit(&slow, 1, false), Admit::Wait);
        // Another stream is not held up by the slow one.
        assert_eq!(inflow.admit(&other, 32 * 1024, false), Admit::Now);
        inflow.add(&other, SESSION_BUFFER - STREAM_BUFFER);
        // Until the session's bound is reached.
        assert_eq!(inflow.admit(&other, 1, false), Admit::Wait);
        inflow.taken(&slow, STREAM_BUFFER);
        assert_eq!(inflow.admit(&slow, 1024, false), Admit::Now);
        assert_eq!(inflow.admit(&other, STREAM_BUFFER + 1, false), Admit::Wait);
    }

    #[test]
    fn windows_hold_data_back_only_once_active() {
        let mut w = Windows::default();
        assert_eq!(w.allowance(1, 1 << 20), 1 << 20);
        w.active = true;
        assert_eq!(w.allowance(1, 1 << 20), INITIAL_WINDOW);
        w.spend(1, 1000);
        w.set_initial(2 * INITIAL_WINDOW as i64);
        assert_eq!(*w.stream(1), 2 * INITIAL_WINDOW as i64 - 1000);
        assert_eq!(
            w.allowance(3, 1 << 20),
            INITIAL_WINDOW - 1000,
            "session-bound"
        );
    }
}
