//! The destination-kind seam: what a destination does with its closed files, and when the
//! offsets of the records in them may be committed to Kafka. The worker (`pipeline`) routes,
//! batches and uploads the same way for every kind; it asks the destination's
//! [`DestinationKind`] only these questions:
//!
//! 1. the object key of a file ([`DestinationKind::object_key`]), whether the file may upload
//!    parts before it is closed ([`DestinationKind::streams`]) and whether it lands with its
//!    Parquet footer ([`DestinationKind::keeps_footers`]);
//! 2. which files are durable once a file's object is in the store ([`DestinationKind::landed`]):
//!    only those release their records' offsets;
//! 3. whether files wait for a step of the kind's own ([`DestinationKind::unsettled`]), which
//!    the worker runs with [`DestinationKind::settle`] on its tick, before it answers a revoke
//!    and at shutdown, what they hold meanwhile ([`DestinationKind::held_bytes`], counted
//!    against the budget), and when to close the kind's open files for that step
//!    ([`DestinationKind::seal_due`]);
//! 4. where the kind already holds newly assigned partitions ([`DestinationKind::assigned`]:
//!    those records are skipped for it) and what to drop when they are revoked
//!    ([`DestinationKind::revoked`]).
//!
//! Kinds: [`Objects`] (objects under a prefix: a file is durable as soon as its object is in
//! S3, nothing waits). The table kind (`crate::table::kind`, Iceberg) writes its data files
//! through the same batches and uploader, answers `landed` with nothing, and in `settle` commits
//! the landed data files the worker's watermarks allow to the catalog in one snapshot carrying
//! the Kafka offsets, then returns them: only then are the offsets committed to Kafka. A kind
//! other than `Objects` lives in a module of its own that implements this trait (it may import
//! this module, never the reverse); `pipeline::kind_for` is the one place a destination's kind
//! is chosen.
//!
//! Invariants (every kind): a file returned by `landed` or `settle` is durable in the
//! destination and is returned exactly once; a file is never returned before its object is in
//! the store; once none of the kind's files is open or in flight, `settle(true)` leaves nothing
//! unsettled when it returns `Ok`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::batch::Batch;
use crate::config::DestinationConfig;
use crate::model::{FolderKey, QuarantineReason, TopicPartition};
use crate::router::Router;
use crate::template::{FileTemplate, FileValues, KeyContext};
use crate::upload::FileStats;

/// Which file of a destination and partition a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A data folder.
    Data(FolderKey),
    /// The error folder of a quarantine reason.
    Error(QuarantineReason),
}

/// A file whose object is in the store, as the worker hands it to its destination's kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    /// Its partition.
    pub tp: TopicPartition,
    /// Data or error file.
    pub kind: FileKind,
    /// Offset of its first record (what the offset tracker holds for it).
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Its object key.
    pub key: String,
    /// Records and sizes.
    pub stats: FileStats,
    /// Its Parquet footer, as the writer produced it, when the kind asked for it
    /// ([`DestinationKind::keeps_footers`]).
    pub footer: Option<std::sync::Arc<parquet::file::metadata::ParquetMetaData>>,
}

/// Why a destination could not make its landed files durable (a table's catalog commit). The
/// worker stops without committing their offsets; a restart re-reads them.
#[derive(Debug, thiserror::Error)]
#[error("destination `{destination}`: {source}")]
pub struct DestinationError {
    /// The destination.
    pub destination: String,
    /// The kind's error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What a destination's kind said to new columns of a `from_schema` destination.
#[derive(Debug, Clone)]
pub enum Evolved {
    /// Data files are written with this schema (a table's field ids in place).
    Schema(arrow_schema::SchemaRef),
    /// A column is held elsewhere with a type that does not take its values (the detail
    /// names it); the records that need it are quarantined.
    Refused(String),
}

/// What a kind of destination does with closed files (see the module doc for the contract).
#[async_trait]
pub trait DestinationKind: Send {
    /// The kind's name for logs: `objects`, `table`.
    fn name(&self) -> &'static str;

