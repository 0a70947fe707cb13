//! The S3 implementation of [`ObjectSink`]: the only file that calls aws-sdk-s3.
//!
//! Credentials come from the AWS default chain unless static keys are configured; `role_arn`
//! assumes a role on top of either. SDK retries are off (one attempt per call): the uploader
//! retries, so every retry is visible in logs and metrics.

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, ServerSideEncryption, StorageClass};
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use std::time::Duration;

use super::{
    CompletedPart, ErrorKind, ListedObject, ObjectBody, ObjectHead, ObjectMeta, ObjectPage,
    ObjectSink, PendingUpload, SinkError, UploadPage, WriteCondition,
};
use crate::config::DestinationConfig;

/// A bucket reached through aws-sdk-s3.
pub struct S3Sink {
    client: Client,
    bucket: String,
}

impl S3Sink {
    /// Builds the client of a destination (resolves credentials lazily, on first request).
    pub async fn connect(d: &DestinationConfig, request_timeout: Duration) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(d.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(request_timeout)
                    .build(),
            );
        if let Some((ak, sk, token)) = &d.credentials.static_keys {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                ak.clone(),
                sk.expose().to_string(),
                token.as_ref().map(|t| t.expose().to_string()),
                None,
                "kafka-s3-sink-config",
            ));
        }
        let base = loader.load().await;
        let sdk_config = match &d.credentials.role_arn {
            Some(role) => {
                let mut b = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                    .session_name("kafka-s3-sink")
                    .configure(&base);
                if let Some(ext) = &d.credentials.external_id {
                    b = b.external_id(ext.expose());
                }
                let provider = b.build().await;
                base.into_builder()
                    .credentials_provider(
                        aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                    )
                    .build()
            }
            None => base,
        };
        let mut s3 =
            aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(d.force_path_style);
        if let Some(ep) = &d.endpoint {
            s3 = s3.endpoint_url(ep.clone());
        }
        Self {
            client: Client::from_conf(s3.build()),
            bucket: d.bucket.clone(),
        }
    }

    fn err<E, R>(&self, op: &'static str, key: &str, e: SdkError<E, R>) -> SinkError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let (kind, message) = classify(&e);
        SinkError {
            op,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            kind,
            message,
        }
    }
}

/// Access to the HTTP status of an SDK raw response.
pub trait HttpStatus {
    /// Status code.
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::client::orchestrator::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Classifies an SDK error: the one place that decides retryability of S3 failures.
pub fn classify<E, R>(e: &SdkError<E, R>) -> (ErrorKind, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    match e {
        SdkError::TimeoutError(_) => (ErrorKind::Timeout, "request timed out".into()),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                ErrorKind::Timeout
            } else if d.is_io() {
                ErrorKind::Network
            } else {
                ErrorKind::Other
            };
            (
                kind,
                format!(
                    "dispatch failure: {:?}",
                    d.as_connector_error().map(|c| c.to_string())
                ),
            )
        }
        SdkError::ResponseError(r) => {
            let status = r.raw().status_code();
            (
                status_kind(status, None),
                format!("unparseable response (HTTP {status})"),
            )
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status_code();
            let code = s.err().code();
            let msg = format!(
                "HTTP {status} {}: {}",
                code.unwrap_or("-"),
                s.err().message().unwrap_or("")
            );
            (status_kind(status, code), msg)
        }
        other => (ErrorKind::Other, other.to_string()),
    }
}

fn status_kind(status: u16, code: Option<&str>) -> ErrorKind {
    match (status, code) {
        (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded")) => {
            ErrorKind::Throttle
        }
        (429 | 503, _) => ErrorKind::Throttle,
        (408, _) | (_, Some("RequestTimeout")) => ErrorKind::Timeout,
        (500..=599, _) => ErrorKind::Server,
        (_, Some("NoSuchUpload" | "InvalidPart" | "InvalidPartOrder" | "EntityTooSmall")) => {
            ErrorKind::Permanent
        }
        (412 | 409, _) | (_, Some("PreconditionFailed" | "ConditionalRequestConflict")) => {
            ErrorKind::Conflict
        }
        _ => ErrorKind::Other,
    }
}

