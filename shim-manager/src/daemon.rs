//! What the front knows of dockerd, kept by one watcher task so that the kubelet's frequent
//! `Version`, `Status` and `RuntimeConfig` calls answer without asking Docker. Its version,
//! negotiated API version, cgroup driver and default bridge network are read when the
//! connection is (re-)established; that it still answers is confirmed by a ping at most every
//! few seconds.
//!
//! The watcher holds Docker's event stream open (daemon events only: a trickle), so a dockerd
//! that stops or restarts ends the stream, and its facts are read again from the daemon that
//! answers next (an upgraded engine has a new version and API).
//!
//! It reaches dockerd through a `Connection` (the front's `docker::Engine`), never the
//! engine itself: the engine holds this module's state, not the other way round.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{SystemInfo, SystemVersion};
use bollard::query_parameters::{EventsOptions, InspectNetworkOptions};
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};

use crate::error::{Error, Result};

/// Oldest Engine API dockpod is written against (Docker 20.10).
pub const MIN_API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// What the watcher needs of the front's connection to dockerd.
pub trait Connection: Clone + Send + Sync + 'static {
    fn endpoint(&self) -> &str;
    /// The API client; `Unavailable` while dockerd's socket does not exist.
    fn client(&self) -> Result<Docker>;
    /// Lowers the client's API version to the daemon's when the daemon is older.
    fn negotiate(&self) -> impl std::future::Future<Output = Result<ClientVersion>> + Send;
    fn version(&self) -> impl std::future::Future<Output = Result<SystemVersion>> + Send;
    fn info(&self) -> impl std::future::Future<Output = Result<SystemInfo>> + Send;
}

/// How long a `Status` may report dockerd up on the strength of an earlier answer: the
/// kubelet asks every few seconds, and a hung daemon (one that keeps its socket open) is only
/// seen by asking.
const CONFIRM_EVERY: Duration = Duration::from_secs(5);
/// How long `Status` waits for a ping before calling dockerd not ready.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call that needs the facts waits for the watcher's answer (a front that has
/// just started, or one retrying a daemon that has never answered).
const FIRST_ANSWER: Duration = Duration::from_secs(10);
/// The pauses between attempts while dockerd does not answer, doubling up to the longest:
/// short, so a restarted daemon is served again within moments.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// An event stream that ends sooner than this after it opened is retried after a pause.
const SHORT_STREAM: Duration = Duration::from_secs(1);

/// The daemon as last read.
#[derive(Clone, Debug)]
pub struct Facts {
    /// Docker's own version (`20.10.24+dfsg1`).
    pub version: String,
    /// The API version negotiated with it.
    pub api: ClientVersion,
    /// `systemd` or `cgroupfs`.
    pub cgroup_driver: String,
    /// The ID of Docker's default bridge network, or why there is none (a daemon started with
    /// `--bridge=none`).
    pub default_bridge: std::result::Result<String, String>,
    /// The OCI runtimes the engine has (`docker info` → `Runtimes`), by name, sorted: the
    /// CRI's runtime handlers.
    pub runtimes: Vec<String>,
    /// The runtime the engine uses when told none (the empty handler).
    pub default_runtime: String,
}

impl Facts {
    /// Refuses a runtime handler that is none of the engine's runtimes, naming those it has.
    /// The empty handler is the engine's default.
    pub fn check_handler(&self, handler: &str) -> Result<()> {
        if handler.is_empty() || self.runtimes.iter().any(|r| r == handler) {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "runtime handler {handler:?} is none of the engine's runtimes ({}); register a runtime with dockerd (--add-runtime, or \"runtimes\" in daemon.json) to use it",
            self.runtimes.join(", ")
        )))
    }
}

/// Docker's cgroup driver from its `info`; `cgroupfs`, its default, when it names none.
pub fn cgroup_driver(info: &bollard::models::SystemInfo) -> String {
    info.cgroup_driver
        .as_ref()
        .map(|d| d.to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "cgroupfs".into())
}

/// The names of Docker's OCI runtimes from its `info`, sorted.
pub fn runtimes(info: &bollard::models::SystemInfo) -> Vec<String> {
    let mut names: Vec<String> = info
        .runtimes
        .iter()
        .flat_map(|r| r.keys().cloned())
        .collect();
    names.sort();
    names
}

#[derive(Clone, Debug)]
enum State {
    /// Not answered yet.
    Unknown,
    Up(Arc<Facts>),
    /// Why the last attempt failed, and what was known before.
    Down(String, Option<Arc<Facts>>),
}

pub struct Daemon {
    state: watch::Sender<State>,
    /// When dockerd last answered anything the watcher or a ping asked.
    confirmed: Mutex<Option<Instant>>,
    /// Wakes a watcher that waits between failed attempts: a ping found dockerd back.
    retry_now: Notify,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            state: watch::channel(State::Unknown).0,
            confirmed: Mutex::new(None),
            retry_now: Notify::new(),
        }
    }
}

impl Daemon {
    /// The facts of the daemon that answers now, or of the last one that answered while none
    /// does (its cgroup driver and version are what the kubelet was told; `Status` reports the
    /// outage). Waits for the watcher's first answer; `Unavailable` when dockerd has never
    /// answered.
    pub async fn facts(&self, endpoint: &str) -> Result<Arc<Facts>> {
        let mut rx = self.state.subscribe();
        let never_answered = matches!(&*rx.borrow_and_update(), State::Down(_, None));
        if never_answered {
            // One more attempt now, rather than at the watcher's next retry.
            self.retry_now.notify_one();
            let _ = tokio::time::timeout(FIRST_ANSWER, rx.changed()).await;
        } else {
            let _ =
                tokio::time::timeout(FIRST_ANSWER, rx.wait_for(|s| !matches!(s, State::Unknown)))
                    .await;
        }
        let state = self.state.borrow().clone();
        match state {
            State::Up(facts) | State::Down(_, Some(facts)) => Ok(facts),
            State::Down(reason, None) => Err(Error::Unavailable(format!(
                "dockerd at {endpoint} does not answer: {reason}"
            ))),
            State::Unknown => Err(Error::Unavailable(format!(
                "dockerd at {endpoint} has not answered within {FIRST_ANSWER:?}"
            ))),
        }
    }

