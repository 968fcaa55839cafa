//! `shim-manager ps`: one line per pod with its shim's process figures, the pod's restarts and
//! its open streaming sessions, as a table, a wide table or JSON, in the order asked for.

use std::cmp::Ordering;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use dockpod_proto::shim::InfoResponse;

use crate::config::{PsOutput, PsSort};

/// One pod as `ps` shows it: its shim's answer and the socket it came from.
pub struct Row {
    pub socket: PathBuf,
    pub info: InfoResponse,
}

pub async fn run(run_dir: &Path, output: PsOutput, sort: PsSort) -> String {
    let rows: Vec<Row> = super::shims(run_dir)
        .await
        .into_iter()
        .map(|(socket, info)| Row { socket, info })
        .collect();
    render(rows, output, sort)
}

/// The rows sorted by `sort` and printed as `output` asks.
pub fn render(mut rows: Vec<Row>, output: PsOutput, sort: PsSort) -> String {
    rows.sort_by(|a, b| order(&a.info, &b.info, sort));
    match output {
        PsOutput::Table => table(&rows, false),
        PsOutput::Wide => table(&rows, true),
        PsOutput::Json => json(&rows),
    }
}

fn order(a: &InfoResponse, b: &InfoResponse, sort: PsSort) -> Ordering {
    let name = |i: &InfoResponse| (i.pod_namespace.clone(), i.pod_name.clone());
    let largest_first = |f: fn(&InfoResponse) -> u64| f(b).cmp(&f(a));
    let by = match sort {
        PsSort::Name => Ordering::Equal,
        PsSort::Pid => a.pid.cmp(&b.pid),
        PsSort::Rss => largest_first(|i| i.rss_bytes),
        PsSort::Pss => largest_first(|i| i.pss_bytes),
        PsSort::Uptime => largest_first(|i| i.uptime_seconds),
        PsSort::Containers => largest_first(|i| u64::from(i.containers_running)),
        PsSort::Restarts => largest_first(|i| u64::from(i.restarts)),
        PsSort::Sessions => largest_first(|i| u64::from(i.streaming_sessions)),
    };
    by.then_with(|| name(a).cmp(&name(b)))
}

fn table(rows: &[Row], wide: bool) -> String {
    let mut out = String::new();
    let mut line = |cells: [&str; 9], extra: [&str; 3]| {
        let [pod, sandbox, pid, rss, pss, uptime, containers, restarts, sessions] = cells;
        let _ = write!(
            out,
            "{pod:<40} {sandbox:<13} {pid:>8} {rss:>9} {pss:>9} {uptime:>9} {containers:>10} \
             {restarts:>8} {sessions:>8}"
        );
        if wide {
            let [tasks, version, socket] = extra;
            let _ = write!(out, " {tasks:>5} {version:<10} {socket}");
        }
        out.push('\n');
    };
    line(
        [
            "POD",
            if wide { "SANDBOX ID" } else { "SANDBOX" },
            "SHIM PID",
            "RSS",
            "PSS",
            "UPTIME",
            "CONTAINERS",
            "RESTARTS",
            "SESSIONS",
        ],
        ["TASKS", "VERSION", "SOCKET"],
    );
    for Row { socket, info: s } in rows {
        let sandbox = if wide {
            s.sandbox_id.as_str()
        } else {
            s.sandbox_id.get(..12).unwrap_or(&s.sandbox_id)
        };
        let version = format!("{} (p{})", s.version, s.protocol_version);
        line(
            [
                &format!("{}/{}", s.pod_namespace, s.pod_name),
                sandbox,
                &s.pid.to_string(),
                &bytes(s.rss_bytes),
                &bytes(s.pss_bytes),
                &duration(s.uptime_seconds),
                &format!("{}/{}", s.containers_running, s.containers_total),
                &s.restarts.to_string(),
                &s.streaming_sessions.to_string(),
            ],
            [
                &s.tasks.to_string(),
                &version,
                &socket.display().to_string(),
            ],
        );
    }
    out
}

