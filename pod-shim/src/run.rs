//! The shim's whole life, as a library call: from its state directory and socket to the end
//! of serving (the pod removed, the front's Shutdown, or `shutdown`). Every task it starts
//! beside the server (the first reconciliation, the exit watcher, the network check) belongs to
//! one `dockpod_proto::tasks::Tasks`, cancelled and joined within a bound when serving ends,
//! and the streaming hand-over task ends with it, so nothing of a shim outlives `run` (a
//! test runs one in-process and stops it).

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use dockpod_proto::pod_record::PodRecord;
use dockpod_proto::tasks::Tasks;

use crate::config::ShimConfig;
use crate::lifecycle::Pod;
use crate::state::Store;

/// How long the shim's own tasks may take to end once cancelled (a read of Docker under way
/// is dropped at its next await; this only bounds one stuck outside an await).
const JOIN_LIMIT: Duration = Duration::from_secs(5);

/// Runs the shim of `config` until the pod is removed, the front asks it to stop, or
/// `shutdown` completes.
pub async fn run(
    config: ShimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tasks = Tasks::default();
    // A run that fails half-way leaves no task running.
    let _cancel = tasks.cancel_on_drop();
    // The front makes the directory before it starts the pod's first shim and deletes it
    // when it gives the pod up: a shim that finds none belongs to an abandoned pod.
    if !config.state_dir.is_dir() {
        anyhow::bail!(
            "the pod's state directory {} does not exist (the pod was given up)",
            config.state_dir.display()
        );
    }
    // A second shim for this pod would double its logs and its network teardown.
    let _owner = dockpod_proto::owner::take(&config.state_dir, "pod-shim")?;
    let store = Store::new(&config.state_dir);
    let engine =
        crate::docker::Engine::connect(&config.docker_endpoint, config.docker_api_version).await?;
    let saved = store.load()?;
    // A shim asks Docker for nothing before its record holds the intent (and a container
    // is adopted only with its record saved): with no record on the disk, no container
    // carries this shim's label, and there is nothing to reconcile.
    let fresh = saved.is_none() && config.adopt.is_none();
    let record = match (saved, &config.adopt) {
        (Some(record), _) => record,
        (None, Some(sandbox)) => {
            let record = crate::adopt::record(
                &engine,
                &config.shim_id,
                sandbox,
                config.adopt_checkpoint.as_deref(),
                config.cni().as_ref(),
            )
            .await?;
            store.save(&record)?;
            tracing::info!(sandbox = %sandbox, pod = %record.display_name(), "adopted a pod cri-dockerd created");
            record
        }
        (None, None) => PodRecord {
            shim_id: config.shim_id.clone(),
            ..Default::default()
        },
    };
    let pod = Arc::new(Pod::new(
        engine,
        config.instance.clone(),
        config.shim_id.clone(),
        config.sandbox_image.clone(),
        config.cni(),
        store.clone(),
        record,
    ));
    if config.clean_up {
        return pod.abandon().await.map_err(anyhow::Error::from);
    }
    // In a task of its own, so a Docker that is down does not hold back serving; it
    // holds the pod lock, so no create of this shim interleaves with it. A fresh pod's
    // RunPodSandbox does not wait for it.
    if !fresh {
        tasks.spawn({
            let pod = pod.clone();
            async move {
                if let Err(e) = pod.reconcile().await {
                    tracing::warn!(error = %e, "reconciling the record with Docker");
                }
            }
        });
    }
    if let Some(dir) = config.socket.parent() {
        dockpod_proto::files::ensure_dir(dir, 0o700)?;
    }
    let socket = config.socket.clone();
    let listener = dockpod_proto::sockets::bind_exclusive(&socket, 0o600).await?;
    let _bound = dockpod_proto::sockets::BoundSocket::at(&socket);
    let streaming = Arc::new(crate::streaming::Streaming {
        pod: pod.clone(),
        sessions: crate::streaming::sessions::Sessions::new(&config.shim_id),
        idle_timeout: std::time::Duration::from_secs(config.stream_idle_timeout.max(1)),
    });
    let stream_socket = dockpod_proto::layout::stream_socket_beside(&socket, &config.shim_id);
    // Ended (its task aborted) when this returns, however it returns.
    let _hand_overs = crate::streaming::listen(
        &stream_socket,
        streaming.clone(),
        tokio::runtime::Handle::current(),
    )?;
    let _bound_stream = dockpod_proto::sockets::BoundSocket::at(&stream_socket);
    let pid_file = config.state_dir.join(dockpod_proto::layout::SHIM_PID_FILE);
    dockpod_proto::files::replace_volatile(
        &pid_file,
        format!("{}\n", std::process::id()).as_bytes(),
        0o600,
    )?;
    let sandbox = pod.view().sandbox_id.clone();
    if !sandbox.is_empty() {
        let _ = crate::title::show_sandbox(&sandbox);
    }
    tasks.spawn(crate::exits::watch(pod.clone()));
    tasks.spawn(crate::exits::watch_oom_kills(pod.clone()));
    tasks.spawn(crate::memory::settle());
    tasks.spawn({
        let pod = pod.clone();
        async move {
            // After a restart, whether the pod's network is still as it was set up.
            match pod.check_network().await.map(|c| c.outcome) {
                Some(Ok(())) => tracing::info!("pod network checked"),
                Some(Err(e)) => tracing::warn!(error = %e, "pod network check failed"),
                None => {}
            }
        }
    });
    tracing::info!(socket = %socket.display(), pod = %config.pod, "serving");
    if config.daemonize {
        // The front waits for this line; nothing else is ever written to stdout.
        let mut out = std::io::stdout();
        writeln!(out, "ready {}", std::process::id())?;
        out.flush()?;
    }
    let served = crate::server::run(pod, streaming, listener, shutdown).await;
    tasks.stop(JOIN_LIMIT).await;
    // A removed pod's directory is gone already; a stopped shim leaves its record. The
    // sockets go as `_bound` and `_bound_stream` drop, on an error too.
    let _ = std::fs::remove_file(&pid_file);
    // The next shim may be of an earlier release (a rollback), which reads state.json alone.
    if config.state_dir.is_dir() {
        if let Err(e) = store.fold() {
            tracing::warn!(error = %e, "folding the record's journal into state.json");
        }
    }
    served?;
    Ok(())
}
