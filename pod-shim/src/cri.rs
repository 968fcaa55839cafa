//! The pod-scoped part of `runtime.v1.RuntimeService`, served by the shim on its own socket:
//! the front forwards the kubelet's requests unchanged, and `crictl` pointed at a shim's socket
//! inspects just that pod. Node-wide calls are the front's and answer `Unimplemented` here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dockpod_proto::cri::runtime_service_server::RuntimeService;
use dockpod_proto::cri::*;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use dockpod_proto::cri_stream::{self, Chunks};
use dockpod_proto::flights::Flights;

use crate::error::Error;
use crate::lifecycle::Pod;

pub struct ShimRuntime {
    pub pod: Arc<Pod>,
    pub streaming: Arc<crate::streaming::Streaming>,
    pub usage: Arc<crate::cri_stats::Usage>,
    /// Mutating calls that answer an ID (RunPodSandbox, CreateContainer), by what makes two
    /// calls the same operation.
    pub making: Flights<String>,
    /// The other mutating calls.
    pub changing: Flights<()>,
}

/// A streaming session's URL path, or why none was made.
fn session_path(made: std::io::Result<String>) -> Result<String, Status> {
    made.map_err(|e| Status::resource_exhausted(format!("no streaming session: {e}")))
}

fn front_only<T>(call: &'static str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{call} is answered by shim-manager, not by a pod's shim"
    )))
}

/// The Kubernetes rules for the streams of an exec or attach.
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(Error::InvalidArgument(
            "one of stdin, stdout or stderr must be requested".into(),
        )
        .into());
    }
    if tty && stderr {
        return Err(
            Error::InvalidArgument("tty and stderr cannot both be requested".into()).into(),
        );
    }
    Ok(())
}

