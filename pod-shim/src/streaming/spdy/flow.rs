//! Flow control, both ways.
//!
//! Receiving: a stream's window is returned (WINDOW_UPDATE) as its consumer takes the data,
//! not as it arrives, so a peer that keeps windows never has more than a window's worth
//! waiting for a slow consumer, and the session's reader never waits for one. The session
//! window is raised to the session's buffer bound (`inbound::SESSION_BUFFER`) with the first
//! data, so streams whose consumers stall hold only their own windows' worth of it and the
//! others go on. The Go library behind kubectl, crictl and the kubelet (moby/spdystream) keeps
//! no windows at all: data from it is bounded as `inbound` bounds any protocol without flow
//! control.
//!
//! Sending: this side honours the peer's windows once the peer shows it keeps them (it sent
//! SETTINGS or WINDOW_UPDATE). A sender that waited for window from spdystream would stall
//! after 64 KiB, since it never sends any.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// The SPDY/3.1 initial window, both ways, until SETTINGS says otherwise; this side never
/// changes its own.
pub const INITIAL_WINDOW: usize = 64 * 1024;

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
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

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
