//! `shim-manager ps`: one line per pod with its shim's process figures.

use std::fmt::Write;
use std::path::Path;

use dockpod_proto::shim::InfoResponse;

/// The table `ps` prints.
pub fn table(shims: &[InfoResponse]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<13} {:>8} {:>9} {:>9} {:>9} {:>10}",
        "POD", "SANDBOX", "SHIM PID", "RSS", "PSS", "UPTIME", "CONTAINERS"
    );
    let mut rows: Vec<&InfoResponse> = shims.iter().collect();
    rows.sort_by(|a, b| (&a.pod_namespace, &a.pod_name).cmp(&(&b.pod_namespace, &b.pod_name)));
    for s in rows {
        let _ = writeln!(
            out,
            "{:<40} {:<13} {:>8} {:>9} {:>9} {:>9} {:>10}",
            format!("{}/{}", s.pod_namespace, s.pod_name),
            s.sandbox_id.get(..12).unwrap_or(&s.sandbox_id),
            s.pid,
            bytes(s.rss_bytes),
            bytes(s.pss_bytes),
            duration(s.uptime_seconds),
            format!("{}/{}", s.containers_running, s.containers_total),
        );
    }
    out
}

pub async fn run(run_dir: &Path) -> String {
    let shims: Vec<InfoResponse> = super::shims(run_dir)
        .await
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    table(&shims)
}

fn bytes(n: u64) -> String {
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

    #[test]
    fn formats_one_line_per_pod() {
        let info = InfoResponse {
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            sandbox_id: "0123456789abcdef".into(),
            pid: 42,
            rss_bytes: 3 << 20,
            pss_bytes: 512 << 10,
            uptime_seconds: 125,
            containers_running: 1,
            containers_total: 2,
            ..Default::default()
        };
        let t = table(&[info]);
        let line = t.lines().nth(1).expect("row");
        for part in [
            "default/web",
            "0123456789ab",
            "42",
            "3.0MiB",
            "512KiB",
            "2m5s",
            "1/2",
        ] {
            assert!(line.contains(part), "{part} missing in {line:?}");
        }
    }
}
