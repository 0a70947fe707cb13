//! In-process S3-compatible server on loopback (s3s + s3s-fs over a local folder), with HTTP-level fault injection and a request log; used by the `demo` subcommand and by tests.
//!
//! # What it is
//!
//! [`LocalS3::start`] binds a TCP listener (default `127.0.0.1:0`, never a fixed port), serves
//! [`s3s_fs::FileSystem`] through `s3s`'s `S3Service` with SigV4 authentication for one static
//! key pair, and spawns the accept loop on the current tokio runtime. Requests are path-style
//! only (`http://127.0.0.1:PORT/bucket/key`): clients must set `force_path_style(true)`.
//!
//! Every request passes through [`FaultInjectingService`] first: it records the request (method,
//! path, query and a fixed allow-list of headers, never `authorization`) and, when the shared
//! [`FaultPlan`] says so, answers with an S3 XML error (503 `SlowDown` by default) without
//! calling s3s, so nothing reaches the file system. It reads each PUT and POST body to the end
//! before s3s sees it: s3s refuses some writes (a failed condition, a bad signature) without
//! reading the body, and the connection would then close under the client.
//!
//! # How s3s-fs 0.14 lays out the root folder
//!
//! - A bucket is the directory `<root>/<bucket>`; CreateBucket through the SDK works (and fails
//!   with 409 `BucketAlreadyExists` if the directory exists — never `BucketAlreadyOwnedByYou`).
//!   [`LocalS3::create_bucket_dir`] makes the directory directly and is idempotent.
//! - An object is the file `<root>/<bucket>/<key>`; each `/` in the key is a nested directory, so
//!   the bucket folder can be browsed as-is. A key ending in `/` creates a directory.
//! - Object attributes live outside the bucket, in the root: content-type, content-encoding and
//!   user metadata in `<root>/.bucket-<b64url(bucket)>.object-<b64url(key)>.metadata.json`, the
//!   ETag and checksums in `….internal.json`.
//! - Multipart uploads also live in the root, not per bucket: `<root>/.upload-<uuid>.json` marks
//!   the upload id, parts are `<root>/.upload_id-<uuid>.part-<n>`, the pending attributes are
//!   `….upload-<uuid>.metadata.json`. Complete concatenates the parts into the object and
//!   deletes them; Abort deletes them.
//! - Every write goes to `<root>/.tmp.<n>.internal.part` and is renamed into place, so an object
//!   appears atomically; leftover temp files are removed when the server starts.
//!
//! # Quirks against real S3 (s3s-fs 0.14.1)
//!
//! - SSE headers (`x-amz-server-side-encryption*`) are accepted and ignored, not echoed back;
//!   assert them through [`LocalS3::requests`].
//! - PutObject accepts only `STANDARD` and `REDUCED_REDUNDANCY` storage classes (others get
//!   400 `InvalidStorageClass`); CreateMultipartUpload does not check the storage class.
//! - ETags are the quoted hex MD5 of the body; a multipart ETag is the MD5 of the parts' MD5s
//!   followed by `-<part count>`, like AWS. The part ETags sent in Complete are not checked.
//! - Complete requires parts numbered `1..=n` in order and every part but the last ≥ 5 MiB
//!   (`EntityTooSmall`). It consumes the upload id before those checks, so after a failed
//!   Complete the upload cannot be retried (unlike AWS).
//! - An unknown, completed or aborted upload id gives 403 `AccessDenied` on UploadPart,
//!   Complete and Abort (AWS: 404 `NoSuchUpload`); ListParts does not check the id and returns
//!   an empty list after an abort.
//! - `If-None-Match: *` on PutObject and Complete gives 412 `PreconditionFailed` when the
//!   object exists; `If-Match` compares the ETag. A failed condition leaves the upload in place.
//! - ListMultipartUploads is not implemented by s3s-fs; [`uploads`] answers it from the files
//!   above (one page, no markers).

pub mod uploads;

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// How long [`LocalS3::shutdown`] lets in-flight requests finish before closing connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Request headers kept in [`RecordedRequest::headers`] (lower-case); everything else, and
/// in particular `authorization`, is never recorded.
pub const RECORDED_HEADERS: [&str; 7] = [
    "content-type",
    "content-encoding",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-storage-class",
    "if-none-match",
    "content-length",
];

