//! The pod's event bus: every change of a container's or the sandbox's state is recorded
//! durably first and then announced to the pod's subscribers (the front's GetContainerEvents
//! stream); events from before the first subscriber are kept for it.

use std::sync::Arc;

use dockpod_proto::cri::{ContainerEventResponse, ContainerEventType};
use tokio::sync::broadcast;

use super::{Pod, EVENT_BUFFER};
use crate::docker::now_ns;
use crate::error::Result;
use dockpod_proto::pod_record::ContainerRecord;

impl Pod {
    /// A subscription to the pod's events; the first one also gets the events sent before it.
    pub fn subscribe(
        &self,
    ) -> (
        Vec<ContainerEventResponse>,
        broadcast::Receiver<Arc<ContainerEventResponse>>,
    ) {
        let mut unheard = self.unheard.lock().unwrap_or_else(|p| p.into_inner());
        // Taken under the same lock `emit` holds, so no event falls between the two.
        let receiver = self.events.subscribe();
        (unheard.take().unwrap_or_default(), receiver)
    }

    pub(super) fn emit(&self, container_id: &str, kind: ContainerEventType) {
        let record = self.reported();
        let event = ContainerEventResponse {
            container_id: container_id.to_string(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: Some(record.status()),
            containers_statuses: record
                .containers
                .values()
                .map(ContainerRecord::status)
                .collect(),
        };
        let mut unheard = self.unheard.lock().unwrap_or_else(|p| p.into_inner());
        match unheard.as_mut() {
            Some(early) if early.len() < EVENT_BUFFER => early.push(event),
            Some(_) => {}
            // No subscriber now is fine: the front subscribes when it cares.
            None => {
                let _ = self.events.send(Arc::new(event));
            }
        }
    }

    /// Persists a change and then announces it, so a subscriber never hears of a state that a
    /// restarted shim would not remember.
    pub(super) async fn announce(&self, id: &str, events: &[ContainerEventType]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.persist().await?;
        for kind in events {
            self.emit(id, *kind);
        }
        Ok(())
    }
}
