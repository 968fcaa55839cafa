//! CRI `RuntimeService`: runtime identity, readiness and configuration are answered here;
//! pod- and container-scoped calls go to the pods' shims (see `route`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use dockpod_proto::cri::runtime_service_server::RuntimeService;
use dockpod_proto::cri::*;
use dockpod_proto::cri_stream::{self, Chunks};
use dockpod_proto::engine_api::{self, ApiVersion};
use dockpod_proto::flights::Flights;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::NetworkPlugin;
use crate::docker::Engine;
use crate::error::Result;
use crate::network::Network;
use crate::route::Router;
use crate::state::RootDir;

/// Runtime name the kubelet shows (`kubectl get node -o wide`), as cri-dockerd reports it.
pub const RUNTIME_NAME: &str = "docker";
/// The CRI API version this server implements.
pub const RUNTIME_API_VERSION: &str = "v1";
/// Version of the kubelet-runtime API handshake (`VersionResponse.version`).
const KUBELET_API_VERSION: &str = "0.1.0";

pub struct RuntimeApi {
    engine: Engine,
    root: Arc<RootDir>,
    network: Network,
    sandbox_image: String,
    router: Arc<Router>,
    /// `http://host:port` of the streaming listener.
    stream_base: String,
    /// RunPodSandbox calls running now, by the pod's metadata.
    starting: Flights<String>,
    /// StopPodSandbox and RemovePodSandbox calls running now, by sandbox.
    ending: Flights<()>,
    images: Arc<crate::cri::image::ImageApi>,
    /// The sandbox image's pull, when it is missing: one for every RunPodSandbox that needs it.
    sandbox_pull: Arc<Flights<bool>>,
}

impl RuntimeApi {
    pub fn new(
        engine: Engine,
        root: Arc<RootDir>,
        network: Network,
        sandbox_image: String,
        router: Arc<Router>,
        stream_base: String,
        images: Arc<crate::cri::image::ImageApi>,
    ) -> Self {
        RuntimeApi {
            engine,
            root,
            network,
            sandbox_image,
            router,
            stream_base,
            starting: Flights::default(),
            ending: Flights::default(),
            images,
            sandbox_pull: Arc::default(),
        }
    }

    /// Pulls the sandbox image if Docker does not have it; a burst of RunPodSandbox on a node
    /// without it waits for one pull. A future of its own, to run beside the start of the
    /// pod's shim.
    fn sandbox_image_ready(
        &self,
        pod: String,
    ) -> impl std::future::Future<Output = Result<(), Status>> + Send + 'static {
        let (images, image) = (self.images.clone(), self.sandbox_image.clone());
        let flights = self.sandbox_pull.clone();
        async move {
            let key = format!("sandbox-image/{image}");
            let pull = {
                let image = image.clone();
                async move {
                    images
                        .ensure_sandbox_image(&image)
                        .await
                        .map_err(Status::from)
                }
            };
            if flights.run(key, pull).await? {
                tracing::info!(%image, %pod, "pulled the missing sandbox image");
            }
            Ok(())
        }
    }

    /// The absolute URL of a shim's session path (a relative one breaks the kubelet's proxy).
    fn stream_url(&self, path: String) -> String {
        format!("{}{path}", self.stream_base)
    }

    /// From the daemon's facts: Docker is not asked (the kubelet asks on every connection).
    async fn version(&self) -> Result<VersionResponse> {
        let facts = self.engine.facts().await?;
        Ok(VersionResponse {
            version: KUBELET_API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: facts.version.clone(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        })
    }

    async fn status(&self, verbose: bool) -> StatusResponse {
        let runtime = match self.engine.confirm_up().await {
            Ok(()) => RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                ..Default::default()
            },
            Err(e) => RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: false,
                reason: "DockerDaemonNotReady".into(),
                message: e.to_string(),
            },
        };
        let readiness = self.network.readiness(&self.engine).await;
        let network = RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: readiness.ready,
            reason: readiness.reason.clone(),
            message: if readiness.ready {
                String::new()
            } else {
                readiness.message.clone()
            },
        };
        let info = if verbose {
            let details = serde_json::json!({
                "runtime": "dockpod",
                "version": env!("CARGO_PKG_VERSION"),
                // The CRI release the bindings come from: fields newer than it are not read.
                "criAPIVersion": dockpod_proto::cri::API_VERSION,
                "instance": self.root.instance_id(),
                "dockerEndpoint": self.engine.endpoint(),
                "dockerAPIVersion": self.engine.api_version().map(|v| v.to_string()),
                "rootDirectory": self.root.path(),
                "runDirectory": self.router.supervisor.run_dir(),
                "sandboxImage": self.sandbox_image,
                "networkPlugin": match self.network.plugin {
                    NetworkPlugin::DockerBridge => "docker-bridge",
                    NetworkPlugin::Cni => "cni",
                },
                "cniConfDir": self.network.conf_dir,
                "network": readiness.message,
                "podCIDR": self.root.runtime_config().pod_cidr,
            });
            HashMap::from([("info".to_string(), details.to_string())])
        } else {
            HashMap::new()
        };
        StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers: self.runtime_handlers().await,
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: false,
                // A pod of its own user namespace is refused (see `validate::user_namespace`).
                user_namespaces_host_network: false,
            }),
        }
    }

    /// The default handler and each of the engine's runtimes (RuntimeClass handlers), with no
    /// feature claimed that Docker cannot deliver through it. A name the kubelet could not
    /// report (node status takes DNS labels only, and Docker 28 also lists its runtimes as
    /// `io.containerd.runc.v2`) is left out.
    async fn runtime_handlers(&self) -> Vec<RuntimeHandler> {
        let rro = self.recursive_read_only_mounts().await;
        let facts = self.engine.facts().await.ok();
        let runtimes = facts
            .as_ref()
            .map(|f| f.runtimes.clone())
            .unwrap_or_default();
        let default = facts.map(|f| f.default_runtime.clone()).unwrap_or_default();
        std::iter::once(String::new())
            .chain(runtimes.into_iter().filter(|r| is_dns_label(r)))
            .map(|name| {
                // Docker asks runc for `rro`; another runtime is not claimed to have it.
                let runc = if name.is_empty() { &default } else { &name } == "runc";
                RuntimeHandler {
                    features: Some(RuntimeHandlerFeatures {
                        recursive_read_only_mounts: rro && runc,
                        user_namespaces: false,
                    }),
                    name,
                }
            })
            .collect()
    }

    /// Recursive read-only mounts need the engine to take them (API 1.44) and the kernel to
    /// make them (`mount_setattr`); the runc of every engine with API 1.44 has `rro`.
    async fn recursive_read_only_mounts(&self) -> bool {
        // Waits for the daemon's first answer: before it, the client's version is bollard's
        // own, not the daemon's.
        let negotiated = self.engine.facts().await.ok().map(|facts| facts.api);
        let api = negotiated.map(|v| ApiVersion::new(v.major_version, v.minor_version));
        api.is_some_and(ApiVersion::recursive_read_only_binds)
            && engine_api::kernel_has_mount_setattr(&engine_api::kernel_release())
    }

    async fn runtime_config(&self) -> Result<RuntimeConfigResponse> {
        let driver = match self.engine.facts().await?.cgroup_driver.as_str() {
            "systemd" => CgroupDriver::Systemd,
            _ => CgroupDriver::Cgroupfs,
        };
        Ok(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        })
    }
}

