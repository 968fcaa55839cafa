//! `pod-shim`: parses its command line, detaches if asked, binds its socket, reports ready
//! and serves until the pod is removed or it is told to stop. A current-thread runtime: a
//! shim is paid for once per pod and idles nearly all the time.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use dockpod_proto::pod_record::PodRecord;
use pod_shim::config::ShimConfig;
use pod_shim::detach::{detach, Role};
use pod_shim::lifecycle::Pod;
use pod_shim::state::Store;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    pod_shim::memory::single_arena();
    let config = ShimConfig::parse();
    if config.daemonize {
        match detach() {
            Ok(Role::Parent) => return ExitCode::SUCCESS,
            Ok(Role::Daemon) => {}
            Err(e) => {
                eprintln!("pod-shim: cannot detach: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Held until the shim exits: dropping it flushes the lines still queued.
    let own_log = config.state_dir.join(dockpod_proto::layout::SHIM_LOG);
    let (writer, _log_flush) = pod_shim::own_log::OwnLog::new(own_log.clone()).non_blocking();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    match config.log_format {
        pod_shim::config::LogFormat::Text => fmt.init(),
        pod_shim::config::LogFormat::Json => fmt.json().init(),
    }
    dockpod_proto::panics::install(Some(own_log));
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: ShimConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
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
        let engine = pod_shim::docker::Engine::connect(&config.docker_endpoint, config.docker_api_version)
            .await?;
        let record = match (store.load()?, &config.adopt) {
            (Some(record), _) => record,
            (None, Some(sandbox)) => {
                let record = pod_shim::adopt::record(
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
            store,
            record,
        ));
        if config.clean_up {
            return pod.abandon().await.map_err(anyhow::Error::from);
        }
        // In a task of its own, so a Docker that is down does not hold back serving; it
        // holds the pod lock, so no create of this shim interleaves with it.
        tokio::spawn({
            let pod = pod.clone();
            async move {
                if let Err(e) = pod.reconcile().await {
                    tracing::warn!(error = %e, "reconciling the record with Docker");
                }
            }
        });
        if let Some(dir) = config.socket.parent() {
            dockpod_proto::files::ensure_dir(dir, 0o700)?;
        }
        let socket = config.socket.clone();
        let stop = terminated();
        let listener = dockpod_proto::sockets::bind_exclusive(&socket, 0o600).await?;
        let _bound = dockpod_proto::sockets::BoundSocket::at(&socket);
        let streaming = Arc::new(pod_shim::streaming::Streaming {
            pod: pod.clone(),
            sessions: pod_shim::streaming::sessions::Sessions::new(&config.shim_id),
            idle_timeout: std::time::Duration::from_secs(config.stream_idle_timeout.max(1)),
        });
        let stream_socket = dockpod_proto::layout::stream_socket_beside(&socket, &config.shim_id);
        pod_shim::streaming::listen(
            &stream_socket,
            streaming.clone(),
            tokio::runtime::Handle::current(),
        )?;
        let _bound_stream = dockpod_proto::sockets::BoundSocket::at(&stream_socket);
        let pid_file = config.state_dir.join(dockpod_proto::layout::SHIM_PID_FILE);
        dockpod_proto::files::atomic_write(
            &pid_file,
            format!("{}\n", std::process::id()).as_bytes(),
            0o600,
        )?;
        let sandbox = pod.view().sandbox_id.clone();
        if !sandbox.is_empty() {
            let _ = pod_shim::title::show_sandbox(&sandbox);
        }
        let watcher = tokio::spawn(pod_shim::exits::watch(pod.clone()));
        tokio::spawn({
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
        let served = pod_shim::server::run(pod, streaming, listener, stop).await;
        watcher.abort();
        // A removed pod's directory is gone already; a stopped shim leaves its record. The
        // sockets go as `_bound` and `_bound_stream` drop, on an error too.
        let _ = std::fs::remove_file(&pid_file);
        served?;
        Ok(())
    })
}

/// Completes on SIGTERM. The handler is installed when this is called, not when the server
/// first polls the future: the front may stop a shim that has only just started.
fn terminated() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = signal(SignalKind::terminate());
    async move {
        match handler {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    }
}
