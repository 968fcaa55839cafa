//! The front's connection to Docker Engine: connecting to the configured endpoint, negotiating
//! the API version (Debian's dockerd speaks 1.41; newer engines more), and the node-wide
//! facts read from it once (cgroup driver).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::{ClientVersion, Docker};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};

/// Oldest Engine API dockpod is written against (Docker 20.10).
pub const MIN_API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// How long a request to Docker may take. Pulls stream progress and are bounded by the
/// kubelet's own deadline instead, so this only catches a daemon that stopped answering.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Handle on one dockerd; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    endpoint: String,
    /// Created on first use: bollard refuses a unix socket that does not exist yet, and the
    /// front may start before dockerd does.
    client: Arc<Mutex<Option<Docker>>>,
    /// The daemon's API version once a negotiation succeeded; until then nothing that
    /// depends on the engine's version may be claimed.
    negotiated: Arc<Mutex<Option<ClientVersion>>>,
    cgroup_driver: Arc<OnceCell<String>>,
}

impl Engine {
    /// Prepares a client for `endpoint` (`unix:///path` or `tcp://host:port`). Nothing is sent
    /// yet: dockerd may start after the front does.
    pub fn connect(endpoint: &str) -> Result<Self> {
        if !["unix:///", "tcp://", "http://"]
            .iter()
            .any(|scheme| endpoint.starts_with(scheme))
        {
            return Err(Error::InvalidArgument(format!(
                "docker endpoint {endpoint:?} is neither unix:///path nor tcp://host:port"
            )));
        }
        Ok(Engine {
            endpoint: endpoint.to_string(),
            client: Default::default(),
            negotiated: Default::default(),
            cgroup_driver: Default::default(),
        })
    }

    /// The API client; `Unavailable` while dockerd's socket does not exist.
    pub fn api(&self) -> Result<Docker> {
        let mut client = self
            .client
            .lock()
            .map_err(|_| Error::FailedPrecondition("docker client lock poisoned".into()))?;
        if let Some(docker) = client.as_ref() {
            return Ok(docker.clone());
        }
        let docker = Docker::connect_with_host(&self.endpoint)
            .map_err(Error::docker(format!(
                "connecting to dockerd at {}",
                self.endpoint
            )))?
            .with_timeout(REQUEST_TIMEOUT);
        *client = Some(docker.clone());
        Ok(docker)
    }

    /// The API version the client speaks (the daemon's, once negotiated).
    pub fn api_version(&self) -> Option<ClientVersion> {
        self.client
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(Docker::client_version))
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Lowers the client's API version to the daemon's when the daemon is older. Clones of this
    /// engine share the negotiated version.
    pub async fn negotiate(&self) -> Result<ClientVersion> {
        let negotiated = self
            .api()?
            .negotiate_version()
            .await
            .map_err(Error::docker(format!(
                "negotiating the API version with dockerd at {}",
                self.endpoint
            )))?;
        let version = negotiated.client_version();
        if let Ok(mut known) = self.negotiated.lock() {
            *known = Some(version);
        }
        Ok(version)
    }

    /// The API version negotiated with the daemon; `None` before any negotiation succeeded
    /// (the client's own version then is bollard's, not the daemon's).
    pub fn negotiated_version(&self) -> Option<ClientVersion> {
        self.negotiated.lock().ok().and_then(|v| *v)
    }

    /// Negotiates in the background until dockerd answers, so a front started before dockerd
    /// still ends up speaking the daemon's version.
    pub fn negotiate_until_ready(&self) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(250);
            loop {
                match engine.negotiate().await {
                    Ok(v) => {
                        if (v.major_version, v.minor_version)
                            < (MIN_API.major_version, MIN_API.minor_version)
                        {
                            tracing::warn!(api = %v, min = %MIN_API, "dockerd's API is older than dockpod supports; some calls may fail");
                        } else {
                            tracing::info!(api = %v, endpoint = %engine.endpoint, "connected to dockerd");
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "dockerd is not answering yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        })
    }

    /// Docker's cgroup driver (`systemd` or `cgroupfs`), read once: the kubelet requires it
    /// never to change while it runs.
    pub async fn cgroup_driver(&self) -> Result<String> {
        let driver = self
            .cgroup_driver
            .get_or_try_init(|| async {
                let info = self
                    .api()?
                    .info()
                    .await
                    .map_err(Error::docker("reading docker info"))?;
                let driver = info.cgroup_driver.map(|d| d.to_string());
                Ok::<_, Error>(
                    driver
                        .filter(|d| !d.is_empty())
                        .unwrap_or_else(|| "cgroupfs".into()),
                )
            })
            .await?;
        Ok(driver.clone())
    }

    /// Every container (running or not) with the label `key=value`.
    pub async fn list_labelled(
        &self,
        label: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>> {
        let filters =
            std::collections::HashMap::from([("label".to_string(), vec![label.to_string()])]);
        self.api()?
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(Error::docker(format!(
                "listing containers labelled {label}"
            )))
    }
}
