//! Removes what earlier runs of the test suite left behind when they were killed (a CI
//! timeout, a `kill -9` of `cargo test`): their fronts and shims, their containers (also the
//! cri-dockerd-like ones of the adoption tests, which carry no dockpod label), their CNI
//! bridges and NAT rules, and their state directories. Guards' `Drop` cleans up after a test
//! that fails; nothing runs after a test process that is killed, so each test process runs
//! this once, before its first front or network, or one killed run would poison the next.
//!
//! Only what a dead test process made is touched: every front directory, pod name and CNI
//! network name carries the PID of the test process that made it.

use std::sync::Once;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procs;

/// The prefix of a front's directory in /tmp: `dp<test pid>-`.
pub fn front_dir_prefix() -> String {
    format!("dp{}-", std::process::id())
}

/// Reaps once per test process.
pub fn reap_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(reap);
}

/// Whether `pid` was a test process that is gone now.
fn gone(pid: u32) -> bool {
    pid != std::process::id() && !procs::alive(pid)
}

fn reap() {
    reap_front_dirs();
    crate::block_on_side(reap_test_pods());
    reap_cni();
}

/// Front directories of gone test processes: their fronts and shims, their instances'
/// containers, then the directories.
fn reap_front_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("dp")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !gone(pid) {
            continue;
        }
        let dir = entry.path();
        let prefix = dir.display().to_string();
        for process in procs::find(|cmdline| cmdline.iter().any(|a| a.starts_with(&prefix))) {
            let _ = kill(Pid::from_raw(process as i32), Signal::SIGKILL);
        }
        if let Ok(instance) = std::fs::read_to_string(dir.join("root/instance-id")) {
            let instance = instance.trim().to_string();
            if !instance.is_empty() {
                crate::block_on_side(crate::docker::remove_instance_containers(instance));
            }
        }
        eprintln!("reaper: removing {} of a killed test run", dir.display());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The test process a container's Kubernetes name names: pods of the tests live in the
/// namespace `dockpod-test` and are named by `crate::unique`, `<prefix>-<pid>-<n>-<nanos>`.
fn test_pid(container_name: &str) -> Option<u32> {
    let parts: Vec<&str> = container_name.trim_start_matches('/').split('_').collect();
    let namespace = parts.iter().position(|p| *p == "dockpod-test")?;
    let pod = parts.get(namespace.checked_sub(1)?)?;
    let mut fields = pod.rsplit('-');
    let (_nanos, _n) = (fields.next()?, fields.next()?);
    fields.next()?.parse().ok()
}

/// Test pods' containers whose test process is gone, whoever created them.
async fn reap_test_pods() {
    let docker = crate::docker::docker().await;
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(std::collections::HashMap::from([(
            "name".to_string(),
            vec!["_dockpod-test_".to_string()],
        )])),
        ..Default::default()
    };
    let Ok(containers) = docker.list_containers(Some(options)).await else {
        return;
    };
    for c in containers {
        let names = c.names.unwrap_or_default();
        let Some(pid) = names.iter().find_map(|n| test_pid(n)) else {
            continue;
        };
        if !gone(pid) {
            continue;
        }
        let Some(id) = c.id else { continue };
        eprintln!("reaper: removing container {names:?} of a killed test run");
        let options = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let _ = docker.remove_container(&id, Some(options)).await;
    }
}

/// CNI networks of gone test processes: the NAT rules naming them (`dockpod-test-<pid>-<n>`)
/// and their bridges (`dp<pid mod 100000>n<n>`, removed when no live process has such a PID).
fn reap_cni() {
    if let Ok(out) = std::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
    {
        let mut dead = std::collections::BTreeSet::new();
        for rule in String::from_utf8_lossy(&out.stdout).lines() {
            for (i, _) in rule.match_indices("dockpod-test-") {
                let rest = &rule[i + "dockpod-test-".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(pid) = digits.parse::<u32>() {
                    if gone(pid) {
                        dead.insert(pid);
                    }
                }
            }
        }
        for pid in dead {
            eprintln!("reaper: removing NAT rules of a killed test run's CNI network");
            crate::iptables::delete_rules("nat", &[&format!("dockpod-test-{pid}-")]);
        }
    }
    let Ok(out) = std::process::Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
    else {
        return;
    };
    let live: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        let Some((residue, n)) = name.strip_prefix("dp").and_then(|r| r.split_once('n')) else {
            continue;
        };
        let (Ok(residue), Ok(_)) = (residue.parse::<u32>(), n.parse::<u32>()) else {
            continue;
        };
        if live.iter().any(|pid| pid % 100_000 == residue) {
            continue;
        }
        eprintln!("reaper: removing bridge {name} of a killed test run");
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_pods_container_names_its_test_process() {
        assert_eq!(
            test_pid("/k8s_POD_shim-a-4242-3-1a2b3c_dockpod-test_uid-shim-a-4242-3-1a2b3c_0"),
            Some(4242)
        );
        assert_eq!(
            test_pid("/k8s_app_mem1-77-0-ff_dockpod-test_uid-mem1-77-0-ff_0"),
            Some(77)
        );
        assert_eq!(test_pid("/k8s_POD_web_default_uid_0"), None);
        assert_eq!(test_pid("/busy_bee"), None);
    }
}
