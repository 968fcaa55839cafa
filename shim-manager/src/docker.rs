//! The front's connection to Docker Engine: connecting to the configured endpoint and
//! negotiating the API version (Debian's dockerd speaks 1.41; newer engines more). What the
//! front knows of the daemon itself is kept in `daemon`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::{ClientVersion, Docker};

use crate::daemon::{Daemon, Facts};
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
    daemon: Arc<Daemon>,
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
            daemon: Default::default(),
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
        Ok(negotiated.client_version())
    }

    pub(crate) fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// The facts of the daemon that answers now (see `daemon`); `Unavailable` while none does.
    pub async fn facts(&self) -> Result<Arc<Facts>> {
        self.daemon.facts(&self.endpoint).await
    }

    /// The API version negotiated with the daemon; `None` before it answered (the client's own
    /// version then is bollard's, not the daemon's) and while it does not.
    pub fn negotiated_version(&self) -> Option<ClientVersion> {
        self.daemon.known().map(|facts| facts.api)
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
