//! The worker loop: source → router → batch → upload → offsets → commit, in one task that owns
//! all open files and the offset tracker.
//!
//! Invariants: a record's offset is taken into the tracker only after it is in an open file (or
//! filtered); a file holds its partition's watermark from its first record until its object is in
//! S3; commits are sent after each successful upload, synchronously on revoke and on shutdown.
//! The loop prefers finishing work to taking more (`select!` is biased: shutdown, upload
//! completions, assignment changes, then data), and takes no data while the memory budget is
//! spent. This file holds the loop and the intake (route, append); `lifecycle.rs` the
//! partition lifecycle (assignment, revoke drain, shutdown); `flush.rs` the way out (seal,
//! upload completions, expiry, the memory budget); `open.rs` the open files and their indexes.

use chrono::Utc;
use hashbrown::hash_map::RawEntryMut;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, EncoderPool};
use crate::config::{Config, DestinationConfig};
use crate::destination::{DestinationError, DestinationKind, FileKind};
use crate::envelope::{error_line_with_detail, with_kafka_metadata};
use crate::metrics::Metrics;
use crate::model::{Cell, Clock, FlushReason, QuarantineReason, Record, TopicPartition};
use crate::offsets::OffsetTracker;
use crate::router::{Route, Router};
use crate::source::{Command, ConsumerError, SourceIo};
use crate::upload::{ObjectInfo, ObjectWriter, UploadDone, UploadError, Uploader};
use std::borrow::Cow;

mod flush;
mod lifecycle;
mod open;
use open::OpenFiles;

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An object could not be uploaded (permanent error or attempts exhausted). Nothing past it
    /// was committed; a restart re-reads from the last commit.
    #[error("upload failed, stopping without committing past it: {0}")]
    Upload(UploadError),
    /// The Kafka consumer failed for good.
    #[error("kafka consumer failed: {0}")]
    Source(#[from] ConsumerError),
    /// A destination could not make its uploaded files durable (a table's catalog commit).
    /// Nothing past them was committed.
    #[error(transparent)]
    Destination(#[from] DestinationError),
    /// A record's topic feeds no destination (start-up validation prevents it; this guards the
    /// invariant that no record is committed unwritten). Nothing from it on was committed.
    #[error("topic `{topic}` (partition {partition}, offset {offset}) feeds no destination; stopping without committing it")]
    Unroutable {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset of the record.
        offset: i64,
    },
}

/// Totals of one run, for the demo summary and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Records taken in.
    pub records_in: u64,
    /// Records written to data folders (per destination, summed).
    pub records_written: u64,
    /// Records written to error folders.
    pub records_quarantined: u64,
    /// Records dropped by filters.
    pub records_filtered: u64,
    /// Objects uploaded.
    pub objects: u64,
    /// Uncompressed bytes uploaded.
    pub raw_bytes: u64,
    /// Stored bytes uploaded.
    pub stored_bytes: u64,
    /// Last committed offset per partition.
    pub committed: std::collections::BTreeMap<TopicPartition, i64>,
    /// Records taken in but left uncommitted by the shutdown (its deadline cancelled their
    /// uploads): the next owner reads them again. 0 after a full drain.
    pub uncommitted: u64,
}