/// An RFC 1123 label, as Kubernetes takes a RuntimeClass handler's name.
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        self.version()
            .instrument(tracing::info_span!("Version"))
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let verbose = request.into_inner().verbose;
        Ok(Response::new(
            self.status(verbose)
                .instrument(tracing::info_span!("Status"))
                .await,
        ))
    }

    async fn runtime_config(
        &self,
        _request: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        self.runtime_config()
            .instrument(tracing::info_span!("RuntimeConfig"))
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let pod_cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        let _span = tracing::info_span!("UpdateRuntimeConfig", %pod_cidr).entered();
        self.root.set_pod_cidr(&pod_cidr)?;
        tracing::info!("recorded pod CIDR");
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let req = r.into_inner();
        let meta = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.clone())
            .unwrap_or_default();
        let pod = format!("{}/{}", meta.namespace, meta.name);
        // Nothing is pulled for a request that would be refused.
        let config = req
            .config
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("pod sandbox config is missing"))?;
        dockpod_proto::validate::sandbox_config(config)
            .map_err(|e| Status::from(crate::error::Error::from(e)))?;
        if !req.runtime_handler.is_empty() {
            self.engine
                .facts()
                .await?
                .check_handler(&req.runtime_handler)?;
        }
        // To its end in a task of its own: a kubelet that gives up at its deadline must not
        // leave a shim running a sandbox that no registry entry knows. Its retry with the same
        // metadata while the first run goes on gets that run's sandbox, not a second shim
        // whose create would meet the first one's container name.
        let key = format!(
            "RunPodSandbox/{}/{}/{}/{}",
            meta.namespace, meta.name, meta.uid, meta.attempt
        );
        let router = self.router.clone();
        // Made sure of while the pod's shim starts: the shim is handed the request only once
        // the image is there.
        let image = self.sandbox_image_ready(pod.clone());
        let run = async move { router.run_pod_sandbox(req, image).await }
            .instrument(tracing::info_span!("RunPodSandbox", %pod));
        let id = self.starting.run(key, run).await?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        let router = self.router.clone();
        let key = format!("StopPodSandbox/{id}");
        let span = tracing::info_span!("StopPodSandbox", sandbox = %id);
        let stop = async move { router.stop_pod_sandbox(&id).await };
        self.ending.run(key, stop.instrument(span)).await?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        // To its end: a removal cut after the shim answered would leave the registry serving
        // a pod that is gone.
        let router = self.router.clone();
        let key = format!("RemovePodSandbox/{id}");
        let span = tracing::info_span!("RemovePodSandbox", sandbox = %id);
        let remove = async move { router.remove_pod_sandbox(&id).await };
        self.ending.run(key, remove.instrument(span)).await?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let req = r.into_inner();
        let span = tracing::debug_span!("PodSandboxStatus", sandbox = %req.pod_sandbox_id);
        Ok(Response::new(
            self.router.pod_sandbox_status(req).instrument(span).await?,
        ))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let items = self.router.list_pod_sandbox(r.into_inner().filter).await;
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        r: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let req = r.into_inner();
        let span = tracing::info_span!("CreateContainer", sandbox = %req.pod_sandbox_id);
        let id = self.router.create_container(req).instrument(span).await?;
        Ok(Response::new(CreateContainerResponse { container_id: id }))
    }

    async fn start_container(
        &self,
        r: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = r.into_inner().container_id;
        self.router
            .start_container(&id)
            .instrument(tracing::info_span!("StartContainer", container = %id))
            .await?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let req = r.into_inner();
        self.router
            .stop_container(&req.container_id, req.timeout)
            .instrument(tracing::info_span!("StopContainer", container = %req.container_id))
            .await?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let id = r.into_inner().container_id;
        self.router
            .remove_container(&id)
            .instrument(tracing::info_span!("RemoveContainer", container = %id))
            .await?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        r: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let containers = self.router.list_containers(r.into_inner().filter).await;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        r: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let req = r.into_inner();
        let span = tracing::debug_span!("ContainerStatus", container = %req.container_id);
        Ok(Response::new(
            self.router.container_status(req).instrument(span).await?,
        ))
    }

    async fn update_container_resources(
        &self,
        r: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let req = r.into_inner();
        let span = tracing::info_span!("UpdateContainerResources", container = %req.container_id);
        self.router
            .update_container_resources(req)
            .instrument(span)
            .await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        let id = r.into_inner().container_id;
        self.router
            .reopen_container_log(&id)
            .instrument(tracing::info_span!("ReopenContainerLog", container = %id))
            .await?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        r: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let req = r.into_inner();
        let span = tracing::info_span!("ExecSync", container = %req.container_id);
        Ok(Response::new(
            self.router.exec_sync(req).instrument(span).await?,
        ))
    }

    async fn exec(&self, r: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let path = self.router.exec(r.into_inner()).await?;
        Ok(Response::new(ExecResponse {
            url: self.stream_url(path),
        }))
    }

    async fn attach(&self, r: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        let path = self.router.attach(r.into_inner()).await?;
        Ok(Response::new(AttachResponse {
            url: self.stream_url(path),
        }))
    }

    async fn port_forward(
        &self,
        r: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        let path = self.router.port_forward(r.into_inner()).await?;
        Ok(Response::new(PortForwardResponse {
            url: self.stream_url(path),
        }))
    }

    async fn container_stats(
        &self,
        r: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        Ok(Response::new(
            self.router.container_stats(r.into_inner()).await?,
        ))
    }

    async fn list_container_stats(
        &self,
        r: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let stats = self
            .router
            .list_container_stats(r.into_inner().filter)
            .await;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        Ok(Response::new(
            self.router.pod_sandbox_stats(r.into_inner()).await?,
        ))
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let stats = self
            .router
            .list_pod_sandbox_stats(r.into_inner().filter)
            .await;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    async fn checkpoint_container(
        &self,
        _r: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        // Docker's checkpoints need CRIU and an experimental daemon; the CRI's checkpoint is a
        // different archive format. Neither cri-dockerd nor dockpod offers it.
        Err(Status::unimplemented(
            "CheckpointContainer is not supported by the docker runtime",
        ))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _r: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        // A subscriber that falls behind loses the oldest events; the kubelet's relist covers
        // what it missed.
        let stream = self.router.supervisor.events().stream().map(Ok);
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
        let pod_metrics = self.router.list_pod_sandbox_metrics().await;
        Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        r: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        let req = r.into_inner();
        let span = tracing::info_span!("UpdatePodSandboxResources", sandbox = %req.pod_sandbox_id);
        self.router
            .update_pod_sandbox_resources(req)
            .instrument(span)
            .await?;
        Ok(Response::new(UpdatePodSandboxResourcesResponse {}))
    }

    // The streaming lists: the unary lists' answers, in chunks (`cri_stream`).

    type StreamPodSandboxesStream = Chunks<StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        r: Request<StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let items = self.router.list_pod_sandbox(r.into_inner().filter).await;
        Ok(Response::new(cri_stream::stream(items, |pod_sandboxes| {
            StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }

    type StreamContainersStream = Chunks<StreamContainersResponse>;

    async fn stream_containers(
        &self,
        r: Request<StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let containers = self.router.list_containers(r.into_inner().filter).await;
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
        let stats = self
            .router
            .list_container_stats(r.into_inner().filter)
            .await;
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
        let stats = self
            .router
            .list_pod_sandbox_stats(r.into_inner().filter)
            .await;
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
        let metrics = self.router.list_pod_sandbox_metrics().await;
        Ok(Response::new(cri_stream::stream(
            metrics,
            |pod_sandbox_metrics| StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::is_dns_label;

    #[test]
    fn handlers_are_dns_labels() {
        for good in ["runc", "crun", "kata-qemu", "runsc", "a1"] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in [
            "",
            "io.containerd.runc.v2",
            "Runc",
            "-x",
            "x-",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
