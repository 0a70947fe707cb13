//! The worker's files on their way out: sealing a file (its object key, the finished body,
//! the upload it joins), upload completions (each releases its partition's watermark and sends
//! a commit), age and idle expiry, and the memory budget's early flushes.
//!
//! Invariant: a file leaves `open` only through [`Pipeline::seal`], which puts it `in_flight`
//! until its upload's completion; only a successful completion releases its offsets.

use chrono::Utc;
use tokio::time::Instant;

use super::{Destination, FileKey, FileKind, InFlight, Pipeline, PipelineError};
use crate::batch::Batch;
use crate::model::{FlushReason, FolderKey};
use crate::source::{Command, Offsets};
use crate::template::{FileValues, KeyContext};
use crate::upload::{FileStats, ObjectInfo, UploadDone, UploadError};

impl Pipeline {
    pub(super) fn seal(&mut self, key: &FileKey, reason: FlushReason) {
        let Some(file) = self.open.remove(key) else {
            return;
        };
        let dest = &self.dests[key.dest];
        let now_utc = (self.clock)();
        let object_key = match &file.key {
            Some(k) => k.clone(),
            None => object_key(dest, key, &file.batch, now_utc),
        };
        let info = ObjectInfo {
            id: file.id,
            dest: key.dest,
            tp: key.tp.clone(),
            first_offset: file.batch.first_offset,
            parquet: file.batch.is_parquet(),
        };
        let records = file.batch.records;
        let raw_bytes = file.batch.raw_bytes;
        let (first, last_offset) = (file.batch.first_offset, file.batch.last_offset);
        let taken = file.batch.taken_bytes;
        let (body, content_hash) = file.batch.finish(&mut self.encoders);
        let stored = taken + body.len() as u64;
        let cancel = self.uploads_cancel.child_token();
        let writer = match file.writer {
            Some(w) => w,
            None => self.uploader.open(info.clone(), None, cancel.clone()),
        };
        let stats = FileStats {
            records,
            raw_bytes,
            stored_bytes: stored,
            content_hash,
        };
        tracing::info!(
            destination = %dest.cfg.name, reason = reason.as_str(), key = %object_key,
            tp = %key.tp, first_offset = first, last_offset, records, raw_bytes, stored_bytes = stored,
            "flush"
        );
        self.metrics.flushed(&dest.cfg.name, reason, records);
        writer.finish(body, object_key, stats);
        self.in_flight.insert(
            info.id,
            InFlight {
                tp: key.tp.clone(),
                first_offset: first,
                cancel,
            },
        );
    }

    pub(super) fn on_done(&mut self, done: UploadDone) -> Result<(), PipelineError> {
        let Some(f) = self.in_flight.remove(&done.info.id) else {
            // A streaming upload that failed before its file was sealed.
            return match done.result {
                Ok(_) => Ok(()),
                Err(UploadError::Cancelled) => Ok(()),
                Err(e) => Err(PipelineError::Upload(e)),
            };
        };
        match done.result {
            Ok(_) => {
                self.stats.objects += 1;
                self.stats.raw_bytes += done.stats.raw_bytes;
                self.stats.stored_bytes += done.stats.stored_bytes;
                tracing::debug!(key = %done.key, parts = done.parts, "uploaded");
                if self.offsets.is_assigned(&f.tp) {
                    if let Err(e) = self.offsets.release(&f.tp, f.first_offset) {
                        tracing::warn!(error = %e, "offset tracker refused a release");
                    }
                    self.commit();
                }
                self.publish();
                Ok(())
            }
            Err(UploadError::Cancelled) => {
                tracing::warn!(key = %done.key, tp = %f.tp, "upload cancelled; its records stay uncommitted and will be re-read");
                Ok(())
            }
            Err(e) => Err(PipelineError::Upload(e)),
        }
    }

    pub(super) fn commit(&mut self) {
        let offsets = self.offsets.take_commits(None);
        if !offsets.is_empty() {
            self.record_commits(&offsets);
            let _ = self.io.commands.send(Command::Commit(offsets));
        }
    }

    pub(super) fn record_commits(&mut self, offsets: &Offsets) {
        for (tp, off) in offsets {
            self.stats.committed.insert(tp.clone(), *off);
        }
    }

    /// Closes the files past their age or idle limit: O(log n) per file due, whatever the
    /// number open (see `open.rs`).
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        let dests = &self.dests;
        let due = self
            .open
            .due(now, |k, f| f.batch.next_deadline(&dests[k.dest].cfg.batch));
        for k in due {
            let reason = self
                .open
                .map
                .get(&k)
                .and_then(|f| f.batch.expired(&self.dests[k.dest].cfg.batch, now))
                .unwrap_or(FlushReason::Age);
            self.seal(&k, reason);
        }
        let oldest = self.open.oldest_created();
        self.oldest_age_secs = oldest.map_or(0.0, |c| now.duration_since(c).as_secs_f64());
    }

    /// Closes the largest open files while memory is over the budget. When most of the memory is
    /// already queued for upload, closing more files would not free any: intake stops instead
    /// (see `run`) until uploads drain.
    pub(super) fn enforce_budget(&mut self) {
        while self.memory_used() > self.budget
            && !self.open.is_empty()
            && self.uploader.queued_bytes() <= self.budget / 2
        {
            let Some(largest) = self.open.largest() else {
                break;
            };
            self.seal(&largest, FlushReason::Memory);
        }
    }
}

/// The full object key of a file: prefix, folder (or error folder) and file name.
pub(super) fn object_key(
    d: &Destination,
    key: &FileKey,
    batch: &Batch,
    upload_time: chrono::DateTime<Utc>,
) -> String {
    let cfg = &d.cfg;
    let source = cfg.source_id.as_deref().unwrap_or(&key.tp.topic);
    let ctx = KeyContext {
        topic: &key.tp.topic,
        partition: key.tp.partition,
        source,
        destination: &cfg.name,
        app: &cfg.app_name,
    };
    let values = FileValues {
        start_offset: batch.first_offset,
        end_offset: batch.last_offset,
        record_count: batch.records,
        upload_time,
    };
    let suffix = cfg.batch.compression.suffix();
    match &key.kind {
        FileKind::Data(folder) => {
            let slot = match folder {
                FolderKey::Slot(s, _) => *s,
                FolderKey::AtSeal(_) => d.router.seal_slot(batch.first_time, upload_time),
            };
            let folder = cfg.routing.folder.render(slot, &ctx, &batch.folder_values);
            let name = cfg.routing.file.render(&ctx, &values, cfg.data_suffix());
            format!("{}{folder}{name}", cfg.prefix)
        }
        FileKind::Error(reason) => {
            let name = d.error_file.render(&ctx, &values, suffix);
            format!(
                "{}{}{}/{name}",
                cfg.prefix,
                cfg.error_prefix,
                reason.as_str()
            )
        }
    }
}
