//! A sink decorator that records the stored size and completion time of every object, then
//! passes each request on to the real sink (null or S3).
//!
//! Invariant: an object is recorded once, when its PutObject or CompleteMultipartUpload
//! succeeded; a multipart object's size is the sum of its parts.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use kafka_s3_sink::sink::{
    CompletedPart, ObjectBody, ObjectHead, ObjectMeta, ObjectPage, ObjectSink, SinkError,
    UploadPage, WriteCondition,
};

/// Records object sizes and completion times around an inner sink.
pub struct RecordingSink {
    inner: Arc<dyn ObjectSink>,
    /// Bytes of the parts uploaded so far, per multipart object key.
    parts: Mutex<HashMap<String, u64>>,
    /// (stored size, completion time) of every finished object.
    objects: Mutex<Vec<(u64, Instant)>>,
}

impl RecordingSink {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectSink>) -> Self {
        Self {
            inner,
            parts: Mutex::new(HashMap::new()),
            objects: Mutex::new(Vec::new()),
        }
    }

    /// Stored sizes of the finished objects.
    pub fn sizes(&self) -> Vec<u64> {
        self.lock_objects().iter().map(|(s, _)| *s).collect()
    }

    /// Completion time of the first finished object, if any.
    pub fn first_completed(&self) -> Option<Instant> {
        self.lock_objects().iter().map(|(_, t)| *t).min()
    }

    fn lock_objects(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Instant)>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finished(&self, size: u64) {
        self.lock_objects().push((size, Instant::now()));
    }
}

#[async_trait]
impl ObjectSink for RecordingSink {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn check(&self) -> Result<(), SinkError> {
        self.inner.check().await
    }
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        let len = body.len() as u64;
        self.inner.put(key, body, meta, cond).await?;
        self.finished(len);
        Ok(())
    }
    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, SinkError> {
        self.inner.create_multipart(key, meta).await
    }
    async fn upload_part(
        &self,
        key: &str,
        id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, SinkError> {
        let len = body.len() as u64;
        let etag = self.inner.upload_part(key, id, number, body).await?;
        *self
            .parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_string())
            .or_insert(0) += len;
        Ok(etag)
    }
    async fn complete_multipart(
        &self,
        key: &str,
        id: &str,
        parts: &[CompletedPart],
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        self.inner.complete_multipart(key, id, parts, cond).await?;
        let size = self
            .parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
            .unwrap_or(0);
        self.finished(size);
        Ok(())
    }
    async fn abort_multipart(&self, key: &str, id: &str) -> Result<(), SinkError> {
        self.parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        self.inner.abort_multipart(key, id).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, SinkError> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, SinkError> {
        self.inner.get(key).await
    }
    async fn copy(&self, from: &str, to: &str, meta: &ObjectMeta) -> Result<(), SinkError> {
        self.inner.copy(from, to, meta).await
    }
    async fn list(&self, prefix: &str, token: Option<String>) -> Result<ObjectPage, SinkError> {
        self.inner.list(prefix, token).await
    }
    async fn list_uploads(
        &self,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<UploadPage, SinkError> {
        self.inner.list_uploads(prefix, marker).await
    }
}
