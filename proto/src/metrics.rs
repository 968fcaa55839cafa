//! The cAdvisor-style metrics of the CRI's ListMetricDescriptors and ListPodSandboxMetrics:
//! one table of what dockpod reports, so that the front's descriptors and the shims' values
//! always agree.

use crate::cri::{Metric, MetricDescriptor, MetricType, UInt64Value};

/// One metric: name, help, whether it only grows, and its label keys.
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub labels: &'static [&'static str],
}

/// Container metrics carry the container's ID and name.
const CONTAINER: &[&str] = &["id", "name"];
/// Network metrics are per interface of the pod.
const INTERFACE: &[&str] = &["interface"];

pub const CPU_USAGE: Spec = Spec {
    name: "container_cpu_usage_seconds_total",
    help: "Cumulative CPU time consumed, in nanoseconds",
    counter: true,
    labels: CONTAINER,
};
pub const MEMORY_USAGE: Spec = Spec {
    name: "container_memory_usage_bytes",
    help: "Current memory usage, including all memory regardless of when it was accessed",
    counter: false,
    labels: CONTAINER,
};
pub const MEMORY_WORKING_SET: Spec = Spec {
    name: "container_memory_working_set_bytes",
    help: "Current working set (usage minus inactive file cache)",
    counter: false,
    labels: CONTAINER,
};
pub const MEMORY_RSS: Spec = Spec {
    name: "container_memory_rss",
    help: "Size of RSS (anonymous memory)",
    counter: false,
    labels: CONTAINER,
};
pub const PROCESSES: Spec = Spec {
    name: "container_processes",
    help: "Number of processes running inside the container",
    counter: false,
    labels: CONTAINER,
};
pub const FS_READS: Spec = Spec {
    name: "container_fs_reads_bytes_total",
    help: "Cumulative count of bytes read from block devices (io.stat, or blkio on cgroup v1)",
    counter: true,
    labels: CONTAINER,
};
pub const FS_WRITES: Spec = Spec {
    name: "container_fs_writes_bytes_total",
    help: "Cumulative count of bytes written to block devices (io.stat, or blkio on cgroup v1)",
    counter: true,
    labels: CONTAINER,
};
pub const OOM_EVENTS: Spec = Spec {
    name: "container_oom_events_total",
    help: "Count of processes of the container killed by the OOM killer",
    counter: true,
    labels: CONTAINER,
};
pub const NETWORK_RX: Spec = Spec {
    name: "container_network_receive_bytes_total",
    help: "Cumulative count of bytes received",
    counter: true,
    labels: INTERFACE,
};
pub const NETWORK_TX: Spec = Spec {
    name: "container_network_transmit_bytes_total",
    help: "Cumulative count of bytes transmitted",
    counter: true,
    labels: INTERFACE,
};
pub const NETWORK_RX_ERRORS: Spec = Spec {
    name: "container_network_receive_errors_total",
    help: "Cumulative count of errors encountered while receiving",
    counter: true,
    labels: INTERFACE,
};
pub const NETWORK_TX_ERRORS: Spec = Spec {
    name: "container_network_transmit_errors_total",
    help: "Cumulative count of errors encountered while transmitting",
    counter: true,
    labels: INTERFACE,
};

pub const ALL: [&Spec; 12] = [
    &CPU_USAGE,
    &MEMORY_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &PROCESSES,
    &FS_READS,
    &FS_WRITES,
    &OOM_EVENTS,
    &NETWORK_RX,
    &NETWORK_TX,
    &NETWORK_RX_ERRORS,
    &NETWORK_TX_ERRORS,
];

pub fn descriptors() -> Vec<MetricDescriptor> {
    ALL.iter()
        .map(|s| MetricDescriptor {
            name: s.name.to_string(),
            help: s.help.to_string(),
            label_keys: s.labels.iter().map(|l| l.to_string()).collect(),
        })
        .collect()
}

impl Spec {
    /// A value of this metric with `labels` in the order of its label keys.
    pub fn value(&self, timestamp: i64, labels: &[&str], value: u64) -> Metric {
        Metric {
            name: self.name.to_string(),
            timestamp,
            metric_type: if self.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            } as i32,
            label_values: labels.iter().map(|l| l.to_string()).collect(),
            value: Some(UInt64Value { value }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_name_every_metric_once() {
        let d = descriptors();
        let mut names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        let m = CPU_USAGE.value(5, &["abc", "app"], 7);
        assert_eq!(m.metric_type, MetricType::Counter as i32);
        assert_eq!(m.label_values, vec!["abc", "app"]);
    }
}
