//! Container and pod statistics read from the kernel, never through Docker's stats API (which
//! costs dockerd a stream per container): the container's cgroup (v1 or v2, whatever the
//! driver named it; found through `/proc/<pid>/cgroup`) for CPU, memory and processes, the
//! sandbox's `/proc/<pid>/net/dev` for the pod's network, and the writable layer's size,
//! computed off the request path and cached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dockpod_proto::cri::{
    CpuUsage, FilesystemIdentifier, FilesystemUsage, MemoryUsage, NetworkInterfaceUsage,
    NetworkUsage, PsiData, PsiStats, SwapUsage, UInt64Value,
};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long a computed writable-layer size is served before it is computed again.
const LAYER_TTL: Duration = Duration::from_secs(30);
/// Gap between two CPU samples when a container has none yet (usage_nano_cores needs two).
const FIRST_SAMPLE_GAP: Duration = Duration::from_millis(100);
/// A rate is computed over at least this long; a quicker caller gets the last rate again.
const MIN_WINDOW: Duration = Duration::from_millis(50);

/// A process's cgroups: the unified one (v2), or one directory per v1 controller.
#[derive(Debug, Clone)]
pub enum Cgroup {
    V2(PathBuf),
    V1(HashMap<String, PathBuf>),
}

impl Cgroup {
    /// The cgroups of `pid`, or None when it is gone.
    pub fn of(pid: i64) -> Option<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Some(parse_cgroup(&text, Path::new(CGROUP_ROOT)))
    }

    fn file(&self, controller: &str, name: &str) -> Option<PathBuf> {
        match self {
            Cgroup::V2(dir) => Some(dir.join(name)),
            Cgroup::V1(dirs) => dirs.get(controller).map(|d| d.join(name)),
        }
    }

    fn read(&self, controller: &str, name: &str) -> Option<String> {
        std::fs::read_to_string(self.file(controller, name)?).ok()
    }

    fn number(&self, controller: &str, name: &str) -> Option<u64> {
        self.read(controller, name)?.trim().parse().ok()
    }

    /// CPU time used, in nanoseconds.
    pub fn cpu_ns(&self) -> Option<u64> {
        match self {
            Cgroup::V2(_) => keyed(&self.read("cpu", "cpu.stat")?, "usage_usec").map(|u| u * 1000),
            Cgroup::V1(_) => self.number("cpuacct", "cpuacct.usage"),
        }
    }

    pub fn memory(&self) -> Option<Memory> {
        match self {
            Cgroup::V2(_) => {
                let stat = self.read("memory", "memory.stat")?;
                let max = self
                    .read("memory", "memory.max")
                    .and_then(|m| m.trim().parse().ok());
                Some(Memory {
                    usage: self.number("memory", "memory.current")?,
                    inactive_file: keyed(&stat, "inactive_file").unwrap_or(0),
                    rss: keyed(&stat, "anon").unwrap_or(0),
                    page_faults: keyed(&stat, "pgfault").unwrap_or(0),
                    major_page_faults: keyed(&stat, "pgmajfault").unwrap_or(0),
                    limit: max,
                    swap: self.number("memory", "memory.swap.current").unwrap_or(0),
                })
            }
            Cgroup::V1(_) => {
                let stat = self.read("memory", "memory.stat")?;
                // The kernel's "no limit" is a huge page-aligned number.
                let limit = keyed(&stat, "hierarchical_memory_limit").filter(|l| *l < 1 << 62);
                Some(Memory {
                    usage: self.number("memory", "memory.usage_in_bytes")?,
                    inactive_file: keyed(&stat, "total_inactive_file").unwrap_or(0),
                    rss: keyed(&stat, "total_rss").unwrap_or(0),
                    page_faults: keyed(&stat, "total_pgfault").unwrap_or(0),
                    major_page_faults: keyed(&stat, "total_pgmajfault").unwrap_or(0),
                    limit,
                    swap: keyed(&stat, "total_swap").unwrap_or(0),
                })
            }
        }
    }

    /// Pressure stall information of `resource` (`cpu`, `memory` or `io`) from cgroup v2's
    /// `<resource>.pressure`. None on cgroup v1, which has no such file: the CRI's PSI is then
    /// absent, never zero (zero would say "no pressure").
    pub fn pressure(&self, resource: &str) -> Option<PsiStats> {
        match self {
            Cgroup::V2(_) => parse_pressure(&self.read(resource, &format!("{resource}.pressure"))?),
            Cgroup::V1(_) => None,
        }
    }

    /// Bytes read from and written to block devices, summed over the devices: cgroup v2's
    /// `io.stat`, or v1's `blkio.throttle.io_service_bytes` (which counts direct I/O only:
    /// v1 charges page-cache writeback to the root).
    pub fn io_bytes(&self) -> Option<(u64, u64)> {
        match self {
            Cgroup::V2(_) => Some(parse_io_stat(&self.read("io", "io.stat")?)),
            Cgroup::V1(_) => Some(parse_blkio_bytes(
                &self.read("blkio", "blkio.throttle.io_service_bytes")?,
            )),
        }
    }

    /// Processes of the cgroup the OOM killer killed: `oom_kill` of v2's `memory.events`, or
    /// of v1's `memory.oom_control` (Linux 4.13).
    pub fn oom_kills(&self) -> Option<u64> {
        match self {
            Cgroup::V2(_) => keyed(&self.read("memory", "memory.events")?, "oom_kill"),
            Cgroup::V1(_) => keyed(&self.read("memory", "memory.oom_control")?, "oom_kill"),
        }
    }

    /// The cgroup above this one (v2: the pod's, for a container whose parent the kubelet
    /// named). None on v1, where a pod's pressure cannot be read anyway.
    pub fn parent(&self) -> Option<Cgroup> {
        match self {
            Cgroup::V2(dir) => {
                let parent = dir.parent()?;
                (parent != Path::new(CGROUP_ROOT)).then(|| Cgroup::V2(parent.to_path_buf()))
            }
            Cgroup::V1(_) => None,
        }
    }

    /// Processes (and threads, as the pids controller counts) in the cgroup.
    pub fn processes(&self) -> Option<u64> {
        self.number("pids", "pids.current").or_else(|| {
            let tasks = self.read("pids", "tasks")?;
            Some(tasks.lines().count() as u64)
        })
    }
}