/// Errors of the local S3 server.
#[derive(Debug, thiserror::Error)]
pub enum LocalS3Error {
    /// The root folder could not be created or resolved.
    #[error("cannot create S3 root folder {path}: {source}")]
    CreateRoot {
        /// The root folder.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// s3s-fs refused the root folder.
    #[error("cannot open S3 root folder {path}: {message}")]
    FileSystem {
        /// The root folder.
        path: PathBuf,
        /// s3s-fs's error, rendered (its error type is not a `std::error::Error`).
        message: String,
    },
    /// The listener could not be bound.
    #[error("cannot bind local S3 server to {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The I/O error.
        source: io::Error,
    },
    /// The bucket name breaks S3's naming rules.
    #[error("invalid bucket name {bucket:?}")]
    InvalidBucket {
        /// The rejected name.
        bucket: String,
    },
    /// The bucket directory could not be created.
    #[error("cannot create bucket directory for {bucket:?}: {source}")]
    CreateBucket {
        /// The bucket.
        bucket: String,
        /// The I/O error.
        source: io::Error,
    },
}

/// Options for [`LocalS3::start`].
#[derive(Clone)]
pub struct LocalS3Options {
    /// Folder holding the buckets (created if missing).
    pub root: PathBuf,
    /// Address to listen on; `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    /// Access key clients must sign with.
    pub access_key: String,
    /// Secret key clients must sign with.
    pub secret_key: String,
}

impl LocalS3Options {
    /// Options for `root` on `127.0.0.1:0` with the keys `local-access-key` / `local-secret-key`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            access_key: "local-access-key".to_owned(),
            secret_key: "local-secret-key".to_owned(),
        }
    }
}

impl fmt::Debug for LocalS3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalS3Options")
            .field("root", &self.root)
            .field("bind", &self.bind)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

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
struct RequestLog {
    entries: Mutex<Vec<RecordedRequest>>,
}

