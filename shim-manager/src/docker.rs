//! The front's one gateway to Docker Engine: connecting to the configured endpoint,
//! negotiating the API version (Debian's dockerd speaks 1.41; newer engines more), and the
//! calls the front makes, typed, each timed in the metrics and mapping Docker's errors in one
//! place. What the front knows of the daemon itself is kept in `daemon`, which reaches it
//! through this engine as a `daemon::Connection`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerInspectResponse, ImageInspect, ImageSummary, SystemInfo, SystemVersion,
};
use bollard::query_parameters::{
    CreateImageOptions, ListImagesOptions, RemoveContainerOptions, RemoveImageOptions,
};
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;

use crate::daemon::{Connection, Daemon, Facts};
use crate::error::{Error, Result};
use dockpod_proto::docker_errors::{is_not_found, optional};

pub use crate::daemon::MIN_API;

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
    fn client(&self) -> Result<Docker> {
        let mut client = self
            .client
            .lock()
            .map_err(|_| Error::FailedPrecondition("docker client lock poisoned".into()))?;
        if let Some(docker) = client.as_ref() {
            return Ok(docker.clone());
        }
        let docker = match self.endpoint.starts_with("unix://") {
            true => dockpod_proto::docker_socket::connect(
                &self.endpoint,
                REQUEST_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            ),
            false => Docker::connect_with_host(&self.endpoint),
        }
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
            .client()?
            .negotiate_version()
            .await
            .map_err(Error::docker(format!(
                "negotiating the API version with dockerd at {}",
                self.endpoint
            )))?;
        Ok(negotiated.client_version())
    }

    /// Whether dockerd answers (see `Daemon::confirm_up`).
    pub async fn confirm_up(&self) -> Result<()> {
        self.daemon.confirm_up(self).await
    }

    /// Keeps the daemon's facts until `tasks` stop (see `Daemon::watch`).
    pub fn watch_daemon(&self, tasks: &dockpod_proto::tasks::Tasks) {
        self.daemon.watch(self.clone(), tasks)
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
        self.client()?
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

    /// A container, `None` when Docker has none by that name or ID.
    pub async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInspectResponse>> {
        let docker = self.client()?;
        optional(crate::metrics::docker("inspect", docker.inspect_container(id, None)).await)
            .map_err(Error::docker(format!("inspecting container {id}")))
    }

    /// Removes a container, running or not, with its anonymous volumes. Gone already, or
    /// going for another request, is fine.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.client()?.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if dockpod_proto::docker_errors::is_removed_already(&e) => Ok(()),
            // As the shim's engine: an error about a part of the container (its task, its
            // layer) that went with it is decided by the container's absence.
            Err(e) => match self.inspect_container(id).await {
                Ok(None) => Ok(()),
                _ => Err(Error::docker(format!("removing container {id}"))(e)),
            },
        }
    }

    /// An image, `None` when Docker has none by that name or ID.
    pub async fn inspect_image(&self, name: &str) -> Result<Option<ImageInspect>> {
        let docker = self.client()?;
        optional(crate::metrics::docker("inspect_image", docker.inspect_image(name)).await)
            .map_err(Error::docker(format!("inspecting image {name:?}")))
    }

    /// Images, those whose reference matches `reference` when given.
    pub async fn list_images(&self, reference: Option<&str>) -> Result<Vec<ImageSummary>> {
        let options = ListImagesOptions {
            filters: reference
                .map(|name| HashMap::from([("reference".to_string(), vec![name.to_string()])])),
            ..Default::default()
        };
        let docker = self.client()?;
        crate::metrics::docker("list_images", docker.list_images(Some(options)))
            .await
            .map_err(Error::docker("listing images"))
    }

    /// Pulls `from_image` at `tag` (a tag, or a digest), to its end.
    pub async fn pull(
        &self,
        from_image: &str,
        tag: &str,
        credentials: Option<DockerCredentials>,
    ) -> Result<()> {
        let options = CreateImageOptions {
            from_image: Some(from_image.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let mut progress = self
            .client()?
            .create_image(Some(options), None, credentials);
        while let Some(step) = progress.next().await {
            step.map_err(Error::docker(format!("pulling image {from_image}:{tag}")))?;
        }
        Ok(())
    }

    /// Removes one image reference (or, by ID, an image without references); gone already
    /// is fine.
    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        let docker = self.client()?;
        match crate::metrics::docker(
            "remove_image",
            docker.remove_image(reference, Some(options), None),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::docker(format!("removing image {reference:?}"))(e)),
        }
    }

    pub async fn info(&self) -> Result<SystemInfo> {
        let docker = self.client()?;
        crate::metrics::docker("info", docker.info())
            .await
            .map_err(Error::docker("reading docker info"))
    }

    pub async fn version(&self) -> Result<SystemVersion> {
        let docker = self.client()?;
        crate::metrics::docker("version", docker.version())
            .await
            .map_err(Error::docker("reading docker's version"))
    }
}

impl Connection for Engine {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn client(&self) -> Result<Docker> {
        Engine::client(self)
    }

    async fn negotiate(&self) -> Result<ClientVersion> {
        Engine::negotiate(self).await
    }

    async fn version(&self) -> Result<SystemVersion> {
        Engine::version(self).await
    }

    async fn info(&self) -> Result<SystemInfo> {
        Engine::info(self).await
    }
}
