//! The object-store seam: what the uploader needs from S3, as a trait with an S3 implementation
//! ([`s3::S3Sink`]), an in-memory one (`memory::MemorySink`, for unit tests; with the `test-kit`
//! feature) and one that discards everything ([`null::NullSink`], for the benchmarks).
//!
//! Invariant: implementations do one attempt per call; retry and backoff live in
//! [`crate::upload`], classification in [`SinkError::kind`].

#[cfg(any(test, feature = "test-kit"))]
pub mod memory;
pub mod null;
pub mod routed;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::SystemTime;
use tokio::io::AsyncRead;

pub use crate::model::ErrorKind;

/// Headers and settings of an object, fixed per destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Content-Type.
    pub content_type: String,
    /// Content-Encoding, if any.
    pub content_encoding: Option<String>,
    /// SSE algorithm (`AES256` or `aws:kms`).
    pub sse: Option<String>,
    /// KMS key id for `aws:kms`.
    pub kms_key_id: Option<String>,
    /// Storage class.
    pub storage_class: Option<String>,
    /// S3 Bucket Key for SSE-KMS.
    pub bucket_key: bool,
    /// SSE-KMS encryption context (base64 of its JSON object).
    pub kms_context: Option<String>,
    /// User metadata (`x-amz-meta-<name>`), set per object by the uploader.
    pub user: BTreeMap<String, String>,
}

/// User-metadata names the connector writes on every object (see docs/delivery.md).
pub mod meta_keys {
    /// Random id of the upload task that wrote the object (tells our own earlier attempt apart
    /// from another writer's object when a conditional write fails).
    pub const WRITER: &str = "writer-id";
    /// Kafka topic of every record in the object.
    pub const TOPIC: &str = "kafka-topic";
    /// Kafka partition of every record in the object.
    pub const PARTITION: &str = "kafka-partition";
    /// Offset of the first record in the object.
    pub const FIRST_OFFSET: &str = "kafka-first-offset";
}

/// Precondition of a write (S3 conditional writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Write whatever is there (stores without conditional writes).
    Always,
    /// Only if no object exists at the key (`If-None-Match: *`).
    IfAbsent,
    /// Only if the object at the key has this ETag (`If-Match`).
    IfMatch(String),
}

/// What HeadObject tells about an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHead {
    /// ETag, as the store returned it (quoted).
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
    /// User metadata.
    pub user: BTreeMap<String, String>,
}

/// An object being read.
pub struct ObjectBody {
    /// Its headers.
    pub head: ObjectHead,
    /// Its bytes, streamed.
    pub body: Pin<Box<dyn AsyncRead + Send>>,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// One page of ListObjectsV2.
#[derive(Debug, Clone, Default)]
pub struct ObjectPage {
    /// Objects of this page, in key order.
    pub objects: Vec<ListedObject>,
    /// Token of the next page, if any.
    pub next: Option<String>,
}

/// A multipart upload neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// Key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// When it was created, if the store says.
    pub initiated: Option<SystemTime>,
}

/// One page of ListMultipartUploads.
#[derive(Debug, Clone, Default)]
pub struct UploadPage {
    /// Uploads of this page.
    pub uploads: Vec<PendingUpload>,
    /// (key marker, upload-id marker) of the next page, if any.
    pub next: Option<(String, String)>,
}

/// What the store answered to a failed request, when it answered: the fields of the one-line
/// description of an S3 error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Answer {
    /// HTTP status.
    pub status: Option<u16>,
    /// AWS error code (`NoSuchBucket`, `AccessDenied`, `SlowDown`…).
    pub code: Option<String>,
    /// Request id (`x-amz-request-id`), for the store's support.
    pub request_id: Option<String>,
    /// The request was never sent: the credential chain found no credentials.
    pub no_credentials: bool,
}

/// A failed store request. Displayed on one line: operation, bucket, key, HTTP status, AWS
/// error code, request id, then the store's message.
#[derive(Debug, Clone)]
pub struct SinkError {
    /// Operation name, e.g. `PutObject`.
    pub op: &'static str,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Class.
    pub kind: ErrorKind,
    /// Store's message (never contains credentials).
    pub message: String,
    /// Status, code and request id, when the store answered (boxed: an error is carried by
    /// every waiting upload task, which must stay small).
    pub answer: Box<S3Answer>,
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} s3://{}/{} failed ({}",
            self.op,
            self.bucket,
            self.key,
            self.kind.as_str()
        )?;
        if let Some(s) = self.answer.status {
            write!(f, ", HTTP {s}")?;
        }
        if let Some(c) = &self.answer.code {
            write!(f, " {c}")?;
        }
        if let Some(r) = &self.answer.request_id {
            write!(f, ", request id {r}")?;
        }
        write!(f, ")")?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for SinkError {}

impl SinkError {
    /// What makes this failure the same as another for rate-limited logging: operation,
    /// bucket, class, status and code (not the key, which differs per object).
    pub fn cause(&self) -> String {
        format!(
            "{} {} {} {:?} {:?}",
            self.op,
            self.bucket,
            self.kind.as_str(),
            self.answer.status,
            self.answer.code
        )
    }
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// 1-based part number.
    pub number: i32,
    /// ETag the store returned.
    pub etag: String,
}

/// What the uploader needs from an object store.
#[async_trait]
pub trait ObjectSink: Send + Sync + 'static {
    /// Bucket name (for logs).
    fn bucket(&self) -> &str;
    /// Checks the bucket answers (used for readiness and start-up checks).
    async fn check(&self) -> Result<(), SinkError>;
    /// Single-request upload.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        cond: &WriteCondition,
    ) -> Result<(), SinkError>;
    /// Starts a multipart upload; returns its id.
    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, SinkError>;
    /// Uploads one part; returns its ETag.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, SinkError>;
    /// Completes a multipart upload.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        cond: &WriteCondition,
    ) -> Result<(), SinkError>;
    /// Aborts a multipart upload (S3 keeps orphan parts, and bills them, until this).
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), SinkError>;
    /// HeadObject; `None` if there is no object at the key.
    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, SinkError>;
    /// GetObject, streamed; `None` if there is no object at the key.
    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, SinkError>;
    /// Server-side CopyObject of `from` to `to`: content type and user metadata are copied from
    /// `from`; encryption (SSE, KMS key) and storage class come from `meta`, as for any write (a
    /// bucket that refuses unencrypted writes refuses an unencrypted copy too).
    async fn copy(&self, from: &str, to: &str, meta: &ObjectMeta) -> Result<(), SinkError>;
    /// One page of the objects under `prefix`.
    async fn list(&self, prefix: &str, token: Option<String>) -> Result<ObjectPage, SinkError>;
    /// One page of the multipart uploads in progress under `prefix`.
    async fn list_uploads(
        &self,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<UploadPage, SinkError>;
}
