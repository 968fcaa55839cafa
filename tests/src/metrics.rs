//! The front's Prometheus endpoint as a test reads it: where the front says it serves
//! (`--metrics-bind-addr 127.0.0.1:0` binds a free port and logs it), a scrape, its samples.

use crate::front::Front;

/// The address the front logged for its metrics server.
pub fn address(front: &Front) -> String {
    // The log is coloured: its escape sequences go first.
    let log = strip_ansi(&front.log());
    log.lines()
        .find(|l| l.contains("serving Prometheus metrics"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .unwrap_or_else(|| panic!("the front did not log its metrics address:\n{log}"))
        .to_string()
}

/// One scrape of `addr`'s `/metrics`: the body of a 200 answer.
pub async fn scrape(addr: &str) -> String {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect to metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read");
        let (head, body) = reply.split_once("\r\n\r\n").expect("HTTP reply");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    })
    .await
    .expect("scrape")
}

/// Every sample of a text-format body: series (name and labels) and value.
pub fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The values of every series starting with `prefix`.
pub fn values(samples: &[(String, f64)], prefix: &str) -> Vec<f64> {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(prefix))
        .map(|(_, v)| *v)
        .collect()
}

/// Text without its ANSI escape sequences (`ESC [ ... m`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