/// Reads `/proc/<pid>/cgroup`: a unified hierarchy alone means v2; otherwise each v1
/// controller's directory is under `<root>/<controller>`.
fn parse_cgroup(text: &str, root: &Path) -> Cgroup {
    let mut v1 = HashMap::new();
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            unified = Some(path.to_string());
            continue;
        }
        for controller in controllers.split(',') {
            if controller.starts_with("name=") {
                continue;
            }
            // Co-mounted controllers (cpu,cpuacct) may live in a directory of either name.
            let joined = root.join(controllers);
            let dir = if joined.exists() {
                joined
            } else {
                root.join(controller)
            };
            v1.insert(controller.to_string(), dir.join(path));
        }
    }
    let pure_v2 = root.join("cgroup.controllers").exists();
    match unified {
        Some(path) if pure_v2 || v1.is_empty() => Cgroup::V2(root.join(path)),
        _ => Cgroup::V1(v1),
    }
}

/// A `*.pressure` file: `some avg10=0.12 avg60=0.05 avg300=0.01 total=123456` and, for memory
/// and io (and cpu since Linux 5.13), a `full` line. `total` is in microseconds; the CRI's in
/// nanoseconds. None when neither line parses.
pub fn parse_pressure(text: &str) -> Option<PsiStats> {
    let mut stats = PsiStats::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let kind = fields.next();
        let mut data = PsiData::default();
        let mut seen = 0;
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => data.avg10 = value.parse().ok()?,
                "avg60" => data.avg60 = value.parse().ok()?,
                "avg300" => data.avg300 = value.parse().ok()?,
                "total" => data.total = value.parse::<u64>().ok()?.saturating_mul(1000),
                _ => continue,
            }
            seen += 1;
        }
        if seen != 4 {
            continue;
        }
        match kind {
            Some("some") => stats.some = Some(data),
            Some("full") => stats.full = Some(data),
            _ => {}
        }
    }
    (stats.some.is_some() || stats.full.is_some()).then_some(stats)
}

