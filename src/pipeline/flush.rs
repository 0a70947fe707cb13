//! The worker's files on their way out: sealing a file (its object key from its destination's
//! kind, the finished body, the upload it joins), upload completions (handed to the kind; those
//! it reports durable release their partition's watermark and send a commit), age and idle
//! expiry, and the memory budget's early flushes.
//!
//! Invariant: a file leaves the open files only through [`Pipeline::seal`], which puts it in flight
//! until its upload's completion; only a successful completion releases its offsets, and only
//! once its destination's kind reports it durable (`landed`, or later `settle`).

use tokio::time::Instant;

use super::uploads::Closed;
use super::{FileKey, Pipeline, PipelineError};
use crate::destination::Landed;
use crate::model::FlushReason;
use crate::source::{Command, Offsets};
use crate::upload::{FileStats, ObjectInfo, UploadDone, UploadError};

impl Pipeline {
    pub(super) fn seal(&mut self, key: &FileKey, reason: FlushReason) {
        let Some(file) = self.files.remove(key) else {
            return;
        };
        let dest = &self.dests[key.dest];
        let now_utc = (self.clock)();
        let object_key = match &file.key {
            Some(k) => k.clone(),
            None => dest
                .kind
                .object_key(&key.tp, &key.kind, &file.batch, now_utc),
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
        let (body, content_hash, footer) = self.files.finish(file.batch);
        // Kept only for a kind that registers data files by their footer (a table).
        let footer = footer.filter(|_| dest.kind.keeps_footers(&key.kind));
        let stored = taken + body.len() as u64;
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
        self.uploads.hand_over(Closed {
            info,
            writer: file.writer,
            body,
            key: object_key,
            stats,
            kind: key.kind,
            last_offset,
            footer,
        });
    }

    pub(super) fn on_done(&mut self, done: UploadDone) -> Result<(), PipelineError> {
        let Some(f) = self.uploads.take(done.info.id) else {
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
                let durable = self.dests[f.dest].kind.landed(Landed {
                    tp: f.tp,
                    kind: f.kind,
                    first_offset: f.first_offset,
                    last_offset: f.last_offset,
                    key: done.key,
                    stats: done.stats,
                    footer: f.footer,
                });
                self.recount_kinds();
                self.release(durable);
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

    /// Releases the offsets of files now durable in their destination and commits what that
    /// allows (files of partitions no longer assigned release nothing).
    pub(super) fn release(&mut self, durable: Vec<Landed>) {
        let mut released = false;
        for f in durable {
            if self.offsets.is_assigned(&f.tp) {
                if let Err(e) = self.offsets.release(&f.tp, f.first_offset) {
                    tracing::warn!(error = %e, "offset tracker refused a release");
                }
                released = true;
            }
        }
        if released {
            self.commit();
        }
    }

    /// Runs the step of every destination whose landed files wait for one (a table's catalog
    /// commit): those due when `all` is false, every one when it is true. Nothing to do for
    /// object destinations.
    pub(super) async fn settle(&mut self, all: bool) -> Result<(), PipelineError> {
        // Landed files held past a quarter of the budget are committed now, not at the
        // interval: intake waits on them meanwhile.
        let all = all || self.kinds_held > self.files.budget() / 4;
        for d in 0..self.dests.len() {
            if self.dests[d].kind.unsettled() {
                let durable = self.dests[d].kind.settle(all, &self.offsets).await;
                self.recount_kinds();
                self.release(durable?);
                self.publish();
            }
        }
        Ok(())
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
            .files
            .due(now, |k, f| f.batch.next_deadline(&dests[k.dest].cfg.batch));
        for k in due {
            let reason = self
                .files
                .get(&k)
                .and_then(|f| f.batch.expired(&self.dests[k.dest].cfg.batch, now))
                .unwrap_or(FlushReason::Age);
            self.seal(&k, reason);
        }
        let oldest = self.files.oldest_created();
        self.oldest_age_secs = oldest.map_or(0.0, |c| now.duration_since(c).as_secs_f64());
    }

    /// Closes the largest open files while memory is over the budget. When most of the memory is
    /// already queued for upload, closing more files would not free any: intake stops instead
    /// (see `run`) until uploads drain.
    pub(super) fn enforce_budget(&mut self) {
        while let Some(largest) = self.files.to_free(self.queued_bytes()) {
            self.seal(&largest, FlushReason::Memory);
        }
    }
}
