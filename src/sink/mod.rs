//! The object-store seam: what the uploader needs from S3, as a trait with an S3 implementation
//! ([`s3::S3Sink`]) and an in-memory one ([`memory::MemorySink`]) for unit tests.
//!
//! Invariant: implementations do one attempt per call; retry and backoff live in
//! [`crate::upload`], classification in [`SinkError::kind`].

pub mod memory;
pub mod null;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;

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
}

/// Coarse class of a failed request, for retry decisions and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 429/503 SlowDown and similar.
    Throttle,
    /// Other 5xx.
    Server,
    /// The request timed out.
    Timeout,
    /// Connection refused, reset or DNS failure.
    Network,
    /// A 4xx the store will answer the same way again for this object (e.g. NoSuchUpload).
    Permanent,
    /// Any other client-side or 4xx error (credentials, bucket missing): retried, as an
    /// operator can fix it while the worker waits.
    Other,
}

impl ErrorKind {
    /// Every kind (to initialise metric series at zero).
    pub const ALL: [Self; 6] = [
        Self::Throttle,
        Self::Server,
        Self::Timeout,
        Self::Network,
        Self::Permanent,
        Self::Other,
    ];

    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::Server => "5xx",
            Self::Timeout => "timeout",
            Self::Network => "network",
            Self::Permanent => "permanent",
            Self::Other => "other",
        }
    }

    /// Whether retrying the same request can succeed.
    pub fn retryable(self) -> bool {
        !matches!(self, Self::Permanent)
    }
}

/// A failed store request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} s3://{bucket}/{key} failed ({}): {message}", kind.as_str())]
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
    async fn put(&self, key: &str, body: Bytes, meta: &ObjectMeta) -> Result<(), SinkError>;
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
    ) -> Result<(), SinkError>;
    /// Aborts a multipart upload (S3 keeps orphan parts, and bills them, until this).
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), SinkError>;
}
