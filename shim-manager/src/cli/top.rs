//! `shim-manager top <pod>`: the pod's processes, container by container, with the pod's shim
//! on top, the way `docker top` lists one container's. The shim names each container's first
//! process (it asks Docker); every process of that process's cgroup is then read from `/proc`
//! through the `procfs` crate, so what is listed is what the kernel accounts to the container,
//! children and all.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use dockpod_proto::shim::shim_client::ShimClient;
use dockpod_proto::shim::{ContainerProcess, InfoRequest, ProcessesRequest};
use procfs::process::Process;
use procfs::Current;
use serde::Serialize;

use crate::config::TopOutput;

/// One process as `top` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub user: String,
    /// CPU time over the process's lifetime, as `ps` computes `%CPU`.
    pub cpu_percent: f64,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub command: String,
}

/// The processes of one container of the pod (or of its shim).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// `(shim)`, `(sandbox)`, or the container's CRI name.
    pub label: String,
    /// Docker ID; empty for the shim.
    pub id: String,
    /// Why nothing is listed: the container does not run, or its processes could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub processes: Vec<Proc>,
}

pub async fn run(run_dir: &Path, query: &str, output: TopOutput) -> Result<String, String> {
    let socket = super::shim_of(run_dir, query).await?;
    let mut shim = ShimClient::new(dockpod_proto::sockets::channel(&socket));
    let info = shim
        .info(InfoRequest { skip_memory: true })
        .await
        .map_err(|e| format!("asking the shim at {}: {}", socket.display(), e.message()))?
        .into_inner();
    let containers = shim
        .processes(ProcessesRequest {})
        .await
        .map_err(|e| match e.code() {
            tonic::Code::Unimplemented => format!(
                "the shim of {query:?} predates `top` (protocol {}); replace it with \
                 `shim-manager upgrade-shims`",
                info.protocol_version
            ),
            _ => format!("asking the shim at {}: {}", socket.display(), e.message()),
        })?
        .into_inner()
        .containers;
    let clock = Clock::now().map_err(|e| format!("reading the system's clock: {e}"))?;
    let mut groups = vec![Group {
        label: "(shim)".into(),
        id: String::new(),
        note: None,
        processes: clock.read(info.pid).into_iter().collect(),
    }];
    groups.extend(containers.iter().map(|c| container_group(&clock, c)));
    let pod = format!("{}/{}", info.pod_namespace, info.pod_name);
    Ok(match output {
        TopOutput::Table => table(&pod, &info.sandbox_id, &groups),
        TopOutput::Json => {
            let view = serde_json::json!({
                "pod": pod,
                "sandboxId": info.sandbox_id,
                "groups": groups,
            });
            serde_json::to_string_pretty(&view).unwrap_or_default()
        }
    })
}

fn container_group(clock: &Clock, c: &ContainerProcess) -> Group {
    let label = if c.sandbox {
        "(sandbox)".to_string()
    } else {
        c.name.clone()
    };
    let (processes, note) = if c.pid == 0 {
        (Vec::new(), Some("not running".to_string()))
    } else {
        match cgroup_members(c.pid) {
            Ok(pids) => (
                pids.into_iter().filter_map(|p| clock.read(p)).collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(format!("reading its cgroup: {e}"))),
        }
    };
    Group {
        label,
        id: c.id.clone(),
        note,
        processes,
    }
}

fn table(pod: &str, sandbox_id: &str, groups: &[Group]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "POD {pod} (sandbox {})",
        sandbox_id.get(..12).unwrap_or(sandbox_id)
    );
    let _ = writeln!(
        out,
        "{:<20} {:<12} {:>8} {:>8} {:<10} {:>5} {:>8} {:>9}  COMMAND",
        "CONTAINER", "ID", "PID", "PPID", "USER", "%CPU", "TIME", "RSS"
    );
    for g in groups {
        let id = g.id.get(..12).unwrap_or(&g.id);
        if let Some(note) = &g.note {
            let _ = writeln!(out, "{:<20} {id:<12} ({note})", g.label);
        }
        for p in &g.processes {
            let secs = p.cpu_seconds as u64;
            let _ = writeln!(
                out,
                "{:<20} {id:<12} {:>8} {:>8} {:<10} {:>5.1} {:>8} {:>9}  {}",
                g.label,
                p.pid,
                p.ppid,
                p.user,
                p.cpu_percent,
                format!("{}:{:02}", secs / 60, secs % 60),
                super::ps::bytes(p.rss_bytes),
                p.command
            );
        }
    }
    out
}

/// What turns a process's clock ticks into seconds and a share of its lifetime.
struct Clock {
    ticks_per_second: f64,
    uptime_seconds: f64,
}

impl Clock {
    fn now() -> procfs::ProcResult<Self> {
        Ok(Clock {
            ticks_per_second: procfs::ticks_per_second() as f64,
            uptime_seconds: procfs::Uptime::current()?.uptime,
        })
    }

    /// `pid`'s figures; `None` when it exited while being read.
    fn read(&self, pid: u32) -> Option<Proc> {
        let process = Process::new(i32::try_from(pid).ok()?).ok()?;
        let stat = process.stat().ok()?;
        let status = process.status().ok()?;
        let cmdline = process.cmdline().unwrap_or_default();
        let cpu_seconds = (stat.utime + stat.stime) as f64 / self.ticks_per_second;
        let lived = self.uptime_seconds - stat.starttime as f64 / self.ticks_per_second;
        let cpu_percent = if lived > 0.0 {
            100.0 * cpu_seconds / lived
        } else {
            0.0
        };
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(status.ruid))
            .ok()
            .flatten()
            .map_or_else(|| status.ruid.to_string(), |u| u.name);
        Some(Proc {
            pid,
            ppid: u32::try_from(stat.ppid).unwrap_or(0),
            user,
            cpu_percent,
            cpu_seconds,
            rss_bytes: status.vmrss.unwrap_or(0) * 1024,
            // A process without a command line (a zombie) shows its name, as `ps` does.
            command: if cmdline.is_empty() {
                format!("[{}]", stat.comm)
            } else {
                cmdline.join(" ")
            },
        })
    }
}

