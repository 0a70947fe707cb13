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
    ObjectSink, PendingUpload, S3Answer, SinkError, UploadPage, WriteCondition,
};
use crate::config::DestinationConfig;

/// Every aws-sdk-s3 call of this file (the SDK's operation name) with the IAM actions that
/// authorise it, for the deployment checks (`kafka-s3-sink catalogue`; scripts/validate_deploy.py
/// holds deploy/iam-policy.json to exactly these actions). A test keeps the list equal to the
/// calls the file makes, so a new call cannot ship without its permission.
pub const S3_CALLS: &[(&str, &[&str])] = &[
    ("list_objects_v2", &["s3:ListBucket"]),
    ("put_object", &["s3:PutObject"]),
    ("create_multipart_upload", &["s3:PutObject"]),
    ("upload_part", &["s3:PutObject"]),
    ("complete_multipart_upload", &["s3:PutObject"]),
    ("abort_multipart_upload", &["s3:AbortMultipartUpload"]),
    ("head_object", &["s3:GetObject"]),
    ("get_object", &["s3:GetObject"]),
    ("copy_object", &["s3:GetObject", "s3:PutObject"]),
    ("list_multipart_uploads", &["s3:ListBucketMultipartUploads"]),
];

/// A bucket reached through aws-sdk-s3.
pub struct S3Sink {
    client: Client,
    bucket: String,
    /// The destination's prefix (the start-up check lists under it).
    prefix: String,
    /// `expected_bucket_owner`: sent with every request, so a bucket of another account (a
    /// typo, a deleted and re-created name) is refused by S3 instead of written to.
    owner: Option<String>,
    /// Whether signatures cover the body's SHA-256 (`payload_signing`, resolved against the
    /// endpoint the client uses; off over TLS by default).
    sign_payload: bool,
    /// The credential provider the client signs with (`None`: the chain has none at all).
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
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
        if let Some(path) = &d.ca_file {
            // Checked at start-up; a file changed since then falls back to the system's roots.
            if let Ok(pem) = crate::config::read_ca_bundle(path) {
                loader = loader.http_client(https_client_trusting(pem));
            }
        }
        let base = loader.load().await;
        let sdk_config = match &d.credentials.role_arn {
            Some(role) => {
                let mut b = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                    .session_name(d.credentials.role_session_name.clone())
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
        let endpoint = effective_endpoint(d, &sdk_config);
        let sign_payload = d.payload_signing.signs(endpoint.as_deref());
        tracing::info!(
            destination = %d.name,
            endpoint = endpoint.as_deref().unwrap_or("AWS"),
            payload = if sign_payload { "signed" } else { "unsigned" },
            "S3 client configured"
        );
        Self {
            credentials: sdk_config.credentials_provider(),
            client: Client::from_conf(s3.build()),
            bucket: d.bucket.clone(),
            prefix: d.prefix.clone(),
            owner: d.expected_bucket_owner.clone(),
            sign_payload,
        }
    }

    /// Resolves the credentials the client signs with (the default chain or the configured
    /// keys, and the role assumed on top); `Ok(true)` for temporary ones. Nothing is sent to S3.
    pub async fn credentials(&self) -> Result<bool, SinkError> {
        use aws_credential_types::provider::ProvideCredentials;
        let fail = |(kind, message, answer): (ErrorKind, String, S3Answer)| SinkError {
            op: "ResolveCredentials",
            bucket: self.bucket.clone(),
            key: String::new(),
            kind,
            message,
            answer: Box::new(answer),
        };
        let Some(provider) = &self.credentials else {
            return Err(fail((
                ErrorKind::Other,
                "no AWS credentials found".into(),
                S3Answer {
                    no_credentials: true,
                    ..S3Answer::default()
                },
            )));
        };
        match provider.provide_credentials().await {
            Ok(c) => Ok(c.session_token().is_some() || c.expiry().is_some()),
            Err(e) => Err(fail(credentials_failure(&e))),
        }
    }

    /// A conditional-write probe: writes an empty object at `key` with `If-None-Match: *`
    /// twice. `Ok(true)` when the second write was refused (the store honours conditional
    /// writes), `Ok(false)` when it was accepted (the store ignores the header).
    pub async fn probe_conditional_write(&self, key: &str) -> Result<bool, SinkError> {
        let meta = ObjectMeta {
            content_type: "application/octet-stream".into(),
            ..ObjectMeta::default()
        };
        for _ in 0..2 {
            match self
                .put(key, Bytes::new(), &meta, &WriteCondition::IfAbsent)
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::Conflict => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    fn err<E, R>(&self, op: &'static str, key: &str, e: SdkError<E, R>) -> SinkError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HttpStatus + 'static,
    {
        let (kind, message, answer) = classify(&e);
        SinkError {
            op,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            kind,
            message,
            answer: Box::new(answer),
        }
    }
}

/// The endpoint the S3 client will use: the destination's `endpoint`, else one the AWS
/// configuration names (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or a profile's
/// `endpoint_url`, as aws-sdk-s3 looks them up), else none (AWS's own, https).
/// The SDK's HTTPS client (rustls with aws-lc, as by default) trusting `pem`'s CAs besides the
/// system's.
fn https_client_trusting(pem: Vec<u8>) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    let store = tls::TrustStore::default().with_pem_certificate(pem);
    let context = tls::TlsContext::builder()
        .with_trust_store(store)
        .build()
        .expect("a TLS context with a trust store always builds");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https()
}

fn effective_endpoint(d: &DestinationConfig, sdk: &aws_config::SdkConfig) -> Option<String> {
    d.endpoint.clone().or_else(|| {
        let key = aws_types::service_config::ServiceConfigKey::builder()
            .service_id("S3")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok()?;
        sdk.service_config()
            .and_then(|c| c.load_config(key))
            .or_else(|| sdk.endpoint_url().map(str::to_string))
    })
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
        if m.bucket_key {
            r = r.bucket_key_enabled(true);
        }
        if let Some(c) = &m.kms_context {
            r = r.ssekms_encryption_context(c.clone());
        }
        for (k, v) in &m.user {
            r = r.metadata(k.clone(), v.clone());
        }
        r
    }};
}

/// Sends a request with a body, its SHA-256 signed or not as the destination says (without it
/// the signature covers `UNSIGNED-PAYLOAD`; the SDK's CRC32 checksum still goes with the body).
macro_rules! send_body {
    ($sink:expr, $req:expr) => {{
        if $sink.sign_payload {
            $req.send().await
        } else {
            $req.customize().disable_payload_signing().send().await
        }
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

    /// A one-key listing under the destination's prefix: the least privilege that proves the
    /// bucket answers and the credentials reach the prefix (HeadBucket would need
    /// `s3:ListBucket` on the whole bucket).
    async fn check(&self) -> Result<(), SinkError> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .prefix(&self.prefix)
            .max_keys(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("ListObjectsV2", &self.prefix, e))
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
            .set_expected_bucket_owner(self.owner.clone())
            .key(key)
            .body(ByteStream::from(body));
        let req = with_condition!(with_meta!(req, meta), cond);
        send_body!(self, req)
            .map(|_| ())
            .map_err(|e| self.err("PutObject", key, e))
    }

    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, SinkError> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
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
                answer: Default::default(),
            })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, SinkError> {
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body));
        let out = send_body!(self, req).map_err(|e| self.err("UploadPart", key, e))?;
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
            .set_expected_bucket_owner(self.owner.clone())
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
            .set_expected_bucket_owner(self.owner.clone())
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
            .set_expected_bucket_owner(self.owner.clone())
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
            .set_expected_bucket_owner(self.owner.clone())
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

    async fn copy(&self, from: &str, to: &str, meta: &ObjectMeta) -> Result<(), SinkError> {
        let source = format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(from, COPY_SOURCE)
        );
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(to)
            .copy_source(source);
        // Metadata (content type, user metadata) is copied from the source; encryption and
        // storage class are not, so they are set as on every write.
        if let Some(sse) = &meta.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        if let Some(k) = &meta.kms_key_id {
            req = req.ssekms_key_id(k.clone());
        }
        if let Some(sc) = &meta.storage_class {
            req = req.storage_class(StorageClass::from(sc.as_str()));
        }
        if meta.bucket_key {
            req = req.bucket_key_enabled(true);
        }
        if let Some(c) = &meta.kms_context {
            req = req.ssekms_encryption_context(c.clone());
        }
        req.set_expected_source_bucket_owner(self.owner.clone())
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
            .set_expected_bucket_owner(self.owner.clone())
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
            .set_expected_bucket_owner(self.owner.clone())
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

mod errors;
use errors::credentials_failure;
#[cfg(test)]
use errors::status_kind;
pub use errors::{classify, HttpStatus};

#[cfg(test)]
mod tests;