impl RunStats {
    /// Adds another worker's totals (workers own disjoint partitions).
    pub fn merge(&mut self, other: &RunStats) {
        self.records_in += other.records_in;
        self.records_written += other.records_written;
        self.records_quarantined += other.records_quarantined;
        self.records_filtered += other.records_filtered;
        self.objects += other.objects;
        self.raw_bytes += other.raw_bytes;
        self.stored_bytes += other.stored_bytes;
        self.uncommitted += other.uncommitted;
        for (tp, off) in &other.committed {
            let e = self.committed.entry(tp.clone()).or_insert(*off);
            *e = (*e).max(*off);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileKey {
    dest: usize,
    tp: TopicPartition,
    kind: FileKind,
}

/// A [`FileKey`] borrowing its partition, to look a file up without cloning it. Its fields and
/// their order are `FileKey`'s, so both hash alike.
#[derive(Hash)]
struct FileKeyRef<'a> {
    dest: usize,
    tp: &'a TopicPartition,
    kind: &'a FileKind,
}

impl hashbrown::Equivalent<FileKey> for FileKeyRef<'_> {
    fn equivalent(&self, key: &FileKey) -> bool {
        self.dest == key.dest && *self.tp == key.tp && *self.kind == key.kind
    }
}

struct OpenFile {
    id: u64,
    batch: Batch,
    writer: Option<ObjectWriter>,
    key: Option<String>,
    /// Its values as the open-file indexes hold them (see `open.rs`).
    indexed: open::Indexed,
}

struct InFlight {
    dest: usize,
    tp: TopicPartition,
    kind: FileKind,
    first_offset: i64,
    last_offset: i64,
    cancel: CancellationToken,
}

struct Destination {
    cfg: DestinationConfig,
    router: Router,
    /// What the destination does with closed files (see `destination.rs`).
    kind: Box<dyn DestinationKind>,
    /// Offset-window size of a deterministic destination.
    window: Option<i64>,
}

/// The worker.
pub struct Pipeline {
    dests: Vec<Destination>,
    // The maps below are looked up for every record: hashbrown's default hasher (foldhash) is
    // several times cheaper than SipHash on these short keys, and `FileKeyRef` finds a file
    // without cloning the record's partition.
    topic_dests: hashbrown::HashMap<Arc<str>, Arc<[usize]>>,
    open: OpenFiles,
    /// Most files open at once; opening one more first closes the least recently written.
    max_open_files: usize,
    /// Current offset window per partition and deterministic destination.
    windows: hashbrown::HashMap<TopicPartition, Vec<(usize, i64)>>,
    /// The worker's deflate state(s), shared by all its gzip files.
    encoders: EncoderPool,
    in_flight: HashMap<u64, InFlight>,
    offsets: OffsetTracker,
    uploader: Uploader,
    done: tokio::sync::mpsc::UnboundedReceiver<UploadDone>,
    io: SourceIo,
    next_id: u64,
    budget: usize,
    drain_deadline: Duration,
    shutdown_deadline: Duration,
    uploads_cancel: CancellationToken,
    metrics: Metrics,
    stats: RunStats,
    progress: Option<tokio::sync::watch::Sender<RunStats>>,
    /// Age of the oldest open file at the last tick (for the gauge).
    oldest_age_secs: f64,
    /// This worker's index among the workers sharing the Kafka consumer.
    shard: usize,
    /// The wall clock (routing, object keys).
    clock: Clock,
}

impl Pipeline {
    /// Assembles a worker from validated config, an uploader and the source channels.
    pub fn new(
        config: &Config,
        uploader: Uploader,
        done: tokio::sync::mpsc::UnboundedReceiver<UploadDone>,
        io: SourceIo,
        metrics: Metrics,
    ) -> Self {
        let dests = config
            .destinations
            .iter()
            .map(|d| Destination {
                cfg: d.clone(),
                router: Router::new(d),
                kind: crate::destination::for_config(d),
                window: d
                    .batch
                    .deterministic
                    .then(|| i64::try_from(d.batch.max_records).unwrap_or(i64::MAX)),
            })
            .collect();
        Self {
            dests,
            topic_dests: hashbrown::HashMap::new(),
            open: OpenFiles::default(),
            max_open_files: config.pipeline.max_open_files,
            windows: hashbrown::HashMap::new(),
            encoders: EncoderPool::default(),
            in_flight: HashMap::new(),
            offsets: OffsetTracker::new(),
            uploader,
            done,
            io,
            next_id: 0,
            budget: config.pipeline.memory_budget_bytes,
            drain_deadline: config.pipeline.drain_deadline,
            shutdown_deadline: config.pipeline.shutdown_deadline,
            uploads_cancel: CancellationToken::new(),
            metrics,
            stats: RunStats::default(),
            progress: None,
            oldest_age_secs: 0.0,
            shard: 0,
            clock: crate::model::system_clock(),
        }
    }