/// A pod operation as a flight's run: its error becomes the gRPC status.
async fn op<T>(
    run: impl std::future::Future<Output = crate::error::Result<T>>,
) -> Result<T, Status> {
    run.await.map_err(Status::from)
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for ShimRuntime {
    async fn version(
        &self,
        _r: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        front_only("Version")
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let req = r.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("pod sandbox config is missing"))?;
        let span = tracing::info_span!("RunPodSandbox", pod = ?config.metadata.as_ref().map(|m| format!("{}/{}", m.namespace, m.name)));
        let pod = self.pod.clone();
        let handler = req.runtime_handler;
        // A shim runs one sandbox: every RunPodSandbox it is sent is the same operation.
        let run = op(async move { pod.run_sandbox(config, handler).await }).instrument(span);
        let id = self.making.run("RunPodSandbox".into(), run).await?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        let pod = self.pod.clone();
        let stop = op(async move { pod.stop_sandbox().await })
            .instrument(tracing::info_span!("StopPodSandbox", sandbox = %id));
        self.changing.run("StopPodSandbox".into(), stop).await?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        let pod = self.pod.clone();
        let remove = op(async move { pod.remove_sandbox().await })
            .instrument(tracing::info_span!("RemovePodSandbox", sandbox = %id));
        self.changing.run("RemovePodSandbox".into(), remove).await?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let req = r.into_inner();
        // From the record alone: the kubelet asks for every pod every second, and Docker's
        // events (and a resync after any gap in them) keep the record current.
        let record = self.pod.reported();
        if record.sandbox_id.is_empty()
            || !record.sandbox_id.starts_with(&req.pod_sandbox_id)
            || req.pod_sandbox_id.is_empty()
        {
            return Err(Status::not_found(format!(
                "pod sandbox {} not found",
                req.pod_sandbox_id
            )));
        }
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let mut details = serde_json::json!({
                "shimPid": std::process::id(),
                "shimId": self.pod.shim_id,
                "image": self.pod.sandbox_image,
                "containers": record.containers.len(),
            });
            // The last CNI CHECK, not a new one: see `NetworkCheck`.
            if !record.network.is_empty() {
                details["cniNetwork"] = record.network.clone().into();
                match self.pod.last_network_check() {
                    Some(check) => {
                        details["cniResult"] = check.result.unwrap_or_default();
                        details["cniCheck"] = check.outcome.err().unwrap_or("ok".into()).into();
                        details["cniCheckedAt"] = check.at.into();
                    }
                    None => {
                        details["cniCheck"] =
                            "not checked since the network was set up (`shim-manager check` runs CNI CHECK)".into();
                    }
                }
            }
            info.insert("info".to_string(), details.to_string());
        }
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(record.status()),
            info,
            containers_statuses: record.containers.values().map(|c| c.status()).collect(),
            timestamp: crate::docker::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let filter = r.into_inner().filter.unwrap_or_default();
        let record = self.pod.reported();
        let pod = record.to_cri();
        let items = if !record.sandbox_id.is_empty()
            && dockpod_proto::filters::pod_matches(&pod, &filter)
        {
            vec![pod]
        } else {
            vec![]
        };
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        r: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let req = r.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("container config is missing"))?;
        let span = tracing::info_span!("CreateContainer", sandbox = %req.pod_sandbox_id, container = ?config.metadata.as_ref().map(|m| m.name.clone()));
        let pod = self.pod.clone();
        let sandbox = req.pod_sandbox_id;
        // The CRI names a container by its metadata: the same name and attempt in the same
        // sandbox is the same container (the kubelet's retry after its deadline).
        let meta = config.metadata.clone().unwrap_or_default();
        let key = format!("CreateContainer/{sandbox}/{}/{}", meta.name, meta.attempt);
        let create = op(async move { pod.create_container(&sandbox, config).await });
        let id = self.making.run(key, create.instrument(span)).await?;
        Ok(Response::new(CreateContainerResponse { container_id: id }))
    }

    async fn start_container(
        &self,
        r: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = r.into_inner().container_id;
        let pod = self.pod.clone();
        let span = tracing::info_span!("StartContainer", container = %id);
        let key = format!("StartContainer/{id}");
        let start = op(async move { pod.start_container(&id).await });
        self.changing.run(key, start.instrument(span)).await?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let req = r.into_inner();
        let pod = self.pod.clone();
        let span = tracing::info_span!("StopContainer", container = %req.container_id);
        // A stop with another grace period is another operation: a kill (grace 0) must not
        // wait out a running stop's longer grace.
        let key = format!("StopContainer/{}/{}", req.container_id, req.timeout);
        let stop = op(async move { pod.stop_container(&req.container_id, req.timeout).await });
        self.changing.run(key, stop.instrument(span)).await?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let id = r.into_inner().container_id;
        let pod = self.pod.clone();
        let span = tracing::info_span!("RemoveContainer", container = %id);
        let key = format!("RemoveContainer/{id}");
        let remove = op(async move { pod.remove_container(&id).await });
        self.changing.run(key, remove.instrument(span)).await?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        r: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let filter = r.into_inner().filter.unwrap_or_default();
        let record = self.pod.reported();
        let containers = record
            .containers
            .values()
            .map(|c| c.to_cri(&record.sandbox_id))
            .filter(|c| dockpod_proto::filters::container_matches(c, &filter))
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        r: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let req = r.into_inner();
        let (status, info) = self
            .pod
            .container_status(&req.container_id, req.verbose)
            .await?;
        Ok(Response::new(ContainerStatusResponse {
            status: Some(status),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        r: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let req = r.into_inner();
        self.pod
            .update_resources(&req.container_id, req.linux)
            .instrument(
                tracing::info_span!("UpdateContainerResources", container = %req.container_id),
            )
            .await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        let id = r.into_inner().container_id;
        self.pod
            .reopen_log(&id)
            .instrument(tracing::info_span!("ReopenContainerLog", container = %id))
            .await?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        r: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let req = r.into_inner();
        let id = self.pod.running(&req.container_id)?;
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        let out = crate::exec::exec_sync(&self.pod.engine, &id, req.cmd, timeout)
            .instrument(tracing::info_span!("ExecSync", container = %id))
            .await?;
        Ok(Response::new(ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(&self, r: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let mut req = r.into_inner();
        if req.cmd.is_empty() {
            return Err(Error::InvalidArgument("exec command is empty".into()).into());
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        self.pod.refresh_container(&req.container_id).await.ok();
        req.container_id = self.pod.running(&req.container_id)?;
        let url = session_path(self.streaming.exec(req))?;
        Ok(Response::new(ExecResponse { url }))
    }

    async fn attach(&self, r: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        let mut req = r.into_inner();
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        self.pod.refresh_container(&req.container_id).await.ok();
        req.container_id = self.pod.running(&req.container_id)?;
        let url = session_path(self.streaming.attach(req))?;
        Ok(Response::new(AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        r: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        let req = r.into_inner();
        self.pod.refresh_sandbox().await?;
        let record = self.pod.snapshot();
        if req.pod_sandbox_id.is_empty() || !record.sandbox_id.starts_with(&req.pod_sandbox_id) {
            return Err(Status::not_found(format!(
                "pod sandbox {} not found",
                req.pod_sandbox_id
            )));
        }
        if !record.ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                record.sandbox_id
            ))
            .into());
        }
        if let Some(bad) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::InvalidArgument(format!("port {bad} is out of range")).into());
        }
        let url = session_path(self.streaming.port_forward(req))?;
        Ok(Response::new(PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        r: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let id = r.into_inner().container_id;
        let stats = self.usage.container_stats(&self.pod, &id).await?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(
        &self,
        r: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let filter = r.into_inner().filter.unwrap_or_default();
        let stats = self.usage.list_container_stats(&self.pod, &filter).await;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        let stats = self.usage.pod_stats(&self.pod, &id).await?;
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let filter = r.into_inner().filter.unwrap_or_default();
        let stats = self.usage.list_pod_stats(&self.pod, &filter).await?;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        _r: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        front_only("UpdateRuntimeConfig")
    }

    async fn status(&self, _r: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        front_only("Status")
    }

    async fn checkpoint_container(
        &self,
        _r: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented(
            "CheckpointContainer is not supported by the docker runtime",
        ))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _r: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        // A subscriber that falls behind by more than the buffer loses the oldest events and
        // carries on; the kubelet's relist covers what it missed.
        let closing = self.pod.closing.subscribe();
        let (early, receiver) = self.pod.subscribe();
        let stream = tokio_stream::iter(early.into_iter().map(Ok)).chain(
            dockpod_proto::closing_stream::until_closing(receiver, closing)
                .map(|event| Ok(Arc::unwrap_or_clone(event))),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: dockpod_proto::metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        let pod_metrics = self.usage.pod_metrics(&self.pod).await?;
        Ok(Response::new(ListPodSandboxMetricsResponse {
            pod_metrics: pod_metrics.into_iter().collect(),
        }))
    }

    async fn runtime_config(
        &self,
        _r: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        front_only("RuntimeConfig")
    }

    async fn update_pod_sandbox_resources(
        &self,
        r: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        let req = r.into_inner();
        let span = tracing::info_span!("UpdatePodSandboxResources", sandbox = %req.pod_sandbox_id);
        let pod = self.pod.clone();
        let update = op(async move {
            pod.update_sandbox_resources(&req.pod_sandbox_id, req.overhead, req.resources)
                .await
        });
        self.changing
            .run("UpdatePodSandboxResources".into(), update.instrument(span))
            .await?;
        Ok(Response::new(UpdatePodSandboxResourcesResponse {}))
    }

    // The streaming lists: this pod's unary answer, in chunks.

    type StreamPodSandboxesStream = Chunks<StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        r: Request<StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let filter = r.into_inner().filter;
        let items = self
            .list_pod_sandbox(Request::new(ListPodSandboxRequest { filter }))
            .await?
            .into_inner()
            .items;
        Ok(Response::new(cri_stream::stream(items, |pod_sandboxes| {
            StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }

    type StreamContainersStream = Chunks<StreamContainersResponse>;

    async fn stream_containers(
        &self,
        r: Request<StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let filter = r.into_inner().filter;
        let containers = self
            .list_containers(Request::new(ListContainersRequest { filter }))
            .await?
            .into_inner()
            .containers;
        Ok(Response::new(cri_stream::stream(
            containers,
            |containers| StreamContainersResponse { containers },
        )))
    }

    type StreamContainerStatsStream = Chunks<StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        r: Request<StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let filter = r.into_inner().filter;
        let stats = self
            .list_container_stats(Request::new(ListContainerStatsRequest { filter }))
            .await?
            .into_inner()
            .stats;
        Ok(Response::new(cri_stream::stream(
            stats,
            |container_stats| StreamContainerStatsResponse { container_stats },
        )))
    }

    type StreamPodSandboxStatsStream = Chunks<StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let filter = r.into_inner().filter;
        let stats = self
            .list_pod_sandbox_stats(Request::new(ListPodSandboxStatsRequest { filter }))
            .await?
            .into_inner()
            .stats;
        Ok(Response::new(cri_stream::stream(
            stats,
            |pod_sandbox_stats| StreamPodSandboxStatsResponse { pod_sandbox_stats },
        )))
    }

    type StreamPodSandboxMetricsStream = Chunks<StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _r: Request<StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let metrics = self
            .list_pod_sandbox_metrics(Request::new(ListPodSandboxMetricsRequest {}))
            .await?
            .into_inner()
            .pod_metrics;
        Ok(Response::new(cri_stream::stream(
            metrics,
            |pod_sandbox_metrics| StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )))
    }
}
