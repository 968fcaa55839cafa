//! The front's Prometheus metrics (prometheus-client), served in the text format on
//! `--metrics-bind-addr`: latency and errors of every CRI method, latency of the front's own
//! Docker API calls, the calls it makes to pod shims (by method), the number of pod shims,
//! shim restarts, each shim's RSS and PSS (read from /proc at scrape time), and the panics
//! that ended one streaming session or connection (`dockpod_panics_total`: the front's own,
//! and each shim's as of its last Info answer, which the liveness probe asks for).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::http;

/// A shim as the metrics see it: which pod, which process. The metrics read the rest from
/// /proc, and know nothing else of the front.
pub struct ShimProcess {
    pub shim_id: String,
    pub sandbox_id: String,
    pub pid: u32,
}

/// Lists the shims at scrape time.
pub type ShimLister = Arc<dyn Fn() -> Vec<ShimProcess> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodError {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Shim {
    shim: String,
    sandbox: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PanicSource {
    process: String,
    shim: String,
    sandbox: String,
}

type Latency<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    cri_latency: Latency<Method>,
    cri_errors: Family<MethodError, Counter>,
    docker_latency: Latency<Operation>,
    shim_calls: Family<Method, Counter>,
    shims: Gauge,
    shim_restarts: Counter,
    shim_rss: Family<Shim, Gauge>,
    shim_pss: Family<Shim, Gauge>,
    panics: Family<PanicSource, Counter>,
    /// Each shim's panic count as it last reported it, by shim ID.
    shim_panics_seen: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dockpod");
        let cri_latency: Latency<Method> = Family::new_with_constructor(latency_histogram);
        let cri_errors = Family::<MethodError, Counter>::default();
        let docker_latency: Latency<Operation> = Family::new_with_constructor(latency_histogram);
        let shim_calls = Family::<Method, Counter>::default();
        let shims = Gauge::default();
        let shim_restarts = Counter::default();
        let shim_rss = Family::<Shim, Gauge>::default();
        let shim_pss = Family::<Shim, Gauge>::default();
        let panics = Family::<PanicSource, Counter>::default();
        registry.register(
            "cri_request_duration_seconds",
            "Latency of CRI calls by method",
            cri_latency.clone(),
        );
        registry.register(
            "cri_request_errors",
            "CRI calls that failed, by method and gRPC code",
            cri_errors.clone(),
        );
        registry.register(
            "docker_request_duration_seconds",
            "Latency of the front's Docker API calls by operation",
            docker_latency.clone(),
        );
        registry.register(
            "shim_requests",
            "gRPC calls the front made to pod shims, by method",
            shim_calls.clone(),
        );
        registry.register("shims", "Pod shims the front knows", shims.clone());
        registry.register(
            "shim_restarts",
            "Pod shims started again after they died",
            shim_restarts.clone(),
        );
        registry.register(
            "shim_resident_bytes",
            "Resident set size of each pod shim",
            shim_rss.clone(),
        );
        registry.register(
            "shim_proportional_bytes",
            "Proportional set size (PSS) of each pod shim",
            shim_pss.clone(),
        );
        registry.register(
            "panics",
            "Panics that ended one streaming session or connection, not the process: the \
             front's (process=\"front\") and each pod shim's",
            panics.clone(),
        );
        Metrics {
            registry,
            cri_latency,
            cri_errors,
            docker_latency,
            shim_calls,
            shims,
            shim_restarts,
            shim_rss,
            shim_pss,
            panics,
            shim_panics_seen: Default::default(),
        }
    }

    /// Records a shim's panic count from its Info answer.
    pub fn shim_panics(&self, shim_id: &str, reported: u64) {
        self.shim_panics_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shim_id.to_string(), reported);
    }

    /// Every series set from the processes' own counts: the front's, and each shim's that
    /// still exists as it last reported it (a shim started again counts from zero, which
    /// Prometheus reads as a counter reset).
    fn render_panics(&self, shims: &[ShimProcess]) {
        self.panics.clear();
        let source = |process: &str, shim: &str, sandbox: &str| PanicSource {
            process: process.into(),
            shim: shim.into(),
            sandbox: sandbox.into(),
        };
        self.panics
            .get_or_create(&source("front", "", ""))
            .inc_by(dockpod_proto::panics::count());
        let mut seen = self
            .shim_panics_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        seen.retain(|id, _| shims.iter().any(|s| &s.shim_id == id));
        for shim in shims {
            if let Some(reported) = seen.get(&shim.shim_id) {
                self.panics
                    .get_or_create(&source("pod-shim", &shim.shim_id, &shim.sandbox_id))
                    .inc_by(*reported);
            }
        }
    }

    fn observe_cri(&self, method: &str, took: Duration, code: Option<&str>) {
        let method = method.to_string();
        self.cri_latency
            .get_or_create(&Method {
                method: method.clone(),
            })
            .observe(took.as_secs_f64());
        if let Some(code) = code.filter(|c| *c != "0") {
            self.cri_errors
                .get_or_create(&MethodError {
                    method,
                    code: code.to_string(),
                })
                .inc();
        }
    }

    fn shim_called(&self, method: &str) {
        self.shim_calls
            .get_or_create(&Method {
                method: method.to_string(),
            })
            .inc();
    }

    pub fn shim_restarted(&self) {
        self.shim_restarts.inc();
    }

    /// The metrics in Prometheus' text format, with the shims' figures read now.
    pub fn render(&self, shims: Vec<ShimProcess>) -> String {
        self.shims.set(shims.len() as i64);
        self.render_panics(&shims);
        self.shim_rss.clear();
        self.shim_pss.clear();
        for shim in shims {
            let Ok(memory) = dockpod_proto::procfs::memory(shim.pid) else {
                continue;
            };
            let labels = Shim {
                shim: shim.shim_id,
                sandbox: shim.sandbox_id,
            };
            self.shim_rss
                .get_or_create(&labels)
                .set(memory.rss_bytes as i64);
            self.shim_pss
                .get_or_create(&labels)
                .set(memory.pss_bytes as i64);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Times one of the front's Docker API calls.
pub async fn docker<F: Future>(operation: &str, call: F) -> F::Output {
    let start = Instant::now();
    let out = call.await;
    global()
        .docker_latency
        .get_or_create(&Operation {
            operation: operation.to_string(),
        })
        .observe(start.elapsed().as_secs_f64());
    out
}

/// The gRPC method of a request: the last segment of its path.
fn method_of<B>(req: &http::Request<B>) -> &str {
    req.uri().path().rsplit('/').next().unwrap_or_default()
}

/// A channel to a shim that counts the calls made through it.
#[derive(Clone)]
pub struct ShimCalls<S> {
    inner: S,
}

impl<S> ShimCalls<S> {
    pub fn new(inner: S) -> ShimCalls<S> {
        ShimCalls { inner }
    }
}

impl<S, B> tower::Service<http::Request<B>> for ShimCalls<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        global().shim_called(method_of(&req));
        self.inner.call(req)
    }
}

