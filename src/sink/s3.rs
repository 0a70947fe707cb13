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

use super::{CompletedPart, ErrorKind, ObjectMeta, ObjectSink, SinkError};
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
        (412, _) => ErrorKind::Permanent,
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
        r
    }};
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

    async fn put(&self, key: &str, body: Bytes, meta: &ObjectMeta) -> Result<(), SinkError> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body));
        with_meta!(req, meta)
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
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
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
}

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
        assert!(ErrorKind::Other.retryable());
        assert!(!ErrorKind::Permanent.retryable());
    }
}
