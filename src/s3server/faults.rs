//! The local S3 server's front layer, in front of s3s: every request is recorded (method, path,
//! query and the allow-listed [`RECORDED_HEADERS`], never `authorization`) and, when the shared
//! [`FaultPlan`] says so, answered with an S3 XML error without reaching s3s, so nothing is
//! written. PUT and POST bodies are read to the end before s3s sees them (see the parent
//! module).
//!
//! Invariants: each faulted request counts once in `injected`; a rule's count is spent only by
//! requests its predicate matched (`fail_next`'s by any request); a request is logged before it
//! is answered, then given the status it was answered with (the fault's, the upload listing's
//! or s3s's).

use std::fmt;
use std::future::poll_fn;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use s3s::service::S3Service;

use super::uploads;

/// Request headers kept in [`RecordedRequest::headers`] (lower-case); everything else, and
/// in particular `authorization`, is never recorded.
pub const RECORDED_HEADERS: [&str; 14] = [
    "content-type",
    "content-encoding",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-storage-class",
    "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-server-side-encryption-context",
    "x-amz-expected-bucket-owner",
    "if-none-match",
    "if-match",
    "x-amz-copy-source",
    "content-length",
    "x-amz-content-sha256",
    "x-amz-checksum-crc32",
];

/// One request as seen by the server, before s3s handled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method (`PUT`, `POST`, …).
    pub method: String,
    /// Path as sent, percent-encoded (`/bucket/a/b.txt`).
    pub path: String,
    /// Raw query string without `?` (`partNumber=1&uploadId=…`), empty if none.
    pub query: String,
    /// The headers named in [`RECORDED_HEADERS`] that were present, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Whether the [`FaultPlan`] answered this request instead of s3s.
    pub fault_injected: bool,
    /// Response status, once the response was produced (`None` if s3s failed at HTTP level).
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// The first value of a recorded header (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The request line as a [`RequestTarget`], for the same predicates as fault matching.
    pub fn target(&self) -> RequestTarget<'_> {
        RequestTarget {
            method: &self.method,
            path: &self.path,
            query: &self.query,
        }
    }
}

/// Method, path and query of a request, given to [`FaultPlan::fail_matching`] predicates.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path as sent, percent-encoded.
    pub path: &'a str,
    /// Raw query string, empty if none.
    pub query: &'a str,
}

impl RequestTarget<'_> {
    /// Whether the query has a parameter named `name` (with or without a value).
    pub fn has_query_param(&self, name: &str) -> bool {
        self.query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name))
    }

    /// `PUT /bucket/key?partNumber=N&uploadId=…` (UploadPart).
    pub fn is_upload_part(&self) -> bool {
        self.method == "PUT"
            && self.has_query_param("partNumber")
            && self.has_query_param("uploadId")
    }

    /// `POST /bucket/key?uploads` (CreateMultipartUpload).
    pub fn is_create_multipart(&self) -> bool {
        self.method == "POST" && self.has_query_param("uploads")
    }

    /// `POST /bucket/key?uploadId=…` (CompleteMultipartUpload).
    pub fn is_complete_multipart(&self) -> bool {
        self.method == "POST" && self.has_query_param("uploadId")
    }

    /// `DELETE /bucket/key?uploadId=…` (AbortMultipartUpload).
    pub fn is_abort_multipart(&self) -> bool {
        self.method == "DELETE" && self.has_query_param("uploadId")
    }

    /// `PUT /bucket/key` without multipart parameters (PutObject or CopyObject).
    pub fn is_put_object(&self) -> bool {
        let has_key = self
            .path
            .trim_start_matches('/')
            .split_once('/')
            .is_some_and(|(_, key)| !key.is_empty());
        self.method == "PUT" && has_key && !self.has_query_param("uploadId")
    }
}

/// The error answered by an injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// HTTP status.
    pub status: u16,
    /// S3 error code (`<Code>`).
    pub code: String,
    /// S3 error message (`<Message>`).
    pub message: String,
}

impl Fault {
    /// 503 `SlowDown`, S3's throttling answer (retryable).
    pub fn slow_down() -> Self {
        Self {
            status: 503,
            code: "SlowDown".to_owned(),
            message: "Please reduce your request rate.".to_owned(),
        }
    }

