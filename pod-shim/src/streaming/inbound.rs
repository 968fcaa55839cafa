//! What a client sends on one stream of a session, between the session's reader and the
//! stream's consumer, whichever protocol carried it. The buffer is bounded, per stream and per
//! session, by bytes: the reader hands data over without waiting while there is room, so a
//! consumer that stalls (a port-forward target that stops reading, an exec whose stdin is
//! full) holds up nothing else of the session until the bounds are reached.
//!
//! Past them a protocol with flow control (SPDY's windows, kept by the peer) has broken its
//! contract, and the stream is reset; one without (WebSocket, or a SPDY peer that ignores
//! windows as moby/spdystream does) makes the reader wait for the consumers, which holds the
//! client back through TCP rather than drop what it sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

/// Bytes one stream may hold that its consumer has not taken yet. No smaller than the largest
/// SPDY frame or WebSocket message a session accepts (1 MiB), or one could never be admitted.
pub const STREAM_BUFFER: usize = 1024 * 1024;
/// Bytes a whole session may hold that its consumers have not taken yet.
pub const SESSION_BUFFER: usize = 4 * 1024 * 1024;

/// Received bytes not yet taken by their consumers, for a whole session.
#[derive(Default)]
pub struct Inflow {
    buffered: AtomicUsize,
    /// Signalled whenever a consumer takes data, for a reader waiting for room.
    drained: Notify,
}

/// Received bytes not yet taken on one stream.
#[derive(Default)]
struct StreamInflow {
    buffered: AtomicUsize,
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
    pub fn admit(&self, len: usize, peer_keeps_windows: bool) -> Admit {
        let held = self.share.buffered.load(Ordering::Acquire);
        let total = self.inflow.buffered.load(Ordering::Acquire);
        if held + len <= STREAM_BUFFER && total + len <= SESSION_BUFFER {
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
        self.share.buffered.fetch_add(len, Ordering::AcqRel);
        self.inflow.buffered.fetch_add(len, Ordering::AcqRel);
        if self.tx.send(bytes).is_ok() {
            return true;
        }
        self.share.buffered.fetch_sub(len, Ordering::AcqRel);
        self.inflow.buffered.fetch_sub(len, Ordering::AcqRel);
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
        self.release(bytes.len(), true);
        Some(bytes)
    }

    fn release(&self, len: usize, taken: bool) {
        self.share.buffered.fetch_sub(len, Ordering::AcqRel);
        self.inflow.buffered.fetch_sub(len, Ordering::AcqRel);
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
        let mut held = 0;
        while let Ok(bytes) = self.rx.try_recv() {
            held += bytes.len();
        }
        if held > 0 {
            self.release(held, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_stream_holds_its_own_bound_and_the_session_then_waits() {
        let inflow = Arc::new(Inflow::default());
        let (slow, slow_rx) = open(&inflow, None);
        let (other, _other_rx) = open(&inflow, None);
        assert!(slow.push(Bytes::from(vec![0; STREAM_BUFFER])));
        assert_eq!(slow.admit(1, true), Admit::Overrun);
        assert_eq!(slow.admit(1, false), Admit::Wait);
        // Another stream is not held up by the slow one, until the session's bound.
        assert_eq!(other.admit(32 * 1024, false), Admit::Now);
        let mut fillers = Vec::new();
        while fillers.len() < SESSION_BUFFER / STREAM_BUFFER - 1 {
            let (filler, filler_rx) = open(&inflow, None);
            assert!(filler.push(Bytes::from(vec![0; STREAM_BUFFER])));
            fillers.push((filler, filler_rx));
        }
        assert_eq!(other.admit(1, false), Admit::Wait);
        // A consumer that is dropped gives back all it held, and takes no more.
        drop(slow_rx);
        assert_eq!(other.admit(STREAM_BUFFER, false), Admit::Now);
        assert!(!slow.push(Bytes::from_static(b"late")));
        // Full again; a consumer taking data makes room, and a waiting reader goes on.
        assert!(other.push(Bytes::from(vec![0; STREAM_BUFFER])));
        let (late, _late_rx) = open(&inflow, None);
        assert_eq!(late.admit(1, false), Admit::Wait);
        let waiter = tokio::spawn(async move { late.room(1).await });
        assert!(fillers[0].1.recv().await.is_some());
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the reader was let go")
            .expect("join");
    }
}
