//! The CRI's stats calls for this pod: per container (ContainerStats, ListContainerStats) and
//! for the whole pod (PodSandboxStats, with its network and every container), from `kernel_stats`.
//! Which cgroup and writable layer a container has is looked up in Docker once per container
//! start, not on every call.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dockpod_proto::cri::{
    ContainerAttributes, ContainerMetrics, ContainerState, ContainerStats, ContainerStatsFilter,
    IoUsage, LinuxPodSandboxStats, MemoryUsage, PodSandboxAttributes, PodSandboxMetrics,
    PodSandboxStats, PodSandboxStatsFilter,
};

use crate::docker::now_ns;
use crate::error::{Error, Result};
use crate::kernel_stats::{self, Cgroup, Memory, Sampler};
use crate::lifecycle::Pod;
use dockpod_proto::pod_record::ContainerRecord;

/// Where one container's figures are read from.
#[derive(Clone)]
struct Target {
    pid: i64,
    cgroup: Cgroup,
    upper_dir: Option<PathBuf>,
}

#[derive(Default)]
pub struct Usage {
    sampler: Arc<Sampler>,
    targets: Mutex<HashMap<String, Target>>,
}

impl Usage {
    fn targets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Target>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container's cgroup while its process lives (looked up again after a restart).
    async fn target(&self, pod: &Pod, id: &str) -> Option<Target> {
        self.prune(pod);
        let cached = self.targets().get(id).cloned();
        if let Some(t) = cached {
            if std::path::Path::new(&format!("/proc/{}", t.pid)).exists() {
                return Some(t);
            }
        }
        let inspect = pod.engine.inspect(id).await.ok().flatten()?;
        let pid = inspect
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)?;
        let upper_dir = inspect
            .graph_driver
            .as_ref()
            .and_then(|g| g.data.get("UpperDir"))
            .map(PathBuf::from);
        let target = Target {
            pid,
            cgroup: Cgroup::of(pid)?,
            upper_dir,
        };
        self.targets().insert(id.to_string(), target.clone());
        Some(target)
    }

    /// Forgets what was kept for containers the pod no longer has: the maps hold at most one
    /// entry per container of the record and the sandbox.
    fn prune(&self, pod: &Pod) {
        let record = pod.view();
        let kept = |id: &str| id == record.sandbox_id || record.containers.contains_key(id);
        let mut targets = self.targets();
        if targets.keys().all(|id| kept(id)) {
            return;
        }
        targets.retain(|id, _| {
            let keep = kept(id);
            if !keep {
                self.sampler.forget(id);
            }
            keep
        });
    }

    async fn container(&self, pod: &Pod, c: &ContainerRecord) -> ContainerStats {
        let now = now_ns();
        let meta = c.config.metadata.clone();
        let attributes = Some(ContainerAttributes {
            id: c.id.clone(),
            metadata: meta,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        });
        let running = c.state == ContainerState::ContainerRunning as i32;
        let target = if running {
            self.target(pod, &c.id).await
        } else {
            None
        };
        let Some(t) = target else {
            self.sampler.forget(&c.id);
            return ContainerStats {
                attributes,
                ..Default::default()
            };
        };
        let memory = t.cgroup.memory();
        let mut cpu = self.sampler.cpu(&c.id, &t.cgroup, now).await;
        if let Some(cpu) = cpu.as_mut() {
            cpu.psi = t.cgroup.pressure("cpu");
        }
        ContainerStats {
            attributes,
            cpu,
            memory: memory.map(|m| MemoryUsage {
                psi: t.cgroup.pressure("memory"),
                ..m.cri(now)
            }),
            writable_layer: self.sampler.writable_layer(&c.id, t.upper_dir.clone(), now),
            swap: memory.map(|m| m.swap_cri(now)),
            io: io_usage(&t.cgroup, now),
        }
    }

    pub async fn container_stats(&self, pod: &Pod, id: &str) -> Result<ContainerStats> {
        let record = pod.snapshot();
        let c = record
            .find(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        Ok(self.container(pod, c).await)
    }

    pub async fn list_container_stats(
        &self,
        pod: &Pod,
        filter: &ContainerStatsFilter,
    ) -> Vec<ContainerStats> {
        let record = pod.snapshot();
        if !filter.pod_sandbox_id.is_empty()
            && !record.sandbox_id.starts_with(&filter.pod_sandbox_id)
        {
            return Vec::new();
        }
        let chosen = record.containers.values().filter(|c| {
            (filter.id.is_empty() || c.id.starts_with(&filter.id))
                && dockpod_proto::filters::selects(&filter.label_selector, &c.config.labels)
        });
        let all = chosen.map(|c| self.container(pod, c));
        futures_util::future::join_all(all).await
    }

    /// The pod's stats: its containers summed for CPU and memory, its processes, and its
    /// network namespace's counters.
    pub async fn pod_stats(&self, pod: &Pod, id: &str) -> Result<PodSandboxStats> {
        let record = pod.snapshot();
        if id.is_empty() || !record.sandbox_id.starts_with(id) {
            return Err(Error::NotFound(format!("pod sandbox {id} not found")));
        }
        let now = now_ns();
        let containers = futures_util::future::join_all(
            record.containers.values().map(|c| self.container(pod, c)),
        )
        .await;
        let sandbox = self.target(pod, &record.sandbox_id).await;
        let mut cpu_cores = 0u64;
        let mut cpu_total = 0u64;
        let mut memory = Memory::default();
        let mut processes = 0u64;
        for c in &containers {
            if let Some(cpu) = &c.cpu {
                cpu_cores += cpu.usage_nano_cores.as_ref().map_or(0, |v| v.value);
                cpu_total += cpu.usage_core_nano_seconds.as_ref().map_or(0, |v| v.value);
            }
        }
        let mut targets = Vec::new();
        for c in record.containers.values() {
            if let Some(t) = self.targets().get(&c.id).cloned() {
                targets.push(t);
            }
        }
        targets.extend(sandbox.clone());
        for t in &targets {
            if let Some(m) = t.cgroup.memory() {
                memory.add(&m);
            }
            processes += t.cgroup.processes().unwrap_or(0);
        }
        let meta = record.config.metadata.clone();
        // The pod's own cgroup holds its pressure: the sandbox's parent, where the kubelet
        // named one (without a parent, the one above is Docker's, shared with other pods).
        let has_parent = record
            .config
            .linux
            .as_ref()
            .is_some_and(|l| !l.cgroup_parent.is_empty());
        let pod_cgroup = sandbox
            .as_ref()
            .filter(|_| has_parent)
            .and_then(|s| s.cgroup.parent());
        let pressure = |resource| pod_cgroup.as_ref().and_then(|g| g.pressure(resource));
        let linux = LinuxPodSandboxStats {
            cpu: Some(dockpod_proto::cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: Some(dockpod_proto::cri::UInt64Value { value: cpu_total }),
                usage_nano_cores: Some(dockpod_proto::cri::UInt64Value { value: cpu_cores }),
                psi: pressure("cpu"),
            }),
            memory: Some(MemoryUsage {
                psi: pressure("memory"),
                ..memory.cri(now)
            }),
            io: pod_cgroup.as_ref().and_then(|g| io_usage(g, now)),
            network: sandbox
                .as_ref()
                .and_then(|s| kernel_stats::network(s.pid, now)),
            process: Some(dockpod_proto::cri::ProcessUsage {
                timestamp: now,
                process_count: Some(dockpod_proto::cri::UInt64Value { value: processes }),
            }),
            containers,
        };
        Ok(PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: record.sandbox_id.clone(),
                metadata: meta,
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            }),
            linux: Some(linux),
            windows: None,
        })
    }

    pub async fn list_pod_stats(
        &self,
        pod: &Pod,
        filter: &PodSandboxStatsFilter,
    ) -> Result<Vec<PodSandboxStats>> {
        let record = pod.snapshot();
        let wanted = !record.sandbox_id.is_empty()
            && (filter.id.is_empty() || record.sandbox_id.starts_with(&filter.id))
            && dockpod_proto::filters::selects(&filter.label_selector, &record.config.labels);
        if !wanted {
            return Ok(Vec::new());
        }
        Ok(vec![self.pod_stats(pod, &record.sandbox_id).await?])
    }
}

