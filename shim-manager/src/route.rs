//! The router: pod-scoped CRI calls go to the pod's own shim, as the supervisor's registry
//! names it. RunPodSandbox and RemovePodSandbox, which change which shims exist, are the
//! supervisor's; every other call for a pod or one of its containers is forwarded to its
//! shim. ListPodSandbox and ListContainers answer from the pods' state files (`listing`);
//! the other node-wide lists, and those two for a pod whose file cannot be read, ask every
//! shim at once, each with a short deadline, and answer for a shim that is late from Docker's
//! labels instead. The router writes nothing of its own.

use std::sync::Arc;
use std::time::Duration;

use dockpod_proto::cri::*;
use futures_util::future::join_all;
use tonic::Status;

use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::fallback::PodView;
use crate::shim::ShimHandle;
use crate::supervise::Supervisor;

/// How long one shim may take to answer its part of a node-wide list.
const LIST_DEADLINE: Duration = Duration::from_millis(500);
/// How long CreateContainer waits for its container to be indexed from the shim's event
/// (which the shim sends before it answers, so it is there at once but for a loaded front).
const INDEX_WAIT: Duration = Duration::from_secs(1);

pub struct Router {
    pub supervisor: Arc<Supervisor>,
    pub engine: Engine,
    pub listings: crate::listing::Listings,
}

