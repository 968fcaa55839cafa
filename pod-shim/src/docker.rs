//! The shim's one gateway to Docker Engine: the calls the pod needs, typed, each mapping
//! Docker's errors (with the object named) in one place; and Docker's container state reduced
//! to the pod model's `Observed`. Nothing else in the shim holds a Docker client.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ContainerUpdateBody,
    EventMessage, ExecInspectResponse, ImageInspect,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, EventsOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, ResizeContainerTTYOptions, StopContainerOptions,
};
use bollard::{ClientVersion, Docker};
use dockpod_proto::engine_api::ApiVersion;
use futures_util::{Stream, StreamExt};

use crate::error::{is_not_found, is_not_modified, Error, Result};
use dockpod_proto::docker_errors::optional;
use dockpod_proto::pod_record::{Observed, Phase};

/// An attached exec's or container's output, as Docker sends it.
pub type OutputStream = std::pin::Pin<
    Box<dyn Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>,
>;
/// An attached exec's or container's stdin.
pub type InputSink = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// Longest a single Docker request may take; stop calls add their grace period.
const REQUEST_TIMEOUT: u64 = 120;

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// The API version negotiated with the daemon: what differs by engine follows it.
    api: ApiVersion,
}

impl Engine {
    /// Connects to `endpoint` speaking API `known` (the version the front negotiated with the
    /// same daemon), or negotiates when the front did not know it. Asking costs a `GET
    /// /version`, which Docker 20.10 answers by running runc: 13 ms of every pod's start.
    /// dockerd must be up: the shim only runs for pods that dockerd holds.
    pub async fn connect(endpoint: &str, known: Option<ApiVersion>) -> Result<Self> {
        let connecting = || Error::docker(format!("connecting to dockerd at {endpoint}"));
        if let Some(api) = known {
            let version = ClientVersion {
                major_version: api.major,
                minor_version: api.minor,
            };
            let docker = if endpoint.starts_with("unix://") {
                Some(dockpod_proto::docker_socket::connect(
                    endpoint,
                    REQUEST_TIMEOUT,
                    &version,
                ))
            } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
                Some(Docker::connect_with_http(
                    endpoint,
                    REQUEST_TIMEOUT,
                    &version,
                ))
            } else {
                None
            };
            if let Some(docker) = docker {
                return Ok(Engine {
                    docker: docker.map_err(connecting())?,
                    api,
                });
            }
        }
        let docker = Docker::connect_with_host(endpoint)
            .map_err(connecting())?
            .with_timeout(Duration::from_secs(REQUEST_TIMEOUT));
        let docker = docker
            .negotiate_version()
            .await
            .map_err(Error::docker(format!(
                "negotiating with dockerd at {endpoint}"
            )))?;
        let v = docker.client_version();
        let api = ApiVersion::new(v.major_version, v.minor_version);
        Ok(Engine { docker, api })
    }

    pub fn api_version(&self) -> ApiVersion {
        self.api
    }

    /// Whether the daemon takes CDI device requests (driver `cdi`): it reports the CDI spec
    /// directories it reads, which it does from API 1.46 and only with CDI on.
    pub async fn cdi_enabled(&self) -> Result<bool> {
        if !self.api.reports_cdi() {
            return Ok(false);
        }
        let info = self
            .docker
            .info()
            .await
            .map_err(Error::docker("asking dockerd whether CDI is on"))?;
        Ok(info.cdi_spec_dirs.is_some_and(|dirs| !dirs.is_empty()))
    }

    /// An image, `None` when Docker has none by that name or ID.
    pub async fn inspect_image(&self, name: &str) -> Result<Option<ImageInspect>> {
        optional(self.docker.inspect_image(name).await)
            .map_err(Error::docker(format!("inspecting image {name:?}")))
    }

    /// Sets a container's resources.
    pub async fn update(&self, id: &str, body: ContainerUpdateBody) -> Result<()> {
        self.docker
            .update_container(id, body)
            .await
            .map(drop)
            .map_err(Error::docker(format!(
                "updating resources of container {id}"
            )))
    }

    /// Docker's events from `options.since` on, as they come; after an item's error the
    /// caller subscribes again.
    pub fn events(
        &self,
        options: EventsOptions,
    ) -> impl Stream<Item = Result<EventMessage>> + use<> {
        self.docker
            .events(Some(options))
            .map(|item| item.map_err(Error::docker("reading Docker's events")))
    }

    /// A container's log through Docker's logs API.
    pub fn logs(
        &self,
        container: &str,
        options: LogsOptions,
    ) -> impl Stream<Item = Result<LogOutput>> + use<> {
        let context = format!("reading the log of container {container}");
        self.docker
            .logs(container, Some(options))
            .map(move |item| item.map_err(Error::docker(context.clone())))
    }

    /// Creates an exec in `container`; its ID.
    pub async fn create_exec(
        &self,
        container: &str,
        options: CreateExecOptions<String>,
    ) -> Result<String> {
        self.docker
            .create_exec(container, options)
            .await
            .map(|created| created.id)
            .map_err(Error::docker(format!(
                "creating exec in container {container}"
            )))
    }

    /// Starts exec `id` attached: its output and its input.
    pub async fn start_exec(&self, id: &str, tty: bool) -> Result<(OutputStream, InputSink)> {
        let options = StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        match self
            .docker
            .start_exec(id, Some(options))
            .await
            .map_err(Error::docker(format!("starting exec {id}")))?
        {
            StartExecResults::Attached { output, input } => Ok((output, input)),
            StartExecResults::Detached => Err(Error::FailedPrecondition(format!(
                "exec {id} did not attach"
            ))),
        }
    }

    pub async fn inspect_exec(&self, id: &str) -> Result<ExecInspectResponse> {
        self.docker
            .inspect_exec(id)
            .await
            .map_err(Error::docker(format!("inspecting exec {id}")))
    }

    pub async fn resize_exec(&self, id: &str, height: u16, width: u16) -> Result<()> {
        self.docker
            .resize_exec(id, ResizeExecOptions { height, width })
            .await
            .map_err(Error::docker(format!("resizing the terminal of exec {id}")))
    }

    /// Attaches to a container's main process.
    pub async fn attach(
        &self,
        container: &str,
        options: AttachContainerOptions,
    ) -> Result<(OutputStream, InputSink)> {
        self.docker
            .attach_container(container, Some(options))
            .await
            .map(|attached| (attached.output, attached.input))
            .map_err(Error::docker(format!("attaching to container {container}")))
    }

    pub async fn resize_tty(&self, container: &str, height: u16, width: u16) -> Result<()> {
        let options = ResizeContainerTTYOptions {
            h: i32::from(height),
            w: i32::from(width),
        };
        self.docker
            .resize_container_tty(container, options)
            .await
            .map_err(Error::docker(format!(
                "resizing the terminal of container {container}"
            )))
    }

    pub async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(Error::docker(format!("creating container {name}")))?;
        Ok(created.id)
    }

    /// Starts a container. A start whose OCI runtime lost its own init process before that
    /// had set anything up is tried once more: nothing of the container ran, and runc's init
    /// dies that way under load (seen on a loaded 2-core node with Docker 26), not because of
    /// anything in the container's configuration, which the second try would fail on again.
    pub async fn start(&self, id: &str) -> Result<()> {
        let mut retried = false;
        loop {
            match self.docker.start_container(id, None).await {
                Ok(()) => return Ok(()),
                Err(e) if is_not_modified(&e) => return Ok(()),
                Err(e) if !retried && runtime_init_lost(&e) => {
                    tracing::warn!(container = %id, error = %e, "the OCI runtime lost its init before the container ran; starting once more");
                    retried = true;
                }
                Err(e) => return Err(Error::docker(format!("starting container {id}"))(e)),
            }
        }
    }

    /// Stops with `grace` before SIGKILL; the container's own stop signal is used. A missing or
    /// already stopped container is fine (`Stopped::Already`).
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<Stopped> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptions {
            t: Some(secs),
            signal: None,
        };
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(Stopped::Now),
            Err(e) if is_not_found(&e) || is_not_modified(&e) => Ok(Stopped::Already),
            // Docker answers a stop of a container whose task containerd lost with a 500; what
            // the caller asked for holds if Docker now has it stopped or not at all.
            Err(e) => match self.inspect(id).await {
                Ok(None) => Ok(Stopped::Already),
                Ok(Some(c)) if !c.state.as_ref().and_then(|s| s.running).unwrap_or(false) => {
                    Ok(Stopped::Already)
                }
                _ => Err(Error::docker(format!("stopping container {id}"))(e)),
            },
        }
    }

    /// Removes a container, running or not, with its anonymous volumes. Gone already is fine.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if dockpod_proto::docker_errors::is_removed_already(&e) => Ok(()),
            // Docker's answer may be about a part of the container (its task, its layer) that
            // went with it: the container's absence decides.
            Err(e) => match self.inspect(id).await {
                Ok(None) => Ok(()),
                _ => Err(Error::docker(format!("removing container {id}"))(e)),
            },
        }
    }

    /// Inspects a container; `None` when Docker no longer has it.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInspectResponse>> {
        optional(self.docker.inspect_container(id, None).await)
            .map_err(Error::docker(format!("inspecting container {id}")))
    }

    /// Containers (running or not) carrying every label of `labels` (`key=value`).
    pub async fn list_labelled(&self, labels: &[String]) -> Result<Vec<ContainerSummary>> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(Error::docker("listing the pod's containers"))
    }
}

