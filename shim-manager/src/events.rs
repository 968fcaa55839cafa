//! Container events from every shim, fanned in for `GetContainerEvents`: each shim's
//! supervising task (see `supervise`) subscribes to its shim's stream and publishes into one
//! bounded broadcast channel that any number of kubelet subscribers read.

use std::time::Duration;

use dockpod_proto::cri::{ContainerEventResponse, GetEventsRequest};
use tokio::sync::broadcast;
use tonic::Streaming;

use crate::error::{Error, Result};
use crate::shim::ShimHandle;

/// Events buffered for a slow subscriber before it starts losing the oldest.
const BUFFER: usize = 1024;
/// How long a shim may take to accept a subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<ContainerEventResponse>,
    /// Set when the front stops: subscribers' streams end then, or a graceful stop would
    /// wait for them (the kubelet keeps one open for ever) until its drain timeout.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BUFFER).0,
            closing: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Events {
    /// A subscriber's stream: every event published from now on, until the front stops.
    pub fn stream(&self) -> impl tokio_stream::Stream<Item = ContainerEventResponse> {
        dockpod_proto::closing_stream::until_closing(self.tx.subscribe(), self.closing.subscribe())
    }

    /// Ends every subscriber's stream: the front is stopping.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn publish(&self, event: ContainerEventResponse) {
        // No kubelet listening is not an error: the shims keep their own state.
        let _ = self.tx.send(event);
    }
}

/// Subscribes to `shim`'s events; once this returns, no event of a call made afterwards is
/// missed.
pub async fn subscribe_shim(shim: &ShimHandle) -> Result<Streaming<ContainerEventResponse>> {
    let mut client = shim.runtime();
    let subscribe = client.get_container_events(GetEventsRequest {});
    Ok(tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe)
        .await
        .map_err(|_| {
            Error::DeadlineExceeded(format!(
                "subscribing to the events of pod {}",
                shim.sandbox_id
            ))
        })?
        .map_err(|s| {
            Error::FailedPrecondition(format!(
                "subscribing to the events of pod {}: {}",
                shim.sandbox_id,
                s.message()
            ))
        })?
        .into_inner())
}