/// Every process in the cgroup of `pid`, in PID order. On cgroup v1 the `pids` hierarchy is
/// read (Docker puts each container in one of its own), else `memory`; on v2 the unified one.
fn cgroup_members(pid: u32) -> Result<Vec<u32>, String> {
    let process =
        Process::new(i32::try_from(pid).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let groups = process.cgroups().map_err(|e| e.to_string())?;
    let mounts = Process::myself()
        .and_then(|me| me.mountinfo())
        .map_err(|e| format!("reading the mounts: {e}"))?;
    let mounts: Vec<CgroupMount> = mounts
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| CgroupMount {
            v2: m.fs_type == "cgroup2",
            controllers: m.super_options.keys().cloned().collect(),
            root: m.root,
            at: m.mount_point,
        })
        .collect();
    let entries: Vec<(Vec<String>, String)> = groups
        .into_iter()
        .map(|g| (g.controllers, g.pathname))
        .collect();
    let dir = cgroup_dir(&entries, &mounts)
        .ok_or_else(|| format!("no mounted cgroup hierarchy holds process {pid}"))?;
    let procs = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).map_err(|e| format!("{}: {e}", procs.display()))?;
    let mut pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    pids.sort_unstable();
    Ok(pids)
}

/// A mounted cgroup hierarchy.
struct CgroupMount {
    v2: bool,
    /// The v1 controllers it carries (among its mount's options).
    controllers: Vec<String>,
    /// The cgroup mounted there (`/` on the host).
    root: String,
    at: PathBuf,
}

/// The directory of the cgroup a process's `/proc/<pid>/cgroup` entries (controllers, path)
/// name, in the first hierarchy of `pids`, `memory`, then the unified one that is mounted.
fn cgroup_dir(entries: &[(Vec<String>, String)], mounts: &[CgroupMount]) -> Option<PathBuf> {
    let in_mount = |mount: &CgroupMount, path: &str| {
        let inside = path.strip_prefix(mount.root.trim_end_matches('/'))?;
        Some(mount.at.join(inside.trim_start_matches('/')))
    };
    for controller in ["pids", "memory"] {
        let v1 = entries
            .iter()
            .find(|(controllers, _)| controllers.iter().any(|c| c == controller));
        let mount = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller));
        if let (Some((_, path)), Some(mount)) = (v1, mount) {
            return in_mount(mount, path);
        }
    }
    let unified = entries
        .iter()
        .find(|(controllers, _)| controllers.is_empty());
    let mount = mounts.iter().find(|m| m.v2);
    match (unified, mount) {
        (Some((_, path)), Some(mount)) => in_mount(mount, path),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(controllers: &[&str], path: &str) -> (Vec<String>, String) {
        (
            controllers.iter().map(|c| c.to_string()).collect(),
            path.to_string(),
        )
    }

    fn mount(v2: bool, controllers: &[&str], root: &str, at: &str) -> CgroupMount {
        CgroupMount {
            v2,
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            root: root.into(),
            at: at.into(),
        }
    }

    #[test]
    fn finds_a_containers_cgroup_on_v1_hybrid_and_v2_hosts() {
        let v1 = [
            entry(&["cpu", "cpuacct"], "/docker/abc"),
            entry(&["pids"], "/kubepods/pod1/abc"),
            entry(&[], "/docker/abc"),
        ];
        let v1_mounts = [
            mount(
                false,
                &["rw", "cpu", "cpuacct"],
                "/",
                "/sys/fs/cgroup/cpu,cpuacct",
            ),
            mount(false, &["rw", "pids"], "/", "/sys/fs/cgroup/pids"),
            mount(true, &["rw"], "/", "/sys/fs/cgroup/unified"),
        ];
        assert_eq!(
            cgroup_dir(&v1, &v1_mounts),
            Some(PathBuf::from("/sys/fs/cgroup/pids/kubepods/pod1/abc"))
        );
        let v2 = [entry(&[], "/system.slice/docker-abc.scope")];
        assert_eq!(
            cgroup_dir(
                &v2,
                &[mount(true, &["rw", "nsdelegate"], "/", "/sys/fs/cgroup")]
            ),
            Some(PathBuf::from(
                "/sys/fs/cgroup/system.slice/docker-abc.scope"
            ))
        );
        // A host whose cgroup mount starts below the root (a nested node) sees paths from it.
        let nested = [mount(true, &["rw"], "/node1", "/sys/fs/cgroup")];
        assert_eq!(
            cgroup_dir(&[entry(&[], "/node1/docker/abc")], &nested),
            Some(PathBuf::from("/sys/fs/cgroup/docker/abc"))
        );
        assert_eq!(cgroup_dir(&v2, &[]), None);
    }

    #[test]
    fn reads_this_process_and_its_cgroup() {
        let clock = Clock::now().expect("clock");
        let me = clock.read(std::process::id()).expect("this process");
        assert!(me.rss_bytes > 0);
        assert!(!me.command.is_empty());
        let members = cgroup_members(std::process::id()).expect("cgroup");
        assert!(members.contains(&std::process::id()), "{members:?}");
    }
}