/// What a stop found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The container ran, and Docker stopped it: its `die` event is on its way.
    Now,
    /// The container did not run (or Docker no longer has it): no event comes of the stop.
    Already,
}

/// Docker's state of a container as the pod model sees it.
pub fn observe(inspect: Option<&ContainerInspectResponse>) -> Observed {
    let Some(state) = inspect.and_then(|c| c.state.as_ref()) else {
        return Observed {
            phase: Phase::Gone,
            exit_code: 0,
            oom_killed: false,
            started_at: 0,
            finished_at: 0,
            error: String::new(),
            image_id: String::new(),
            created_at: 0,
        };
    };
    let started_at = state.started_at.as_deref().map(parse_time).unwrap_or(0);
    let finished_at = state.finished_at.as_deref().map(parse_time).unwrap_or(0);
    let running = state.running.unwrap_or(false) || state.restarting.unwrap_or(false);
    let phase = if running {
        Phase::Running
    } else if started_at == 0 && finished_at == 0 {
        Phase::Created
    } else {
        Phase::Exited
    };
    Observed {
        phase,
        exit_code: state.exit_code.unwrap_or(0) as i32,
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at,
        // Docker stamps StartedAt after the process may already have exited, so a short-lived
        // container can seem to finish before it started; nothing finishes before it starts.
        finished_at: if phase == Phase::Exited {
            finished_at.max(started_at)
        } else {
            0
        },
        error: state.error.clone().unwrap_or_default(),
        image_id: inspect.and_then(|c| c.image.clone()).unwrap_or_default(),
        created_at: inspect
            .and_then(|c| c.created.as_deref())
            .map_or(0, parse_time),
    }
}