    /// 500 `InternalError` (retryable).
    pub fn internal_error() -> Self {
        Self {
            status: 500,
            code: "InternalError".to_owned(),
            message: "We encountered an internal error. Please try again.".to_owned(),
        }
    }

    /// 403 `AccessDenied` (not retryable).
    pub fn access_denied() -> Self {
        Self {
            status: 403,
            code: "AccessDenied".to_owned(),
            message: "Access Denied".to_owned(),
        }
    }
}

type Predicate = Arc<dyn Fn(&RequestTarget<'_>) -> bool + Send + Sync>;

struct Rule {
    remaining: u32,
    fault: Fault,
    predicate: Predicate,
}

/// Faults to inject, shared between the test (or demo) and the server; safe to change while
/// requests are in flight.
///
/// Order of checks per request: the [`fail_next`](Self::fail_next) counter first, then the
/// [`fail_matching`](Self::fail_matching) rules in the order they were added (the first rule
/// that matches and has faults left answers).
#[derive(Default)]
pub struct FaultPlan {
    next: AtomicU32,
    rules: Mutex<Vec<Rule>>,
    injected: AtomicU64,
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultPlan")
            .field("next", &self.next.load(Ordering::SeqCst))
            .field("rules", &self.lock_rules().len())
            .field("injected", &self.injected())
            .finish()
    }
}

impl FaultPlan {
    /// The next `n` requests, whatever they are, get 503 `SlowDown` (replaces the previous count).
    pub fn fail_next(&self, n: u32) {
        self.next.store(n, Ordering::SeqCst);
    }

