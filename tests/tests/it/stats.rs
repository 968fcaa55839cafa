//! Container and pod statistics, read by the shims from the kernel (cgroups, the pod's network
//! namespace) and checked against what the containers do.

use std::time::Duration;

use dockpod_proto::cri::runtime_service_client::RuntimeServiceClient;
use dockpod_proto::cri::*;
use dockpod_tests::cri::*;
use dockpod_tests::front::Front;
use dockpod_tests::metrics;
use dockpod_tests::wait::wait_until;
use tonic::transport::Channel;

const SECS: Duration = Duration::from_secs(60);
const MIB: u64 = 1024 * 1024;

type Rt = RuntimeServiceClient<Channel>;

async fn stats(rt: &mut Rt, id: &str) -> ContainerStats {
    rt.container_stats(ContainerStatsRequest {
        container_id: id.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("ContainerStats: {e:?}"))
    .into_inner()
    .stats
    .expect("stats")
}

fn value(v: &Option<UInt64Value>) -> u64 {
    v.as_ref().map_or(0, |v| v.value)
}

#[tokio::test]
async fn container_stats_follow_what_the_container_does() {
    let front = Front::start(&[]).await;
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    let pod = pod_config("stats", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    // 40 MiB in tmpfs are charged to the container and are no inactive file cache.
    let mut mem = container_config("mem", &["sh", "-c"]);
    mem.args = vec!["head -c 6291456 /dev/zero > /layer-file; head -c 41943040 /dev/zero > /dev/shm/fill; touch /tmp/ready; exec sleep 3600".into()];
    mem.labels = [("role".to_string(), "memory".to_string())].into();
    let mem = run_container(&mut rt, &id, &pod, mem).await;
    let busy = run_container(
        &mut rt,
        &id,
        &pod,
        container_config("busy", &["sh", "-c", "while :; do :; done"]),
    )
    .await;

    // The first look computes the writable layer's size: wait until it is all written.
    wait_for_script(&rt, &mem, "test -f /tmp/ready", SECS).await;
    let s = wait_until("a 40 MiB working set", SECS, || {
        let mut rt = rt.clone();
        let mem = mem.clone();
        async move {
            let s = stats(&mut rt, &mem).await;
            let ws = s.memory.as_ref().map_or(0, |m| value(&m.working_set_bytes));
            (ws >= 40 * MIB).then_some(s)
        }
    })
    .await;
    let attributes = s.attributes.expect("attributes");
    assert_eq!(attributes.id, mem);
    assert_eq!(attributes.labels["role"], "memory");
    let memory = s.memory.expect("memory");
    assert!(value(&memory.usage_bytes) >= value(&memory.working_set_bytes));
    assert!(value(&memory.page_faults) > 0);
    let layer = wait_until("the writable layer's size", SECS, || {
        let mut rt = rt.clone();
        let mem = mem.clone();
        async move {
            let s = stats(&mut rt, &mem).await;
            let used = s
                .writable_layer
                .as_ref()
                .map_or(0, |l| value(&l.used_bytes));
            (used >= 6 * MIB).then_some(s.writable_layer)
        }
    })
    .await
    .expect("writable layer");
    assert!(value(&layer.inodes_used) >= 1);

    // A busy loop: its CPU time grows, and its rate is some of one core (how much depends on
    // what else the machine runs) and never much more than one, since it is one thread.
    let before = value(
        &stats(&mut rt, &busy)
            .await
            .cpu
            .expect("cpu")
            .usage_core_nano_seconds,
    );
    let cpu = wait_until("half a CPU second of the busy loop", SECS, || {
        let mut rt = rt.clone();
        let busy = busy.clone();
        async move {
            let cpu = stats(&mut rt, &busy).await.cpu?;
            (value(&cpu.usage_core_nano_seconds) >= before + 500_000_000).then_some(cpu)
        }
    })
    .await;
    let cores = value(&cpu.usage_nano_cores) as f64 / 1e9;
    eprintln!("busy loop at {cores:.2} cores");
    assert!(cores > 0.01 && cores < 1.3, "busy loop at {cores:.2} cores");
    let idle = stats(&mut rt, &mem).await.cpu.expect("cpu");
    assert!(
        value(&idle.usage_nano_cores) < 100_000_000,
        "sleep uses CPU: {idle:?}"
    );

    // Filters.
    let list = |filter: ContainerStatsFilter| {
        let mut rt = rt.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_container_stats(ListContainerStatsRequest {
                    filter: Some(filter),
                })
                .await
                .expect("ListContainerStats")
                .into_inner()
                .stats
                .into_iter()
                .filter_map(|s| s.attributes.map(|a| a.id))
                .collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![mem.clone(), busy.clone()];
    both.sort();
    let in_pod = ContainerStatsFilter {
        pod_sandbox_id: id.clone(),
        ..Default::default()
    };
    assert_eq!(list(in_pod).await, both);
    let by_label = ContainerStatsFilter {
        label_selector: [("role".to_string(), "memory".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(list(by_label).await, vec![mem.clone()]);
    let by_id = ContainerStatsFilter {
        id: busy[..12].to_string(),
        ..Default::default()
    };
    assert_eq!(list(by_id).await, vec![busy.clone()]);

    // The pod: its containers, its processes and its network.
    let pod_stats = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("stats");
    assert_eq!(pod_stats.attributes.expect("attributes").id, id);
    let linux = pod_stats.linux.expect("linux");
    assert_eq!(linux.containers.len(), 2);
    assert!(value(&linux.memory.expect("memory").working_set_bytes) >= 40 * MIB);
    assert!(value(&linux.process.expect("process").process_count) >= 3);
    let network = linux.network.expect("network");
    let eth0 = network.default_interface.expect("default interface");
    assert_eq!(eth0.name, "eth0");
    assert!(
        value(&eth0.rx_bytes) > 0 || value(&eth0.tx_bytes) > 0,
        "{eth0:?}"
    );
    let listed = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListPodSandboxStats")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);

    // The same figures as cAdvisor-style metrics.
    let descriptors = rt
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    let working_set = descriptors
        .iter()
        .find(|d| d.name == "container_memory_working_set_bytes")
        .expect("working set descriptor");
    assert_eq!(working_set.label_keys, vec!["id", "name"]);
    let metrics = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    let ours = metrics
        .iter()
        .find(|m| m.pod_sandbox_id == id)
        .expect("our pod's metrics");
    assert!(ours
        .metrics
        .iter()
        .any(|m| m.name == "container_network_receive_bytes_total" && m.label_values == ["eth0"]));
    let mem_metrics = ours
        .container_metrics
        .iter()
        .find(|c| c.container_id == mem)
        .expect("the memory container's metrics");
    let ws = mem_metrics
        .metrics
        .iter()
        .find(|m| m.name == "container_memory_working_set_bytes")
        .expect("working set");
    assert_eq!(ws.label_values, vec![mem.as_str(), "mem"]);
    assert!(value(&ws.value) >= 40 * MIB);
    for m in &mem_metrics.metrics {
        assert!(
            descriptors.iter().any(|d| d.name == m.name),
            "{} has no descriptor",
            m.name
        );
    }

    // Stopped: the attributes and no usage. Removed: not found.
    rt.stop_container(StopContainerRequest {
        container_id: busy.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    wait_exited(&rt, &busy, SECS).await;
    let stopped = stats(&mut rt, &busy).await;
    assert_eq!(stopped.attributes.expect("attributes").id, busy);
    assert!(stopped.cpu.is_none() && stopped.memory.is_none());
    let listed = rt
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                id: busy.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1, "a stopped container is still listed");
    assert!(listed[0].cpu.is_none());
    rt.remove_container(RemoveContainerRequest {
        container_id: busy.clone(),
    })
    .await
    .expect("remove");
    let err = rt
        .container_stats(ContainerStatsRequest {
            container_id: busy.clone(),
        })
        .await
        .expect_err("removed container");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let listed = rt
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1, "only the remaining container");
    remove_pod(&mut rt, &id).await;
    let err = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect_err("removed pod");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let listed = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
        .await
        .expect("ListPodSandboxStats")
        .into_inner()
        .stats;
    assert!(listed
        .iter()
        .all(|s| s.attributes.as_ref().is_some_and(|a| a.id != id)));
}

/// A Prometheus text exposition's samples: `(name{labels}, value)`.
#[tokio::test]
async fn the_metrics_endpoint_is_scraped_and_parsed() {
    // Port 0: the front binds a free port itself and logs where.
    let front = Front::start(&["--metrics-bind-addr", "127.0.0.1:0"]).await;
    let addr = metrics::address(&front);
    let logs = tempfile::tempdir().expect("logs");
    let mut rt = front.runtime();
    rt.version(VersionRequest::default())
        .await
        .expect("Version");
    let err = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: "0123456789ab".into(),
            verbose: false,
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let pod = pod_config("metrics", logs.path());
    let id = run_pod(&mut rt, &pod).await;
    let body = metrics::scrape(&addr).await;
    let samples = metrics::samples(&body);
    let find = |prefix: &str| metrics::values(&samples, prefix);
    assert!(
        find("dockpod_cri_request_duration_seconds_count{method=\"Version\"}")[0] >= 1.0,
        "{body}"
    );
    assert!(find("dockpod_cri_request_duration_seconds_count{method=\"RunPodSandbox\"}")[0] >= 1.0);
    assert!(
        find("dockpod_cri_request_errors_total{method=\"PodSandboxStatus\",code=\"5\"}")[0] >= 1.0,
        "{body}"
    );
    assert!(find("dockpod_docker_request_duration_seconds_count{operation=\"version\"}")[0] >= 1.0);
    assert_eq!(find("dockpod_shims")[0], 1.0, "{body}");
    assert_eq!(find("dockpod_shim_restarts_total")[0], 0.0);
    let rss = find("dockpod_shim_resident_bytes{");
    assert_eq!(rss.len(), 1);
    assert!(rss[0] > 1e6, "a shim's RSS of {} bytes", rss[0]);
    assert!(find("dockpod_shim_proportional_bytes{")[0] > 0.0);
    remove_pod(&mut rt, &id).await;
}
