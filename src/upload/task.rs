//! One object's upload task: receives the parts of a file as it fills, starts a multipart upload
//! once the first part arrives (or sends a PutObject when the file ends below the part size),
//! retries every request with backoff while holding a request permit, resolves a taken key
//! (`conflict.rs`) and reports one [`UploadDone`].
//!
//! Invariants: exactly one [`UploadDone`] per task; a multipart upload that does not complete is
//! aborted; queued bytes are released as their requests succeed or the task ends.

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::PARQUET_CONTENT_TYPE;
use super::{
    conflict, Chunk, Chunks, FileStats, Finish, ObjectInfo, Target, UploadDone, UploadError,
};
use crate::config::RetryPolicy;
use crate::metrics::Metrics;
use crate::sink::{meta_keys, CompletedPart, ErrorKind, ObjectMeta, SinkError, WriteCondition};
use crate::upload::Resolution;

/// The state of one object's upload task (run by [`ObjectTask::run`]).
pub(super) struct ObjectTask {
    pub(super) targets: Arc<Vec<Target>>,
    pub(super) permits: Arc<Semaphore>,
    /// Operations (sending a part, finishing the object) under way in this worker; see
    /// [`ADMISSION_PER_PERMIT`].
    pub(super) admission: Arc<Semaphore>,
    pub(super) policy: RetryPolicy,
    pub(super) part_size: usize,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) done_tx: mpsc::UnboundedSender<UploadDone>,
    pub(super) metrics: Metrics,
    pub(super) cancel: CancellationToken,
}

/// A task's writer id and its object's headers.
struct Named {
    writer: String,
    meta: ObjectMeta,
}

struct Multipart {
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    /// Completed by this task (nothing to abort).
    completed: bool,
}

impl ObjectTask {
    pub(super) async fn run(
        self,
        info: ObjectInfo,
        key: Option<String>,
        mut chunks: Chunks,
        charge: super::Charge,
    ) {
        // This writer's id and the object's headers, made at the first admitted operation: a
        // task waiting for admission holds neither.
        let mut named: Option<Named> = None;
        let mut mp: Option<Multipart> = None;
        let mut stats = FileStats::default();
        let mut final_key = key.clone().unwrap_or_default();
        let started = Instant::now();
        let result = loop {
            let chunk = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break Err(UploadError::Cancelled),
                c = chunks.recv() => c,
            };
            match chunk {
                None => break Err(UploadError::Cancelled),
                Some(Chunk::Part(body)) => {
                    let len = body.len();
                    let r = match self.admitted().await {
                        Ok(_admitted) => {
                            let named = named.get_or_insert_with(|| self.named(&info));
                            Box::pin(self.send_part(
                                &info,
                                &named.meta,
                                &mut mp,
                                key.as_deref(),
                                body,
                            ))
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
                            let n = named.get_or_insert_with(|| self.named(&info));
                            Box::pin(self.finish(&info, n, &mut mp, key, last, &stats)).await
                        }
                        Err(e) => Err(e),
                    };
                    self.queued.fetch_sub(len, Ordering::Relaxed);
                    break r;
                }
            }
        };
        // Drop the chunks that will never be sent, so the queued-bytes gauge stays exact.
        self.queued.fetch_sub(chunks.close(), Ordering::Relaxed);
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
        // The task's own cost is released before it reports, so the report sees it gone.
        drop(charge);
        let _ = self.done_tx.send(UploadDone {
            info,
            key: final_key,
            stats,
            parts,
            result,
        });
    }

    /// This task's writer id and the object's headers: the destination's, plus where its
    /// records come from and which task wrote it.
    fn named(&self, info: &ObjectInfo) -> Named {
        let writer = format!("{:016x}", rand::random::<u64>());
        let mut meta = self.targets[info.dest].meta.clone();
        if info.parquet {
            meta.content_type = PARQUET_CONTENT_TYPE.to_string();
            meta.content_encoding = None;
        }
        meta.user.insert(meta_keys::WRITER.into(), writer.clone());
        meta.user
            .insert(meta_keys::TOPIC.into(), info.tp.topic.to_string());
        meta.user
            .insert(meta_keys::PARTITION.into(), info.tp.partition.to_string());
        meta.user.insert(
            meta_keys::FIRST_OFFSET.into(),
            info.first_offset.to_string(),
        );
        Named { writer, meta }
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
        named: &Named,
        mp: &mut Option<Multipart>,
        key: String,
        last: Bytes,
        stats: &FileStats,
    ) -> Result<Resolution, UploadError> {
        let Named { writer, meta } = named;
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
            // A Parquet file's hash covers its stored bytes.
            raw_len: if info.parquet {
                stats.stored_bytes
            } else {
                stats.raw_bytes
            },
            parquet: info.parquet,
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
                    meta,
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
                if let Some(repeats) = self.metrics.s3_error_to_log(&e.cause()) {
                    tracing::warn!(destination = %t.name, error = %e, repeats_not_shown = repeats, "could not abort multipart upload; S3 lifecycle rules or the next start-up clean it")
                }
            }
        }
    }

    /// Runs one request with retries, holding a concurrency permit per attempt; stops early
    /// when cancelled.
    pub(super) async fn attempt<T, F, Fut>(
        &self,
        info: &ObjectInfo,
        mut op: F,
    ) -> Result<T, UploadError>
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
        let run = (|| {
            let fut = op();
            async move {
                let _permit = permits.acquire().await;
                fut.await
            }
        })
        .retry(backoff)
        .when(|e: &SinkError| e.kind.retryable())
        .notify(|e: &SinkError, wait| {
            self.metrics.upload_retry(&t.name, e.kind);
            if let Some(repeats) = self.metrics.s3_error_to_log(&e.cause()) {
                tracing::warn!(destination = %t.name, error = %e, retry_in_ms = wait.as_millis() as u64, repeats_not_shown = repeats, "S3 request failed; retrying");
            }
        });
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(UploadError::Cancelled),
            r = run => r.map_err(|e| {
                // A taken key is not a failure: the caller resolves it.
                if e.kind != ErrorKind::Conflict {
                    self.metrics.upload_failed(&t.name, e.kind);
                    if let Some(repeats) = self.metrics.s3_error_to_log(&e.cause()) {
                        tracing::error!(destination = %t.name, error = %e, repeats_not_shown = repeats, "S3 request failed for good");
                    }
                }
                UploadError::Sink(e)
            }),
        }
    }
}
