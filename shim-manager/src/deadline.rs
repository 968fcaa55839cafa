//! A client's deadline (gRPC's `grpc-timeout` header) ends its call with DEADLINE_EXCEEDED,
//! as the CRI's clients expect (critest: "public image should timeout if requested").
//! tonic's own handling of the header answers CANCELLED when it fires, so this layer, which
//! runs inside tonic's, sets the same deadline from a moment earlier and answers first. What
//! the call started goes on where it was made to (RunPodSandbox and the removals run to their
//! end in tasks of their own); only the answer is given up.
//!
//! The header's value is parsed here: tonic's parser is private to it.

#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::codegen::http;
use tonic::Status;

/// gRPC's timeout header: up to 8 digits and a unit.
const HEADER: &str = "grpc-timeout";
const MAX_DIGITS: usize = 8;

/// The duration a `grpc-timeout` value names; `None` for a malformed one (which gRPC says to
/// treat as no deadline, as tonic does).
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[derive(Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadlines<S>;

    fn layer(&self, inner: S) -> Deadlines<S> {
        Deadlines { inner }
    }
}

#[derive(Clone)]
pub struct Deadlines<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Deadlines<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get(HEADER)
            .and_then(|v| parse_timeout(v.as_bytes()));
        // Taken now, in `call`: tonic starts its own timer once this returns, so this one is
        // never the later of the two, and tonic polls the call before its timer.
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let call = self.inner.call(req);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return call.await;
            };
            match tokio::time::timeout_at(deadline, call).await {
                Ok(answer) => answer,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the client's deadline ({:?}) passed before the call ended",
                    timeout.unwrap_or_default()
                ))
                .into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_the_rest() {
        assert_eq!(parse_timeout(b"1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"1x",
            b"-1S",
            b"1 S",
            "\u{e9}S".as_bytes(),
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    /// The answer to a request with `grpc-timeout: timeout` of a service that answers
    /// `body` after `delay`.
    async fn answer(delay: Duration, timeout: &str) -> http::Response<String> {
        use tower::{Layer, Service, ServiceExt};
        let inner = tower::service_fn(move |_: http::Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
        });
        let mut svc = DeadlineLayer.layer(inner);
        let req = http::Request::builder()
            .header(HEADER, timeout)
            .body(())
            .expect("request");
        let ready = svc.ready().await.expect("ready");
        ready.call(req).await.expect("answer")
    }

    #[tokio::test]
    async fn a_passed_deadline_answers_deadline_exceeded_and_others_pass_through() {
        let late = answer(Duration::from_secs(60), "1m").await;
        assert_eq!(
            late.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"4"[..])
        );
        let in_time = answer(Duration::ZERO, "10S").await;
        assert_eq!(in_time.into_body(), "done");
    }
}
