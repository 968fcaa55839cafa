//! What a client sends on one stream of a session, between the session's reader and the
//! stream's consumer, whichever protocol carried it. The buffer is bounded, per stream and per
//! session, by what it costs in memory: each message's bytes and a floor per message (its
//! queue slot and allocation), so a million one-byte frames weigh what they occupy. The
//! reader hands data over without waiting while there is room, so a
//! consumer that stalls (a port-forward target that stops reading, an exec whose stdin is
//! full) holds up nothing else of the session until the bounds are reached.
//!
//! Past them a protocol with flow control (SPDY's windows, kept by the peer) has broken its
//! contract, and the stream is reset; one without (WebSocket, or a SPDY peer that ignores
//! windows as moby/spdystream does) makes the reader wait for the consumers, which holds the
//! client back through TCP rather than drop what it sent.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

/// Bytes one stream may hold that its consumer has not taken yet. No smaller than the largest
/// SPDY frame or WebSocket message a session accepts (1 MiB), or one could never be admitted.
pub const STREAM_BUFFER: usize = 1024 * 1024;
/// Bytes a whole session may hold that its consumers have not taken yet.
pub const SESSION_BUFFER: usize = 4 * 1024 * 1024;
/// What one queued message costs beyond its bytes: the channel's slot, the `Bytes` handle and
/// its shared allocation's header and rounding.
pub const MESSAGE_COST: usize = 128;

/// What a message of `len` bytes is charged.
pub fn cost(len: usize) -> usize {
    len.saturating_add(MESSAGE_COST)
}

/// What queued messages cost, for consumers that have not taken them yet.
#[derive(Default)]
struct Held(AtomicUsize);

impl Held {
    fn add(&self, len: usize) {
        self.0.fetch_add(cost(len), Ordering::AcqRel);
    }

    fn sub(&self, len: usize, messages: usize) {
        let cost = len.saturating_add(messages.saturating_mul(MESSAGE_COST));
        self.0.fetch_sub(cost, Ordering::AcqRel);
    }

    /// Whether a message of `len` bytes fits under `bound`; any fits in an empty buffer, so
    /// the largest message a session accepts is never refused for its own cost.
    fn fits(&self, len: usize, bound: usize) -> bool {
        let held = self.0.load(Ordering::Acquire);
        held == 0 || held.saturating_add(cost(len)) <= bound
    }
}

/// Received data not yet taken by their consumers, for a whole session.
#[derive(Default)]
pub struct Inflow {
    held: Held,
    /// Signalled whenever a consumer takes data, for a reader waiting for room.
    drained: Notify,
}

/// Received data not yet taken on one stream.
#[derive(Default)]
struct StreamInflow {
    held: Held,
}

/// Whether the reader may hand `len` more bytes to a stream's consumer now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Now,
    /// Only once consumers have taken some of what they hold.
    Wait,
    /// Never: a peer that keeps flow-control windows went past them.
    Overrun,
}

/// Called with the bytes leaving a stream's buffer: true when the consumer took them, false
/// when they were dropped with it.
pub type OnTake = Box<dyn Fn(usize, bool) + Send + Sync>;

/// Opens one stream's buffer in `inflow`'s session: the reader's end and the consumer's.
pub fn open(inflow: &Arc<Inflow>, on_take: Option<OnTake>) -> (Feeder, Inbound) {
    let (tx, rx) = mpsc::unbounded_channel();
    let share = Arc::new(StreamInflow::default());
    let feeder = Feeder {
        tx,
        share: share.clone(),
        inflow: inflow.clone(),
    };
    let inbound = Inbound {
        rx,
        share,
        inflow: inflow.clone(),
        on_take,
    };
    (feeder, inbound)
}

/// The session reader's end of one stream's buffer.
pub struct Feeder {
    tx: mpsc::UnboundedSender<Bytes>,
    share: Arc<StreamInflow>,
    inflow: Arc<Inflow>,
}

impl Feeder {
    /// Whether a message of `len` bytes may be queued now. A peer that keeps windows cannot
    /// reach the bounds in bytes; one that reaches them in small frames within its windows
    /// costs what an overrun costs, and is answered as one.
    pub fn admit(&self, len: usize, peer_keeps_windows: bool) -> Admit {
        if self.share.held.fits(len, STREAM_BUFFER) && self.inflow.held.fits(len, SESSION_BUFFER) {
            Admit::Now
        } else if peer_keeps_windows {
            Admit::Overrun
        } else {
            Admit::Wait
        }
    }