    /// The full object key of a file of `kind` for `tp` holding `batch`, named at `upload_time`
    /// (asked once per file: when its first part is sent, or when it is closed).
    fn object_key(
        &self,
        tp: &TopicPartition,
        kind: &FileKind,
        batch: &Batch,
        upload_time: DateTime<Utc>,
    ) -> String;

    /// A `from_schema` destination's columns grew to `parquet`'s. A kind whose files need
    /// their columns known elsewhere first (a table's schema) returns the work that makes them
    /// known and answers with the schema to write (`Err`: an outage, asked again later);
    /// `None` writes `parquet`'s own schema.
    fn evolve(
        &self,
        parquet: &crate::config::ParquetConfig,
    ) -> Option<futures::future::BoxFuture<'static, Result<Evolved, String>>> {
        let _ = parquet;
        None
    }

    /// Whether a file of `kind` may upload parts while it fills (its key must be known then).
    fn streams(&self, kind: &FileKind) -> bool;

    /// Whether a landed file of `kind` must carry its Parquet footer (a table registers data
    /// files by their footer's statistics).
    fn keeps_footers(&self, kind: &FileKind) -> bool {
        let _ = kind;
        false
    }

    /// `file`'s object is in the store. Returns the files now durable in the destination, whose
    /// records' offsets may be committed: [`Objects`] returns `file`; a table keeps it until
    /// the catalog commit that adds it.
    fn landed(&mut self, file: Landed) -> Vec<Landed>;

    /// Memory the kind holds for landed files waiting for [`Self::settle`] (a table's
    /// footers), counted against the worker's memory budget.
    fn held_bytes(&self) -> usize {
        0
    }

    /// Whether the worker should close the kind's open data files now, so that the commit due
    /// takes every record read so far (a table, every `commit_interval_secs`). Asked on every
    /// tick; answers true once per round.
    fn seal_due(&mut self) -> bool {
        false
    }

    /// Whether landed files wait for [`Self::settle`].
    fn unsettled(&self) -> bool {
        false
    }

    /// Makes landed files durable and returns them: when `all`, every one it can (before a
    /// revoke is answered and at shutdown), else those whose step is due (on the worker's
    /// tick). `marks` tells which offsets every record below is accounted for. The worker
    /// awaits it: it takes one round trip to the kind's store, or a few retries of one.
    async fn settle(
        &mut self,
        all: bool,
        marks: &(dyn Watermarks + Sync),
    ) -> Result<Vec<Landed>, DestinationError> {
        let _ = (all, marks);
        Ok(Vec::new())
    }

    /// The worker owns `partitions` now (their records follow). Returns the partitions this
    /// destination already holds records of, with the offset below which it holds them all (a
    /// table's committed offset): the worker skips those records for this destination, so a
    /// restart after a crash between the kind's commit and Kafka's adds nothing twice.
    async fn assigned(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>, DestinationError> {
        let _ = partitions;
        Ok(Vec::new())
    }

    /// The worker no longer owns `partitions` (a revoke, once answered): landed files of theirs
    /// still waiting are given up (their records are read again by the next owner).
    fn revoked(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
}

/// The worker's offset watermarks, as a kind that records offsets of its own (a table's
/// snapshot) must see them.
pub trait Watermarks {
    /// The offset of `tp` below which every record taken in is in a file some destination made
    /// durable, was filtered out, or is in one of the files starting at `landed` (each listed
    /// once per file): the lowest first offset of the other files still holding records of
    /// `tp`, else the offset after its last record taken in. `None` when `tp` is not assigned
    /// or took no record.
    fn safe_without(&self, tp: &TopicPartition, landed: &[i64]) -> Option<i64>;
}

impl Watermarks for crate::offsets::OffsetTracker {
    fn safe_without(&self, tp: &TopicPartition, landed: &[i64]) -> Option<i64> {
        crate::offsets::OffsetTracker::safe_without(self, tp, landed)
    }
}

/// Objects under a prefix: date-foldered data files and error files, each durable as soon as its
/// object is in S3.
pub struct Objects {
    cfg: DestinationConfig,
    /// For folders dated when the file is sealed.
    router: Router,
    error_file: FileTemplate,
}

impl Objects {
    /// The kind of `cfg`.
    pub fn new(cfg: &DestinationConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            router: Router::new(cfg),
            error_file: FileTemplate::parse(crate::template::ERROR_FILE_TEMPLATE)
                .expect("invariant: the built-in error file template parses"),
        }
    }
}

#[async_trait]
impl DestinationKind for Objects {
    fn name(&self) -> &'static str {
        "objects"
    }

