//! The front's gRPC server: builds the CRI services from the configuration and serves them on
//! a listener until a shutdown future fires, then drains in-flight calls.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dockpod_proto::cri::image_service_server::ImageServiceServer;
use dockpod_proto::cri::runtime_service_server::RuntimeServiceServer;
use dockpod_proto::files::{atomic_write, ensure_dir};
use dockpod_proto::tasks::Tasks;
use tokio::net::UnixListener;

use crate::config::ServeConfig;
use crate::cri::image::ImageApi;
use crate::cri::runtime::RuntimeApi;
use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::network::Network;
use crate::route::Router;
use crate::spawn::Spawner;
use crate::state::RootDir;
use crate::supervise::Supervisor;

use dockpod_proto::MAX_MESSAGE;
/// How long in-flight calls may take to finish once shutdown has begun.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection accepted just before shutdown has to open its first call. HTTP/2's
/// graceful shutdown serves only the calls a client opened before the server's last GOAWAY,
/// and a client that has just connected opens its first one a moment after the handshake:
/// without this, a kubelet reconnecting as the front stops has that call refused.
const FIRST_CALL_GRACE: Duration = Duration::from_millis(500);
/// How long the front's own tasks (shim watchers, the daemon watcher, the sweeper, the
/// streaming and metrics listeners) may take to end once cancelled, after serving ended.
const TASKS_JOIN_LIMIT: Duration = Duration::from_secs(5);
const PID_FILE: &str = "shim-manager.pid";

/// Serves the CRI on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight calls finish (at most `DRAIN_TIMEOUT`) and returns.
pub async fn run(
    config: ServeConfig,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let root = Arc::new(RootDir::open(&config.root_directory)?);
    ensure_dir(&config.run_directory, 0o755).map_err(Error::io(format!(
        "creating run directory {}",
        config.run_directory.display()
    )))?;
    let pid_file = PidFile::write(&config.run_directory)?;
    // Every long-lived task of the front, stopped and joined once serving ends (and cancelled
    // if this returns early).
    let tasks = Tasks::default();
    let _cancel = tasks.cancel_on_drop();
    let engine = Engine::connect(&config.docker_endpoint)?;
    engine.watch_daemon(&tasks);
    warn_if_sandbox_image_missing(&engine, &config.pod_infra_container_image, &tasks);

    let network = Network {
        plugin: config.network_plugin,
        conf_dir: config.cni_conf_dir.clone(),
        bin_dirs: config.cni_bin_dir.clone(),
    };
    let supervisor = Supervisor::new(
        Spawner {
            binary: config.pod_shim_binary()?,
            run_dir: config.run_directory.clone(),
            root_dir: config.root_directory.clone(),
            docker_endpoint: config.docker_endpoint.clone(),
            instance: root.instance_id().to_string(),
            sandbox_image: config.pod_infra_container_image.clone(),
            log_level: config.log_level.as_filter().to_string(),
            log_json: config.log_format == crate::config::LogFormat::Json,
            network_args: config.shim_network_args(),
            stream_idle_timeout: config.streaming_idle_timeout,
            root: root.clone(),
            engine: engine.clone(),
        },
        (config.shim_liveness_timeout > 0)
            .then(|| Duration::from_secs(config.shim_liveness_timeout)),
        tasks.clone(),
    );
    supervisor.resume_pods();
    if config.adopt_cri_dockerd {
        crate::adopt::adopt_cri_dockerd(&supervisor, &engine, &config.cri_dockerd_root_directory)
            .await;
    }
    if let Some(addr) = config.metrics_bind_addr {
        let registry = supervisor.clone();
        let shims: crate::metrics::ShimLister = Arc::new(move || {
            registry
                .registry()
                .pods()
                .iter()
                .map(|s| crate::metrics::ShimProcess {
                    shim_id: s.shim_id.clone(),
                    sandbox_id: s.sandbox_id.clone(),
                    pid: s.pid,
                })
                .collect()
        });
        crate::metrics::serve(addr, shims, &tasks)
            .await
            .map_err(Error::io(format!("binding the metrics server on {addr}")))?;
    }
    if config.stray_sweep_interval > 0 {
        crate::strays::spawn(
            engine.clone(),
            root.instance_id().to_string(),
            config.root_directory.clone(),
            Duration::from_secs(config.stray_sweep_interval),
            &tasks,
        );
    }
    let stream_base = crate::streaming::start(
        config.streaming_bind_addr,
        config.run_directory.clone(),
        &tasks,
    )
    .await
    .map_err(Error::io(format!(
        "binding the streaming server on {}",
        config.streaming_bind_addr
    )))?;
    let manager = crate::manage::ManagerApi {
        supervisor: supervisor.clone(),
    };
    let events = supervisor.events().clone();
    let router = Arc::new(Router {
        supervisor,
        engine: engine.clone(),
        listings: Default::default(),
    });
    let images = Arc::new(ImageApi::new(
        engine.clone(),
        config.pod_infra_container_image.clone(),
    ));
    let runtime = RuntimeApi::new(
        engine,
        root.clone(),
        network,
        config.pod_infra_container_image.clone(),
        router,
        stream_base,
        images.clone(),
    );
    tracing::info!(
        instance = root.instance_id(),
        root = %config.root_directory.display(),
        "serving CRI"
    );

    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let (stop_accepting, accepting) = tokio::sync::watch::channel(false);
    let last_accept = Arc::new(std::sync::Mutex::new(None));
    let incoming = accept_until_stopped(listener, accepting, last_accept.clone());
    let signalled = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight calls");
        // Connections waiting in the socket's backlog stay there, for the next front (the
        // socket outlives this one under systemd).
        stop_accepting.send_replace(true);
        // Event streams never finish by themselves: they end now, the calls in flight not.
        events.close();
        let newest = *last_accept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(accepted) = newest {
            tokio::time::sleep_until((accepted + FIRST_CALL_GRACE).into()).await;
        }
        notify.notify_one();
    };
    let serve = tonic::transport::Server::builder()
        .max_concurrent_streams(dockpod_proto::MAX_CONCURRENT_STREAMS)
        .layer(crate::metrics::CriLayer)
        .layer(crate::deadline::DeadlineLayer)
        .add_service(
            RuntimeServiceServer::new(runtime)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::from_arc(images)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(dockpod_proto::manager::manager_server::ManagerServer::new(
            manager,
        ))
        .serve_with_incoming_shutdown(incoming, signalled);
    let drain_deadline = async {
        stopping.notified().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        served = serve => served.map_err(|e| Error::io("serving CRI")(std::io::Error::other(e)))?,
        () = drain_deadline => tracing::warn!(timeout = ?DRAIN_TIMEOUT, "in-flight calls did not finish in time; exiting anyway"),
    }
    tasks.stop(TASKS_JOIN_LIMIT).await;
    drop(pid_file);
    Ok(())
}

