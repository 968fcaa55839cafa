//! Pods in the cgroups the kubelet names, on whatever driver the node's Docker has: the
//! kubelet's pod cgroup as the sandbox's parent (`kubepods-burstable-pod<uid>.slice` with the
//! systemd driver, today's nodes on cgroup v2; `/kubepods/burstable/pod<uid>` with cgroupfs),
//! every container of the pod below it, and the stats read from there.

use std::time::Duration;

use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::docker::docker;
use dockpod_tests::front::Front;
use dockpod_tests::wait::wait_until;

/// Generous: a container's first CPU sample needs two looks a moment apart.
const SECS: Duration = Duration::from_secs(60);

/// The cgroup parent the kubelet gives a burstable pod of `uid` under `driver`.
fn kubelet_parent(driver: &str, uid: &str) -> String {
    if driver == "systemd" {
        // The kubelet escapes a UID's dashes for systemd's unit names.
        format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"))
    } else {
        format!("/kubepods/burstable/pod{uid}")
    }
}

/// Removes what the cgroupfs driver leaves of a pod's parent in every v1 hierarchy, deepest
/// first; a level another test still uses is busy and stays (systemd removes an empty slice
/// itself).
struct ParentCleanup(Option<String>);

impl Drop for ParentCleanup {
    fn drop(&mut self) {
        let Some(parent) = self.0.take() else { return };
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.filter_map(|e| e.ok()) {
            let mut dir = h.path().join(parent.trim_start_matches('/'));
            while dir != h.path() && std::fs::remove_dir(&dir).is_ok() {
                dir.pop();
            }
        }
    }
}

#[tokio::test]
async fn pods_live_in_the_cgroup_parent_the_kubelet_names() {
    let info = docker().await.info().await.expect("docker info");
    let driver = info
        .cgroup_driver
        .map(|d| d.to_string())
        .unwrap_or_default();
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let logs = tempfile::tempdir().expect("logs");
    let mut config = pod_config("cgparent", logs.path());
    let uid = config.metadata.as_ref().expect("metadata").uid.clone();
    let parent = kubelet_parent(&driver, &uid);
    let _cleanup = ParentCleanup((driver != "systemd").then(|| parent.clone()));
    config.linux = Some(LinuxPodSandboxConfig {
        cgroup_parent: parent.clone(),
        ..Default::default()
    });
    let id = run_pod(&mut rt, &config).await;
    let mut app = container_config("app", &["sh", "-c", "while :; do :; done"]);
    app.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    let app = run_container(&mut rt, &id, &config, app).await;

    // Where the kernel put the container's process: below the pod's cgroup.
    let pid = docker()
        .await
        .inspect_container(&app, None)
        .await
        .expect("inspect")
        .state
        .and_then(|s| s.pid)
        .expect("running");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let below = if driver == "systemd" {
        format!("/{parent}/docker-{app}.scope")
    } else {
        format!("{parent}/{app}")
    };
    assert!(cgroups.contains(&below), "{below} not in\n{cgroups}");

    let stats = wait_until("two CPU samples of the container", SECS, || {
        let mut rt = rt.clone();
        let app = app.clone();
        async move {
            let s = rt
                .container_stats(ContainerStatsRequest { container_id: app })
                .await
                .expect("ContainerStats")
                .into_inner()
                .stats?;
            let cores = s.cpu.as_ref()?.usage_nano_cores.as_ref()?.value;
            (cores > 0).then_some(s)
        }
    })
    .await;
    let memory = stats.memory.expect("memory");
    let available = memory.available_bytes.map(|v| v.value).expect("a limit");
    assert!(available <= 64 << 20, "{memory:?}");
    // The quota holds the busy loop to a fifth of a core; the bound leaves room for the
    // sampling window on a loaded machine.
    let cores = stats
        .cpu
        .and_then(|c| c.usage_nano_cores)
        .map_or(0, |v| v.value);
    assert!(
        cores < 600_000_000,
        "{cores} nanocores under a 0.2 core quota"
    );

    let pod = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .expect("linux stats");
    assert!(pod.memory.is_some() && pod.cpu.is_some());
    // The pod's own pressure comes from its cgroup, on a kernel that has it.
    let v2_with_psi = dockpod_tests::cgroup_v2_with_psi();
    assert_eq!(pod.cpu.and_then(|c| c.psi).is_some(), v2_with_psi);
    assert_eq!(pod.io.is_some(), v2_with_psi);
    remove_pod(&mut rt, &id).await;
}

/// The metric of `name` for container `id` in the pod's metrics, if reported.
async fn container_metric(
    rt: &mut dockpod_proto::cri::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
    name: &str,
) -> Option<u64> {
    let pods = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    pods.iter()
        .flat_map(|p| &p.container_metrics)
        .filter(|c| c.container_id == id)
        .flat_map(|c| &c.metrics)
        .find(|m| m.name == name)
        .and_then(|m| m.value.as_ref().map(|v| v.value))
}

/// Block I/O (io.stat, or blkio on v1) and the OOM killer's kills (memory.events, or
/// memory.oom_control on v1) reach the pod's metrics, as cAdvisor names them.
#[tokio::test]
async fn block_io_and_oom_kills_reach_the_pod_metrics() {
    let front = Front::start(&[]).await;
    let mut rt = front.runtime();
    let logs = tempfile::tempdir().expect("logs");
    let data = tempfile::tempdir().expect("a host directory to write to");
    let config = pod_config("iooom", logs.path());
    let id = run_pod(&mut rt, &config).await;
    // Direct I/O, which every hierarchy charges to the writer (v1 charges page-cache
    // writeback to the root).
    let mut writer = container_config(
        "writer",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/data/file bs=1M count=8 oflag=direct && exec sleep 3600",
        ],
    );
    writer.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: data.path().display().to_string(),
        ..Default::default()
    }];
    let writer = run_container(&mut rt, &id, &config, writer).await;
    // A child over the limit is killed; the container's shell lives on. The pipeline runs
    // in a subshell that raised its OOM score (raising needs no privilege), so that a second
    // OOM, while a loaded machine is still reaping the first victim, picks one of the
    // pipeline's processes and never the shell: its death would end the container and with
    // it the container's metrics.
    let mut hog = container_config(
        "hog",
        &[
            "sh",
            "-c",
            "(echo 1000 > /proc/self/oom_score_adj && head -c 134217728 /dev/zero | tail); \
             exec sleep 3600",
        ],
    );
    hog.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hog = run_container(&mut rt, &id, &config, hog).await;
    // cgroup v2 counts every byte (io.stat); v1's blkio counters stay 0 on kernels that
    // keep them only for throttled devices, as these machines' do.
    let v2 = dockpod_tests::cgroup_v2();
    let least = if v2 { 8 << 20 } else { 0 };
    let written = wait_until("the writer's bytes in its metrics", SECS, || {
        let mut rt = rt.clone();
        let writer = writer.clone();
        async move {
            container_metric(&mut rt, &writer, "container_fs_writes_bytes_total")
                .await
                .filter(|w| *w >= least)
        }
    })
    .await;
    assert!(written >= least);
    let kills = wait_until("an OOM kill in the hog's metrics", SECS, || {
        let mut rt = rt.clone();
        let hog = hog.clone();
        async move {
            container_metric(&mut rt, &hog, "container_oom_events_total")
                .await
                .filter(|k| *k >= 1)
        }
    })
    .await;
    assert!(kills >= 1);
    assert_eq!(
        container_metric(&mut rt, &writer, "container_oom_events_total").await,
        Some(0)
    );
    remove_pod(&mut rt, &id).await;
}
