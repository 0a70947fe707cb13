//! HTTP listener: `/metrics` (Prometheus text format), `/healthz` (liveness) and `/readyz`
//! (readiness), on the shared tokio runtime.
//!
//! Invariants: handlers only read atomics and encode the registry; they never wait on the data
//! path, so a stuck upload cannot make the process look dead. No client can exhaust the
//! listener or grow the process's memory: HTTP/1.1 only (one request in flight per
//! connection, request bytes read ahead capped), at most `max_connections` are served (a new
//! one closes the oldest that started a request, else the oldest), headers must arrive within
//! `header_read_timeout`, `/metrics` is rendered at most once per [`METRICS_MAX_AGE`] and its
//! bytes shared by every scrape, and a failing `accept` backs off (see [`serve`]).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1::Builder as ConnBuilder;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::Metrics;

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// How long a rendered `/metrics` page is served before the registry is encoded again.
pub const METRICS_MAX_AGE: Duration = Duration::from_secs(1);

/// The `/metrics` page, rendered at most once per [`METRICS_MAX_AGE`] and shared: every scrape
/// within that time gets the same [`Bytes`] (one allocation, however many clients read it),
/// and concurrent scrapes of a stale page wait for one render instead of encoding each.
pub struct MetricsPage {
    registry: Registry,
    metrics: Metrics,
    max_age: Duration,
    rendered: Mutex<Option<(Instant, Bytes)>>,
}

impl MetricsPage {
    /// A page over `registry`; `metrics`' readiness gauge is refreshed before each render.
    pub fn new(registry: Registry, metrics: Metrics, max_age: Duration) -> Self {
        Self {
            registry,
            metrics,
            max_age,
            rendered: Mutex::new(None),
        }
    }

    /// The page: the shared rendering if it is younger than the maximum age, else a new one.
    pub fn get(&self) -> Result<Bytes, prometheus::Error> {
        let mut slot = self.rendered.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, page)) = &*slot {
            if at.elapsed() < self.max_age {
                return Ok(page.clone());
            }
        }
        self.metrics.refresh_ready();
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        let page = Bytes::from(buf);
        *slot = Some((Instant::now(), page.clone()));
        Ok(page)
    }
}

/// Answers one request.
pub fn handle(
    path: &str,
    method: &Method,
    page: &MetricsPage,
    health: &Health,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match path {
        "/metrics" => match page.get() {
            Ok(body) => response(StatusCode::OK, TextEncoder::new().format_type(), body),
            Err(e) => response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/healthz" => response(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => match health.not_ready_reason() {
            None => response(StatusCode::OK, "text/plain", "ready\n"),
            Some(why) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /healthz or /readyz\n",
        ),
    }
}

/// What the listener lets one client hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; a new connection beyond it closes the oldest that
    /// started a request, else the oldest.
    pub max_connections: usize,
    /// Time a client has to send a request's headers; a connection that starts no request
    /// for this long (idle, or between keep-alive requests) is closed within twice this.
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
        }
    }
}

/// The live connections, oldest first; each can be closed through its token, and counts the
/// requests it started.
#[derive(Default)]
struct Connections {
    next_id: u64,
    live: BTreeMap<u64, (CancellationToken, Arc<AtomicU64>)>,
}

impl Connections {
    /// Closes one connection to make room: the oldest that has started a request (a client
    /// that was answered, or holds an answer unread), else the oldest. A connection just
    /// accepted, such as a probe's, is so the last to go.
    fn evict(&mut self) {
        let id = self
            .live
            .iter()
            .find(|(_, (_, n))| n.load(Ordering::Relaxed) > 0)
            .or_else(|| self.live.iter().next())
            .map(|(id, _)| *id);
        if let Some((token, _)) = id.and_then(|id| self.live.remove(&id)) {
            token.cancel();
        }
    }
}

/// First wait after a failed `accept` (EMFILE, ENFILE, ENOBUFS…); doubles per failure in a row.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
/// Longest wait between two `accept` attempts after failures.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Most bytes of requests read ahead on one connection (hyper's minimum is 8 KiB).
const READ_BUFFER_MAX: usize = 16 * 1024;