/// A tower layer timing every gRPC call the front serves, with its status code.
#[derive(Clone, Copy, Default)]
pub struct CriLayer;

impl<S> tower::Layer<S> for CriLayer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed { inner }
    }
}

#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_of(&req).to_string();
        let start = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await;
            // An error answered by a handler travels in the headers (a trailers-only reply).
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                Err(_) => Some("transport".to_string()),
            };
            global().observe_cri(&method, start.elapsed(), code.as_deref());
            response
        })
    }
}

/// Serves `GET /metrics` on `addr`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    shims: ShimLister,
    tasks: &dockpod_proto::tasks::Tasks,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "serving Prometheus metrics on /metrics");
    tasks.spawn(async move {
        loop {
            let mut conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                Err(e) => {
                    if let Some(wait) = dockpod_proto::sockets::accept_backoff(&e) {
                        tracing::warn!(error = %e, "accepting a metrics connection");
                        tokio::time::sleep(wait).await;
                    }
                    continue;
                }
            };
            let shims = shims.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(10), async {
                    while dockpod_proto::streaming::head_end(&head).is_none() && head.len() < 8192 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    true
                })
                .await;
                if !matches!(read, Ok(true)) {
                    return;
                }
                let wanted =
                    head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
                let (status, body) = if wanted {
                    ("200 OK", global().render(shims()))
                } else {
                    ("404 Not Found", "see /metrics\n".to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(local)
}
