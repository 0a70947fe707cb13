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
pub mod orphans;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RetryPolicy;
use crate::metrics::Metrics;
use crate::model::TopicPartition;
use crate::sink::{
    meta_keys, CompletedPart, ErrorKind, ObjectMeta, ObjectSink, SinkError, WriteCondition,
};
pub use conflict::{aside_key, Resolution};

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
}

/// Totals of a finished file.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStats {
    /// Records.
    pub records: u64,
    /// Uncompressed bytes.
    pub raw_bytes: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// xxh3-128 of the uncompressed content (see [`crate::batch::Batch::finish`]).
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
    /// Objects are gzip (to read an existing object's content when its key is taken).
    pub gzip: bool,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let task = self.task(cancel.clone()).run(info, key, rx);
        match &self.runtime {
            Some(rt) => drop(rt.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
        ObjectWriter {
            tx,
            queued: self.queued.clone(),
            cancel,
            parts_sent: 0,
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

    /// Cancels the upload (the task aborts any multipart upload and reports `Cancelled`).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

struct ObjectTask {
    targets: Arc<Vec<Target>>,
    permits: Arc<Semaphore>,
    /// Operations (sending a part, finishing the object) under way in this worker; see
    /// [`ADMISSION_PER_PERMIT`].
    admission: Arc<Semaphore>,
    policy: RetryPolicy,
    part_size: usize,
    queued: Arc<AtomicUsize>,
    done_tx: mpsc::UnboundedSender<UploadDone>,
    metrics: Metrics,
    cancel: CancellationToken,
}

/// Operations a worker's object tasks may have under way per request permit. An operation's
/// future (retries, conflict resolution) is about 10 KB; it is boxed and started only once
/// admitted, so thousands of files closed at once (a revoke, a shutdown, many small folders) wait
/// as small tasks instead of 10 KB each. Generous, because an admitted operation sleeping in a
/// retry backoff holds no request permit and others should use it meanwhile (at the default 8
/// permits: 256 operations, about 2.5 MB). Admission is held for one operation, never while
/// waiting for the next part, so a multipart upload cannot starve the others.
const ADMISSION_PER_PERMIT: usize = 32;

struct Multipart {
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    /// Completed by this task (nothing to abort).
    completed: bool,
}

impl ObjectTask {
    async fn run(
        self,
        info: ObjectInfo,
        key: Option<String>,
        mut rx: mpsc::UnboundedReceiver<Chunk>,
    ) {
        let writer = format!("{:016x}", rand::random::<u64>());
        let meta = self.object_meta(&info, &writer);
        let mut mp: Option<Multipart> = None;
        let mut stats = FileStats::default();
        let mut final_key = key.clone().unwrap_or_default();
        let started = Instant::now();
        let result = loop {
            let chunk = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break Err(UploadError::Cancelled),
                c = rx.recv() => c,
            };
            match chunk {
                None => break Err(UploadError::Cancelled),
                Some(Chunk::Part(body)) => {
                    let len = body.len();
                    let r = match self.admitted().await {
                        Ok(_admitted) => {
                            Box::pin(self.send_part(&info, &meta, &mut mp, key.as_deref(), body))
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    self.queued.fetch_sub(len, Ordering::Relaxed);
                    if let Err(e) = r {
                        break Err(e);
                    }
                }
                Some(Chunk::Finish(f)) => {
                    let Finish {
                        last,
                        key,
                        stats: s,
                    } = *f;
                    stats = s;
                    final_key = key.clone();
                    let len = last.len();
                    let r = match self.admitted().await {
                        Ok(_admitted) => {
                            Box::pin(self.finish(&info, &meta, &writer, &mut mp, key, last, &stats))
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    self.queued.fetch_sub(len, Ordering::Relaxed);
                    break r;
                }
            }
        };
        // Drain parts that will never be sent, so the queued-bytes gauge stays exact.
        rx.close();
        while let Ok(c) = rx.try_recv() {
            let len = match c {
                Chunk::Part(b) => b.len(),
                Chunk::Finish(f) => f.last.len(),
            };
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
        let parts = mp.as_ref().map_or(0, |m| m.parts.len() as u32);
        // A multipart upload left open: failed, cancelled, or not needed (the key held our
        // records already).
        if let Some(m) = mp.take().filter(|m| !m.completed) {
            // Not gated: an abort must run even when the task was cancelled.
            Box::pin(self.abort(&info, &m)).await;
        }
        if let Ok(resolution) = &result {
            if let Resolution::WrittenAside(k) = resolution {
                final_key = k.clone();
            }
            let t = &self.targets[info.dest];
            self.metrics.uploaded(
                &t.name,
                stats.records,
                stats.raw_bytes,
                stats.stored_bytes,
                started.elapsed().as_secs_f64(),
            );
        }
        let _ = self.done_tx.send(UploadDone {
            info,
            key: final_key,
            stats,
            parts,
            result,
        });
    }

    /// Headers of one object: the destination's, plus where its records come from and which
    /// task wrote it.
    fn object_meta(&self, info: &ObjectInfo, writer: &str) -> ObjectMeta {
        let mut meta = self.targets[info.dest].meta.clone();
        meta.user
            .insert(meta_keys::WRITER.into(), writer.to_string());
        meta.user
            .insert(meta_keys::TOPIC.into(), info.tp.topic.to_string());
        meta.user
            .insert(meta_keys::PARTITION.into(), info.tp.partition.to_string());
        meta.user.insert(
            meta_keys::FIRST_OFFSET.into(),
            info.first_offset.to_string(),
        );
        meta
    }

    /// Waits for this worker's admission of one operation (or the cancellation).
    async fn admitted(&self) -> Result<tokio::sync::SemaphorePermit<'_>, UploadError> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(UploadError::Cancelled),
            p = self.admission.acquire() => p.map_err(|_| UploadError::Cancelled),
        }
    }

    async fn send_part(
        &self,
        info: &ObjectInfo,
        meta: &ObjectMeta,
        mp: &mut Option<Multipart>,
        key: Option<&str>,
        body: Bytes,
    ) -> Result<(), UploadError> {
        let t = &self.targets[info.dest];
        if mp.is_none() {
            let key = key.ok_or(UploadError::Cancelled)?.to_string();
            let upload_id = self
                .attempt(info, || t.sink.create_multipart(&key, meta))
                .await?;
            *mp = Some(Multipart {
                key,
                upload_id,
                parts: Vec::new(),
                completed: false,
            });
        }
        let m = mp.as_mut().ok_or(UploadError::Cancelled)?;
        let number = m.parts.len() as i32 + 1;
        let etag = self
            .attempt(info, || {
                t.sink
                    .upload_part(&m.key, &m.upload_id, number, body.clone())
            })
            .await?;
        m.parts.push(CompletedPart { number, etag });
        self.metrics.part_uploaded(&t.name);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        info: &ObjectInfo,
        meta: &ObjectMeta,
        writer: &str,
        mp: &mut Option<Multipart>,
        key: String,
        last: Bytes,
        stats: &FileStats,
    ) -> Result<Resolution, UploadError> {
        let t = &self.targets[info.dest];
        let cond = if t.conditional {
            WriteCondition::IfAbsent
        } else {
            WriteCondition::Always
        };
        let ours = conflict::Ours {
            key: &key,
            writer,
            content_hash: stats.content_hash,
            raw_len: stats.raw_bytes,
        };
        if mp.is_none() && last.len() <= self.part_size {
            let r = self
                .attempt(info, || t.sink.put(&key, last.clone(), meta, &cond))
                .await;
            return match r {
                Ok(()) => Ok(Resolution::Written),
                Err(UploadError::Sink(e)) if e.kind == ErrorKind::Conflict => {
                    self.resolve(info, &ours, conflict::Body::Whole(&last, meta))
                        .await
                }
                Err(e) => Err(e),
            };
        }
        // Multipart: whatever remains goes in parts of the part size; the last may be smaller.
        let mut rest = last;
        while !rest.is_empty() || mp.as_ref().is_some_and(|m| m.parts.is_empty()) {
            let n = rest.len().min(self.part_size.max(1));
            let piece = rest.split_to(n);
            self.send_part(info, meta, mp, Some(&key), piece).await?;
            if rest.is_empty() {
                break;
            }
        }
        let m = mp.as_ref().ok_or(UploadError::Cancelled)?;
        let r = self
            .attempt(info, || {
                t.sink
                    .complete_multipart(&m.key, &m.upload_id, &m.parts, &cond)
            })
            .await;
        let r = match r {
            Ok(()) => Ok(Resolution::Written),
            // A taken key, or a retried Complete whose first attempt did land (the upload id is
            // gone then): the resolution tells them apart.
            Err(UploadError::Sink(e))
                if e.kind == ErrorKind::Conflict || e.kind == ErrorKind::Permanent =>
            {
                let body = conflict::Body::Multipart {
                    upload_id: &m.upload_id,
                    parts: &m.parts,
                    failed: e,
                };
                self.resolve(info, &ours, body).await
            }
            Err(e) => Err(e),
        };
        // Completed (by this or an earlier attempt), unless the key already held these records
        // (identical or covered): then the upload is left for the abort.
        if matches!(
            &r,
            Ok(Resolution::Written | Resolution::OwnEarlierAttempt | Resolution::MovedAside(_))
        ) {
            if let Some(m) = mp.as_mut() {
                m.completed = true;
            }
        }
        r
    }

    async fn abort(&self, info: &ObjectInfo, m: &Multipart) {
        let t = &self.targets[info.dest];
        // A fresh, short retry loop: cancellation must not stop the abort itself.
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.policy.initial_backoff)
            .with_max_delay(self.policy.max_backoff)
            .with_jitter()
            .with_max_times(3);
        let r = (|| t.sink.abort_multipart(&m.key, &m.upload_id))
            .retry(policy)
            .await;
        match r {
            Ok(()) => {
                self.metrics.multipart_aborted(&t.name);
                tracing::info!(destination = %t.name, key = %m.key, "aborted multipart upload")
            }
            Err(e) => {
                tracing::warn!(destination = %t.name, error = %e, "could not abort multipart upload; S3 lifecycle rules or the next start-up clean it")
            }
        }
    }

    /// Runs one request with retries, holding a concurrency permit per attempt; stops early
    /// when cancelled.
    async fn attempt<T, F, Fut>(&self, info: &ObjectInfo, mut op: F) -> Result<T, UploadError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SinkError>>,
    {
        let t = &self.targets[info.dest];
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.initial_backoff)
            .with_max_delay(self.policy.max_backoff)
            .with_jitter();
        backoff = match self.policy.max_attempts {
            Some(n) => backoff.with_max_times(n.saturating_sub(1) as usize),
            None => backoff.without_max_times(),
        };
        let permits = &self.permits;
        let metrics = &self.metrics;
        let run = (|| {
            let fut = op();
            async move {
                let _permit = permits.acquire().await;
                let r = fut.await;
                metrics.s3_request(&t.name, r.is_ok());
                r
            }
        })
        .retry(backoff)
        .when(|e: &SinkError| e.kind.retryable())
        .notify(|e: &SinkError, wait| {
            self.metrics.upload_retry(&t.name, e.kind);
            tracing::warn!(destination = %t.name, error = %e, retry_in_ms = wait.as_millis() as u64, "S3 request failed; retrying");
        });
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(UploadError::Cancelled),
            r = run => r.map_err(|e| {
                // A taken key is not a failure: the caller resolves it.
                if e.kind != ErrorKind::Conflict {
                    self.metrics.upload_failed(&t.name, e.kind);
                    tracing::error!(destination = %t.name, error = %e, "S3 request failed for good");
                }
                UploadError::Sink(e)
            }),
        }
    }
}

#[cfg(test)]
mod tests;
