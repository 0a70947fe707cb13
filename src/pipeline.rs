//! The worker loop: source → router → batch → upload → offsets → commit, in one task that owns
//! all open files and the offset tracker.
//!
//! Invariants: a record's offset is taken into the tracker only after it is in an open file (or
//! filtered); a file holds its partition's watermark from its first record until its object is in
//! S3; commits are sent after each successful upload, synchronously on revoke and on shutdown.
//! A file is durable only when its destination's kind says so (`destination.rs`):
//! only then are its offsets released. The loop is a thin `select!` preferring finishing work
//! to taking more (biased: shutdown, upload completions, assignment changes, then data, then the
//! timer), and takes no data while the memory budget is spent or a chunk waits for its
//! schemas. This file holds the loop and the append; `intake.rs` the intake (destinations,
//! decoding, route), `decoding.rs` the schemas a chunk needs (Schema Registry), `grow.rs` the
//! columns they bring a `from_schema` destination; `files.rs` the open files, their bound and
//! the memory budget (with `open.rs`, their indexes); `uploads.rs` the uploader, its completions and the files in
//! flight; `lifecycle.rs` the partition lifecycle (assignment, revoke drain,
//! shutdown); `flush.rs` the way out (seal, upload completions, expiry, the budget's flushes).
//! Deterministic offset windows are the offset tracker's (`offsets.rs`).

use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::config::{Config, DestinationConfig};
use crate::destination::{DestinationError, DestinationKind, FileKind};
use crate::metrics::Metrics;
use crate::model::{Cell, Clock, FlushReason, Record, TopicPartition};
use crate::offsets::OffsetTracker;
use crate::router::Router;
use crate::source::{Command, ConsumerError, SourceIo};
use crate::table::open::Tables;
use crate::upload::{ObjectInfo, UploadDone, UploadError, Uploader};

mod decoding;
mod files;
mod flush;
mod grow;
mod intake;
mod lifecycle;
mod open;
mod stats;
mod uploads;
use files::{FileKey, FileKeyRef, Files, OpenFile, Wrote};
pub use stats::RunStats;
use uploads::{InFlight, Uploads};

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
    /// A framed record's schema was not at hand when its chunk was taken in (the chunk waits
    /// for its schemas first; this guards that invariant). Nothing from it on was committed.
    #[error("schema {0} was not at hand for a record of the chunk taken in; stopping without committing it")]
    SchemaNotAtHand(u32),
}

/// One record's write to a file (see [`Pipeline::append`]).
struct Write<'a, 'c> {
    dest: usize,
    rec: &'a Record,
    kind: FileKind,
    line: &'a [u8],
    row: &'a [Cell<'c>],
    time: Option<chrono::DateTime<Utc>>,
    values: Vec<String>,
}

struct Destination {
    cfg: DestinationConfig,
    router: Router,
    /// What the destination does with closed files (see `destination.rs`).
    kind: Box<dyn DestinationKind>,
    /// Offset-window size of a deterministic destination.
    window: Option<i64>,
    /// Per partition, the offset below which the destination already holds every record (a
    /// table's committed offset at assignment): those records are skipped for it.
    skip_below: hashbrown::HashMap<TopicPartition, i64>,
    /// The schemas judged for a `columns = "from_schema"` destination (`grow.rs`).
    judged: Option<grow::Judged>,
}

/// The worker.
pub struct Pipeline {
    dests: Vec<Destination>,
    // The maps below are looked up for every record: hashbrown's default hasher (foldhash) is
    // several times cheaper than SipHash on these short keys, and `FileKeyRef` finds a file
    // without cloning the record's partition.
    topic_dests: hashbrown::HashMap<Arc<str>, Arc<[usize]>>,
    /// The open files, their bound and the memory budget (`files.rs`).
    files: Files,
    offsets: OffsetTracker,
    /// The uploader, its completions and the files in flight (`uploads.rs`).
    uploads: Uploads,
    io: SourceIo,
    drain_deadline: Duration,
    shutdown_deadline: Duration,
    metrics: Metrics,
    stats: RunStats,
    progress: Option<tokio::sync::watch::Sender<RunStats>>,
    /// Age of the oldest open file at the last tick (for the gauge).
    oldest_age_secs: f64,
    /// This worker's index among the workers sharing the Kafka consumer.
    shard: usize,
    /// The wall clock (routing, object keys).
    clock: Clock,
    /// What the destinations' kinds hold for landed files ([`DestinationKind::held_bytes`]).
    kinds_held: usize,
    /// The Schema Registry's schemas, when a destination reads the Confluent wire format.
    decoding: Option<decoding::Decoding>,
}

