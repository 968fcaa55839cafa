//! A node's worth of pods for the fault tests: twenty pods, each with a counting container
//! (its CRI log shows whether a line was lost) and a container that exits with code 42 on
//! SIGUSR1 (so a test decides when an exit happens), all run through one front.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::KillContainerOptions;
use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::crilog::COUNTER;
use dockpod_tests::docker::docker;
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;
use futures_util::future::join_all;

pub const PODS: usize = 20;
pub const SECS: Duration = Duration::from_secs(60);
/// The exit code of an exiter sent SIGUSR1.
pub const EXIT_CODE: i32 = 42;

pub struct FleetPod {
    pub id: String,
    pub config: PodSandboxConfig,
    pub counter: String,
    pub exiter: String,
    pub log_dir: PathBuf,
}

pub struct Fleet {
    pub front: Front,
    pub pods: Vec<FleetPod>,
    _logs: tempfile::TempDir,
}

/// What a container's status says that a restart of anything must not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub state: i32,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
}

impl Fleet {
    /// Starts a front and `PODS` pods on it, all at once.
    pub async fn start(name: &str) -> Fleet {
        let front = Front::start(&[]).await;
        let logs = tempfile::tempdir().expect("logs");
        let rt = front.runtime();
        let pods = join_all((0..PODS).map(|i| {
            let mut rt = rt.clone();
            let log_dir = logs.path().join(format!("p{i}"));
            let name = format!("{name}-{i}");
            async move {
                for dir in ["", "count", "exiter"] {
                    std::fs::create_dir_all(log_dir.join(dir)).expect("log directory");
                }
                let config = pod_config(&name, &log_dir);
                let id = run_pod(&mut rt, &config).await;
                let count = container_config("count", &["sh", "-c", COUNTER]);
                let counter = run_container(&mut rt, &id, &config, count).await;
                let mut exit = container_config("exiter", &["sh", "-c"]);
                exit.args = vec![format!(
                    "trap 'exit {EXIT_CODE}' USR1; while :; do sleep 0.05; done"
                )];
                let exiter = run_container(&mut rt, &id, &config, exit).await;
                FleetPod {
                    id,
                    config,
                    counter,
                    exiter,
                    log_dir,
                }
            }
        }))
        .await;
        Fleet {
            front,
            pods,
            _logs: logs,
        }
    }

    pub fn runtime(
        &self,
    ) -> dockpod_proto::cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>
    {
        self.front.runtime()
    }

    /// Every container's status, by ID.
    pub async fn statuses(&self) -> BTreeMap<String, Seen> {
        self.try_statuses().await.expect("every container's status")
    }

    /// Every container's status, or `None` if any call fails.
    pub async fn try_statuses(&self) -> Option<BTreeMap<String, Seen>> {
        let rt = self.runtime();
        let ids = self
            .pods
            .iter()
            .flat_map(|p| [p.counter.clone(), p.exiter.clone()]);
        join_all(ids.map(|id| {
            let mut rt = rt.clone();
            async move {
                let s = rt
                    .container_status(ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status?;
                let seen = Seen {
                    state: s.state,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    exit_code: s.exit_code,
                };
                Some((id, seen))
            }
        }))
        .await
        .into_iter()
        .collect()
    }

    /// Asserts every pod is ready and every container as `before` says.
    pub async fn assert_unchanged(&self, before: &BTreeMap<String, Seen>) {
        let mut rt = self.runtime();
        for pod in &self.pods {
            let status = pod_status(&mut rt, &pod.id).await.status.expect("status");
            assert_eq!(
                status.state,
                PodSandboxState::SandboxReady as i32,
                "pod {}",
                pod.id
            );
        }
        assert_eq!(&self.statuses().await, before);
        let listed = container_ids(rt, ContainerFilter::default()).await;
        let expected: Vec<String> = before.keys().cloned().collect();
        assert_eq!(listed, expected, "ListContainers");
    }

    /// Sends SIGUSR1 to a pod's exiter and waits until Docker reports it exited. Returns the
    /// window (ns since the epoch) in which it exited.
    pub async fn make_exit(&self, pod: &FleetPod) -> (i64, i64) {
        let docker = docker().await;
        let before = now_ns();
        docker
            .kill_container(
                &pod.exiter,
                Some(KillContainerOptions {
                    signal: "SIGUSR1".into(),
                }),
            )
            .await
            .expect("signal the exiter");
        wait_until("Docker to see the exit", SECS, || {
            let docker = docker.clone();
            async move {
                let state = docker
                    .inspect_container(&pod.exiter, None)
                    .await
                    .ok()?
                    .state?;
                (state.running == Some(false)).then_some(())
            }
        })
        .await;
        (before, now_ns())
    }

    /// Removes every pod through the CRI, one at a time: Docker 20.10's libnetwork can
    /// deadlock (every later API call hangs) when many containers on its bridge are
    /// force-removed at once, as happened here once with all twenty at once.
    pub async fn remove(&self) {
        let mut rt = self.runtime();
        for pod in &self.pods {
            remove_pod(&mut rt, &pod.id).await;
        }
    }
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
