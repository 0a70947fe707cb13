//! The table kind: a destination whose data files are appended to an Apache Iceberg table
//! behind the destination seam ([`DestinationKind`]). The worker routes, batches and uploads
//! its Parquet files as for objects; this kind names them, keeps each landed data file (with
//! its footer) until a commit, and every `commit_interval_secs` (or before a revoke is
//! answered, and at shutdown) appends the committable ones as one snapshot carrying each
//! partition's next offset ([`super::commit`]). Only then are their offsets released to the
//! worker, which commits them to Kafka. Error files are objects, durable when they land.
//!
//! Invariants:
//! - a commit's offset for a partition (`next`) has every record below it in the table, in a
//!   durable error file, or filtered out, and no record of the commit's files at or above it:
//!   files that cannot be committed with such an offset wait for the next commit (see
//!   `committable` (below));
//! - a data file's name is unique per worker incarnation (`writer`), so a replay never collides
//!   with a file the table holds;
//! - a refused commit (a zombie: the table is past one of its partitions) releases nothing and
//!   stops the worker; its files stay in S3 unreferenced, for the table's orphan maintenance.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use iceberg::{Catalog, TableIdent};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use tokio::time::Instant;

use super::commit::{commit, CommitOutcome, CommitRequest};
use super::datafile::{data_file_name, time_partition, PartitionValue, WrittenFile};
use super::guard::PartitionRange;
use super::offsets::committed_offsets;
use super::TableError;
use crate::batch::Batch;
use crate::config::iceberg::PartitionSource;
use crate::config::DestinationConfig;
use crate::destination::{
    DestinationError, DestinationKind, FileKind, Landed, Objects, Watermarks,
};
use crate::metrics::Metrics;
use crate::model::{FolderKey, TopicPartition};

/// Attempts of one commit on a catalog error that may pass (an outage, a conflict the crate's
/// own retries did not resolve) before the worker stops: with backoff from 1 s up to 30 s,
/// about three minutes, during which the worker takes no records.
const COMMIT_ATTEMPTS: usize = 8;

/// What every worker of a table destination shares: the catalog and the table.
pub struct TableTarget {
    /// The destination's name (errors, logs).
    pub destination: String,
    /// The catalog.
    pub catalog: Arc<dyn Catalog>,
    /// The table.
    pub ident: TableIdent,
    /// The Kafka consumer group (part of the snapshot's offset keys).
    pub group: String,
    /// The bucket of the table's location (data-file locations are `s3://<bucket>/<key>`).
    pub bucket: String,
    /// Key prefix of the table's data files in that bucket (`<table location path>/data/`).
    pub data_prefix: String,
    /// The store of that bucket when it is not the destination's (an S3 Tables table bucket,
    /// a warehouse elsewhere): the destination's uploads are routed to it, error files
    /// excepted ([`crate::sink::routed::Routed`]).
    pub data_sink: Option<Arc<dyn crate::sink::ObjectSink>>,
    /// The partition fields, in spec order.
    pub partition: Vec<PartitionSource>,
    /// Time between two commits of one worker.
    pub interval: Duration,
    /// The runtime the catalog's clients were built on (its calls run there).
    pub runtime: tokio::runtime::Handle,
}

impl TableTarget {
    /// The bucket of `location` (the table's, `s3://<bucket>/<path>`) and the key prefix of
    /// its data files there, or why the connector cannot write there.
    pub fn data_location(location: &str) -> Result<(String, String), String> {
        let rest = location
            .strip_prefix("s3://")
            .or_else(|| location.strip_prefix("s3a://"))
            .ok_or_else(|| {
                format!("the table's location {location:?} is not in S3 (s3://bucket/…)")
            })?;
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("the table's location {location:?} has no bucket"));
        }
        let path = path.trim_end_matches('/');
        let prefix = if path.is_empty() {
            "data/".to_string()
        } else {
            format!("{path}/data/")
        };
        Ok((bucket.to_string(), prefix))
    }
}

/// The table kind of one worker (see the module doc).
pub struct Table {
    target: Arc<TableTarget>,
    /// Names and settles error files as objects.
    errors: Objects,
    /// This incarnation's writer id (in every data file's name).
    writer: String,
    /// Landed data files not yet committed.
    pending: Vec<Landed>,
    metrics: Metrics,
    /// When the kind last asked the worker to close its data files ([`Self::seal_due`]).
    last_seal: Instant,
    /// Memory their footers and keys hold.
    held: usize,
    last_commit: Instant,
}

impl Table {
    /// The kind of destination `cfg` over `target`, with a fresh writer id.
    pub fn new(cfg: &DestinationConfig, target: Arc<TableTarget>, metrics: Metrics) -> Self {
        metrics.init_table(&cfg.name);
        Self {
            metrics,
            target,
            errors: Objects::new(cfg),
            writer: uuid::Uuid::new_v4().simple().to_string(),
            pending: Vec::new(),
            held: 0,
            last_commit: Instant::now(),
            last_seal: Instant::now(),
        }
    }