    /// Sets this worker's index and its share of the memory budget.
    pub fn with_shard(mut self, shard: usize, budget_bytes: usize) -> Self {
        self.shard = shard;
        self.budget = budget_bytes;
        self
    }

    /// Reads wall-clock time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Publishes the run's totals after every upload and commit.
    pub fn with_progress(mut self, tx: tokio::sync::watch::Sender<RunStats>) -> Self {
        self.progress = Some(tx);
        self
    }

    fn publish(&self) {
        if let Some(p) = &self.progress {
            p.send_replace(self.stats.clone());
        }
    }

    fn memory_used(&self) -> usize {
        self.open.memory() + self.uploader.queued_bytes() + self.encoders.memory_bytes()
    }

    /// Runs until `shutdown` is cancelled (then drains, uploads, commits) or a fatal error.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<RunStats, PipelineError> {
        let tick_every = self
            .dests
            .iter()
            .map(|d| d.cfg.batch.idle.min(d.cfg.batch.max_age) / 4)
            .min()
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let intake = self.memory_used() < self.budget;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                Some(done) = self.done.recv() => {
                    if let Err(e) = self.on_done(done) {
                        break Err(e);
                    }
                }
                Some(ctrl) = self.io.control.recv() => {
                    if let Err(e) = self.on_control(ctrl).await {
                        break Err(e);
                    }
                }
                chunk = self.io.data.recv(), if intake => match chunk {
                    Some(records) => {
                        if let Err(e) = self.ingest(records) {
                            break Err(e);
                        }
                        self.enforce_budget();
                    }
                    None => break Err(ConsumerError::Stopped.into()),
                },
                _ = tick.tick() => {
                    self.expire();
                    if let Err(e) = self.settle(false).await {
                        break Err(e);
                    }
                }
            }
            self.metrics.buffer_state(
                self.shard,
                self.memory_used(),
                self.open.len(),
                self.oldest_age_secs,
            );
        };
        match result {
            Ok(()) => {
                self.shutdown().await;
                Ok(self.stats)
            }
            Err(e) => {
                // Stop without committing anything more; cancel uploads, stop the other workers
                // (they drain and commit what is safe), and leave the group.
                shutdown.cancel();
                self.uploads_cancel.cancel();
                let (done, wait) = tokio::sync::oneshot::channel();
                let _ = self.io.commands.send(Command::Shutdown {
                    shard: self.shard,
                    offsets: Vec::new(),
                    done,
                });
                let _ = tokio::time::timeout(Duration::from_secs(15), wait).await;
                Err(e)
            }
        }
    }

    /// The destinations of `topic` (indices in config order), resolved once per topic: by name
    /// or by pattern. Also registers the offset windows of its deterministic destinations.
    fn resolve_topic(&mut self, topic: &Arc<str>) -> Arc<[usize]> {
        if let Some(d) = self.topic_dests.get(topic) {
            return d.clone();
        }
        let dests: Arc<[usize]> = self
            .dests
            .iter()
            .enumerate()
            .filter(|(_, d)| d.cfg.topics.matches(topic))
            .map(|(i, _)| i)
            .collect();
        let windows = dests
            .iter()
            .filter(|&&i| self.dests[i].cfg.batch.deterministic)
            .map(|&i| self.dests[i].cfg.batch.max_records)
            .collect();
        self.offsets.set_windows(topic, windows);
        self.topic_dests.insert(topic.clone(), dests.clone());
        dests
    }

    fn ingest(&mut self, records: Vec<Record>) -> Result<(), PipelineError> {
        let now = Instant::now();
        let now_utc = (self.clock)();
        // Consumed-records metrics once per partition per chunk, not per record (a chunk holds
        // few partitions, so a linear search beats hashing).
        let mut consumed: Vec<(TopicPartition, u64, u64)> = Vec::new();
        for rec in records {
            if !self.offsets.is_assigned(&rec.tp) {
                tracing::debug!(tp = %rec.tp, offset = rec.offset, "record of an unassigned partition; skipped");
                continue;
            }
            let dests = self.resolve_topic(&rec.tp.topic);
            if dests.is_empty() {
                for (tp, n, b) in consumed {
                    self.metrics.consumed(&tp, n, b);
                }
                return Err(PipelineError::Unroutable {
                    topic: rec.tp.topic.to_string(),
                    partition: rec.tp.partition,
                    offset: rec.offset,
                });
            }
            self.stats.records_in += 1;
            match consumed.iter_mut().find(|(tp, _, _)| *tp == rec.tp) {
                Some((_, n, b)) => {
                    *n += 1;
                    *b += rec.value_len() as u64;
                }
                None => consumed.push((rec.tp.clone(), 1, rec.value_len() as u64)),
            }
            for &d in dests.iter() {
                if let Some(n) = self.dests[d].window {
                    self.enter_window(d, &rec.tp, rec.offset / n.max(1));
                }
                match self.dests[d].router.route(&rec, now_utc) {
                    Route::Filtered => {
                        self.stats.records_filtered += 1;
                        self.metrics.filtered(&self.dests[d].cfg.name);
                    }
                    Route::Quarantine(reason) => self.quarantine(d, &rec, reason, None, now),
                    Route::Mismatch(m) => {
                        let detail = m.detail();
                        let reason = QuarantineReason::SchemaMismatch;
                        self.quarantine(d, &rec, reason, Some(&detail), now);
                    }
                    Route::Write {
                        folder,
                        time,
                        line,
                        values,
                        row,
                    } => {
                        self.stats.records_written += 1;
                        // Parquet files take the metadata as columns.
                        let cfg = &self.dests[d].cfg;
                        let line = match &cfg.kafka_metadata_field {
                            Some(field) if cfg.parquet.is_none() => {
                                Cow::Owned(with_kafka_metadata(&line, &rec, field))
                            }
                            _ => line,
                        };
                        let kind = FileKind::Data(folder);
                        self.append(d, &rec, kind, (&line, &row), time, now, values);
                    }
                }
            }
            if let Err(e) = self.offsets.consumed(&rec.tp, rec.offset) {
                tracing::warn!(error = %e, "offset tracker refused a record; it will be re-read after a restart");
            }
            // Checked per record (O(1)), so one chunk cannot overshoot the budget.
            if self.memory_used() > self.budget {
                self.enforce_budget();
            }
        }
        for (tp, n, b) in consumed {
            self.metrics.consumed(&tp, n, b);
        }
        Ok(())
    }

    /// Writes a record to its destination's error folder for `reason` (the envelope carries
    /// `detail` when given), counting it.
    fn quarantine(
        &mut self,
        dest: usize,
        rec: &Record,
        reason: QuarantineReason,
        detail: Option<&str>,
        now: Instant,
    ) {
        self.stats.records_quarantined += 1;
        self.metrics.quarantined(&self.dests[dest].cfg.name, reason);
        tracing::debug!(tp = %rec.tp, offset = rec.offset, reason = reason.as_str(), detail, "quarantined");
        let line = error_line_with_detail(rec, reason, detail);
        let kind = FileKind::Error(reason);
        self.append(dest, rec, kind, (&line, &[]), None, now, Vec::new());
    }

    /// Deterministic destinations: a record of a new offset window closes every file of the
    /// partition's previous window, so files hold fixed windows whatever happened before.
    fn enter_window(&mut self, dest: usize, tp: &TopicPartition, window: i64) {
        let windows = match self.windows.get_mut(tp) {
            Some(ws) => ws,
            None => self.windows.entry(tp.clone()).or_default(),
        };
        match windows.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, w)) if *w == window => return,
            Some((_, w)) => *w = window,
            None => {
                windows.push((dest, window));
                return;
            }
        }
        let ended: Vec<FileKey> = self
            .open
            .keys()
            .filter(|k| k.dest == dest && k.tp == *tp)
            .cloned()
            .collect();
        for key in ended {
            self.seal(&key, FlushReason::Records);
        }
    }

    /// Appends a record's line (and, to a Parquet file, its row) to its file, opening the file
    /// (with its first time and folder values) if needed.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        dest: usize,
        rec: &Record,
        kind: FileKind,
        (line, row): (&[u8], &[Cell<'_>]),
        time: Option<chrono::DateTime<Utc>>,
        now: Instant,
        values: Vec<String>,
    ) {
        let compression = self.dests[dest].cfg.batch.compression;
        let file_key = || FileKey {
            dest,
            tp: rec.tp.clone(),
            kind,
        };
        let lookup = FileKeyRef {
            dest,
            tp: &rec.tp,
            kind: &kind,
        };
        // At the bound, a record for a file not open yet first closes the least recently
        // written one (a folder no record went to for longest).
        if self.open.len() >= self.max_open_files && !self.open.map.contains_key(&lookup) {
            if let Some(lru) = self.open.least_recently_written() {
                self.seal(&lru, FlushReason::OpenFiles);
            }
        }
        let batch_cfg = &self.dests[dest].cfg.batch;
        let file = match self.open.map.raw_entry_mut().from_key(&lookup) {
            RawEntryMut::Occupied(o) => o.into_mut(),
            RawEntryMut::Vacant(v) => {
                self.next_id += 1;
                let mut batch = match (&kind, &self.dests[dest].cfg.parquet) {
                    (FileKind::Data(_), Some(p)) => {
                        Batch::new_parquet(rec.tp.clone(), rec.offset, p.clone(), now)
                    }
                    _ => Batch::new(rec.tp.clone(), rec.offset, compression, now),
                };
                batch.first_time = time;
                batch.folder_values = values;
                if let Err(e) = self.offsets.hold(&rec.tp, rec.offset) {
                    tracing::warn!(error = %e, "cannot hold offset");
                }
                let deadline = batch.next_deadline(batch_cfg);
                let key = file_key();
                let mut file = OpenFile {
                    id: self.next_id,
                    batch,
                    writer: None,
                    key: None,
                    indexed: open::Indexed {
                        deadline,
                        write: now,
                        memory: 0,
                    },
                };
                self.open.index.insert(&key, &mut file, deadline);
                v.insert(key, file).1
            }
        };
        file.batch
            .append_row(rec, line, row, now, &mut self.encoders);
        self.open.index.resized(file);
        let cfg = &self.dests[dest].cfg;
        if let Some(reason) = file.batch.full(&cfg.batch) {
            self.seal(&file_key(), reason);
            return;
        }
        let part_size = self.uploader.part_size();
        let d = &self.dests[dest];
        if file.batch.buffered_bytes() >= part_size && d.kind.streams(&kind) {
            let part = file.batch.take_part();
            self.open.index.resized(file);
            if file.writer.is_none() {
                let object_key = d
                    .kind
                    .object_key(&rec.tp, &kind, &file.batch, (self.clock)());
                let info = ObjectInfo {
                    id: file.id,
                    dest,
                    tp: rec.tp.clone(),
                    first_offset: file.batch.first_offset,
                    parquet: file.batch.is_parquet(),
                };
                file.writer = Some(self.uploader.open(
                    info,
                    Some(object_key.clone()),
                    self.uploads_cancel.child_token(),
                ));
                file.key = Some(object_key);
            }
            if let Some(w) = file.writer.as_mut() {
                w.part(part);
            }
        }
    }
}

#[cfg(test)]
mod tests;
