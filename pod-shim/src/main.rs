//! `pod-shim`: parses its command line, binds its socket, and serves until told to stop. A
//! current-thread runtime: a shim is paid for once per pod and idles nearly all the time.

use std::process::ExitCode;

use clap::Parser;
use pod_shim::config::ShimConfig;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = ShimConfig::parse();
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
        if let Some(dir) = config.socket.parent() {
            dockpod_proto::files::ensure_dir(dir, 0o700)?;
        }
        let socket = config.socket.clone();
        let listener = dockpod_proto::sockets::bind_exclusive(&socket, 0o600).await?;
        let inode =
            std::fs::symlink_metadata(&socket).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        tracing::info!(socket = %socket.display(), pod = %config.pod, "serving");
        let served = pod_shim::server::run(config, listener, terminated()).await;
        if let Ok(ino) = inode {
            dockpod_proto::sockets::remove_if_same(&socket, ino);
        }
        served?;
        Ok(())
    })
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}
