//! Exit tracking: follows Docker's events for this pod's containers and re-reads a container
//! on every event that can change its state. Each (re)subscription starts with a full re-read
//! and asks Docker to replay events since just before it, so an exit that happened while no
//! one was listening (shim restart, dockerd restart) is still recorded with Docker's own exit
//! code and times. Each event's read runs on its own, so a container whose last log lines
//! are slow to drain (an exit waits up to 10 s for them) delays no other container's exit;
//! reads of one container that overlap are ordered by `Pod`'s inspection tickets. OOM kills
//! the kernel counts (`oom_kills`) are heard here too, as Docker's `oom` events are.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;

use crate::docker::now_ns;
use crate::lifecycle::Pod;

/// Actions after which a container's state may differ. Not `kill` (the container runs on
/// until its `die`) nor `stop` (which follows the `die`): a read then only competes with the
/// stop Docker is finishing, for the container's lock.
const ACTIONS: &[&str] = &["create", "start", "die", "oom", "destroy", "restart"];

pub async fn watch(pod: Arc<Pod>) {
    let mut delay = Duration::from_millis(100);
    // The reads under way, owned here: reaped as they finish, so the set holds only those.
    let mut reads = tokio::task::JoinSet::new();
    loop {
        let since = now_ns();
        if let Err(e) = pod.resync().await {
            tracing::warn!(error = %e, "re-reading the pod's containers");
        }
        let mut filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                ACTIONS.iter().map(|a| a.to_string()).collect(),
            ),
        ]);
        // An adopted pod's first containers lack dockpod's labels: it hears every container's
        // events and keeps those of its own (the refreshes below ignore the rest).
        if !pod.view().adopted {
            filters.insert(
                "label".to_string(),
                vec![format!(
                    "{}={}",
                    dockpod_proto::labels::SHIM_ID,
                    pod.shim_id
                )],
            );
        }
        let options = EventsOptions {
            since: Some(format!(
                "{}.{:09}",
                since / 1_000_000_000,
                since % 1_000_000_000
            )),
            until: None,
            filters: Some(filters),
        };
        let mut events = std::pin::pin!(pod.engine.events(options));
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    delay = Duration::from_millis(100);
                    while reads.try_join_next().is_some() {}
                    let Some(id) = event.actor.and_then(|a| a.id) else {
                        continue;
                    };
                    let oom = event.action.as_deref() == Some("oom");
                    reads.spawn(read_after_event(pod.clone(), id, oom));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "docker event stream failed; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Reports each OOM kill the kernel counts in a container of this pod (see `oom_kills`) as
/// Docker's `oom` event is reported: Docker on cgroup v2 does not always send one.
pub async fn watch_oom_kills(pod: Arc<Pod>) {
    let mut reads = tokio::task::JoinSet::new();
    loop {
        let id = pod.oom_kills.next().await;
        while reads.try_join_next().is_some() {}
        tracing::info!(container = %id, "the kernel counted an OOM kill");
        reads.spawn(read_after_event(pod.clone(), id, true));
    }
}

/// Re-reads what one event is about: the sandbox, or a container (recording an `oom` first).
async fn read_after_event(pod: Arc<Pod>, id: String, oom: bool) {
    let result = if id == pod.view().sandbox_id {
        pod.refresh_sandbox().await
    } else if oom {
        pod.oom_reported(&id).await
    } else {
        pod.refresh_container(&id).await
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, container = %id, "refreshing after an event");
    }
}