/// The connections of `listener` (with their authority repaired) until `stop` turns true,
/// each noted in `last` as it is accepted; then no more, without ending (an ended stream
/// would start the drain before the grace for the newest connection has passed).
fn accept_until_stopped(
    listener: UnixListener,
    stop: tokio::sync::watch::Receiver<bool>,
    last: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
) -> impl futures_util::Stream<
    Item = std::io::Result<dockpod_proto::authority::AuthorityFixed<tokio::net::UnixStream>>,
> {
    futures_util::stream::unfold((listener, stop), move |(listener, mut stop)| {
        let last = last.clone();
        async move {
            let accepted = tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => None,
                accepted = listener.accept() => Some(accepted),
            };
            let Some(accepted) = accepted else {
                return std::future::pending().await;
            };
            *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
            let connection =
                accepted.map(|(io, _)| dockpod_proto::authority::AuthorityFixed::new(io));
            Some((connection, (listener, stop)))
        }
    })
}

fn warn_if_sandbox_image_missing(engine: &Engine, image: &str, tasks: &Tasks) {
    let engine = engine.clone();
    let image = image.to_string();
    tasks.spawn(async move {
        match engine.inspect_image(&image).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(%image, "sandbox image is not available locally; contrib/setup.sh builds the default one")
            }
            Err(e) => {
                tracing::warn!(%image, error = %e, "cannot tell whether the sandbox image is available locally")
            }
        }
    });
}

/// `<run>/shim-manager.pid`, removed again when the server stops.
struct PidFile(PathBuf);

impl PidFile {
    fn write(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(PID_FILE);
        atomic_write(&path, format!("{}\n", std::process::id()).as_bytes(), 0o644)
            .map_err(Error::io(format!("writing {}", path.display())))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The CRI socket's inode, so only this server's own socket is removed at exit.
pub fn socket_inode(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}