    /// The facts if dockerd has answered and not failed since.
    pub fn known(&self) -> Option<Arc<Facts>> {
        match &*self.state.borrow() {
            State::Up(facts) => Some(facts.clone()),
            _ => None,
        }
    }

    fn confirm(&self) {
        if let Ok(mut at) = self.confirmed.lock() {
            *at = Some(Instant::now());
        }
    }

    fn recently_confirmed(&self) -> bool {
        self.confirmed
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < CONFIRM_EVERY)
    }
}

impl Daemon {
    /// Whether dockerd answers: from the watcher's knowledge when it is recent, else by a
    /// ping. Err says why not.
    pub async fn confirm_up(&self, connection: &impl Connection) -> Result<()> {
        let daemon = self;
        if daemon.known().is_some() && daemon.recently_confirmed() {
            return Ok(());
        }
        let api = connection.client()?;
        match tokio::time::timeout(PING_TIMEOUT, crate::metrics::docker("ping", api.ping())).await {
            Ok(Ok(_)) => {
                daemon.confirm();
                if daemon.known().is_none() {
                    daemon.retry_now.notify_one();
                }
                Ok(())
            }
            Ok(Err(e)) => Err(Error::Unavailable(format!(
                "dockerd at {} does not answer: {e}",
                connection.endpoint()
            ))),
            Err(_) => Err(Error::Unavailable(format!(
                "dockerd at {} did not answer a ping within {PING_TIMEOUT:?}",
                connection.endpoint()
            ))),
        }
    }

    /// Keeps the daemon's facts for as long as the front runs: reads them, follows Docker's
    /// event stream until the connection ends, reads them again.
    pub fn watch(self: &Arc<Self>, engine: impl Connection, tasks: &dockpod_proto::tasks::Tasks) {
        let daemon = self.clone();
        tasks.spawn(async move {
            let mut delay = FIRST_RETRY;
            let mut failures = 0u32;
            loop {
                match read_facts(&engine).await {
                    Ok(facts) => {
                        if (facts.api.major_version, facts.api.minor_version)
                            < (MIN_API.major_version, MIN_API.minor_version)
                        {
                            tracing::warn!(api = %facts.api, min = %MIN_API, "dockerd's API is older than dockpod supports; some calls may fail");
                        } else {
                            tracing::info!(api = %facts.api, version = %facts.version, endpoint = %engine.endpoint(), "connected to dockerd");
                        }
                        daemon.confirm();
                        daemon.state.send_replace(State::Up(Arc::new(facts)));
                        failures = 0;
                        let followed = Instant::now();
                        follow_until_disconnected(&engine).await;
                        // A stream that ends as soon as it opens (something between the
                        // front and dockerd that does not stream) must not turn this into a
                        // loop of requests.
                        if followed.elapsed() < SHORT_STREAM {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(MAX_RETRY);
                        } else {
                            delay = FIRST_RETRY;
                        }
                    }
                    Err(e) => {
                        // Said once per outage: the kubelet's Status reports it meanwhile.
                        if failures == 0 {
                            tracing::warn!(error = %e, "dockerd is not answering");
                        }
                        failures += 1;
                        daemon.state.send_modify(|state| {
                            let last = match state {
                                State::Up(facts) | State::Down(_, Some(facts)) => {
                                    Some(facts.clone())
                                }
                                _ => None,
                            };
                            *state = State::Down(e.to_string(), last);
                        });
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = daemon.retry_now.notified() => {}
                        }
                        delay = (delay * 2).min(MAX_RETRY);
                    }
                }
            }
        });
    }
}

async fn read_facts(engine: &impl Connection) -> Result<Facts> {
    let api = engine.negotiate().await?;
    let version = engine.version().await?;
    let info = engine.info().await?;
    let docker = engine.client()?;
    let bridge = crate::metrics::docker(
        "inspect_network",
        docker.inspect_network("bridge", None::<InspectNetworkOptions>),
    )
    .await;
    Ok(Facts {
        version: version.version.unwrap_or_default(),
        api,
        cgroup_driver: cgroup_driver(&info),
        default_bridge: bridge
            .map(|net| net.id.unwrap_or_default())
            .map_err(|e| e.to_string()),
        runtimes: runtimes(&info),
        default_runtime: info.default_runtime.clone().unwrap_or_default(),
    })
}

/// Returns when Docker's event stream ends (dockerd stopped, or the connection broke) or
/// the daemon reports a change of its own (a configuration reload).
async fn follow_until_disconnected(engine: &impl Connection) {
    let Ok(docker) = engine.client() else {
        return;
    };
    let options = EventsOptions {
        filters: Some(
            [("type".to_string(), vec!["daemon".to_string()])]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    let mut events = docker.events(Some(options));
    match events.next().await {
        Some(Ok(event)) => {
            tracing::info!(action = ?event.action, "dockerd reported a change; reading its facts again");
        }
        Some(Err(e)) => tracing::warn!(error = %e, "the connection to dockerd ended"),
        None => tracing::warn!("the connection to dockerd ended"),
    }
}
