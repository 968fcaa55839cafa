//! `shim-manager`: parses the command line, starts logging and the runtime, and runs the
//! chosen subcommand; errors become a non-zero exit status.

use std::process::ExitCode;

use clap::Parser;
use shim_manager::config::{Cli, Command, LogFormat, ServeConfig};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            init_tracing(config.log_level.as_filter(), config.log_format);
            match serve(*config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        command => match operate(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shim-manager: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The operator subcommands: short-lived clients of the shims or of a running server.
fn operate(command: Command) -> anyhow::Result<()> {
    use shim_manager::cli;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Ps(ps) => print!(
                "{}",
                cli::ps::run(&ps.run.run_directory, ps.output, ps.sort).await
            ),
            Command::Top { run, output, pod } => println!(
                "{}",
                cli::top::run(&run.run_directory, &pod, output)
                    .await
                    .map_err(anyhow::Error::msg)?
            ),
            Command::Inspect { run, pod } => println!(
                "{}",
                cli::inspect::run(&run.run_directory, &pod)
                    .await
                    .map_err(anyhow::Error::msg)?
            ),
            Command::Check { run, pod } => println!(
                "{}",
                cli::check::run(&run.run_directory, &pod)
                    .await
                    .map_err(anyhow::Error::msg)?
            ),
            Command::Demo {
                run,
                container_runtime_endpoint,
                image,
            } => cli::demo::run(&container_runtime_endpoint, &run.run_directory, &image)
                .await
                .map_err(anyhow::Error::msg)?,
            Command::UpgradeShims {
                container_runtime_endpoint,
                force,
            } => cli::upgrade::run(&container_runtime_endpoint, force)
                .await
                .map_err(anyhow::Error::msg)?,
            Command::Doctor {
                serve,
                kubelet_config,
            } => {
                let checks = cli::doctor::run(&serve, kubelet_config.as_deref()).await;
                for check in &checks {
                    println!("{}", check.line());
                }
                let failed = checks
                    .iter()
                    .filter(|c| c.verdict == cli::doctor::Verdict::Fail)
                    .count();
                if failed > 0 {
                    anyhow::bail!("{failed} check(s) failed");
                }
            }
            Command::Serve(_) => anyhow::bail!("serve is not an operator command"),
        }
        Ok(())
    })
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    dockpod_proto::panics::install(None);
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Before the runtime's threads: it changes the environment.
    let activated = shim_manager::activation::take()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let path = dockpod_proto::sockets::parse_unix_endpoint(&config.container_runtime_endpoint)?;
        // Before the socket: a second front must not take over the first one's socket.
        dockpod_proto::files::ensure_dir(&config.root_directory, 0o700).map_err(|e| {
            anyhow::anyhow!(
                "creating root directory {}: {e}",
                config.root_directory.display()
            )
        })?;
        let _owner = dockpod_proto::owner::take(&config.root_directory, "shim-manager")?;
        let shutdown = shutdown_signal();
        // A passed socket is systemd's: its path, mode and group are the socket unit's, and it
        // stays when this front stops, for the next one.
        let (listener, inode) = match activated {
            Some(passed) => {
                let listener = tokio::net::UnixListener::from_std(passed)?;
                let at = listener
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .unwrap_or_default();
                tracing::info!(socket = %at, "listening on the socket systemd passed");
                (listener, None)
            }
            None => {
                let listener = dockpod_proto::sockets::bind_exclusive(&path, 0o660).await?;
                if let Some(gid) = config.cri_socket_group {
                    nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid)))
                        .map_err(|e| {
                            anyhow::anyhow!("giving {} to group {gid}: {e}", path.display())
                        })?;
                }
                tracing::info!(socket = %path.display(), "listening");
                (listener, shim_manager::server::socket_inode(&path))
            }
        };
        let result = shim_manager::server::run(config, listener, shutdown).await;
        if let Some(ino) = inode {
            dockpod_proto::sockets::remove_if_same(&path, ino);
        }
        result.map_err(anyhow::Error::from)
    })
}

/// Completes on the first SIGTERM or SIGINT. The handlers are installed when this is called,
/// not when the server first polls the future: a SIGTERM in between (a service manager
/// stopping a front that has just bound its socket) must stop the server gracefully, not kill
/// it with the socket and PID file left behind.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
