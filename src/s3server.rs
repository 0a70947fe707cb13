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

mod faults;
pub mod uploads;

use faults::RequestLog;
pub use faults::{
    Fault, FaultInjectingService, FaultPlan, RecordedRequest, RequestTarget, RECORDED_HEADERS,
};

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// How long [`LocalS3::shutdown`] lets in-flight requests finish before closing connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
        let service = FaultInjectingService::new(
            builder.build(),
            root.clone(),
            Arc::clone(&faults),
            Arc::clone(&log),
        );

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
mod tests;