    /// Waits until `len` more bytes fit, for a peer without flow control; returns at once if
    /// the consumer is gone (the push then fails).
    pub async fn room(&self, len: usize) {
        while self.admit(len, false) == Admit::Wait && !self.tx.is_closed() {
            self.inflow.drained.notified().await;
        }
    }

    /// Hands `bytes` to the consumer; false (and nothing held) once the consumer is gone.
    pub fn push(&self, bytes: Bytes) -> bool {
        let len = bytes.len();
        self.share.held.add(len);
        self.inflow.held.add(len);
        if self.tx.send(bytes).is_ok() {
            return true;
        }
        self.share.held.sub(len, 1);
        self.inflow.held.sub(len, 1);
        false
    }
}

/// The consumer's end of one stream's buffer; ends at the client's end of the stream.
pub struct Inbound {
    rx: mpsc::UnboundedReceiver<Bytes>,
    share: Arc<StreamInflow>,
    inflow: Arc<Inflow>,
    on_take: Option<OnTake>,
}

impl Inbound {
    /// The next bytes; None at the client's end of the stream.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let bytes = self.rx.recv().await?;
        self.release(bytes.len(), 1, true);
        Some(bytes)
    }

    fn release(&self, len: usize, messages: usize, taken: bool) {
        self.share.held.sub(len, messages);
        self.inflow.held.sub(len, messages);
        self.inflow.drained.notify_one();
        if let Some(on_take) = &self.on_take {
            on_take(len, taken);
        }
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        // What the reader pushes after this fails there and is never counted.
        self.rx.close();
        let (mut held, mut messages) = (0, 0);
        while let Ok(bytes) = self.rx.try_recv() {
            held += bytes.len();
            messages += 1;
        }
        if messages > 0 {
            self.release(held, messages, false);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_stream_holds_its_own_bound_and_the_session_then_waits() {
        let inflow = Arc::new(Inflow::default());
        let (slow, slow_rx) = open(&inflow, None);
        let (other, _other_rx) = open(&inflow, None);
        assert!(slow.push(Bytes::from(vec![0; STREAM_BUFFER - MESSAGE_COST])));
        assert_eq!(slow.admit(1, true), Admit::Overrun);
        assert_eq!(slow.admit(1, false), Admit::Wait);
        // Another stream is not held up by the slow one, until the session's bound.
        assert_eq!(other.admit(32 * 1024, false), Admit::Now);
        let mut fillers = Vec::new();
        while fillers.len() < SESSION_BUFFER / STREAM_BUFFER - 1 {
            let (filler, filler_rx) = open(&inflow, None);
            assert!(filler.push(Bytes::from(vec![0; STREAM_BUFFER - MESSAGE_COST])));
            fillers.push((filler, filler_rx));
        }
        assert_eq!(other.admit(1, false), Admit::Wait);
        // A consumer that is dropped gives back all it held, and takes no more.
        drop(slow_rx);
        assert_eq!(other.admit(STREAM_BUFFER - MESSAGE_COST, false), Admit::Now);
        assert!(!slow.push(Bytes::from_static(b"late")));
        // Full again; a consumer taking data makes room, and a waiting reader goes on.
        assert!(other.push(Bytes::from(vec![0; STREAM_BUFFER - MESSAGE_COST])));
        let (late, _late_rx) = open(&inflow, None);
        assert_eq!(late.admit(1, false), Admit::Wait);
        let waiter = tokio::spawn(async move { late.room(1).await });
        assert!(fillers[0].1.recv().await.is_some());
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the reader was let go")
            .expect("join");
    }

    #[tokio::test]
    async fn tiny_messages_are_charged_what_they_occupy() {
        let inflow = Arc::new(Inflow::default());
        let (feeder, mut rx) = open(&inflow, None);
        let mut queued = 0;
        while feeder.admit(1, false) == Admit::Now {
            assert!(feeder.push(Bytes::from_static(b"x")));
            queued += 1;
        }
        // By bytes alone a million would fit; by cost, the bound's worth of slots.
        assert_eq!(queued, STREAM_BUFFER / cost(1));
        assert_eq!(feeder.admit(1, true), Admit::Overrun);
        // Taking one makes room for one.
        assert!(rx.recv().await.is_some());
        assert_eq!(feeder.admit(1, false), Admit::Now);
        // A message of the largest size still fits in an empty buffer.
        drop(rx);
        let (big, _big_rx) = open(&inflow, None);
        assert_eq!(big.admit(STREAM_BUFFER, true), Admit::Now);
    }
}