    fn error(&self, source: impl std::error::Error + Send + Sync + 'static) -> DestinationError {
        DestinationError {
            destination: self.target.destination.clone(),
            source: Box::new(source),
        }
    }

    /// The commit of the pending files that can be committed now (see `committable` (below)), and
    /// the indices in `pending` of its files.
    fn request(
        &self,
        marks: &(dyn Watermarks + Sync),
    ) -> Result<Option<(CommitRequest, Vec<usize>)>, TableError> {
        let (ranges, chosen) = committable(&self.pending, marks);
        if chosen.is_empty() {
            return Ok(None);
        }
        let files = chosen
            .iter()
            .map(|&i| self.written(&self.pending[i]))
            .collect::<Result<Vec<_>, _>>()?;
        let req = CommitRequest {
            group: self.target.group.clone(),
            commit_id: uuid::Uuid::new_v4().to_string(),
            ranges,
            files,
        };
        Ok(Some((req, chosen)))
    }

    /// A landed data file as the commit registers it.
    fn written(&self, f: &Landed) -> Result<WrittenFile, TableError> {
        let location = format!("s3://{}/{}", self.target.bucket, f.key);
        let footer = f.footer.clone().ok_or_else(|| TableError::DataFile {
            path: location.clone(),
            message: "landed without its footer".into(),
        })?;
        let partition = self
            .target
            .partition
            .iter()
            .map(|s| partition_value(s, &f.kind, &footer))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|message| TableError::DataFile {
                path: location.clone(),
                message,
            })?;
        Ok(WrittenFile {
            location,
            size_bytes: f.stats.stored_bytes,
            footer,
            partition,
        })
    }

    /// Commits `req`, retrying outages with backoff ([`COMMIT_ATTEMPTS`]); the same commit id
    /// on every attempt, so a commit that landed with its answer lost is recognised.
    async fn commit(&self, req: CommitRequest) -> Result<CommitOutcome, DestinationError> {
        let req = Arc::new(req);
        self.on_catalog("table commit", move |t| {
            let req = req.clone();
            async move { commit(&*t.catalog, &t.ident, &req).await }
        })
        .await
    }

    /// The table's committed offsets of `partitions` (for this group), read with the same
    /// retries as a commit.
    async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>, DestinationError> {
        let wanted: Arc<[TopicPartition]> = partitions.into();
        let found = self
            .on_catalog("reading the table's offsets", move |t| {
                let wanted = wanted.clone();
                async move {
                    let table =
                        t.catalog
                            .load_table(&t.ident)
                            .await
                            .map_err(|e| TableError::Iceberg {
                                table: t.ident.to_string(),
                                source: Box::new(e),
                            })?;
                    Ok(committed_offsets(table.metadata(), &t.group, &wanted)
                        .into_iter()
                        .map(|(tp, c)| (tp, c.next))
                        .collect::<Vec<_>>())
                }
            })
            .await?;
        Ok(found)
    }

    /// Runs `op` on the catalog's runtime, retrying errors that may pass with backoff
    /// ([`COMMIT_ATTEMPTS`]); `what` names it in the logs.
    async fn on_catalog<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, DestinationError>
    where
        T: Send + 'static,
        F: Fn(Arc<TableTarget>) -> Fut,
        Fut: std::future::Future<Output = Result<T, TableError>> + Send + 'static,
    {
        let attempt = || {
            let run = op(self.target.clone());
            let runtime = self.target.runtime.clone();
            async move {
                match runtime.spawn(run).await {
                    Ok(r) => r.map_err(Some),
                    // The task panicked or its runtime is gone: not retried.
                    Err(_) => Err(None),
                }
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .with_max_times(COMMIT_ATTEMPTS - 1);
        attempt
            .retry(backoff)
            .when(|e: &Option<TableError>| e.as_ref().is_some_and(TableError::is_retryable))
            .notify(|e: &Option<TableError>, wait| {
                if let Some(e) = e {
                    tracing::warn!(destination = %self.target.destination, error = %e, retry_in = ?wait, "{what} failed; retrying");
                }
            })
            .await
            .map_err(|e| match e {
                Some(e) => self.error(e),
                None => self.error(std::io::Error::other(format!("{what}: its task ended early"))),
            })
    }
}

#[async_trait]
impl DestinationKind for Table {
    fn name(&self) -> &'static str {
        "table"
    }

    /// `<table location>/data/<topic>-<partition>-<first offset>-<writer>.parquet`; error
    /// files as objects.
    fn object_key(
        &self,
        tp: &TopicPartition,
        kind: &FileKind,
        batch: &Batch,
        upload_time: DateTime<Utc>,
    ) -> String {
        match kind {
            FileKind::Data(_) => format!(
                "{}{}",
                self.target.data_prefix,
                data_file_name(&tp.topic, tp.partition, batch.first_offset, &self.writer)
            ),
            FileKind::Error(_) => self.errors.object_key(tp, kind, batch, upload_time),
        }
    }

    /// The table gains the new columns (a schema update) before a file holds them.
    fn evolve(
        &self,
        parquet: &crate::config::ParquetConfig,
    ) -> Option<futures::future::BoxFuture<'static, Result<crate::destination::Evolved, String>>>
    {
        let t = &self.target;
        let task = super::evolve::add_columns(t.catalog.clone(), t.ident.clone(), parquet.clone());
        // On the runtime the catalog's clients were built on.
        let runtime = t.runtime.clone();
        Some(Box::pin(async move {
            runtime
                .spawn(task)
                .await
                .map_err(|e| format!("the schema update stopped: {e}"))?
        }))
    }

    /// Every file's name is known when it opens.
    fn streams(&self, _kind: &FileKind) -> bool {
        true
    }

    fn keeps_footers(&self, kind: &FileKind) -> bool {
        matches!(kind, FileKind::Data(_))
    }

    fn landed(&mut self, file: Landed) -> Vec<Landed> {
        match file.kind {
            FileKind::Data(_) => {
                self.held += landed_bytes(&file);
                self.pending.push(file);
                Vec::new()
            }
            FileKind::Error(_) => self.errors.landed(file),
        }
    }

    fn held_bytes(&self) -> usize {
        self.held
    }

    /// Every `commit_interval_secs`: the worker closes the open data files, whose offsets
    /// would otherwise hold the commit below them (files of other hours and values interleave
    /// their offsets, and a late event's file opens at a recent offset), so each commit takes
    /// every record read before it.
    fn seal_due(&mut self) -> bool {
        if self.last_seal.elapsed() < self.target.interval {
            return false;
        }
        self.last_seal = Instant::now();
        true
    }

    fn unsettled(&self) -> bool {
        !self.pending.is_empty()
    }

    async fn settle(
        &mut self,
        all: bool,
        marks: &(dyn Watermarks + Sync),
    ) -> Result<Vec<Landed>, DestinationError> {
        // Due: every interval, and once the files closed for a round ([`Self::seal_due`])
        // have landed (the worker calls right after their uploads).
        let due =
            self.last_commit.elapsed() >= self.target.interval || self.last_seal > self.last_commit;
        if self.pending.is_empty() || !(all || due) {
            return Ok(Vec::new());
        }
        let Some((req, chosen)) = self.request(marks).map_err(|e| self.error(e))? else {
            return Ok(Vec::new());
        };
        let files = req.files.len();
        let started = Instant::now();
        let outcome = self.commit(req).await;
        self.last_commit = Instant::now();
        let secs = started.elapsed().as_secs_f64();
        let (label, conflicts) = match &outcome {
            Ok(CommitOutcome::Committed { attempts, .. }) => {
                ("committed", attempts.saturating_sub(1))
            }
            Ok(CommitOutcome::AlreadyCommitted { .. }) => ("already_committed", 0),
            Ok(CommitOutcome::Refused(_)) => ("refused", 0),
            Err(_) => ("failed", 0),
        };
        let dest = &self.target.destination;
        self.metrics
            .table_commit(dest, label, secs, files, conflicts);
        match outcome? {
            CommitOutcome::Committed { .. } | CommitOutcome::AlreadyCommitted { .. } => {
                tracing::info!(
                    destination = %self.target.destination, files, outcome = label, secs,
                    "table commit"
                );
                let mut durable = Vec::with_capacity(chosen.len());
                // Highest index first, so the lower ones stay where they are.
                for i in chosen.into_iter().rev() {
                    let f = self.pending.swap_remove(i);
                    self.held -= landed_bytes(&f);
                    durable.push(f);
                }
                Ok(durable)
            }
            CommitOutcome::Refused(r) => {
                tracing::error!(
                    destination = %self.target.destination, refusal = %r,
                    "table commit refused: another worker owns this partition now; its files stay unreferenced (orphans for the table's maintenance)"
                );
                self.pending.clear();
                self.held = 0;
                Err(self.error(std::io::Error::other(format!("commit refused: {r}"))))
            }
        }
    }

    /// The table's committed offsets of `partitions`; a fresh writer id, so files of this
    /// incarnation never take the names of an earlier one's.
    async fn assigned(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>, DestinationError> {
        self.writer = uuid::Uuid::new_v4().simple().to_string();
        self.committed(partitions).await
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        self.pending.retain(|f| !partitions.contains(&f.tp));
        self.held = self.pending.iter().map(landed_bytes).sum();
    }
}

/// Memory a landed data file holds while it waits for its commit: its footer, its key, its
/// entry.
fn landed_bytes(f: &Landed) -> usize {
    std::mem::size_of::<Landed>()
        + f.key.capacity()
        + f.footer.as_ref().map_or(0, |m| m.memory_size())
}

/// The pending files one commit can take, and each partition's range: per partition, `next` is
/// the lowest first offset of the files still holding it other than the chosen ones (the
/// worker's watermark, [`Watermarks::safe_without`]), and a pending file is chosen only when
/// all its records are below `next`. Leaving a file out holds `next` at its first offset, which
/// may leave out others: repeated until nothing changes.
fn committable(
    pending: &[Landed],
    marks: &(dyn Watermarks + Sync),
) -> (Vec<PartitionRange>, Vec<usize>) {
    let mut by_tp: BTreeMap<&TopicPartition, Vec<usize>> = BTreeMap::new();
    for (i, f) in pending.iter().enumerate() {
        by_tp.entry(&f.tp).or_default().push(i);
    }
    let mut ranges = Vec::new();
    let mut chosen = Vec::new();
    for (tp, mut files) in by_tp {
        let next = loop {
            let firsts: Vec<i64> = files.iter().map(|&i| pending[i].first_offset).collect();
            let Some(next) = marks.safe_without(tp, &firsts) else {
                break None;
            };
            let before = files.len();
            files.retain(|&i| pending[i].last_offset < next);
            if files.len() == before {
                break Some(next);
            }
        };
        let Some(next) = next.filter(|_| !files.is_empty()) else {
            continue;
        };
        let start = files
            .iter()
            .map(|&i| pending[i].first_offset)
            .min()
            .expect("invariant: files is not empty");
        ranges.push(PartitionRange {
            tp: tp.clone(),
            start,
            next,
        });
        chosen.extend(files);
    }
    chosen.sort_unstable();
    (ranges, chosen)
}

/// The value of partition field `source` of a data file: the time slot its folder key holds
/// (every row of the file is in it), or the one value of an identity column, read from the
/// footer's exact statistics (every row of the file has it, or none has a value).
fn partition_value(
    source: &PartitionSource,
    kind: &FileKind,
    footer: &ParquetMetaData,
) -> Result<PartitionValue, String> {
    match source {
        PartitionSource::Time { transform, .. } => match kind {
            FileKind::Data(FolderKey::Slot(Some(slot), _)) => Ok(PartitionValue::Time(
                time_partition(*transform, slot.and_utc().timestamp_micros()),
            )),
            _ => Ok(PartitionValue::Null),
        },
        PartitionSource::Identity { column } => identity_value(column, footer),
    }
}

fn identity_value(column: &str, footer: &ParquetMetaData) -> Result<PartitionValue, String> {
    let mut value: Option<PartitionValue> = None;
    let mut null_groups = false;
    for rg in footer.row_groups() {
        let Some(chunk) = rg
            .columns()
            .iter()
            .find(|c| c.column_descr().path().string() == column)
        else {
            return Err(format!("no column {column:?} in the file"));
        };
        let Some(stats) = chunk.statistics() else {
            return Err(format!("column {column:?} has no statistics"));
        };
        let nulls = stats.null_count_opt().unwrap_or(0);
        if u64::try_from(chunk.num_values()).unwrap_or(0) == nulls {
            null_groups = true;
            continue;
        }
        let (min, max) = match stats {
            Statistics::ByteArray(s) if s.min_is_exact() && s.max_is_exact() => (
                s.min_opt()
                    .map(|v| PartitionValue::Str(String::from_utf8_lossy(v.data()).into())),
                s.max_opt()
                    .map(|v| PartitionValue::Str(String::from_utf8_lossy(v.data()).into())),
            ),
            Statistics::Int64(s) => (
                s.min_opt().copied().map(PartitionValue::Long),
                s.max_opt().copied().map(PartitionValue::Long),
            ),
            Statistics::Boolean(s) => (
                s.min_opt().copied().map(PartitionValue::Bool),
                s.max_opt().copied().map(PartitionValue::Bool),
            ),
            _ => return Err(format!("column {column:?} has no exact bounds")),
        };
        if nulls > 0 || min != max || min.is_none() {
            return Err(format!(
                "column {column:?} holds more than one partition value"
            ));
        }
        match &value {
            Some(v) if Some(v) != min.as_ref() => {
                return Err(format!(
                    "column {column:?} holds more than one partition value"
                ))
            }
            _ => value = min,
        }
    }
    match value {
        Some(_) if null_groups => Err(format!(
            "column {column:?} holds more than one partition value"
        )),
        Some(v) => Ok(v),
        None => Ok(PartitionValue::Null),
    }
}

#[cfg(test)]
mod tests;