/// Read and written bytes of v2's `io.stat`: `8:0 rbytes=4096 wbytes=0 rios=1 ...` per device.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for field in text.split_whitespace() {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "rbytes" => read = read.saturating_add(value),
            "wbytes" => written = written.saturating_add(value),
            _ => {}
        }
    }
    (read, written)
}

/// Read and written bytes of v1's `blkio.throttle.io_service_bytes`: `8:0 Read 4096` per
/// device and operation, and a `Total` line that is left out.
pub fn parse_blkio_bytes(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_device), Some(op), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match op {
            "Read" => read = read.saturating_add(value),
            "Write" => written = written.saturating_add(value),
            _ => {}
        }
    }
    (read, written)
}

/// The value of `key` in a `key value` per line file (memory.stat, cpu.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Memory figures of a cgroup, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub usage: u64,
    pub inactive_file: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub limit: Option<u64>,
    pub swap: u64,
}

impl Memory {
    /// What the kubelet evicts on: usage without the inactive page cache.
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }

    pub fn add(&mut self, other: &Memory) {
        self.usage += other.usage;
        self.inactive_file += other.inactive_file;
        self.rss += other.rss;
        self.page_faults += other.page_faults;
        self.major_page_faults += other.major_page_faults;
        self.swap += other.swap;
        self.limit = None;
    }

    pub fn cri(&self, timestamp: i64) -> MemoryUsage {
        let v = |value| Some(UInt64Value { value });
        MemoryUsage {
            timestamp,
            working_set_bytes: v(self.working_set()),
            available_bytes: self.limit.map(|l| UInt64Value {
                value: l.saturating_sub(self.working_set()),
            }),
            usage_bytes: v(self.usage),
            rss_bytes: v(self.rss),
            page_faults: v(self.page_faults),
            major_page_faults: v(self.major_page_faults),
            psi: None,
        }
    }

    pub fn swap_cri(&self, timestamp: i64) -> SwapUsage {
        SwapUsage {
            timestamp,
            swap_available_bytes: None,
            swap_usage_bytes: Some(UInt64Value { value: self.swap }),
        }
    }
}

/// The network counters of a network namespace, from `/proc/<pid>/net/dev`, without loopback.
pub fn network(pid: i64, timestamp: i64) -> Option<NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let interfaces = parse_net_dev(&text);
    Some(NetworkUsage {
        timestamp,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == "eth0")
            .or(interfaces.first())
            .cloned(),
        interfaces,
    })
}

fn parse_net_dev(text: &str) -> Vec<NetworkInterfaceUsage> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let n: Vec<u64> = counters
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect();
            let v = |i: usize| n.get(i).map(|&value| UInt64Value { value });
            Some(NetworkInterfaceUsage {
                name: name.to_string(),
                rx_bytes: v(0),
                rx_errors: v(2),
                tx_bytes: v(8),
                tx_errors: v(10),
            })
        })
        .collect()
}

fn cpu_usage(timestamp: i64, total_ns: u64, nano_cores: u64) -> CpuUsage {
    CpuUsage {
        timestamp,
        usage_core_nano_seconds: Some(UInt64Value { value: total_ns }),
        usage_nano_cores: Some(UInt64Value { value: nano_cores }),
        psi: None,
    }
}

/// A writable layer's bytes and inodes, once measured.
type LayerSize = Option<(u64, u64)>;

/// CPU samples per container, for usage in nanocores between two looks.
#[derive(Default)]
pub struct Sampler {
    /// Per container: when and how much CPU time was last sampled, and the rate then.
    last: Mutex<HashMap<String, (Instant, u64, u64)>>,
    layers: Mutex<HashMap<String, (Instant, LayerSize)>>,
}

