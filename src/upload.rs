//! Uploader: one task per object, fed with parts while the file fills (multipart) or with the
//! whole body at once (PutObject below the part size). Every request is retried with
//! exponential backoff and jitter, and holds one of `upload.concurrency` permits while it runs.
//!
//! Writes are conditional (`If-None-Match: *`) unless the destination turns that off, so an
//! object can never replace another one: when the key is taken, `conflict.rs` decides (our own
//! earlier attempt, the same content rebuilt by a replay, or a different object, which keeps its
//! records under another key).
//!
//! Invariants: every object task reports exactly one [`UploadDone`]; a multipart upload that does
//! not complete is aborted (best effort, logged); bytes handed over are counted in
//! [`Uploader::queued_bytes`] until their request succeeds, so the memory budget sees them.

mod conflict;
pub mod counted;
pub mod orphans;
mod task;

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::RetryPolicy;
use crate::metrics::Metrics;
use crate::model::TopicPartition;
use crate::sink::{ObjectMeta, ObjectSink, SinkError};
pub use conflict::aside_key;
use task::ObjectTask;

/// Content-Type of Parquet objects (quarantine files keep the destination's `content_type`).
pub const PARQUET_CONTENT_TYPE: &str = "application/vnd.apache.parquet";

/// Identity of an object upload, echoed back in [`UploadDone`].
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Pipeline's file id.
    pub id: u64,
    /// Destination index.
    pub dest: usize,
    /// Partition of its records.
    pub tp: TopicPartition,
    /// First offset in it.
    pub first_offset: i64,
    /// A Parquet file (its own content type, compared byte for byte when its key is taken).
    pub parquet: bool,
}

/// Totals of a finished file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Records.
    pub records: u64,
    /// Uncompressed bytes.
    pub raw_bytes: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// xxh3-128 of the uncompressed content, of the bytes for Parquet (see
    /// [`crate::batch::Batch::finish`]).
    pub content_hash: u128,
}

/// Why an object did not reach S3.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    /// A request failed for good (permanent error, or attempts exhausted).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The upload was cancelled (shutdown or revoke deadline) before it completed.
    #[error("upload cancelled")]
    Cancelled,
}

/// Report of one object task.
#[derive(Debug)]
pub struct UploadDone {
    /// What was uploaded.
    pub info: ObjectInfo,
    /// Key (empty if it was never known).
    pub key: String,
    /// Totals.
    pub stats: FileStats,
    /// Parts uploaded (0 for PutObject).
    pub parts: u32,
    /// Outcome: how the records got into S3, or why they did not.
    pub result: Result<Resolution, UploadError>,
}

enum Chunk {
    Part(Bytes),
    /// Boxed: every object's channel allocates a block of slots sized to the largest variant.
    Finish(Box<Finish>),
}

struct Finish {
    last: Bytes,
    key: String,
    stats: FileStats,
}

/// Where an object's task gets its chunks: the channel of a file that sends parts while it
/// fills, or the finish of a file closed before any part, handed over with the task (no
/// channel: with many small folders, nearly every object is sent this way).
enum Chunks {
    Channel(mpsc::UnboundedReceiver<Chunk>),
    Closed(Option<Box<Finish>>),
}

impl Chunks {
    /// The next chunk (`None`: the writer is gone, or the closed file's finish was taken).
    async fn recv(&mut self) -> Option<Chunk> {
        match self {
            Self::Channel(rx) => rx.recv().await,
            Self::Closed(finish) => finish.take().map(Chunk::Finish),
        }
    }

    /// Takes no more chunks; returns the bytes of those never taken (to leave the queued total).
    fn close(&mut self) -> usize {
        let mut left = 0;
        match self {
            Self::Channel(rx) => {
                rx.close();
                while let Ok(c) = rx.try_recv() {
                    left += match c {
                        Chunk::Part(b) => b.len(),
                        Chunk::Finish(f) => f.last.len(),
                    };
                }
            }
            Self::Closed(finish) => left += finish.take().map_or(0, |f| f.last.len()),
        }
        left
    }
}

/// Destination-side handles of the uploader.
pub struct Target {
    /// Destination name (logs, metrics).
    pub name: String,
    /// Store.
    pub sink: Arc<dyn ObjectSink>,
    /// Object headers.
    pub meta: ObjectMeta,
    /// Write with `If-None-Match: *` (and `If-Match` when moving an object aside).
    pub conditional: bool,
    /// The objects' compression (to read an existing object's content when its key is taken).
    pub compression: crate::config::Compression,
    /// Most uncompressed bytes read from an existing object at a taken key before it counts as
    /// not ours (see `BatchConfig::max_object_raw_bytes`).
    pub max_stored_raw_bytes: u64,
}

