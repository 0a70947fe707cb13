//! A destination whose objects live in two buckets: its error folder in the destination's
//! bucket, every other key (an Iceberg table's data files) in another bucket reached with the
//! same endpoint and credentials (an S3 Tables table bucket, a warehouse elsewhere).
//!
//! Invariant: a key under the error prefix goes to the errors' store, any other key to the
//! data store, for every request (a copy must stay in one store); the prefix is never empty,
//! so no data key can be taken for an error key.

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

use super::{
    CompletedPart, ErrorKind, ObjectBody, ObjectHead, ObjectMeta, ObjectPage, ObjectSink,
    SinkError, UploadPage, WriteCondition,
};

/// Routes keys between two stores (see the module doc).
pub struct Routed {
    errors_prefix: String,
    errors: Arc<dyn ObjectSink>,
    data: Arc<dyn ObjectSink>,
}

impl Routed {
    /// Keys under `errors_prefix` (not empty) to `errors`, the others to `data`.
    pub fn new(
        errors_prefix: &str,
        errors: Arc<dyn ObjectSink>,
        data: Arc<dyn ObjectSink>,
    ) -> Option<Self> {
        (!errors_prefix.is_empty()).then(|| Self {
            errors_prefix: errors_prefix.to_string(),
            errors,
            data,
        })
    }

    fn pick(&self, key: &str) -> &Arc<dyn ObjectSink> {
        if key.starts_with(&self.errors_prefix) {
            &self.errors
        } else {
            &self.data
        }
    }
}

#[async_trait]
impl ObjectSink for Routed {
    fn bucket(&self) -> &str {
        self.errors.bucket()
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.errors.check().await?;
        self.data.check().await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        self.pick(key).put(key, body, meta, cond).await
    }

    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, SinkError> {
        self.pick(key).create_multipart(key, meta).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, SinkError> {
        self.pick(key)
            .upload_part(key, upload_id, number, body)
            .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        self.pick(key)
            .complete_multipart(key, upload_id, parts, cond)
            .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), SinkError> {
        self.pick(key).abort_multipart(key, upload_id).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, SinkError> {
        self.pick(key).head(key).await
    }

    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, SinkError> {
        self.pick(key).get(key).await
    }

    async fn copy(&self, from: &str, to: &str, meta: &ObjectMeta) -> Result<(), SinkError> {
        let store = self.pick(from);
        if !Arc::ptr_eq(store, self.pick(to)) {
            return Err(SinkError {
                op: "CopyObject",
                bucket: store.bucket().to_string(),
                key: to.to_string(),
                kind: ErrorKind::Invalid,
                message: format!("{from} and {to} are in different buckets"),
                answer: Default::default(),
            });
        }
        store.copy(from, to, meta).await
    }

    async fn list(&self, prefix: &str, token: Option<String>) -> Result<ObjectPage, SinkError> {
        self.pick(prefix).list(prefix, token).await
    }

    async fn list_uploads(
        &self,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<UploadPage, SinkError> {
        self.pick(prefix).list_uploads(prefix, marker).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::memory::MemorySink;

    #[tokio::test]
    async fn error_keys_go_to_the_errors_store_and_the_rest_to_the_data_store() {
        let errors = Arc::new(MemorySink::new());
        let data = Arc::new(MemorySink::new());
        let r = Routed::new("_errors/", errors.clone(), data.clone()).unwrap();
        let put = |k: &'static str| {
            let r = &r;
            async move {
                r.put(
                    k,
                    Bytes::from_static(b"x"),
                    &ObjectMeta::default(),
                    &WriteCondition::Always,
                )
                .await
                .unwrap()
            }
        };
        put("_errors/not_json/a.ndjson.gz").await;
        put("warehouse/t/data/f.parquet").await;
        assert_eq!(
            errors.objects().keys().collect::<Vec<_>>(),
            ["_errors/not_json/a.ndjson.gz"]
        );
        assert_eq!(
            data.objects().keys().collect::<Vec<_>>(),
            ["warehouse/t/data/f.parquet"]
        );
        assert!(r
            .copy("_errors/x", "warehouse/y", &ObjectMeta::default())
            .await
            .is_err());
        assert!(Routed::new("", errors, data).is_none());
    }
}
