//! HTTP listener: `/metrics` (Prometheus text format), `/healthz` (liveness) and `/readyz`
//! (readiness), on the shared tokio runtime.
//!
//! Invariants: handlers only read atomics and encode the registry; they never wait on the data
//! path, so a stuck upload cannot make the process look dead. No client can exhaust the
//! listener: at most `max_connections` are served (a new one closes the oldest), headers must
//! arrive within `header_read_timeout`, and a failing `accept` backs off (see [`serve`]).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use prometheus::{Encoder, Registry, TextEncoder};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// Answers one request.
pub fn handle(
    path: &str,
    method: &Method,
    registry: &Registry,
    health: &Health,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match path {
        "/metrics" => {
            let encoder = TextEncoder::new();
            let mut buf = Vec::new();
            match encoder.encode(&registry.gather(), &mut buf) {
                Ok(()) => response(StatusCode::OK, encoder.format_type(), buf),
                Err(e) => response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
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
    /// Connections served at once; a new connection beyond it closes the oldest one.
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

/// The live connections, oldest first; each can be closed through its token.
#[derive(Default)]
struct Connections {
    next_id: u64,
    live: BTreeMap<u64, CancellationToken>,
}

/// First wait after a failed `accept` (EMFILE, ENFILE, ENOBUFS…); doubles per failure in a row.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
/// Longest wait between two `accept` attempts after failures.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    let registry = Arc::new(registry);
    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut builder = ConnBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
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
        let (id, token) = {
            let mut c = connections.lock().unwrap_or_else(|p| p.into_inner());
            while c.live.len() >= limits.max_connections.max(1) {
                match c.live.pop_first() {
                    Some((_, oldest)) => oldest.cancel(),
                    None => break,
                }
            }
            c.next_id += 1;
            let id = c.next_id;
            let token = shutdown.child_token();
            c.live.insert(id, token.clone());
            (id, token)
        };
        let registry = registry.clone();
        let health = health.clone();
        let metrics = metrics.clone();
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            counted.fetch_add(1, Ordering::Relaxed);
            if req.uri().path() == "/metrics" {
                metrics.refresh_ready();
            }
            let r = handle(req.uri().path(), req.method(), &registry, &health);
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
    for token in c.live.values() {
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
        assert_eq!(
            handle("/healthz", &Method::GET, &registry, &health).status(),
            StatusCode::OK
        );
        assert_eq!(
            handle("/nope", &Method::GET, &registry, &health).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            handle("/metrics", &Method::POST, &registry, &health).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let m = handle("/metrics", &Method::GET, &registry, &health);
        assert_eq!(m.status(), StatusCode::OK);
        assert!(m.headers()[hyper::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(
            handle("/readyz", &Method::GET, &registry, &health).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_unready_after(Duration::from_secs(60));
        health.group_joined();
        health.s3_succeeded();
        assert_eq!(
            handle("/readyz", &Method::GET, &registry, &health).status(),
            StatusCode::OK
        );
    }
}
