//! What a client sends on one stream, whichever protocol carried it: a SPDY stream's data
//! (taking it returns flow-control window to the client) or a channel fed by a WebSocket
//! session's reader.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::spdy;

pub enum Inbound {
    Spdy(spdy::Incoming),
    Channel(mpsc::Receiver<Bytes>),
}

impl Inbound {
    /// The next bytes; None at the client's end of the stream.
    pub async fn recv(&mut self) -> Option<Bytes> {
        match self {
            Inbound::Spdy(s) => s.recv().await,
            Inbound::Channel(c) => c.recv().await,
        }
    }
}