impl RequestLog {
    fn lock(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
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
        let fault = self.faults.take(&RequestTarget {
            method: &method,
            path: &path,
            query: &query,
        });
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

fn xml_escape(s: &str) -> String {
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

/// A running in-process S3 server. Dropping it stops the accept loop too (in the background);
/// [`shutdown`](Self::shutdown) waits for that.
#[derive(Debug)]
pub struct LocalS3 {
    addr: SocketAddr,
    root: PathBuf,
    faults: Arc<FaultPlan>,
    log: Arc<RequestLog>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl LocalS3 {
    /// Creates `opts.root`, binds `opts.bind` and spawns the server on the current tokio runtime.
    pub async fn start(opts: LocalS3Options) -> Result<LocalS3, LocalS3Error> {
        let create_root = |source| LocalS3Error::CreateRoot {
            path: opts.root.clone(),
            source,
        };
        tokio::fs::create_dir_all(&opts.root)
            .await
            .map_err(create_root)?;
        let root = tokio::fs::canonicalize(&opts.root)
            .await
            .map_err(create_root)?;
        let fs = s3s_fs::FileSystem::new(&root).map_err(|e| LocalS3Error::FileSystem {
            path: root.clone(),
            message: format!("{e:?}"),
        })?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(
            opts.access_key.clone(),
            opts.secret_key.clone(),
        ));
        let faults = Arc::new(FaultPlan::default());
        let log = Arc::new(RequestLog::default());
        let service = FaultInjectingService {
            inner: builder.build(),
            root: root.clone(),
            faults: Arc::clone(&faults),
            log: Arc::clone(&log),
        };

        let listener = TcpListener::bind(opts.bind)
            .await
            .map_err(|source| LocalS3Error::Bind {
                addr: opts.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| LocalS3Error::Bind {
            addr: opts.bind,
            source,
        })?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, service, stopped));
        tracing::info!(endpoint = %format!("http://{addr}"), root = %root.display(), "local S3 server started");
        Ok(LocalS3 {
            addr,
            root,
            faults,
            log,
            stop,
            task,
        })
    }

    /// Base URL for clients, e.g. `http://127.0.0.1:40123` (use path-style addressing).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The root folder (canonical path); bucket `b`, key `k` is the file `root/b/k`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object `bucket`/`key` is stored (the file may not exist).
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// Shared handle to the faults; changes apply to the next request.
    pub fn faults(&self) -> Arc<FaultPlan> {
        Arc::clone(&self.faults)
    }

    /// Copy of the requests seen so far, in arrival order (faulted ones included).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log.lock().clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.log.lock().clear();
    }

    /// Makes every multipart upload in progress look `age` older (tests of the orphan cleanup);
    /// returns how many there are.
    pub fn backdate_uploads(&self, age: Duration) -> io::Result<usize> {
        uploads::backdate(&self.root, age)
    }

    /// Makes `bucket` exist by creating its directory (idempotent, unlike CreateBucket).
    pub fn create_bucket_dir(&self, bucket: &str) -> Result<(), LocalS3Error> {
        if !s3s::path::check_bucket_name(bucket) {
            return Err(LocalS3Error::InvalidBucket {
                bucket: bucket.to_owned(),
            });
        }
        std::fs::create_dir_all(self.root.join(bucket)).map_err(|source| {
            LocalS3Error::CreateBucket {
                bucket: bucket.to_owned(),
                source,
            }
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to 5 s, then closes every
    /// connection.
    pub async fn shutdown(self) {
        // An error only means the loop already ended.
        let _ = self.stop.send(());
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "local S3 server task failed");
        }
        tracing::info!(addr = %self.addr, "local S3 server stopped");
    }
}

/// Accept loop: serves each connection on its own task until `stopped` resolves (sent or
/// dropped), then shuts connections down gracefully within [`SHUTDOWN_GRACE`].
async fn serve(
    listener: TcpListener,
    service: FaultInjectingService,
    mut stopped: oneshot::Receiver<()>,
) {
    let builder = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // Small answers (HEAD, GET of small objects) must not wait for delayed ACKs.
                    let _ = socket.set_nodelay(true);
                    let conn = builder.serve_connection(TokioIo::new(socket), service.clone());
                    let conn = graceful.watch(conn.into_owned());
                    conns.spawn(async move {
                        if let Err(err) = conn.await {
                            tracing::debug!(%peer, error = %err, "local S3 connection ended with error");
                        }
                    });
                }
                Err(err) => tracing::warn!(error = %err, "local S3 server: accept failed"),
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = conns.len(),
            "local S3 server: connections still busy after grace period, closing them"
        );
    }
    conns.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::{BehaviorVersion, Builder, Credentials, Region};
    use aws_sdk_s3::error::ProvideErrorMetadata;
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use aws_sdk_s3::Client;

    const MIB: usize = 1024 * 1024;

    async fn start(dir: &tempfile::TempDir) -> LocalS3 {
        LocalS3::start(LocalS3Options::new(dir.path().join("s3")))
            .await
            .unwrap()
    }

    fn client(server: &LocalS3, retry: RetryConfig) -> Client {
        let config = Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(server.endpoint())
            .force_path_style(true)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "local-access-key",
                "local-secret-key",
                None,
                None,
                "test",
            ))
            .retry_config(retry)
            .build();
        Client::from_conf(config)
    }

    #[tokio::test]
    async fn put_get_nested_key_and_record_headers() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&dir).await;
        let s3 = client(&server, RetryConfig::disabled());
        s3.create_bucket().bucket("bkt").send().await.unwrap();
        assert!(server.root().join("bkt").is_dir());

        let put = s3
            .put_object()
            .bucket("bkt")
            .key("a/b/c.txt")
            .content_type("application/x-ndjson")
            .content_encoding("gzip")
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            .body(ByteStream::from_static(b"hello"))
            .send()
            .await
            .unwrap();
        // MD5("hello"), quoted.
        assert_eq!(put.e_tag(), Some("\"5d41402abc4b2a76b9719d911017c592\""));
        let file = server.object_path("bkt", "a/b/c.txt");
        assert_eq!(file, server.root().join("bkt/a/b/c.txt"));
        assert_eq!(std::fs::read(&file).unwrap(), b"hello");

        let got = s3
            .get_object()
            .bucket("bkt")
            .key("a/b/c.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_type(), Some("application/x-ndjson"));
        assert_eq!(got.content_encoding(), Some("gzip"));
        assert_eq!(got.server_side_encryption(), None, "s3s-fs ignores SSE");
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], b"hello");

        let requests = server.requests();
        let put = requests
            .iter()
            .find(|r| r.target().is_put_object())
            .unwrap();
        assert_eq!(put.path, "/bkt/a/b/c.txt");
        assert_eq!(put.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(put.header("x-amz-server-side-encryption"), Some("AES256"));
        assert_eq!(put.header("content-encoding"), Some("gzip"));
        assert_eq!(put.status, Some(200));
        assert!(requests.iter().all(|r| r
            .headers
            .iter()
            .all(|(n, _)| RECORDED_HEADERS.contains(&n.as_str()))));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn multipart_upload_and_bucket_quirks() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&dir).await;
        server.create_bucket_dir("bkt").unwrap();
        server.create_bucket_dir("bkt").unwrap();
        assert!(matches!(
            server.create_bucket_dir("../x"),
            Err(LocalS3Error::InvalidBucket { .. })
        ));
        let s3 = client(&server, RetryConfig::disabled());
        let again = s3.create_bucket().bucket("bkt").send().await.unwrap_err();
        assert_eq!(again.code(), Some("BucketAlreadyExists"));

        let key = "t/2024/01/02/big.ndjson.gz";
        let up = s3
            .create_multipart_upload()
            .bucket("bkt")
            .key(key)
            .content_type("application/x-ndjson")
            .send()
            .await
            .unwrap();
        let upload_id = up.upload_id().unwrap();
        let parts = [vec![b'a'; 5 * MIB], vec![b'b'; 5 * MIB], b"tail".to_vec()];
        let mut done = Vec::new();
        for (i, data) in parts.iter().enumerate() {
            let n = i32::try_from(i + 1).unwrap();
            let out = s3
                .upload_part()
                .bucket("bkt")
                .key(key)
                .upload_id(upload_id)
                .part_number(n)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap();
            let part = CompletedPart::builder().part_number(n);
            done.push(part.e_tag(out.e_tag().unwrap()).build());
        }
        let complete = s3
            .complete_multipart_upload()
            .bucket("bkt")
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        assert!(complete.e_tag().unwrap().ends_with("-3\""));
        let stored = std::fs::read(server.object_path("bkt", key)).unwrap();
        assert_eq!(stored.len(), 10 * MIB + 4);
        assert!(stored.ends_with(b"tail"));
        let leftovers: Vec<_> = std::fs::read_dir(server.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("upload"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let head = s3
            .head_object()
            .bucket("bkt")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some("application/x-ndjson"));

        // After Complete the upload id is gone: AccessDenied, not NoSuchUpload.
        let abort = s3
            .abort_multipart_upload()
            .bucket("bkt")
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .unwrap_err();
        assert_eq!(abort.code(), Some("AccessDenied"));

        let cond = s3
            .put_object()
            .bucket("bkt")
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(cond.raw_response().unwrap().status().as_u16(), 412);

        let class = s3
            .put_object()
            .bucket("bkt")
            .key("ia")
            .storage_class(aws_sdk_s3::types::StorageClass::StandardIa)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(class.code(), Some("InvalidStorageClass"));
        server.shutdown().await;
    }

    /// A conditional write refused before its body is read gets its 412, and the connection
    /// stays usable: before the server read bodies first, the HEAD after it on the same pool
    /// failed with a dispatch failure (`IncompleteMessage`, the connection closed under it).
    /// Retries are off so that such a failure shows. Two runtime threads: client and server
    /// must run at once, as they do across processes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_conditional_writes_of_large_bodies_get_their_answer() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&dir).await;
        let s3 = client(&server, RetryConfig::disabled());
        s3.create_bucket().bucket("bkt").send().await.unwrap();
        // About the size of a benchmark object.
        let body = Bytes::from(vec![b'x'; 512 * 1024]);
        s3.put_object()
            .bucket("bkt")
            .key("k")
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        // Eight at a time, as the uploader does, each followed by a HEAD on the same pool.
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..8 {
            let (s3, body) = (s3.clone(), body.clone());
            tasks.spawn(async move {
                for attempt in 0..10 {
                    let err = s3
                        .put_object()
                        .bucket("bkt")
                        .key("k")
                        .if_none_match("*")
                        .body(ByteStream::from(body.clone()))
                        .send()
                        .await
                        .unwrap_err();
                    let status = err.raw_response().map(|r| r.status().as_u16());
                    assert_eq!(status, Some(412), "task {task} attempt {attempt}: {err:?}");
                    let head = s3.head_object().bucket("bkt").key("k").send().await;
                    assert!(head.is_ok(), "task {task} attempt {attempt}: {head:?}");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn fail_next_answers_slow_down_without_touching_disk() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&dir).await;
        server.create_bucket_dir("bkt").unwrap();
        let s3 = client(&server, RetryConfig::disabled());
        let faults = server.faults();
        faults.fail_next(2);
        for _ in 0..2 {
            let err = s3
                .put_object()
                .bucket("bkt")
                .key("k")
                .body(ByteStream::from(vec![7u8; 100_000]))
                .send()
                .await
                .unwrap_err();
            assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
            assert_eq!(err.code(), Some("SlowDown"));
            assert_eq!(err.message(), Some("Please reduce your request rate."));
            assert!(!server.object_path("bkt", "k").exists());
        }
        assert_eq!(faults.injected(), 2);
        assert_eq!(faults.pending(), 0);
        s3.put_object()
            .bucket("bkt")
            .key("k")
            .body(ByteStream::from_static(b"ok"))
            .send()
            .await
            .unwrap();
        let statuses: Vec<_> = server
            .requests()
            .iter()
            .map(|r| (r.fault_injected, r.status))
            .collect();
        assert_eq!(
            statuses,
            [(true, Some(503)), (true, Some(503)), (false, Some(200))]
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn fail_matching_hits_only_upload_parts_and_sdk_retries() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&dir).await;
        server.create_bucket_dir("bkt").unwrap();
        let retry = RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(1));
        let s3 = client(&server, retry);
        let faults = server.faults();
        faults.fail_matching_with(1, Fault::internal_error(), |r| r.is_upload_part());
        faults.fail_matching(1, |r| r.is_complete_multipart());

        let up = s3
            .create_multipart_upload()
            .bucket("bkt")
            .key("k")
            .send()
            .await
            .unwrap();
        let upload_id = up.upload_id().unwrap();
        let out = s3
            .upload_part()
            .bucket("bkt")
            .key("k")
            .upload_id(upload_id)
            .part_number(1)
            .body(ByteStream::from_static(b"only part"))
            .send()
            .await
            .unwrap();
        let part = CompletedPart::builder()
            .part_number(1)
            .e_tag(out.e_tag().unwrap())
            .build();
        s3.complete_multipart_upload()
            .bucket("bkt")
            .key("k")
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().parts(part).build())
            .send()
            .await
            .unwrap();
        assert_eq!(faults.injected(), 2);
        assert_eq!(
            std::fs::read(server.object_path("bkt", "k")).unwrap(),
            b"only part"
        );
        let kinds: Vec<_> = server
            .requests()
            .iter()
            .map(|r| (r.method.clone(), r.fault_injected, r.status))
            .collect();
        let expected = [
            ("POST", false, Some(200)),
            ("PUT", true, Some(500)),
            ("PUT", false, Some(200)),
            ("POST", true, Some(503)),
            ("POST", false, Some(200)),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(m, f, s)| ((*m).to_owned(), *f, *s))
            .collect();
        assert_eq!(kinds, expected);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&dir).await;
        let addr = server.local_addr();
        let s3 = client(&server, RetryConfig::disabled());
        s3.list_buckets().send().await.unwrap();
        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn request_target_predicates() {
        let t = |method, path, query| RequestTarget {
            method,
            path,
            query,
        };
        assert!(t("PUT", "/b/k", "partNumber=2&uploadId=x").is_upload_part());
        assert!(!t("PUT", "/b/k", "partNumber=2&uploadId=x").is_put_object());
        assert!(t("PUT", "/b/a/k", "x-id=PutObject").is_put_object());
        assert!(!t("PUT", "/b", "").is_put_object());
        assert!(t("POST", "/b/k", "uploads&x-id=CreateMultipartUpload").is_create_multipart());
        assert!(t("POST", "/b/k", "uploadId=x").is_complete_multipart());
        assert!(t("DELETE", "/b/k", "uploadId=x").is_abort_multipart());
        assert!(!t("POST", "/b/k", "uploadIdx=1").has_query_param("uploadId"));
        assert_eq!(xml_escape("a<&>'\""), "a&lt;&amp;&gt;&apos;&quot;");
    }
}