    /// Prefix, folder (or error folder) and file name.
    fn object_key(
        &self,
        tp: &TopicPartition,
        kind: &FileKind,
        batch: &Batch,
        upload_time: DateTime<Utc>,
    ) -> String {
        let cfg = &self.cfg;
        let source = cfg.source_id.as_deref().unwrap_or(&tp.topic);
        let ctx = KeyContext {
            topic: &tp.topic,
            partition: tp.partition,
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
        match kind {
            FileKind::Data(folder) => {
                let slot = match folder {
                    FolderKey::Slot(s, _) => *s,
                    FolderKey::AtSeal(_) => self.router.seal_slot(batch.first_time, upload_time),
                };
                let folder = cfg.routing.folder.render(slot, &ctx, &batch.folder_values);
                let name = cfg.routing.file.render(&ctx, &values, cfg.data_suffix());
                format!("{}{folder}{name}", cfg.prefix)
            }
            FileKind::Error(reason) => {
                let name = self.error_file.render(&ctx, &values, suffix);
                format!(
                    "{}{}{}/{name}",
                    cfg.prefix,
                    cfg.error_prefix,
                    reason.as_str()
                )
            }
        }
    }

    /// Error files and files of a folder known at open, unless the file name needs the file's
    /// end (`{end_offset}`, `{record_count}`).
    fn streams(&self, kind: &FileKind) -> bool {
        matches!(
            kind,
            FileKind::Error(_) | FileKind::Data(FolderKey::Slot(..))
        ) && !self.cfg.routing.file.needs_end()
    }

    fn landed(&mut self, file: Landed) -> Vec<Landed> {
        vec![file]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(offset: i64) -> Landed {
        Landed {
            tp: TopicPartition::new("t", 0),
            kind: FileKind::Error(QuarantineReason::NotJson),
            first_offset: offset,
            last_offset: offset + 9,
            key: format!("k{offset}"),
            stats: FileStats {
                records: 10,
                raw_bytes: 100,
                stored_bytes: 50,
                content_hash: 0,
            },
            footer: None,
        }
    }

    #[tokio::test]
    async fn an_object_is_durable_when_it_lands_and_nothing_waits() {
        let cfg = crate::config::parse(
            "[kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\
             [[destinations]]\nname = \"d\"\nbucket = \"b\"\nregion = \"us-east-1\"\n",
            &|_| None,
        )
        .unwrap();
        let mut kind: Box<dyn DestinationKind> = Box::new(Objects::new(&cfg.destinations[0]));
        assert_eq!(kind.name(), "objects");
        assert_eq!(kind.landed(landed(0)), vec![landed(0)]);
        assert!(!kind.unsettled());
        let marks = crate::offsets::OffsetTracker::new();
        assert!(kind.settle(true, &marks).await.unwrap().is_empty());
        assert!(kind.streams(&FileKind::Error(QuarantineReason::NotJson)));
        assert!(!kind.streams(&FileKind::Data(FolderKey::AtSeal(0))));
    }
}
