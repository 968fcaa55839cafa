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

    /// The status as JSON (panics on anything else, an empty status included).
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.status)
            .unwrap_or_else(|e| panic!("status {:?} is not JSON: {e}", self.status_text()))
    }

    pub fn status_text(&self) -> String {
        String::from_utf8_lossy(&self.status).into_owned()
    }

    /// How the Kubernetes clients read a v4/v5 status (client-go's `errorDecoderV4`): the
    /// exit code, or the error they would report. An empty error stream is success to them,
    /// which is why a status lost behind GOAWAY reads as exit code 0.
    pub fn outcome(&self) -> Result<i64, String> {
        if self.status.is_empty() {
            return Ok(0);
        }
        let status: serde_json::Value = serde_json::from_slice(&self.status).map_err(|e| {
            format!(
                "error stream protocol error: {e} in {:?}",
                self.status_text()
            )
        })?;
        match status["status"].as_str() {
            Some("Success") => Ok(0),
            Some("Failure") if status["reason"] == "NonZeroExitCode" => {
                let causes = status["details"]["causes"]
                    .as_array()
                    .ok_or("error stream protocol error: details must be set")?;
                let cause = causes
                    .iter()
                    .find(|c| c["reason"] == "ExitCode")
                    .ok_or("error stream protocol error: no ExitCode cause given")?;
                // client-go parses the code as an unsigned 8-bit number.
                cause["message"]
                    .as_str()
                    .and_then(|m| m.parse::<u8>().ok())
                    .map(i64::from)
                    .ok_or_else(|| {
                        format!("error stream protocol error: invalid exit code value {cause}")
                    })
            }
            Some("Failure") => Err(status["message"].as_str().unwrap_or_default().to_string()),
            _ => Err(format!(
                "error stream protocol error: unknown error in {status}"
            )),
        }
    }

    /// The exit code the Kubernetes clients would report (panics where they report an error).
    pub fn exit_code(&self) -> i64 {
        self.outcome()
            .unwrap_or_else(|e| panic!("the client reports an error, not an exit code: {e}"))
    }

    /// Asserts a pre-v4 session (`channel.k8s.io`, `base64.channel.k8s.io`) reported exactly
    /// `code` as the kubelet's server writes it there: nothing for 0, else the text its
    /// clients show.
    pub fn assert_exit_text(&self, code: i64) {
        let expected = match code {
            0 => String::new(),
            code => format!("command terminated with non-zero exit code: exit status {code}"),
        };
        assert_eq!(self.status_text(), expected);
    }

    /// Asserts the session reported exactly `code`, with the whole status a v4 server sends:
    /// `Success` for 0; for anything else `Failure` with reason `NonZeroExitCode` and one
    /// `ExitCode` cause naming the code.
    pub fn assert_exit(&self, code: i64) {
        let status = self.status();
        if code == 0 {
            assert_eq!(status["status"], "Success", "{status}");
        } else {
            assert_eq!(status["status"], "Failure", "{status}");
            assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
            let causes = status["details"]["causes"].as_array().cloned();
            assert_eq!(
                causes,
                Some(vec![
                    serde_json::json!({"reason": "ExitCode", "message": code.to_string()})
                ]),
                "{status}"
            );
        }
        assert_eq!(self.exit_code(), code, "{status}");
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
