//! A store that counts: wraps any [`ObjectSink`] and records every request it makes (the
//! start-up bucket check, the orphan cleanup, uploads, conflict resolution and the idle probes)
//! in `kafka_s3_sink_s3_requests_total` and in readiness.
//!
//! Invariant: one count per call, whatever its outcome; a refused conditional write and a
//! missing object are answers of a healthy store, not failures.

use async_trait::async_trait;
use bytes::Bytes;

use crate::metrics::Metrics;
use crate::sink::{
    CompletedPart, ErrorKind, ObjectBody, ObjectHead, ObjectMeta, ObjectPage, ObjectSink,
    SinkError, UploadPage, WriteCondition,
};

/// `inner`, with every request counted under destination `dest`.
pub struct Counted<S: ?Sized> {
    inner: std::sync::Arc<S>,
    dest: String,
    metrics: Metrics,
}

impl<S: ObjectSink + ?Sized> Counted<S> {
    /// Wraps `inner`.
    pub fn new(inner: std::sync::Arc<S>, dest: &str, metrics: Metrics) -> Self {
        Self {
            inner,
            dest: dest.to_string(),
            metrics,
        }
    }

    fn count<T>(&self, r: Result<T, SinkError>) -> Result<T, SinkError> {
        match &r {
            Err(e) if e.kind != ErrorKind::Conflict => {
                self.metrics.s3_request(&self.dest, Err(&e.to_string()))
            }
            _ => self.metrics.s3_request(&self.dest, Ok(())),
        }
        r
    }
}

#[async_trait]
impl<S: ObjectSink + ?Sized> ObjectSink for Counted<S> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.count(self.inner.check().await)
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        self.count(self.inner.put(key, body, meta, cond).await)
    }

    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, SinkError> {
        self.count(self.inner.create_multipart(key, meta).await)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, SinkError> {
        self.count(self.inner.upload_part(key, upload_id, number, body).await)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        self.count(
            self.inner
                .complete_multipart(key, upload_id, parts, cond)
                .await,
        )
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), SinkError> {
        self.count(self.inner.abort_multipart(key, upload_id).await)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, SinkError> {
        self.count(self.inner.head(key).await)
    }

    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, SinkError> {
        self.count(self.inner.get(key).await)
    }

    async fn copy(&self, from: &str, to: &str, meta: &ObjectMeta) -> Result<(), SinkError> {
        self.count(self.inner.copy(from, to, meta).await)
    }

    async fn list(&self, prefix: &str, token: Option<String>) -> Result<ObjectPage, SinkError> {
        self.count(self.inner.list(prefix, token).await)
    }

    async fn list_uploads(
        &self,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<UploadPage, SinkError> {
        self.count(self.inner.list_uploads(prefix, marker).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::memory::MemorySink;
    use std::sync::Arc;

    #[tokio::test]
    async fn every_request_counts_and_a_success_makes_s3_answered() {
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        metrics.init_destination("d");
        let health = metrics.health();
        health.group_joined();
        let sink = Counted::new(Arc::new(MemorySink::new()), "d", metrics.clone());
        assert!(health.not_ready_reason().is_some());
        sink.check().await.expect("check");
        assert_eq!(health.not_ready_reason(), None);
        let meta = ObjectMeta::default();
        sink.put(
            "k",
            Bytes::from_static(b"x"),
            &meta,
            &WriteCondition::IfAbsent,
        )
        .await
        .expect("put");
        // Taken key: an answer, not a failure.
        let taken = sink
            .put(
                "k",
                Bytes::from_static(b"y"),
                &meta,
                &WriteCondition::IfAbsent,
            )
            .await;
        assert_eq!(taken.unwrap_err().kind, ErrorKind::Conflict);
        assert!(sink.head("nope").await.expect("head").is_none());
        let total: f64 = registry
            .gather()
            .iter()
            .filter(|f| f.name() == "kafka_s3_sink_s3_requests_total")
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
            .sum();
        assert_eq!(total, 4.0);
    }
}