impl Sampler {
    fn last(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u64, u64)>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// CPU usage of `key`'s cgroup: the cumulative time, and the rate since the previous
    /// sample (a first look samples twice, a moment apart).
    pub async fn cpu(&self, key: &str, cgroup: &Cgroup, timestamp: i64) -> Option<CpuUsage> {
        let mut now = (Instant::now(), cgroup.cpu_ns()?);
        let previous = self.last().get(key).copied();
        let previous = match previous {
            Some((at, _, rate)) if now.0.duration_since(at) < MIN_WINDOW => {
                return Some(cpu_usage(timestamp, now.1, rate));
            }
            Some((at, used, _)) => (at, used),
            None => {
                let first = now;
                tokio::time::sleep(FIRST_SAMPLE_GAP).await;
                now = (Instant::now(), cgroup.cpu_ns()?);
                first
            }
        };
        let elapsed = now.0.duration_since(previous.0).as_nanos().max(1);
        let used = now.1.saturating_sub(previous.1);
        let rate = (used as u128 * 1_000_000_000 / elapsed) as u64;
        self.last().insert(key.to_string(), (now.0, now.1, rate));
        Some(cpu_usage(timestamp, now.1, rate))
    }

    /// Forgets a container that is gone.
    pub fn forget(&self, key: &str) {
        self.last().remove(key);
        self.layers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The writable layer's bytes and inodes as last computed; a stale or missing figure is
    /// computed again in the background, never on the caller's time.
    pub fn writable_layer(
        self: &std::sync::Arc<Self>,
        key: &str,
        upper_dir: Option<PathBuf>,
        timestamp: i64,
    ) -> Option<FilesystemUsage> {
        let (known, stale) = {
            let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
            match layers.get(key) {
                Some((at, size)) => (*size, at.elapsed() > LAYER_TTL),
                None => (None, true),
            }
        };
        if stale {
            if let Some(dir) = upper_dir.clone() {
                let sampler = self.clone();
                let key = key.to_string();
                // Mark it as being computed, so concurrent calls do not start another walk.
                sampler
                    .layers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), (Instant::now(), known));
                tokio::task::spawn_blocking(move || {
                    let size = disk_usage(&dir);
                    sampler
                        .layers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, (Instant::now(), Some(size)));
                });
            }
        }
        let (bytes, inodes) = known?;
        Some(FilesystemUsage {
            timestamp,
            fs_id: upper_dir.map(|d| FilesystemIdentifier {
                mountpoint: d.display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: bytes }),
            inodes_used: Some(UInt64Value { value: inodes }),
        })
    }
}