/// Serves until `shutdown` is cancelled.
///
/// A client cannot exhaust the listener: headers must arrive within
/// [`HttpLimits::header_read_timeout`] (so idle and byte-at-a-time connections are dropped),
/// at most [`HttpLimits::max_connections`] connections are served and a new one closes the
/// oldest (so a flood of connections cannot lock out a scrape, which completes in
/// milliseconds), and a failing `accept` (out of file descriptors) backs off instead of
/// spinning.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    metrics: Metrics,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let health = metrics.health();
    let page = Arc::new(MetricsPage::new(registry, metrics, METRICS_MAX_AGE));
    let connections = Arc::new(Mutex::new(Connections::default()));
    // HTTP/1.1 only: one request at a time per connection, its response written before the
    // next request is read, and reads buffered up to READ_BUFFER_MAX. (An HTTP/2 client could
    // open hundreds of streams per connection and hold every response unread.)
    let mut builder = ConnBuilder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(READ_BUFFER_MAX);
    let builder = Arc::new(builder);
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    let mut failures: u64 = 0;
    loop {
        let (socket, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    failures += 1;
                    // Logged once per doubling, so a long outage does not flood the log.
                    if failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures, "metrics listener accept failed; backing off");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        backoff = ACCEPT_BACKOFF_FIRST;
        failures = 0;
        let requests = Arc::new(AtomicU64::new(0));
        let (id, token) = {
            let mut c = connections.lock().unwrap_or_else(|p| p.into_inner());
            while c.live.len() >= limits.max_connections.max(1) {
                c.evict();
            }
            c.next_id += 1;
            let id = c.next_id;
            let token = shutdown.child_token();
            c.live.insert(id, (token.clone(), requests.clone()));
            (id, token)
        };
        let page = page.clone();
        let health = health.clone();
        let counted = requests.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            counted.fetch_add(1, Ordering::Relaxed);
            let r = handle(req.uri().path(), req.method(), &page, &health);
            async move { Ok::<_, Infallible>(r) }
        });
        let builder = builder.clone();
        let connections = connections.clone();
        let quiet = limits.header_read_timeout;
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(socket), service);
            tokio::pin!(conn);
            // A connection that starts no request for a whole period is closed: hyper's header
            // timeout only runs once a request's first byte has arrived.
            let mut seen = 0;
            loop {
                tokio::select! {
                    _ = &mut conn => break,
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(quiet) => {
                        let now = requests.load(Ordering::Relaxed);
                        if now == seen {
                            break;
                        }
                        seen = now;
                    }
                }
            }
            let mut c = connections.lock().unwrap_or_else(|p| p.into_inner());
            c.live.remove(&id);
        });
    }
    // Close every connection still open.
    let c = connections.lock().unwrap_or_else(|p| p.into_inner());
    for (token, _) in c.live.values() {
        token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let registry = Registry::new();
        let metrics = crate::metrics::Metrics::new(&registry).unwrap();
        let health = metrics.health();
        let page = MetricsPage::new(registry, metrics, METRICS_MAX_AGE);
        assert_eq!(
            handle("/healthz", &Method::GET, &page, &health).status(),
            StatusCode::OK
        );
        assert_eq!(
            handle("/nope", &Method::GET, &page, &health).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            handle("/metrics", &Method::POST, &page, &health).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let m = handle("/metrics", &Method::GET, &page, &health);
        assert_eq!(m.status(), StatusCode::OK);
        assert!(m.headers()[hyper::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(
            handle("/readyz", &Method::GET, &page, &health).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_unready_after(Duration::from_secs(60));
        health.group_joined();
        health.s3_succeeded();
        assert_eq!(
            handle("/readyz", &Method::GET, &page, &health).status(),
            StatusCode::OK
        );
    }

    /// Scrapes within the maximum age share one rendering (the same bytes, not a copy); an
    /// older page is rendered again and shows the registry's new values.
    #[test]
    fn the_metrics_page_is_rendered_once_per_interval_and_shared() {
        let registry = Registry::new();
        let metrics = crate::metrics::Metrics::new(&registry).unwrap();
        let counter = prometheus::IntCounter::new("probe_total", "probe").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        let page = MetricsPage::new(registry.clone(), metrics.clone(), Duration::from_secs(3600));
        let first = page.get().unwrap();
        counter.inc();
        let second = page.get().unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr(), "one shared rendering");
        assert!(String::from_utf8_lossy(&second).contains("probe_total 0"));

        let fresh = MetricsPage::new(registry, metrics, Duration::ZERO);
        assert!(String::from_utf8_lossy(&fresh.get().unwrap()).contains("probe_total 1"));
        counter.inc();
        assert!(String::from_utf8_lossy(&fresh.get().unwrap()).contains("probe_total 2"));
    }

    /// A client speaking HTTP/2 with prior knowledge gets no HTTP/2 connection (no SETTINGS
    /// frame, so no streams): the listener answers HTTP/1.1's error, or nothing, and closes.
    #[tokio::test]
    async fn http2_prior_knowledge_is_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let registry = Registry::new();
        let metrics = crate::metrics::Metrics::new(&registry).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            registry,
            metrics,
            HttpLimits::default(),
            stop.clone(),
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer));
        assert!(read.await.is_ok(), "the connection is closed");
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
            "not an HTTP/1.1 answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        stop.cancel();
        server.await.unwrap();
    }

    /// Room is made by closing the oldest connection that started a request; a connection
    /// that has not (just accepted) goes only when no other is left.
    #[test]
    fn eviction_spares_connections_that_started_no_request() {
        let mut c = Connections::default();
        let conns: Vec<(CancellationToken, Arc<AtomicU64>)> = (0..3)
            .map(|_| (CancellationToken::new(), Arc::new(AtomicU64::new(0))))
            .collect();
        for (id, conn) in conns.iter().enumerate() {
            c.live.insert(id as u64, conn.clone());
        }
        conns[1].1.store(1, Ordering::Relaxed);
        c.evict();
        assert!(conns[1].0.is_cancelled() && !conns[0].0.is_cancelled());
        c.evict();
        assert!(conns[0].0.is_cancelled() && !conns[2].0.is_cancelled());
        c.evict();
        assert!(conns[2].0.is_cancelled() && c.live.is_empty());
    }
}