/// Starts object uploads.
pub struct Uploader {
    targets: Arc<Vec<Target>>,
    permits: Arc<Semaphore>,
    admission: Arc<Semaphore>,
    policy: RetryPolicy,
    part_size: usize,
    queued: Arc<AtomicUsize>,
    done_tx: mpsc::UnboundedSender<UploadDone>,
    metrics: Metrics,
    /// The runtime upload tasks are spawned on (None: the caller's).
    runtime: Option<tokio::runtime::Handle>,
}

/// Handle to one object being uploaded; dropping it without [`ObjectWriter::finish`] cancels it.
pub struct ObjectWriter {
    tx: mpsc::UnboundedSender<Chunk>,
    queued: Arc<AtomicUsize>,
    cancel: CancellationToken,
    parts_sent: u32,
}

impl Uploader {
    /// Builds an uploader; completions arrive on the returned receiver.
    pub fn new(
        targets: Vec<Target>,
        concurrency: usize,
        policy: RetryPolicy,
        part_size: usize,
        metrics: Metrics,
    ) -> (Self, mpsc::UnboundedReceiver<UploadDone>) {
        Self::shared(
            Arc::new(targets),
            Arc::new(Semaphore::new(concurrency)),
            policy,
            part_size,
            metrics,
        )
    }

    /// An uploader for one worker, sharing destinations and request permits with the others.
    pub fn shared(
        targets: Arc<Vec<Target>>,
        permits: Arc<Semaphore>,
        policy: RetryPolicy,
        part_size: usize,
        metrics: Metrics,
    ) -> (Self, mpsc::UnboundedReceiver<UploadDone>) {
        // Unbounded, yet it cannot grow past the uploads in flight: every object task sends
        // exactly one `UploadDone`, and every task is charged `OBJECT_TASK_BYTES` to `queued`
        // from its start, so the tasks alive, and their completions waiting here, are bounded by
        // the memory budget (the worker takes no records while it is spent, and reads
        // completions first). A bounded channel would add a way for a finished upload to wait
        // on the worker, which itself waits on completions during a drain.
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        // Nothing is in flight yet: every request permit is available.
        let admission = Arc::new(Semaphore::new(
            permits.available_permits().max(1) * ADMISSION_PER_PERMIT,
        ));
        (
            Self {
                targets,
                permits,
                admission,
                policy,
                part_size,
                queued: Arc::new(AtomicUsize::new(0)),
                done_tx,
                metrics,
                runtime: None,
            },
            done_rx,
        )
    }

    /// Spawns the upload tasks on `runtime` rather than on the caller's runtime: a worker that
    /// runs on a thread of its own hands its uploads to the shared I/O runtime.
    pub fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Bytes handed to uploads and not yet in S3.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Part size (and PutObject threshold).
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// The task state of one object upload.
    fn task(&self, cancel: CancellationToken) -> ObjectTask {
        ObjectTask {
            targets: self.targets.clone(),
            permits: self.permits.clone(),
            admission: self.admission.clone(),
            policy: self.policy,
            part_size: self.part_size,
            queued: self.queued.clone(),
            done_tx: self.done_tx.clone(),
            metrics: self.metrics.clone(),
            cancel,
        }
    }

    /// Opens an object upload. `key` must be given if parts will be sent before the finish.
    pub fn open(
        &self,
        info: ObjectInfo,
        key: Option<String>,
        cancel: CancellationToken,
    ) -> ObjectWriter {
        // Unbounded, yet bounded by the memory budget: every part's bytes are added to `queued`
        // before they are sent here (see `part`) and leave it only once uploaded, and the worker
        // stops taking records while the budget is spent, so no part is made that the budget
        // does not cover. The worker never waits on an upload task to accept a part.
        let (tx, rx) = mpsc::unbounded_channel();
        self.spawn(info, key, Chunks::Channel(rx), cancel.clone());
        ObjectWriter {
            tx,
            queued: self.queued.clone(),
            cancel,
            parts_sent: 0,
        }
    }

    /// Uploads a file closed before it sent any part: its whole body, under its final key.
    pub fn put(
        &self,
        info: ObjectInfo,
        last: Bytes,
        key: String,
        stats: FileStats,
        cancel: CancellationToken,
    ) {
        self.queued.fetch_add(last.len(), Ordering::Relaxed);
        let finish = Box::new(Finish { last, key, stats });
        self.spawn(info, None, Chunks::Closed(Some(finish)), cancel);
    }

