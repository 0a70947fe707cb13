//! The partition lifecycle of a worker: assignments, the revoke drain (seal the revoked
//! partitions' files, upload them within the drain deadline, answer the commit offsets) and the
//! shutdown drain; both hand files to the uploader in waves that keep queued uploads within half
//! the memory budget.
//!
//! Invariant: a revoke answers only offsets whose records are in S3 (the watermark), and a
//! partition is forgotten only after it answered.

use std::time::Duration;
use tokio::time::Instant;

use super::{FileKey, InFlight, Pipeline, PipelineError};
use crate::model::FlushReason;
use crate::source::{Command, Control, Offsets};

impl Pipeline {
    pub(super) async fn on_control(&mut self, ctrl: Control) -> Result<(), PipelineError> {
        match ctrl {
            Control::Assigned(parts) => {
                self.assign(parts.clone());
                self.start_destinations(&parts).await
            }
            Control::Fatal(e) => Err(e.into()),
            Control::Revoke { partitions, reply } => {
                // Everything the Kafka thread handed over before the revoke comes first.
                while let Ok(chunk) = self.io.data.try_recv() {
                    self.ingest(chunk)?;
                }
                let keys: Vec<FileKey> = self
                    .files
                    .keys()
                    .filter(|k| partitions.contains(&k.tp))
                    .cloned()
                    .collect();
                let deadline = Instant::now() + self.drain_deadline;
                self.seal_within_budget(keys, FlushReason::Revoke, deadline)
                    .await?;
                let finished = self
                    .wait_uploads(deadline, |f| partitions.contains(&f.tp))
                    .await?;
                self.settle(true).await?;
                if !finished {
                    tracing::warn!(
                        ?partitions,
                        "revoke drain deadline passed; cancelling their uploads"
                    );
                    self.uploads.cancel_where(|f| partitions.contains(&f.tp));
                }
                // The full watermark, not `take_commits`: an upload completion above may have
                // handed it to an async commit, which the Kafka thread (blocked in this revoke)
                // runs only after release and then drops as no longer assigned.
                let offsets: Offsets = partitions
                    .iter()
                    .filter_map(|tp| self.offsets.safe_offset(tp).map(|o| (tp.clone(), o)))
                    .collect();
                self.record_commits(&offsets);
                tracing::info!(?partitions, ?offsets, "revoked partitions drained");
                let _ = reply.send(offsets);
                for tp in &partitions {
                    self.offsets.forget(tp);
                }
                for d in &mut self.dests {
                    d.kind.revoked(&partitions);
                    d.skip_below.retain(|tp, _| !partitions.contains(tp));
                }
                self.recount_kinds();
                Ok(())
            }
        }
    }

    /// Takes newly assigned partitions: their records follow on the data channel.
    pub(super) fn assign(&mut self, parts: Vec<crate::model::TopicPartition>) {
        for tp in parts {
            self.resolve_topic(&tp.topic);
            self.offsets.assign(tp);
        }
    }

    /// Asks each destination's kind where it already holds the newly assigned partitions (a
    /// table's committed offsets): their records below are skipped for it.
    pub(super) async fn start_destinations(
        &mut self,
        parts: &[crate::model::TopicPartition],
    ) -> Result<(), PipelineError> {
        for d in &mut self.dests {
            for (tp, below) in d.kind.assigned(parts).await? {
                tracing::info!(destination = %d.cfg.name, %tp, below, "the destination holds this partition's records below this offset; skipping them for it");
                d.skip_below.insert(tp, below);
            }
        }
        Ok(())
    }

    /// Seals `keys` without letting the uploads queued outgrow half the memory budget: while
    /// they do, it first handles upload completions (until `deadline`, after which the rest is
    /// sealed at once). A revoke or a shutdown with thousands of small files open thus hands
    /// them over in waves instead of holding every upload task at once.
    pub(super) async fn seal_within_budget(
        &mut self,
        keys: Vec<FileKey>,
        reason: FlushReason,
        deadline: Instant,
    ) -> Result<(), PipelineError> {
        let mut waiting = true;
        for k in keys {
            while waiting
                && !self.files.queue_has_room(self.queued_bytes())
                && !self.uploads.is_empty()
            {
                match self.uploads.recv_until(deadline).await {
                    Some(done) => self.on_done(done)?,
                    None => waiting = false,
                }
            }
            self.seal(&k, reason);
        }
        Ok(())
    }

    /// Handles completions until no in-flight upload matches `which`; false if the deadline hit.
    pub(super) async fn wait_uploads(
        &mut self,
        deadline: Instant,
        which: impl Fn(&InFlight) -> bool,
    ) -> Result<bool, PipelineError> {
        while self.uploads.any(&which) {
            match self.uploads.recv_until(deadline).await {
                Some(done) => self.on_done(done)?,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    pub(super) async fn shutdown(&mut self) {
        tracing::info!(
            worker = self.shard,
            open_files = self.files.len(),
            "shutting down: flushing open files"
        );
        let keys: Vec<FileKey> = self.files.keys().cloned().collect();
        let deadline = Instant::now() + self.shutdown_deadline;
        let mut drained = true;
        if let Err(e) = self
            .seal_within_budget(keys, FlushReason::Shutdown, deadline)
            .await
        {
            drained = false;
            tracing::error!(error = %e, "upload failed during shutdown");
        }
        match self.wait_uploads(deadline, |_| true).await {
            Ok(true) => {
                if let Err(e) = self.settle(true).await {
                    drained = false;
                    tracing::error!(error = %e, "destination commit failed during shutdown");
                }
            }
            Ok(false) => {
                drained = false;
                tracing::warn!(
                    pending = self.uploads.len(),
                    "shutdown deadline passed; pending uploads cancelled, their records stay uncommitted"
                )
            }
            Err(e) => {
                drained = false;
                tracing::error!(error = %e, "upload failed during shutdown")
            }
        }
        self.uploads.cancel_all();
        let offsets = self.offsets.take_commits(None);
        self.record_commits(&offsets);
        if !drained {
            // Everything past the commit goes back to Kafka (a drained deterministic
            // destination also stops at its window's start, by design: not counted).
            self.stats.uncommitted = self.offsets.uncommitted().max(1);
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        let _ = self.io.commands.send(Command::Shutdown {
            shard: self.shard,
            offsets,
            done,
        });
        if tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .is_err()
        {
            tracing::warn!("kafka consumer did not close within 30 s");
        }
        self.publish();
    }
}