impl Pipeline {
    /// Assembles a worker from validated config, an uploader and the source channels.
    /// `tables` holds the opened table of every Iceberg destination
    /// ([`crate::table::open::open_tables`]).
    pub fn new(
        config: &Config,
        tables: &Tables,
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
                kind: kind_for(d, tables, &metrics),
                window: d
                    .batch
                    .deterministic
                    .then(|| i64::try_from(d.batch.max_records).unwrap_or(i64::MAX)),
                skip_below: hashbrown::HashMap::new(),
                judged: d
                    .parquet
                    .as_deref()
                    .filter(|p| p.from_schema)
                    .map(grow::Judged::new),
            })
            .collect();
        Self {
            dests,
            topic_dests: hashbrown::HashMap::new(),
            files: Files::new(
                config.pipeline.max_open_files,
                config.pipeline.memory_budget_bytes,
            ),
            offsets: OffsetTracker::new(),
            uploads: Uploads::new(uploader, done),
            io,
            drain_deadline: config.pipeline.drain_deadline,
            shutdown_deadline: config.pipeline.shutdown_deadline,
            metrics,
            stats: RunStats::default(),
            progress: None,
            oldest_age_secs: 0.0,
            shard: 0,
            clock: crate::model::system_clock(),
            kinds_held: 0,
            decoding: None,
        }
    }

    /// Reads the destinations that take the Confluent wire format through `registry` (shared
    /// by the workers); without such a destination it is not used.
    pub fn with_registry(mut self, registry: Arc<crate::decode::registry::Registry>) -> Self {
        if self.dests.iter().any(|d| d.cfg.reads_registry()) {
            self.decoding = Some(decoding::Decoding::new(registry));
        }
        self
    }

    /// Sets this worker's index and its share of the memory budget.
    pub fn with_shard(mut self, shard: usize, budget_bytes: usize) -> Self {
        self.shard = shard;
        self.files.set_budget(budget_bytes);
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
        self.files.memory() + self.queued_bytes()
    }

    /// Memory held outside the open files: bytes handed to uploads and not yet in S3, and what
    /// the destinations' kinds hold for landed files (a table's footers until its commit).
    fn queued_bytes(&self) -> usize {
        self.uploads.queued_bytes() + self.kinds_held
    }

    /// Recounts what the destinations' kinds hold (after a landing, a settle, a revoke).
    fn recount_kinds(&mut self) {
        self.kinds_held = self.dests.iter().map(|d| d.kind.held_bytes()).sum();
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
            let stalled = self.decoding.as_ref().is_some_and(|d| d.stalled());
            let intake = !stalled && self.files.intake(self.queued_bytes());
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                Some(done) = self.uploads.recv() => self.on_done(done),
                Some(ctrl) = self.io.control.recv() => self.on_control(ctrl).await,
                chunk = self.io.data.recv(), if intake => self.on_chunk(chunk),
                fetched = decoding::fetched(self.decoding.as_mut().and_then(|d| d.task())),
                    if stalled => self.on_fetched(fetched),
                _ = tick.tick() => self.on_tick().await,
            };
            if let Err(e) = step {
                break Err(e);
            }
            self.metrics.buffer_state(
                self.shard,
                self.memory_used(),
                self.files.len(),
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
                self.uploads.cancel_all();
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

    /// A chunk of records from the source (`None`: the source stopped).
    fn on_chunk(&mut self, chunk: Option<Vec<Record>>) -> Result<(), PipelineError> {
        let records = chunk.ok_or(ConsumerError::Stopped)?;
        self.take_chunk(records)?;
        self.enforce_budget();
        Ok(())
    }

    /// The timer: closes the files due (and every data file of a destination whose commit is
    /// due), runs the destinations' steps due.
    async fn on_tick(&mut self) -> Result<(), PipelineError> {
        self.expire();
        // Landed files held past a quarter of the budget (a table's footers until its commit)
        // make the commit due now: intake waits on them.
        let pressure = self.kinds_held > self.files.budget() / 4;
        for d in 0..self.dests.len() {
            let due = self.dests[d].kind.seal_due();
            if due || (pressure && self.dests[d].kind.unsettled()) {
                let keys: Vec<FileKey> = self
                    .files
                    .keys()
                    .filter(|k| k.dest == d && matches!(k.kind, FileKind::Data(_)))
                    .cloned()
                    .collect();
                let deadline = Instant::now() + self.drain_deadline;
                self.seal_within_budget(keys, FlushReason::Commit, deadline)
                    .await?;
                // Their uploads first, so the commit takes them (intake waits meanwhile, as
                // for a revoke).
                self.wait_uploads(deadline, |f| f.dest == d).await?;
            }
        }
        self.settle(false).await?;
        // What the commits freed may let the budget close files again (it is otherwise
        // checked as records arrive, and intake may be paused).
        self.enforce_budget();
        Ok(())
    }

    /// Deterministic destinations: a record of a new offset window (`offsets.rs` keeps them)
    /// closes every file of the destination and partition, so files hold fixed windows
    /// whatever happened before.
    fn close_window(&mut self, dest: usize, tp: &TopicPartition) {
        let ended: Vec<FileKey> = self
            .files
            .keys()
            .filter(|k| k.dest == dest && k.tp == *tp)
            .cloned()
            .collect();
        for key in ended {
            self.seal(&key, FlushReason::Records);
        }
    }

    /// Appends a record's line (and, to a Parquet file, its row) to its file, opening the file
    /// (with its first time and folder values) if needed; closes it when full, uploads a part
    /// when one is ready.
    fn append(&mut self, w: Write<'_, '_>, now: Instant) {
        let Write {
            dest,
            rec,
            kind,
            line,
            row,
            time,
            values,
        } = w;
        let lookup = FileKeyRef {
            dest,
            tp: &rec.tp,
            kind: &kind,
        };
        // At the bound, a record for a file not open yet first closes the least recently
        // written one (a folder no record went to for longest).
        if let Some(lru) = self.files.evict_for(&lookup) {
            self.seal(&lru, FlushReason::OpenFiles);
        }
        let d = &self.dests[dest];
        let offsets = &mut self.offsets;
        let open = |id| {
            let mut batch = match (&kind, &d.cfg.parquet) {
                (FileKind::Data(_), Some(p)) => {
                    Batch::new_parquet(rec.tp.clone(), rec.offset, p.clone(), now)
                }
                _ => Batch::new(rec.tp.clone(), rec.offset, d.cfg.batch.compression, now),
            };
            batch.first_time = time;
            batch.folder_values = values;
            if let Err(e) = offsets.hold(&rec.tp, rec.offset) {
                tracing::warn!(error = %e, "cannot hold offset");
            }
            let deadline = batch.next_deadline(&d.cfg.batch);
            let file = OpenFile {
                id,
                batch,
                writer: None,
                key: None,
                indexed: open::Indexed {
                    deadline,
                    write: now,
                    memory: 0,
                },
            };
            (file_key(dest, rec, kind), file)
        };
        let wrote = self.files.write(
            &lookup,
            open,
            |batch, encoders| batch.append_row(rec, line, row, now, encoders),
            &d.cfg.batch,
            self.uploads.part_size(),
            || d.kind.streams(&kind),
        );
        match wrote {
            Wrote::Appended => {}
            Wrote::Full(reason) => self.seal(&file_key(dest, rec, kind), reason),
            Wrote::Part(part) => self.send_part(&file_key(dest, rec, kind), part),
        }
    }

    /// Uploads a part of the open file `key`, opening its upload (under its final key) first.
    fn send_part(&mut self, key: &FileKey, part: bytes::Bytes) {
        let d = &self.dests[key.dest];
        let Some(file) = self.files.get_mut(key) else {
            return;
        };
        if file.writer.is_none() {
            let object_key = d
                .kind
                .object_key(&key.tp, &key.kind, &file.batch, (self.clock)());
            let info = ObjectInfo {
                id: file.id,
                dest: key.dest,
                tp: key.tp.clone(),
                first_offset: file.batch.first_offset,
                parquet: file.batch.is_parquet(),
            };
            file.writer = Some(self.uploads.open_streaming(info, object_key.clone()));
            file.key = Some(object_key);
        }
        if let Some(w) = file.writer.as_mut() {
            w.part(part);
        }
    }
}

/// The kind of a configured destination: the one place it is chosen (see `destination.rs`).
fn kind_for(
    cfg: &DestinationConfig,
    tables: &Tables,
    metrics: &Metrics,
) -> Box<dyn DestinationKind> {
    match (&cfg.iceberg, tables.get(&cfg.name)) {
        (None, _) => Box::new(crate::destination::Objects::new(cfg)),
        (Some(_), Some(table)) => Box::new(crate::table::kind::Table::new(
            cfg,
            table.clone(),
            metrics.clone(),
        )),
        (Some(_), None) => panic!(
            "invariant: the table of destination {} is opened before its workers start",
            cfg.name
        ),
    }
}

/// Whether every Iceberg destination of `config` has its table in `tables` (checked before
/// any worker starts).
pub fn tables_opened(config: &Config, tables: &Tables) -> bool {
    config
        .destinations
        .iter()
        .all(|d| d.iceberg.is_none() || tables.contains_key(&d.name))
}

/// The file of a record in a destination.
fn file_key(dest: usize, rec: &Record, kind: FileKind) -> FileKey {
    FileKey {
        dest,
        tp: rec.tp.clone(),
        kind,
    }
}

#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;