    /// Starts an object's task, charged [`OBJECT_TASK_BYTES`] until it reports.
    fn spawn(
        &self,
        info: ObjectInfo,
        key: Option<String>,
        chunks: Chunks,
        cancel: CancellationToken,
    ) {
        let charge = Charge::new(self.queued.clone(), OBJECT_TASK_BYTES);
        let task = self.task(cancel).run(info, key, chunks, charge);
        match &self.runtime {
            Some(rt) => drop(rt.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

impl ObjectWriter {
    /// Sends a part (≥ the part size) while the file still fills.
    pub fn part(&mut self, body: Bytes) {
        self.queued.fetch_add(body.len(), Ordering::Relaxed);
        self.parts_sent += 1;
        if let Err(mpsc::error::SendError(Chunk::Part(b))) = self.tx.send(Chunk::Part(body)) {
            // The task is gone (cancelled); it will report, nothing is queued any more.
            self.queued.fetch_sub(b.len(), Ordering::Relaxed);
        }
    }

    /// Parts sent so far.
    pub fn parts_sent(&self) -> u32 {
        self.parts_sent
    }

    /// Sends the last bytes and the final key; the task completes the object.
    pub fn finish(self, last: Bytes, key: String, stats: FileStats) {
        let len = last.len();
        self.queued.fetch_add(len, Ordering::Relaxed);
        let finish = Box::new(Finish { last, key, stats });
        if self.tx.send(Chunk::Finish(finish)).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// The token that cancels this upload.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Cancels the upload (the task aborts any multipart upload and reports `Cancelled`).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Operations a worker's object tasks may have under way per request permit. An operation's
/// future (retries, conflict resolution) is about 10 KB; it is boxed and started only once
/// admitted, so thousands of files closed at once (a revoke, a shutdown, many small folders) wait
/// as small tasks instead of 10 KB each. Generous, because an admitted operation sleeping in a
/// retry backoff holds no request permit and others should use it meanwhile (at the default 8
/// permits: 256 operations, about 2.5 MB). Admission is held for one operation, never while
/// waiting for the next part, so a multipart upload cannot starve the others.
const ADMISSION_PER_PERMIT: usize = 32;

/// Memory an object's upload task holds while it waits and runs, besides its bytes: the task
/// (its future, about 1.9 KB by `size_of_val`, in tokio's cache-aligned task cell), the channel
/// of a file that streams parts (a first block of 32 slots), its cancellation token, once
/// admitted the object's headers, and the allocator's rounding of each: a heap profile put it
/// above 4 KiB (BENCHMARKS.md, "Memory"). Counted in [`Uploader::queued_bytes`] from its start
/// until the task ends, so thousands of small objects closed at once (a revoke, a shutdown,
/// files spread over many folders) count against the memory budget.
pub const OBJECT_TASK_BYTES: usize = 8192;

/// Bytes counted in the queued total for as long as it lives (a task's fixed cost: released
/// when the task ends, or is dropped unfinished).
pub(super) struct Charge {
    queued: Arc<AtomicUsize>,
    bytes: usize,
}

impl Charge {
    fn new(queued: Arc<AtomicUsize>, bytes: usize) -> Self {
        queued.fetch_add(bytes, Ordering::Relaxed);
        Self { queued, bytes }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// How an object's records got into S3 (the uploader's answer; its label is a metrics label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Written at its key.
    Written,
    /// The key held this upload's own earlier attempt (its answer was lost).
    OwnEarlierAttempt,
    /// The key held the same content, written by another writer (a replay): nothing written.
    Identical,
    /// The key held more records, starting with all of this object's: nothing written.
    Covered,
    /// The key held fewer records, all of them the start of this object: replaced.
    Superseded,
    /// The key held other records; this object went to the given key beside it.
    WrittenAside(String),
    /// The key held other records; they were copied to the given key, then this object
    /// replaced them at the key.
    MovedAside(String),
}

impl Resolution {
    /// Metrics label (`None` for a plain write).
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Self::Written => None,
            Self::OwnEarlierAttempt => Some("own_attempt"),
            Self::Identical => Some("identical"),
            Self::Covered => Some("covered"),
            Self::Superseded => Some("superseded"),
            Self::WrittenAside(_) => Some("written_aside"),
            Self::MovedAside(_) => Some("moved_aside"),
        }
    }

    /// Every label (to initialise metric series at zero).
    pub const LABELS: [&'static str; 6] = crate::model::KEY_CONFLICT_LABELS;
}

#[cfg(test)]
pub(crate) mod tests;