/// Bytes (by allocated blocks) and inodes under `dir`, not following links or other mounts.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_path_buf()];
    let device = std::fs::symlink_metadata(dir).map(|m| m.dev()).ok();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if Some(meta.dev()) != device {
            continue;
        }
        inodes += 1;
        bytes += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_bytes_and_oom_kills_from_v1_and_v2_files() {
        let io = "8:0 rbytes=4096 wbytes=8388608 rios=1 wios=8 dbytes=0 dios=0\n253:0 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n";
        assert_eq!(parse_io_stat(io), (4196, 8_388_608));
        assert_eq!(parse_io_stat(""), (0, 0));
        let blkio = "8:0 Read 4096\n8:0 Write 8388608\n8:0 Sync 8392704\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 8392704\nTotal 8392704\n";
        assert_eq!(parse_blkio_bytes(blkio), (4096, 8_388_608));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("io.stat"), io).expect("write");
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n",
        )
        .expect("write");
        let v2 = Cgroup::V2(dir.path().to_path_buf());
        assert_eq!(v2.io_bytes(), Some((4196, 8_388_608)));
        assert_eq!(v2.oom_kills(), Some(2));
        std::fs::write(dir.path().join("blkio.throttle.io_service_bytes"), blkio).expect("write");
        std::fs::write(
            dir.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .expect("write");
        let v1 = Cgroup::V1(HashMap::from([
            ("blkio".to_string(), dir.path().to_path_buf()),
            ("memory".to_string(), dir.path().to_path_buf()),
        ]));
        assert_eq!(v1.io_bytes(), Some((4096, 8_388_608)));
        assert_eq!(v1.oom_kills(), Some(1));
    }

    #[test]
    fn pressure_files_give_psi_in_nanoseconds_and_v1_gives_none() {
        let memory = "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n";
        let psi = parse_pressure(memory).expect("parses");
        let some = psi.some.expect("some");
        assert_eq!((some.avg10, some.avg60, some.total), (1.5, 0.25, 1_234_000));
        assert_eq!(psi.full.expect("full").total, 7000);
        // A kernel before 5.13 writes no `full` line for cpu.
        let cpu = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").expect("cpu");
        assert!(cpu.some.is_some() && cpu.full.is_none());
        assert!(parse_pressure("").is_none());
        assert!(parse_pressure("some avg10=x avg60=0 avg300=0 total=1").is_none());

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("io.pressure"), memory).expect("write");
        let v2 = Cgroup::V2(dir.path().to_path_buf());
        assert_eq!(v2.pressure("io"), Some(psi));
        let v1 = Cgroup::V1(HashMap::from([(
            "cpu".to_string(),
            dir.path().to_path_buf(),
        )]));
        assert_eq!(
            v1.pressure("io"),
            None,
            "cgroup v1 has no PSI: absent, not zero"
        );
        assert!(v1.parent().is_none());
    }

    #[test]
    fn finds_v1_and_v2_cgroups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for d in ["memory", "cpu,cpuacct", "pids"] {
            std::fs::create_dir(root.join(d)).expect("mkdir");
        }
        let v1 = "12:pids:/docker/abc\n4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n";
        match parse_cgroup(v1, root) {
            Cgroup::V1(dirs) => {
                assert_eq!(dirs["memory"], root.join("memory/docker/abc"));
                assert_eq!(dirs["cpuacct"], root.join("cpu,cpuacct/docker/abc"));
                assert_eq!(dirs["pids"], root.join("pids/docker/abc"));
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids").expect("write");
        match parse_cgroup("0::/system.slice/docker-abc.scope\n", root) {
            Cgroup::V2(dir) => assert_eq!(dir, root.join("system.slice/docker-abc.scope")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_v2_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").expect("w");
        std::fs::write(d.join("memory.current"), "1000000\n").expect("w");
        std::fs::write(
            d.join("memory.stat"),
            "anon 600000\ninactive_file 200000\npgfault 7\npgmajfault 1\n",
        )
        .expect("w");
        std::fs::write(d.join("memory.max"), "max\n").expect("w");
        std::fs::write(d.join("pids.current"), "3\n").expect("w");
        let cg = Cgroup::V2(d.to_path_buf());
        assert_eq!(cg.cpu_ns(), Some(1_500_000));
        let m = cg.memory().expect("memory");
        assert_eq!(m.working_set(), 800_000);
        assert_eq!(m.rss, 600_000);
        assert_eq!(m.limit, None);
        assert_eq!(cg.processes(), Some(3));
    }

    #[test]
    fn network_counters_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 2000 10 1 0 0 0 0 0 3000 20 2 0 0 0 0 0\n";
        let interfaces = parse_net_dev(text);
        assert_eq!(interfaces.len(), 1);
        assert_eq!(interfaces[0].name, "eth0");
        assert_eq!(interfaces[0].rx_bytes.as_ref().map(|v| v.value), Some(2000));
        assert_eq!(interfaces[0].rx_errors.as_ref().map(|v| v.value), Some(1));
        assert_eq!(interfaces[0].tx_bytes.as_ref().map(|v| v.value), Some(3000));
        assert_eq!(interfaces[0].tx_errors.as_ref().map(|v| v.value), Some(2));
    }
}