impl Router {
    /// RunPodSandbox once `image_ready` (the sandbox image made sure of) has succeeded, which
    /// runs beside the start of the pod's shim.
    pub async fn run_pod_sandbox(
        &self,
        req: RunPodSandboxRequest,
        image_ready: impl std::future::Future<Output = Result<(), Status>>,
    ) -> Result<String, Status> {
        let config = req
            .config
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("pod sandbox config is missing".into()))?;
        let meta = dockpod_proto::validate::sandbox_config(config).map_err(Error::from)?;
        let display = format!("{}/{}", meta.namespace, meta.name);
        self.supervisor.run_pod(&display, req, image_ready).await
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let Some(shim) = self.supervisor.registry().pod(id) else {
            return Ok(());
        };
        shim.runtime()
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: shim.sandbox_id.clone(),
            })
            .await?;
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        self.supervisor.remove_pod(id).await
    }

    fn pod(&self, id: &str) -> Result<Arc<ShimHandle>, Status> {
        dockpod_proto::validate::id("pod sandbox", id).map_err(Error::from)?;
        self.supervisor
            .registry()
            .pod(id)
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id} not found")))
    }

    fn container(&self, id: &str) -> Result<Option<(String, Arc<ShimHandle>)>, Status> {
        dockpod_proto::validate::id("container", id).map_err(Error::from)?;
        Ok(self.supervisor.registry().container(id))
    }

    /// The shim of one pod, or every shim when no pod is named (a list filter's pod).
    fn shims_for(&self, pod_sandbox_id: &str) -> Vec<Arc<ShimHandle>> {
        if pod_sandbox_id.is_empty() {
            self.supervisor.registry().pods()
        } else {
            self.supervisor
                .registry()
                .pod(pod_sandbox_id)
                .into_iter()
                .collect()
        }
    }

    async fn require_container(&self, id: &str) -> Result<(String, Arc<ShimHandle>), Status> {
        self.find_container(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("container {id} not found")))
    }

    pub async fn pod_sandbox_status(
        &self,
        req: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse, Status> {
        let shim = self.pod(&req.pod_sandbox_id)?;
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: shim.sandbox_id.clone(),
            ..req
        };
        Ok(shim.runtime().pod_sandbox_status(req).await?.into_inner())
    }

    pub async fn create_container(&self, req: CreateContainerRequest) -> Result<String, Status> {
        let shim = self.pod(&req.pod_sandbox_id)?;
        let req = CreateContainerRequest {
            pod_sandbox_id: shim.sandbox_id.clone(),
            ..req
        };
        let id = shim
            .runtime()
            .create_container(req)
            .await?
            .into_inner()
            .container_id;
        // The shim announced the create before it answered; once the supervisor has indexed
        // it, the caller's next call finds the container without asking Docker.
        if !self
            .supervisor
            .registry()
            .await_container(&id, INDEX_WAIT)
            .await
        {
            tracing::debug!(container = %id, "created container not indexed yet; calls find it through Docker meanwhile");
        }
        Ok(id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        let (id, shim) = self.require_container(id).await?;
        shim.runtime()
            .start_container(StartContainerRequest { container_id: id })
            .await?;
        Ok(())
    }

    /// The container's pod from the index, or on a miss from Docker's own labels. The index
    /// is rebuilt from the shims' answers and may lag them: a container whose create was
    /// answered to a front that died meanwhile is known to its shim and to Docker only, and
    /// every call naming it must still reach its shim. A container none finds must be one
    /// Docker confirms is not this instance's.
    async fn find_container(&self, id: &str) -> Result<Option<(String, Arc<ShimHandle>)>, Status> {
        if let Some(found) = self.container(id)? {
            return Ok(Some(found));
        }
        let Some(inspect) = self.engine.inspect_container(id).await? else {
            return Ok(None);
        };
        let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
        let Some(sandbox) = labels.get(dockpod_proto::labels::SANDBOX_ID) else {
            return Ok(None);
        };
        let (Some(cid), Some(shim)) = (inspect.id, self.supervisor.registry().pod(sandbox)) else {
            return Ok(None);
        };
        Ok(Some((cid, shim)))
    }

    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let Some((id, shim)) = self.find_container(id).await? else {
            return Ok(());
        };
        shim.runtime()
            .stop_container(StopContainerRequest {
                container_id: id,
                timeout,
            })
            .await?;
        Ok(())
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), Status> {
        let Some((id, shim)) = self.find_container(id).await? else {
            return Ok(());
        };
        shim.runtime()
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await?;
        Ok(())
    }

    pub async fn container_status(
        &self,
        req: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse, Status> {
        let (id, shim) = self.require_container(&req.container_id).await?;
        let req = ContainerStatusRequest {
            container_id: id,
            ..req
        };
        Ok(shim.runtime().container_status(req).await?.into_inner())
    }

    pub async fn update_container_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<(), Status> {
        let (id, shim) = self.require_container(&req.container_id).await?;
        let req = UpdateContainerResourcesRequest {
            container_id: id,
            ..req
        };
        shim.runtime().update_container_resources(req).await?;
        Ok(())
    }

    pub async fn update_pod_sandbox_resources(
        &self,
        req: UpdatePodSandboxResourcesRequest,
    ) -> Result<(), Status> {
        let shim = self.pod(&req.pod_sandbox_id)?;
        let req = UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: shim.sandbox_id.clone(),
            ..req
        };
        shim.runtime().update_pod_sandbox_resources(req).await?;
        Ok(())
    }

    pub async fn reopen_container_log(&self, id: &str) -> Result<(), Status> {
        let (id, shim) = self.require_container(id).await?;
        shim.runtime()
            .reopen_container_log(ReopenContainerLogRequest { container_id: id })
            .await?;
        Ok(())
    }

    /// The shim's URL path for an exec session.
    pub async fn exec(&self, req: ExecRequest) -> Result<String, Status> {
        let (id, shim) = self.require_container(&req.container_id).await?;
        let req = ExecRequest {
            container_id: id,
            ..req
        };
        Ok(shim.runtime().exec(req).await?.into_inner().url)
    }

    pub async fn attach(&self, req: AttachRequest) -> Result<String, Status> {
        let (id, shim) = self.require_container(&req.container_id).await?;
        let req = AttachRequest {
            container_id: id,
            ..req
        };
        Ok(shim.runtime().attach(req).await?.into_inner().url)
    }

    pub async fn port_forward(&self, req: PortForwardRequest) -> Result<String, Status> {
        let shim = self.pod(&req.pod_sandbox_id)?;
        let req = PortForwardRequest {
            pod_sandbox_id: shim.sandbox_id.clone(),
            ..req
        };
        Ok(shim.runtime().port_forward(req).await?.into_inner().url)
    }

    pub async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
        let (id, shim) = self.require_container(&req.container_id).await?;
        let req = ExecSyncRequest {
            container_id: id,
            ..req
        };
        Ok(shim.runtime().exec_sync(req).await?.into_inner())
    }

    pub async fn container_stats(
        &self,
        req: ContainerStatsRequest,
    ) -> Result<ContainerStatsResponse, Status> {
        let (id, shim) = self.require_container(&req.container_id).await?;
        let req = ContainerStatsRequest { container_id: id };
        Ok(shim.runtime().container_stats(req).await?.into_inner())
    }

    pub async fn pod_sandbox_stats(
        &self,
        req: PodSandboxStatsRequest,
    ) -> Result<PodSandboxStatsResponse, Status> {
        let shim = self.pod(&req.pod_sandbox_id)?;
        let req = PodSandboxStatsRequest {
            pod_sandbox_id: shim.sandbox_id.clone(),
        };
        Ok(shim.runtime().pod_sandbox_stats(req).await?.into_inner())
    }

    /// Stats of every container matching `filter`, from all shims at once; a late shim's
    /// containers are left out (Docker has no cheap answer to stand in).
    pub async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Vec<ContainerStats> {
        let filter = filter.unwrap_or_default();
        let shims = self.shims_for(&filter.pod_sandbox_id);
        let ask = |shim: Arc<ShimHandle>| {
            let req = ListContainerStatsRequest {
                filter: Some(filter.clone()),
            };
            async move {
                Ok(shim
                    .runtime()
                    .list_container_stats(req)
                    .await?
                    .into_inner()
                    .stats)
            }
        };
        self.fan_out("ListContainerStats", shims, ask, |_| Vec::new())
            .await
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Vec<PodSandboxStats> {
        let filter = filter.unwrap_or_default();
        let ask = |shim: Arc<ShimHandle>| {
            let req = ListPodSandboxStatsRequest {
                filter: Some(filter.clone()),
            };
            async move {
                Ok(shim
                    .runtime()
                    .list_pod_sandbox_stats(req)
                    .await?
                    .into_inner()
                    .stats)
            }
        };
        self.fan_out(
            "ListPodSandboxStats",
            self.supervisor.registry().pods(),
            ask,
            |_| Vec::new(),
        )
        .await
    }

    pub async fn list_pod_sandbox_metrics(&self) -> Vec<PodSandboxMetrics> {
        let ask = |shim: Arc<ShimHandle>| async move {
            Ok(shim
                .runtime()
                .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
                .await?
                .into_inner()
                .pod_metrics)
        };
        self.fan_out(
            "ListPodSandboxMetrics",
            self.supervisor.registry().pods(),
            ask,
            |_| Vec::new(),
        )
        .await
    }

    /// Every pod matching `filter`: from the pods' state files, and from the shims of those
    /// whose file cannot be read.
    pub async fn list_pod_sandbox(&self, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
        let filter = filter.unwrap_or_default();
        let (listed, unread) = self.listed(self.supervisor.registry().pods());
        let mut items: Vec<PodSandbox> = listed
            .iter()
            .map(|l| l.pod.clone())
            .filter(|p| dockpod_proto::filters::pod_matches(p, &filter))
            .collect();
        if unread.is_empty() {
            return items;
        }
        let ask = |shim: Arc<ShimHandle>| {
            let req = ListPodSandboxRequest {
                filter: Some(filter.clone()),
            };
            async move {
                Ok(shim
                    .runtime()
                    .list_pod_sandbox(req)
                    .await?
                    .into_inner()
                    .items)
            }
        };
        let from_docker = |view: PodView| {
            view.pods
                .into_iter()
                .filter(|p| dockpod_proto::filters::pod_matches(p, &filter))
                .collect()
        };
        items.extend(
            self.fan_out("ListPodSandbox", unread, ask, from_docker)
                .await,
        );
        items
    }

    /// Every container matching `filter` (or just the one pod's), as `list_pod_sandbox`
    /// finds them.
    pub async fn list_containers(&self, filter: Option<ContainerFilter>) -> Vec<Container> {
        let filter = filter.unwrap_or_default();
        let (listed, unread) = self.listed(self.shims_for(&filter.pod_sandbox_id));
        let mut containers: Vec<Container> = listed
            .iter()
            .flat_map(|l| l.containers.iter())
            .filter(|c| dockpod_proto::filters::container_matches(c, &filter))
            .cloned()
            .collect();
        if unread.is_empty() {
            return containers;
        }
        let ask = |shim: Arc<ShimHandle>| {
            let req = ListContainersRequest {
                filter: Some(filter.clone()),
            };
            async move {
                Ok(shim
                    .runtime()
                    .list_containers(req)
                    .await?
                    .into_inner()
                    .containers)
            }
        };
        let from_docker = |view: PodView| {
            view.containers
                .into_iter()
                .filter(|c| dockpod_proto::filters::container_matches(c, &filter))
                .collect()
        };
        containers.extend(
            self.fan_out("ListContainers", unread, ask, from_docker)
                .await,
        );
        containers
    }

    /// The listings of `shims`' pods from their state files, and the shims whose file could
    /// not be read.
    fn listed(
        &self,
        shims: Vec<Arc<ShimHandle>>,
    ) -> (
        Vec<Arc<dockpod_proto::listing::PodListing>>,
        Vec<Arc<ShimHandle>>,
    ) {
        let listings = self.listings.of(self.supervisor.root_dir(), &shims);
        let mut listed = Vec::with_capacity(shims.len());
        let mut unread = Vec::new();
        for (shim, listing) in shims.into_iter().zip(listings) {
            match listing {
                Some(listing) => listed.push(listing),
                None => unread.push(shim),
            }
        }
        (listed, unread)
    }

    /// Asks every shim of `shims` at once. A shim that has not answered within
    /// `LIST_DEADLINE` is answered for by `from_docker`, from what Docker's labels say of its
    /// pod.
    async fn fan_out<T, Ask, Fut>(
        &self,
        call: &'static str,
        shims: Vec<Arc<ShimHandle>>,
        ask: Ask,
        from_docker: impl Fn(PodView) -> Vec<T>,
    ) -> Vec<T>
    where
        Ask: Fn(Arc<ShimHandle>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, Status>>,
    {
        let asks = shims.into_iter().map(|shim| {
            let answer = ask(shim.clone());
            let from_docker = &from_docker;
            async move {
                match tokio::time::timeout(LIST_DEADLINE, answer).await {
                    Ok(Ok(items)) => items,
                    late => {
                        tracing::warn!(sandbox = %shim.sandbox_id, error = ?late.err(), "shim late for {call}; answering from Docker");
                        match crate::fallback::pod_from_docker(&self.engine, &shim.shim_id).await {
                            Ok(view) => from_docker(view),
                            Err(e) => {
                                tracing::warn!(sandbox = %shim.sandbox_id, error = %e, "reading a late shim's pod from Docker");
                                Vec::new()
                            }
                        }
                    }
                }
            }
        });
        join_all(asks).await.into_iter().flatten().collect()
    }
}
