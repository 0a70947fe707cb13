//! A sink that discards every byte (benchmarks: separates upload cost from the connector's own
//! work) while counting what it was given.

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    CompletedPart, ObjectBody, ObjectHead, ObjectMeta, ObjectPage, ObjectSink, SinkError,
    UploadPage, WriteCondition,
};

/// Discards objects, counts them.
#[derive(Debug, Default)]
pub struct NullSink {
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl NullSink {
    /// A new sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Objects completed so far.
    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ObjectSink for NullSink {
    fn bucket(&self) -> &str {
        "null"
    }
    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }
    async fn put(
        &self,
        _key: &str,
        body: Bytes,
        _meta: &ObjectMeta,
        _cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        self.objects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn create_multipart(&self, _key: &str, _meta: &ObjectMeta) -> Result<String, SinkError> {
        Ok("null".into())
    }
    async fn upload_part(
        &self,
        _key: &str,
        _id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, SinkError> {
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(format!("etag-{number}"))
    }
    async fn complete_multipart(
        &self,
        _key: &str,
        _id: &str,
        _parts: &[CompletedPart],
        _cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        self.objects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn abort_multipart(&self, _key: &str, _id: &str) -> Result<(), SinkError> {
        Ok(())
    }
    async fn head(&self, _key: &str) -> Result<Option<ObjectHead>, SinkError> {
        Ok(None)
    }
    async fn get(&self, _key: &str) -> Result<Option<ObjectBody>, SinkError> {
        Ok(None)
    }
    async fn copy(&self, _from: &str, _to: &str, _meta: &ObjectMeta) -> Result<(), SinkError> {
        Ok(())
    }
    async fn list(&self, _prefix: &str, _token: Option<String>) -> Result<ObjectPage, SinkError> {
        Ok(ObjectPage::default())
    }
    async fn list_uploads(
        &self,
        _prefix: &str,
        _marker: Option<(String, String)>,
    ) -> Result<UploadPage, SinkError> {
        Ok(UploadPage::default())
    }
}
