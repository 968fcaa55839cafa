//! What Docker answers that a shim reads state from: its event messages and a container's
//! inspection, as bollard deserializes them, through the pod model's reading of a state.
//!
//! Promises checked: an observed container finishes no earlier than it started, and its times
//! are never negative.
#![no_main]

use bollard::models::{ContainerInspectResponse, EventMessage};
use libfuzzer_sys::fuzz_target;
use pod_shim::docker::observe;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = serde_json::from_slice::<EventMessage>(data) {
        let _ = event.actor.and_then(|a| a.id);
        let _ = event.action.as_deref() == Some("oom");
    }
    let Ok(inspect) = serde_json::from_slice::<ContainerInspectResponse>(data) else {
        return;
    };
    let observed = observe(Some(&inspect));
    assert!(observed.started_at >= 0 && observed.finished_at >= 0);
    if observed.finished_at > 0 {
        assert!(observed.finished_at >= observed.started_at);
    }
});
