//! `dockpod.manager.v1`, the operator's calls to a running front, served on the CRI socket
//! beside the CRI services: the front owns the pods' shims, so replacing one goes through it
//! (a separate process stopping a shim would race the front's own restart of it).

use std::pin::Pin;
use std::sync::Arc;

use dockpod_proto::manager::manager_server::Manager;
use dockpod_proto::manager::{ShimUpgrade, UpgradeShimsRequest};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::supervise::Supervisor;

pub struct ManagerApi {
    pub supervisor: Arc<Supervisor>,
}

type Reports = Pin<Box<dyn Stream<Item = Result<ShimUpgrade, Status>> + Send>>;

#[tonic::async_trait]
impl Manager for ManagerApi {
    type UpgradeShimsStream = Reports;

    async fn upgrade_shims(
        &self,
        req: Request<UpgradeShimsRequest>,
    ) -> Result<Response<Self::UpgradeShimsStream>, Status> {
        let force = req.into_inner().force;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let supervisor = self.supervisor.clone();
        tracing::info!(force, "upgrading every pod's shim");
        // The upgrade runs to its end even if the operator's client goes away: stopping
        // half-way would leave nothing wrong, but finishing is what was asked.
        self.supervisor.tasks().spawn(async move {
            let mut shims = supervisor.registry().pods();
            shims.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
            for shim in shims {
                let report = supervisor.replace(&shim, force).await;
                let _ = tx.send(Ok(report)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