fn json(rows: &[Row]) -> String {
    let pods: Vec<serde_json::Value> = rows
        .iter()
        .map(|Row { socket, info: s }| {
            serde_json::json!({
                "namespace": s.pod_namespace,
                "name": s.pod_name,
                "sandboxId": s.sandbox_id,
                "shimPid": s.pid,
                "rssBytes": s.rss_bytes,
                "pssBytes": s.pss_bytes,
                "uptimeSeconds": s.uptime_seconds,
                "containersRunning": s.containers_running,
                "containersTotal": s.containers_total,
                "restarts": s.restarts,
                "streamingSessions": s.streaming_sessions,
                "tasks": s.tasks,
                "shimVersion": s.version,
                "protocolVersion": s.protocol_version,
                "socket": socket,
            })
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&pods).unwrap_or_default();
    out.push('\n');
    out
}

pub(crate) fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1}MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.0}KiB", n as f64 / 1024.0)
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, rss_mib: u64, restarts: u32, sessions: u32) -> Row {
        Row {
            socket: PathBuf::from(format!("/run/dockpod/shims/{name}.sock")),
            info: InfoResponse {
                pod_namespace: "default".into(),
                pod_name: name.into(),
                sandbox_id: format!("{name}0123456789abcdef"),
                pid: 42,
                rss_bytes: rss_mib << 20,
                pss_bytes: 512 << 10,
                uptime_seconds: 125,
                containers_running: 1,
                containers_total: 2,
                restarts,
                streaming_sessions: sessions,
                tasks: 9,
                version: "0.1.0".into(),
                protocol_version: 5,
                ..Default::default()
            },
        }
    }

    fn names(out: &str) -> Vec<String> {
        out.lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn formats_one_line_per_pod() {
        let t = render(vec![pod("web", 3, 4, 2)], PsOutput::Table, PsSort::Name);
        let header = t.lines().next().expect("header");
        assert!(header.contains("RESTARTS") && header.contains("SESSIONS"));
        let line = t.lines().nth(1).expect("row");
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "default/web",
                "web012345678",
                "42",
                "3.0MiB",
                "512KiB",
                "2m5s",
                "1/2",
                "4",
                "2"
            ]
        );
    }

    #[test]
    fn wide_adds_the_full_id_tasks_version_and_socket() {
        let t = render(vec![pod("web", 3, 0, 0)], PsOutput::Wide, PsSort::Name);
        let line = t.lines().nth(1).expect("row");
        for part in [
            "web0123456789abcdef",
            " 9 ",
            "0.1.0 (p5)",
            "/run/dockpod/shims/web.sock",
        ] {
            assert!(line.contains(part), "{part} missing in {line:?}");
        }
    }

    #[test]
    fn sorts_names_up_and_figures_down() {
        let rows = || vec![pod("b", 1, 5, 0), pod("c", 9, 0, 1), pod("a", 4, 5, 3)];
        let by = |s| names(&render(rows(), PsOutput::Table, s));
        assert_eq!(by(PsSort::Name), ["default/a", "default/b", "default/c"]);
        assert_eq!(by(PsSort::Rss), ["default/c", "default/a", "default/b"]);
        // a and b tie on restarts: the name decides.
        assert_eq!(
            by(PsSort::Restarts),
            ["default/a", "default/b", "default/c"]
        );
        assert_eq!(
            by(PsSort::Sessions),
            ["default/a", "default/c", "default/b"]
        );
    }

    #[test]
    fn json_carries_every_figure_in_plain_units() {
        let out = render(vec![pod("web", 3, 4, 2)], PsOutput::Json, PsSort::Name);
        let pods: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        let web = &pods[0];
        assert_eq!(web["name"], "web");
        assert_eq!(web["rssBytes"], 3 << 20);
        assert_eq!(web["restarts"], 4);
        assert_eq!(web["streamingSessions"], 2);
        assert_eq!(web["socket"], "/run/dockpod/shims/web.sock");
    }
}