macro_rules! with_meta {
    ($req:expr, $meta:expr) => {{
        let m: &ObjectMeta = $meta;
        let mut r = $req.content_type(m.content_type.clone());
        if let Some(enc) = &m.content_encoding {
            r = r.content_encoding(enc.clone());
        }
        if let Some(sse) = &m.sse {
            r = r.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        if let Some(k) = &m.kms_key_id {
            r = r.ssekms_key_id(k.clone());
        }
        if let Some(sc) = &m.storage_class {
            r = r.storage_class(StorageClass::from(sc.as_str()));
        }
        for (k, v) in &m.user {
            r = r.metadata(k.clone(), v.clone());
        }
        r
    }};
}

macro_rules! with_condition {
    ($req:expr, $cond:expr) => {{
        match $cond {
            WriteCondition::Always => $req,
            WriteCondition::IfAbsent => $req.if_none_match("*"),
            WriteCondition::IfMatch(etag) => $req.if_match(etag.clone()),
        }
    }};
}

fn head_of(
    etag: Option<&str>,
    size: Option<i64>,
    user: Option<&std::collections::HashMap<String, String>>,
) -> ObjectHead {
    ObjectHead {
        etag: etag.unwrap_or_default().to_string(),
        size: size.unwrap_or(0).max(0) as u64,
        user: user
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    }
}

#[async_trait]
impl ObjectSink for S3Sink {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("HeadBucket", "", e))
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body));
        with_condition!(with_meta!(req, meta), cond)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("PutObject", key, e))
    }

    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, SinkError> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key);
        let out = with_meta!(req, meta)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| SinkError {
                op: "CreateMultipartUpload",
                bucket: self.bucket.clone(),
                key: key.into(),
                kind: ErrorKind::Other,
                message: "response has no UploadId".into(),
            })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, SinkError> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("UploadPart", key, e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        cond: &WriteCondition,
    ) -> Result<(), SinkError> {
        let parts = parts
            .iter()
            .map(|p| {
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(p.etag.clone())
                    .build()
            })
            .collect();
        let req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        with_condition!(req, cond)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("CompleteMultipartUpload", key, e))
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), SinkError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("AbortMultipartUpload", key, e))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, SinkError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(head_of(
                out.e_tag(),
                out.content_length(),
                out.metadata(),
            ))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.err("HeadObject", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, SinkError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let head = head_of(out.e_tag(), out.content_length(), out.metadata());
                Ok(Some(ObjectBody {
                    head,
                    body: Box::pin(out.body.into_async_read()),
                }))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.err("GetObject", key, e)),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), SinkError> {
        let source = format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(from, COPY_SOURCE)
        );
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(source)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("CopyObject", to, e))
    }

    async fn list(&self, prefix: &str, token: Option<String>) -> Result<ObjectPage, SinkError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| self.err("ListObjectsV2", prefix, e))?;
        Ok(ObjectPage {
            objects: out
                .contents()
                .iter()
                .filter_map(|o| {
                    Some(ListedObject {
                        key: o.key()?.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    })
                })
                .collect(),
            next: out
                .is_truncated()
                .unwrap_or(false)
                .then(|| out.next_continuation_token().map(str::to_string))
                .flatten(),
        })
    }

    async fn list_uploads(
        &self,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<UploadPage, SinkError> {
        let (key_marker, id_marker) = marker.unzip();
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_key_marker(key_marker)
            .set_upload_id_marker(id_marker)
            .send()
            .await
            .map_err(|e| self.err("ListMultipartUploads", prefix, e))?;
        let uploads = out
            .uploads()
            .iter()
            .filter_map(|u| {
                Some(PendingUpload {
                    key: u.key()?.to_string(),
                    upload_id: u.upload_id()?.to_string(),
                    initiated: u
                        .initiated()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                })
            })
            .collect();
        let next = match (
            out.is_truncated().unwrap_or(false),
            out.next_key_marker(),
            out.next_upload_id_marker(),
        ) {
            (true, Some(k), Some(u)) => Some((k.to_string(), u.to_string())),
            _ => None,
        };
        Ok(UploadPage { uploads, next })
    }
}

/// Characters escaped in `x-amz-copy-source` (everything but unreserved characters and `/`).
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification() {
        assert_eq!(status_kind(503, Some("SlowDown")), ErrorKind::Throttle);
        assert_eq!(status_kind(429, None), ErrorKind::Throttle);
        assert_eq!(status_kind(500, Some("InternalError")), ErrorKind::Server);
        assert_eq!(status_kind(400, Some("RequestTimeout")), ErrorKind::Timeout);
        assert_eq!(status_kind(404, Some("NoSuchUpload")), ErrorKind::Permanent);
        assert_eq!(status_kind(403, Some("AccessDenied")), ErrorKind::Other);
        assert_eq!(
            status_kind(412, Some("PreconditionFailed")),
            ErrorKind::Conflict
        );
        assert_eq!(
            status_kind(409, Some("ConditionalRequestConflict")),
            ErrorKind::Conflict
        );
        assert!(!ErrorKind::Conflict.retryable());
        assert!(ErrorKind::Other.retryable());
        assert!(!ErrorKind::Permanent.retryable());
    }
}
