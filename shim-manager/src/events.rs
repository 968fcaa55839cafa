//! Container events from every shim, fanned in for `GetContainerEvents`: one forwarding task
//! per shim feeds a bounded broadcast channel that any number of kubelet subscribers read.

use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::{ContainerEventResponse, GetEventsRequest};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;

use crate::error::{Error, Result};
use crate::registry::ShimHandle;

/// Events buffered for a slow subscriber before it starts losing the oldest.
const BUFFER: usize = 1024;
/// How long a shim may take to accept a subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<ContainerEventResponse>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BUFFER).0,
        }
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEventResponse> {
        self.tx.subscribe()
    }

    /// Subscribes to `shim`'s events and forwards them until its stream ends. Returns once the
    /// subscription is in place, so no event of a call made afterwards is missed.
    pub async fn follow(&self, shim: Arc<ShimHandle>) -> Result<()> {
        let mut client = shim.runtime();
        let subscribe = client.get_container_events(GetEventsRequest {});
        let mut stream = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe)
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
            .into_inner();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        let _ = tx.send(event);
                    }
                    Err(status) => {
                        tracing::debug!(sandbox = %shim.sandbox_id, error = %status.message(), "shim event stream ended");
                        break;
                    }
                }
            }
        });
        Ok(())
    }
}