    /// The next `n` requests for which `predicate` holds get 503 `SlowDown`.
    pub fn fail_matching<F>(&self, n: u32, predicate: F)
    where
        F: Fn(&RequestTarget<'_>) -> bool + Send + Sync + 'static,
    {
        self.fail_matching_with(n, Fault::slow_down(), predicate);
    }

    /// The next `n` requests for which `predicate` holds get `fault`.
    pub fn fail_matching_with<F>(&self, n: u32, fault: Fault, predicate: F)
    where
        F: Fn(&RequestTarget<'_>) -> bool + Send + Sync + 'static,
    {
        if n == 0 {
            return;
        }
        self.lock_rules().push(Rule {
            remaining: n,
            fault,
            predicate: Arc::new(predicate),
        });
    }

    /// Drops every pending fault (the [`injected`](Self::injected) count stays).
    pub fn clear(&self) {
        self.next.store(0, Ordering::SeqCst);
        self.lock_rules().clear();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// How many faults are still armed (fail-next count plus what the rules have left).
    pub fn pending(&self) -> u64 {
        let rules: u64 = self
            .lock_rules()
            .iter()
            .map(|r| u64::from(r.remaining))
            .sum();
        u64::from(self.next.load(Ordering::SeqCst)) + rules
    }

    /// Decides whether this request fails; consumes one fault if so.
    fn take(&self, target: &RequestTarget<'_>) -> Option<Fault> {
        let took_next = self
            .next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let fault = if took_next {
            Some(Fault::slow_down())
        } else {
            let mut rules = self.lock_rules();
            let hit = rules
                .iter()
                .position(|r| r.remaining > 0 && (r.predicate)(target));
            hit.map(|i| {
                let rule = &mut rules[i];
                rule.remaining -= 1;
                let fault = rule.fault.clone();
                if rule.remaining == 0 {
                    rules.remove(i);
                }
                fault
            })
        };
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        fault
    }

    fn lock_rules(&self) -> MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The log behind [`LocalS3::requests`].
#[derive(Debug, Default)]
pub(super) struct RequestLog {
    entries: Mutex<Vec<RecordedRequest>>,
}

impl RequestLog {
    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, entry: RecordedRequest) -> usize {
        let mut entries = self.lock();
        entries.push(entry);
        entries.len() - 1
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(entry) = self.lock().get_mut(index) {
            entry.status = Some(status);
        }
    }
}

/// Hyper service in front of s3s: records each request, then either answers an injected fault
/// or delegates to the wrapped [`S3Service`].
#[derive(Clone)]
pub struct FaultInjectingService {
    inner: S3Service,
    root: PathBuf,
    faults: Arc<FaultPlan>,
    log: Arc<RequestLog>,
}

impl FaultInjectingService {
    /// The service in front of `inner` (serving `root`), with its plan and request log.
    pub(super) fn new(
        inner: S3Service,
        root: PathBuf,
        faults: Arc<FaultPlan>,
        log: Arc<RequestLog>,
    ) -> Self {
        FaultInjectingService {
            inner,
            root,
            faults,
            log,
        }
    }
}

impl fmt::Debug for FaultInjectingService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjectingService")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl hyper::service::Service<Request<Incoming>> for FaultInjectingService {
    type Response = Response<s3s::Body>;
    type Error = s3s::HttpError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let fault = match escapes_root(&path) {
            // A key that would resolve outside the bucket's folder never reaches the disk.
            true => Some(Fault {
                status: 400,
                code: "InvalidArgument".to_owned(),
                message: "the local S3 server refuses a key with a '.' or '..' segment".to_owned(),
            }),
            false => self.faults.take(&RequestTarget {
                method: &method,
                path: &path,
                query: &query,
            }),
        };
        let headers = req
            .headers()
            .iter()
            .filter(|(name, _)| RECORDED_HEADERS.contains(&name.as_str()))
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let index = self.log.push(RecordedRequest {
            method,
            path,
            query,
            headers,
            fault_injected: fault.is_some(),
            status: None,
        });
        let log = Arc::clone(&self.log);
        let injected = self.faults.injected();
        match fault {
            Some(fault) => Box::pin(async move {
                tracing::debug!(code = %fault.code, status = fault.status, "local S3: injecting fault");
                let resp = fault_response(req, &fault, injected).await;
                log.set_status(index, resp.status().as_u16());
                Ok(resp)
            }),
            None => {
                if let Some(bucket) = uploads::bucket_of(
                    req.method().as_str(),
                    req.uri().path(),
                    req.uri().query().unwrap_or_default(),
                ) {
                    let resp = uploads::response(
                        &self.root,
                        &bucket,
                        req.uri().query().unwrap_or_default(),
                    );
                    log.set_status(index, resp.status().as_u16());
                    return Box::pin(async move { Ok(resp) });
                }
                let inner = self.inner.clone();
                Box::pin(async move {
                    let req = read_body_first(req).await?;
                    let result = inner.call(req).await;
                    if let Ok(resp) = &result {
                        log.set_status(index, resp.status().as_u16());
                    }
                    result
                })
            }
        }
    }
}

/// Whether a request path, percent-decoded, has a `.` or `..` segment (or a backslash, which
/// some file systems take as a separator): s3s-fs would resolve it to a file outside the
/// bucket's folder, or outside the server's root.
pub(super) fn escapes_root(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    decoded.contains('\\') || decoded.split('/').any(|s| s == "." || s == "..")
}

/// The request with its body read to the end, for PUT and POST.
///
/// Why: s3s answers some writes before it reads their bodies (a failed `If-None-Match: *`, an
/// unknown bucket, a bad signature), and hyper then closes the connection with the body unread.
/// The write itself or the client's next request on that connection then fails as a network
/// error ("dispatch failure": io error, `IncompleteMessage`) instead of getting its answer, and
/// the uploader retries it (seen when a replay wrote objects that already existed). Real S3
/// lets the answer arrive. A read body costs at most one part per request in memory (8 MiB by
/// default).
async fn read_body_first(req: Request<Incoming>) -> Result<Request<s3s::Body>, s3s::HttpError> {
    if !matches!(*req.method(), Method::PUT | Method::POST) {
        return Ok(req.map(s3s::Body::from));
    }
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|err| s3s::HttpError::new(Box::new(err)))?
        .to_bytes();
    Ok(Request::from_parts(parts, s3s::Body::from(bytes)))
}

/// Reads and discards the request body (so the client sees the error rather than a reset
/// connection), then builds the S3 XML error response.
async fn fault_response(req: Request<Incoming>, fault: &Fault, seq: u64) -> Response<s3s::Body> {
    let is_head = req.method() == Method::HEAD;
    let resource = xml_escape(req.uri().path());
    let mut body = req.into_body();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if frame.is_err() {
            break;
        }
    }
    let request_id = format!("FAULT{seq:012X}");
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
         <Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>",
        xml_escape(&fault.code),
        xml_escape(&fault.message),
    );
    let body = if is_head {
        s3s::Body::empty()
    } else {
        s3s::Body::from(Bytes::from(xml))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() =
        StatusCode::from_u16(fault.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amz-request-id", value);
    }
    resp
}

pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
