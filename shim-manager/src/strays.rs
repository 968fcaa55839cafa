//! Containers of this instance that no pod holds: a create Docker finished after the shim that
//! asked for it was killed and its pod given up (the clean-up listed the pod's containers
//! before Docker had made this one), or a container a failed clean-up left behind. No shim
//! lists or removes such a container and the kubelet never sees it (every list comes from the
//! pods), so it would stay for ever, holding its name. The front removes them: once when it
//! starts serving, then every `--stray-sweep-interval` seconds.
//!
//! A container is a stray only when its `io.dockpod.shim` label names a shim of this instance
//! whose pod directory surely does not exist. The front makes that directory before the shim
//! starts, keeps it across the shim's restarts and upgrades, and removes it only once the pod
//! is removed or given up, so no container a pod still holds is ever taken.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dockpod_proto::{labels, layout};

use crate::docker::Engine;
use crate::error::Result;

/// Removes strays now and then every `interval`, until `tasks` stop.
pub fn spawn(
    engine: Engine,
    instance: String,
    root_dir: PathBuf,
    interval: Duration,
    tasks: &dockpod_proto::tasks::Tasks,
) {
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = sweep(&engine, &instance, &root_dir).await {
                // Docker down or restarting: the next round tries again.
                tracing::debug!(error = %e, "looking for stray containers");
            }
        }
    });
}

/// Removes every stray container of `instance`; returns their IDs.
pub async fn sweep(engine: &Engine, instance: &str, root_dir: &Path) -> Result<Vec<String>> {
    let listed = engine
        .list_labelled(&format!("{}={instance}", labels::INSTANCE))
        .await?;
    let mut removed = Vec::new();
    for summary in listed {
        let (Some(id), Some(labels)) = (summary.id, summary.labels) else {
            continue;
        };
        let Some(shim_id) = labels.get(labels::SHIM_ID) else {
            continue;
        };
        if !layout::pod_is_gone(&layout::pods_dir(root_dir), shim_id) {
            continue;
        }
        let name = labels
            .get(labels::CONTAINER_NAME)
            .map(String::as_str)
            .unwrap_or_default();
        tracing::warn!(container = %id, shim = %shim_id, name, "removing a container no pod holds (a create Docker finished after its pod was given up)");
        match engine.remove_container(&id).await {
            Ok(()) => removed.push(id),
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "removing a stray container; trying again next round")
            }
        }
    }
    Ok(removed)
}
