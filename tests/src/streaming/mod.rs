//! Clients for dockpod's streaming server, written for the tests: SPDY/3.1 (`spdy`) and
//! WebSocket (`ws`), each speaking the Kubernetes remote-command and port-forward protocols
//! the way the Go clients (kubelet, kubectl, crictl) do.

pub mod spdy;
pub mod ws;

/// What a remote-command session produced.
#[derive(Debug, Default)]
pub struct Exec {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The error stream's content (a Kubernetes `Status` in JSON from v4 on).
    pub status: Vec<u8>,
}

impl Exec {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The status as JSON (panics on anything else).
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.status)
            .unwrap_or_else(|e| panic!("status {:?} is not JSON: {e}", self.stdout()))
    }

    /// The exit code the status reports: 0 for `Success`.
    pub fn exit_code(&self) -> i64 {
        let status = self.status();
        match status["status"].as_str() {
            Some("Success") => 0,
            _ => {
                assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
                status["details"]["causes"][0]["message"]
                    .as_str()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or_else(|| panic!("no exit code in {status}"))
            }
        }
    }
}

/// `(host:port, path)` of an `http://` URL.
pub fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{url} is not an absolute http:// URL"));
    let (host, path) = rest.split_once('/').expect("URL has a path");
    (host.to_string(), format!("/{path}"))
}