/// An RFC 3339 time as Docker writes it (UTC, `Z`, up to nanoseconds); `None` if `s` is none.
pub fn docker_time(s: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()
}

/// Nanoseconds since the epoch of an RFC 3339 time from Docker; Docker's zero time
/// (`0001-01-01T00:00:00Z`), anything unparsable and anything past what 64 bits of
/// nanoseconds hold (the year 2262) are 0.
pub fn parse_time(s: &str) -> i64 {
    docker_time(s)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Docker's answer to a start whose runc init died before its preliminary setup (runc 1.1's
/// and later phrasings: "waiting for init preliminary setup", "read init-p: connection reset
/// by peer").
fn runtime_init_lost(e: &bollard::errors::Error) -> bool {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message,
        } => message.contains("init-p: connection reset by peer"),
        _ => false,
    }
}

/// Pod IPs from Docker's network settings, IPv4 first (the kubelet's primary), then IPv6.
pub fn pod_ips(inspect: &bollard::models::ContainerInspectResponse) -> Vec<String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let networks = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref());
    for endpoint in networks.into_iter().flat_map(|n| n.values()) {
        if let Some(ip) = endpoint.ip_address.as_ref().filter(|s| !s.is_empty()) {
            v4.push(ip.clone());
        }
        if let Some(ip) = endpoint
            .global_ipv6_address
            .as_ref()
            .filter(|s| !s.is_empty())
        {
            v6.push(ip.clone());
        }
    }
    v4.extend(v6);
    v4
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_times() {
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), 0);
        assert_eq!(parse_time("1970-01-01T00:00:01.000000005Z"), 1_000_000_005);
        assert_eq!(parse_time("garbage"), 0);
        // Past 2262 the nanoseconds overflow 64 bits: no time rather than a wrapped one.
        assert_eq!(parse_time("2263-01-01T00:00:00Z"), 0);
        assert_eq!(parse_time("9999-12-31T23:59:59.999999999Z"), 0);
        assert!(parse_time("2262-01-01T00:00:00Z") > 0);
    }

    #[test]
    fn only_a_lost_runtime_init_is_started_again() {
        let answer =
            |status_code, message: &str| bollard::errors::Error::DockerResponseServerError {
                status_code,
                message: message.into(),
            };
        assert!(runtime_init_lost(&answer(500, "failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: waiting for init preliminary setup: read init-p: connection reset by peer: unknown")));
        assert!(!runtime_init_lost(&answer(
            500,
            "OCI runtime create failed: exec: \"nosuch\": executable file not found in $PATH"
        )));
        assert!(!runtime_init_lost(&answer(
            404,
            "read init-p: connection reset by peer"
        )));
    }
}
