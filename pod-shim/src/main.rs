//! `pod-shim`: parses its command line, detaches if asked, starts its own log, and runs the
//! shim (`pod_shim::run`) until the pod is removed or SIGTERM or the front tells it to stop.
//! A current-thread runtime: a shim is paid for once per pod and idles nearly all the time.

use std::process::ExitCode;

use clap::Parser;
use pod_shim::config::ShimConfig;
use pod_shim::detach::{detach, Role};
use tracing_subscriber::filter::LevelFilter;

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
    // A level, not an EnvFilter's directives: the front passes its own level, and EnvFilter's
    // parser is a regex engine that each shim's private memory would carry (its pointers are
    // relocated at start: 0.07 MiB per shim, measured).
    let level = config.log_level.parse().unwrap_or(LevelFilter::INFO);
    // Held until the shim exits: dropping it flushes the lines still queued.
    let own_log = config.state_dir.join(dockpod_proto::layout::SHIM_LOG);
    let (writer, _log_flush) = pod_shim::own_log::OwnLog::new(own_log.clone()).non_blocking();
    let fmt = tracing_subscriber::fmt()
        .with_max_level(level)
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

/// How long an idle thread of the blocking pool lives.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

fn run(config: ShimConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The blocking pool's threads (disk work of the log copies, inotify closes) end a
        // second after their last job instead of ten: an idle shim keeps no thread it does
        // not need, nor its stack.
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()?;
    runtime.block_on(async move { pod_shim::run::run(config, terminated()).await })
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
