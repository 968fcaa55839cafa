//! The one HTTP request a streaming connection starts with: its head parsed (httparse), the
//! upgrade it asks for, and the plain answers (101, 400, 403, 404) written back.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercase, in order; repeated headers stay separate.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, comma-separated lists split.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Whether the request asks to upgrade to `protocol` (case-insensitive).
    pub fn upgrades_to(&self, protocol: &str) -> bool {
        self.header_values("upgrade")
            .iter()
            .any(|p| p.eq_ignore_ascii_case(protocol))
    }

    /// Values of query parameter `name` (percent-decoding is not needed for the numbers and
    /// flags the Kubernetes clients put there).
    pub fn query(&self, name: &str) -> Vec<String> {
        let Some((_, query)) = self.path.split_once('?') else {
            return Vec::new();
        };
        query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .collect()
    }
}

/// Length of the head at the start of `buf` (through its blank line), if complete.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    dockpod_proto::streaming::head_end(buf)
}

/// Parses the head at the start of `buf`; the rest of `buf` is what the client sent after it.
pub fn parse(buf: &[u8]) -> Result<(Request, usize), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let request = Request {
                method: req.method.unwrap_or_default().to_string(),
                path: req.path.unwrap_or_default().to_string(),
                headers: req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
            };
            Ok((request, len))
        }
        Ok(httparse::Status::Partial) => Err("incomplete request head".into()),
        Err(e) => Err(format!("bad request head: {e}")),
    }
}

/// Writes a complete plain-text response and nothing else.
pub async fn respond<W: AsyncWrite + Unpin>(w: &mut W, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = w.write_all(response.as_bytes()).await;
    let _ = w.shutdown().await;
}

/// Writes a 101 answer with the given extra headers.
pub async fn switching<W: AsyncWrite + Unpin>(
    w: &mut W,
    headers: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut response = String::from("HTTP/1.1 101 Switching Protocols\r\n");
    for (name, value) in headers {
        response.push_str(name);
        response.push_str(": ");
        response.push_str(value);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    w.write_all(response.as_bytes()).await?;
    w.flush().await
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kubernetes_upgrade_request() {
        let raw = b"POST /exec/abc?command=sh&command=-c&stdin=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: channel.k8s.io\r\n\r\nextra";
        let (req, len) = parse(raw).expect("parse");
        assert_eq!(&raw[len..], b"extra");
        assert!(req.upgrades_to("spdy/3.1"));
        assert_eq!(
            req.header_values("x-stream-protocol-version"),
            vec!["v4.channel.k8s.io", "channel.k8s.io"]
        );
        assert_eq!(req.query("command"), vec!["sh", "-c"]);
        assert_eq!(req.query("ports"), Vec::<String>::new());
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse(b"\x00\x01garbage\r\n\r\n").is_err());
    }
}
