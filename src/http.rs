//! HTTP listener: `/metrics` (Prometheus text format), `/healthz` (liveness) and `/readyz`
//! (readiness), on the shared tokio runtime.
//!
//! Invariant: handlers only read atomics and encode the registry; they never wait on the data
//! path, so a stuck upload cannot make the process look dead.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use prometheus::{Encoder, Registry, TextEncoder};
use std::convert::Infallible;
use std::sync::Arc;
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

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let health = metrics.health();
    let registry = Arc::new(registry);
    loop {
        let (socket, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let health = health.clone();
        let metrics = metrics.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            if req.uri().path() == "/metrics" {
                metrics.refresh_ready();
            }
            let r = handle(req.uri().path(), req.method(), &registry, &health);
            async move { Ok::<_, Infallible>(r) }
        });
        tokio::spawn(async move {
            let _ = ConnBuilder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
