//! Pod benchmark: prints, from one run on this machine, RunPodSandbox and
//! CreateContainer+StartContainer latencies (median, p95) beside the raw Docker API doing the
//! same container create+start, ListContainers latency with 50 pods, and the memory of one
//! idle pod shim (PSS and RSS, against the budget of 2 MiB and 6 MiB).
//!
//! Run: `cargo run --release -p dockpod-tests --bin bench-pods` (after `contrib/setup.sh`).

use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use dockpod_tests::cri::{container_config, create_container, pod_config, run_pod, start};
use dockpod_tests::docker::{docker, TOOL_IMAGE};
use dockpod_tests::front::Front;
use k8s_cri::v1::{ListContainersRequest, RemovePodSandboxRequest};

const PODS: usize = 20;
const LIST_PODS: usize = 50;
const LIST_CALLS: usize = 100;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and 95th percentile in milliseconds.
fn summary(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    (at(0.5), at(0.95))
}

fn row(what: &str, v: Vec<Duration>) {
    let n = v.len();
    let (p50, p95) = summary(v);
    println!("{what:<52} n={n:<4} median {p50:>8.1} ms   p95 {p95:>8.1} ms");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let front = Front::start(&["--log-level", "warn"]).await;
    let logs = tempfile::tempdir().expect("log dir");
    let docker = docker().await;
    let mut rt = front.runtime();

    let mut run_pod_times = Vec::new();
    let mut create_start = Vec::new();
    let mut docker_create_start = Vec::new();
    let mut pods = Vec::new();
    let mut raw = Vec::new();
    for i in 0..LIST_PODS {
        let config = pod_config(&format!("bench{i}"), logs.path());
        let t = Instant::now();
        let id = run_pod(&mut rt, &config).await;
        if i < PODS {
            run_pod_times.push(t.elapsed());
        }
        let t = Instant::now();
        let c = create_container(
            &mut rt,
            &id,
            &config,
            container_config("app", &["sleep", "3600"]),
        )
        .await
        .expect("CreateContainer");
        start(&mut rt, &c).await;
        if i < PODS {
            create_start.push(t.elapsed());
            // The same container straight through Docker: create + start, sharing the sandbox.
            let t = Instant::now();
            let created = docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(dockpod_tests::unique("bench-raw")),
                        ..Default::default()
                    }),
                    ContainerCreateBody {
                        image: Some(TOOL_IMAGE.into()),
                        entrypoint: Some(vec!["sleep".into(), "3600".into()]),
                        host_config: Some(HostConfig {
                            network_mode: Some(format!("container:{id}")),
                            ipc_mode: Some(format!("container:{id}")),
                            pid_mode: Some(format!("container:{id}")),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )
                .await
                .expect("docker create");
            docker
                .start_container(&created.id, None)
                .await
                .expect("docker start");
            docker_create_start.push(t.elapsed());
            raw.push(created.id);
        }
        pods.push(id);
    }

    let mut list_times = Vec::new();
    for _ in 0..LIST_CALLS {
        let t = Instant::now();
        let n = rt
            .list_containers(ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers
            .len();
        list_times.push(t.elapsed());
        assert_eq!(n, LIST_PODS);
    }

    // One idle shim: its pod has one running container and nothing has happened for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shims = front.shim_pids();
    let mut mem: Vec<dockpod_proto::procfs::Memory> = shims
        .iter()
        .filter_map(|pid| dockpod_proto::procfs::memory(*pid).ok())
        .collect();
    mem.sort_by_key(|m| m.pss_bytes);
    let one = mem[mem.len() / 2];

    println!("dockpod pod benchmark ({} shims running)", shims.len());
    row(
        &format!("RunPodSandbox ({PODS} pods, one at a time)"),
        run_pod_times,
    );
    row("CreateContainer+StartContainer via dockpod", create_start);
    row(
        "create+start via the raw Docker API (same container)",
        docker_create_start,
    );
    row(&format!("ListContainers with {LIST_PODS} pods"), list_times);
    println!(
        "idle pod shim (median of {}): PSS {:.2} MiB (budget 2), RSS {:.2} MiB (budget 6)",
        mem.len(),
        one.pss_bytes as f64 / 1048576.0,
        one.rss_bytes as f64 / 1048576.0
    );

    for id in raw {
        let _ = docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
    for id in pods {
        let _ = rt
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await;
    }
}