impl Usage {
    /// The pod's metrics for ListPodSandboxMetrics (see `dockpod_proto::metrics`).
    pub async fn pod_metrics(&self, pod: &Pod) -> Result<Option<PodSandboxMetrics>> {
        use dockpod_proto::metrics as m;
        let record = pod.snapshot();
        if record.sandbox_id.is_empty() {
            return Ok(None);
        }
        let stats = self.pod_stats(pod, &record.sandbox_id).await?;
        let now = now_ns();
        let linux = stats.linux.unwrap_or_default();
        let mut metrics = Vec::new();
        if let Some(network) = &linux.network {
            for i in &network.interfaces {
                let labels = [i.name.as_str()];
                let v =
                    |x: &Option<dockpod_proto::cri::UInt64Value>| x.as_ref().map_or(0, |v| v.value);
                metrics.push(m::NETWORK_RX.value(now, &labels, v(&i.rx_bytes)));
                metrics.push(m::NETWORK_TX.value(now, &labels, v(&i.tx_bytes)));
                metrics.push(m::NETWORK_RX_ERRORS.value(now, &labels, v(&i.rx_errors)));
                metrics.push(m::NETWORK_TX_ERRORS.value(now, &labels, v(&i.tx_errors)));
            }
        }
        let mut container_metrics = Vec::new();
        for c in &linux.containers {
            let Some(attributes) = &c.attributes else {
                continue;
            };
            let name = attributes
                .metadata
                .as_ref()
                .map(|m| m.name.as_str())
                .unwrap_or_default();
            let labels = [attributes.id.as_str(), name];
            let v = |x: &Option<dockpod_proto::cri::UInt64Value>| x.as_ref().map(|v| v.value);
            let mut values = Vec::new();
            if let Some(cpu) = &c.cpu {
                values.extend(
                    v(&cpu.usage_core_nano_seconds).map(|x| m::CPU_USAGE.value(now, &labels, x)),
                );
            }
            if let Some(mem) = &c.memory {
                values.extend(v(&mem.usage_bytes).map(|x| m::MEMORY_USAGE.value(now, &labels, x)));
                values.extend(
                    v(&mem.working_set_bytes).map(|x| m::MEMORY_WORKING_SET.value(now, &labels, x)),
                );
                values.extend(v(&mem.rss_bytes).map(|x| m::MEMORY_RSS.value(now, &labels, x)));
            }
            let cgroup = self.targets().get(&attributes.id).map(|t| t.cgroup.clone());
            if let Some(cgroup) = cgroup {
                values.extend(
                    cgroup
                        .processes()
                        .map(|x| m::PROCESSES.value(now, &labels, x)),
                );
                if let Some((read, written)) = cgroup.io_bytes() {
                    values.push(m::FS_READS.value(now, &labels, read));
                    values.push(m::FS_WRITES.value(now, &labels, written));
                }
                values.extend(
                    cgroup
                        .oom_kills()
                        .map(|x| m::OOM_EVENTS.value(now, &labels, x)),
                );
            }
            container_metrics.push(ContainerMetrics {
                container_id: attributes.id.clone(),
                metrics: values,
            });
        }
        Ok(Some(PodSandboxMetrics {
            pod_sandbox_id: record.sandbox_id.clone(),
            metrics,
            container_metrics,
        }))
    }
}

/// The cgroup's IO pressure; absent on cgroup v1.
fn io_usage(cgroup: &Cgroup, timestamp: i64) -> Option<IoUsage> {
    cgroup.pressure("io").map(|psi| IoUsage {
        timestamp,
        psi: Some(psi),
    })
}
