//! The zombie guard: a `Catalog` decorator through which a worker's commit goes. Inside
//! `update_table` it loads the table's current state, reads the committed offsets of the
//! worker's partitions from the snapshot history, and refuses the commit if the table is
//! already past the first offset of any of them (the partition moved to another worker, which
//! committed records this worker is about to add again).
//!
//! Why the check is atomic with the commit (docs/iceberg.md, "The zombie guard"): the commit
//! the `iceberg` crate hands to `update_table` requires the main branch to still point at the
//! snapshot S it was built on. The guard loads the table after that base was read, so it sees
//! S or a newer snapshot. If it sees S, it checked exactly the history the commit will extend,
//! and the catalog's compare-and-swap applies the commit only if main is still S; any commit
//! landing in between makes the requirement fail, the crate retries on the refreshed table, and
//! the guard checks again. If it sees a newer snapshot, the commit's requirement fails anyway.
//! So a commit lands only on a history the guard found clear.
//!
//! A commit whose own snapshot is already in the table (a retry after a lost answer) is
//! recognised by its commit id and reported as already committed instead of a zombie.

use std::sync::Mutex;

use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{Catalog, Error, ErrorKind, Result, TableCommit};

use super::offsets::committed_offsets;
use crate::model::TopicPartition;

/// The offsets one commit covers in one Kafka partition: records `start..next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    /// The partition.
    pub tp: TopicPartition,
    /// First offset of the records in this commit's files.
    pub start: i64,
    /// Next offset to read after them (what the snapshot records).
    pub next: i64,
}

/// Why a commit was refused: the table already holds offsets of one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The partition.
    pub tp: TopicPartition,
    /// The first offset this commit would have added.
    pub start: i64,
    /// The table's committed next offset for it.
    pub table_next: i64,
    /// The snapshot recording that offset.
    pub snapshot_id: i64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is committed up to offset {} (snapshot {}) but this commit starts at {}: the partition moved to another worker",
            self.tp, self.table_next, self.snapshot_id, self.start
        )
    }
}

/// What the guard found in a table state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No partition is past this commit's start: it may land.
    Clear,
    /// The commit's own snapshot (same commit id) is already in the table.
    AlreadyCommitted {
        /// That snapshot.
        snapshot_id: i64,
    },
    /// A partition is past this commit's start.
    Zombie(Refusal),
}

/// Judges a commit of `ranges` with id `commit_id` against a table state.
pub fn verdict(
    meta: &TableMetadata,
    group: &str,
    commit_id: &str,
    ranges: &[PartitionRange],
) -> Verdict {
    let tps: Vec<TopicPartition> = ranges.iter().map(|r| r.tp.clone()).collect();
    let committed = committed_offsets(meta, group, &tps);
    // Our own snapshot being the newest for any of our partitions means the commit landed.
    if let Some(c) = committed
        .values()
        .find(|c| c.commit_id.as_deref() == Some(commit_id))
    {
        return Verdict::AlreadyCommitted {
            snapshot_id: c.snapshot_id,
        };
    }
    for r in ranges {
        if let Some(c) = committed.get(&r.tp) {
            if c.next > r.start {
                return Verdict::Zombie(Refusal {
                    tp: r.tp.clone(),
                    start: r.start,
                    table_next: c.next,
                    snapshot_id: c.snapshot_id,
                });
            }
        }
    }
    Verdict::Clear
}

/// What the guard saw over one commit's attempts.
#[derive(Debug, Default, Clone)]
pub struct GuardLog {
    /// `update_table` calls (1 + conflicts retried by the crate).
    pub attempts: u32,
    /// The verdict of the last attempt.
    pub last: Option<Verdict>,
}

/// The decorator: every call goes to `inner`; `update_table` first judges the commit.
#[derive(Debug)]
pub struct OffsetGuard<'a> {
    inner: &'a dyn Catalog,
    group: &'a str,
    commit_id: &'a str,
    ranges: &'a [PartitionRange],
    log: Mutex<GuardLog>,
}

impl<'a> OffsetGuard<'a> {
    /// A guard for one commit of `ranges` (id `commit_id`, consumer group `group`).
    pub fn new(
        inner: &'a dyn Catalog,
        group: &'a str,
        commit_id: &'a str,
        ranges: &'a [PartitionRange],
    ) -> Self {
        Self {
            inner,
            group,
            commit_id,
            ranges,
            log: Mutex::new(GuardLog::default()),
        }
    }

    /// What it saw so far.
    pub fn log(&self) -> GuardLog {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, v: &Verdict) {
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.attempts += 1;
        log.last = Some(v.clone());
    }
}

/// `impl Catalog for T { async fn update_table… }`: implements every other `Catalog` method by
/// calling the same method of `self.inner` (a `&dyn Catalog` or a smart pointer to one), so a
/// decorator writes only its `update_table`. (`async_trait` must see the expanded methods, so
/// the macro emits the whole impl.)
macro_rules! delegate_catalog {
    (impl $(<$lt:lifetime>)? Catalog for $ty:ty { $($update:tt)* }) => {
        #[async_trait::async_trait]
        impl $(<$lt>)? iceberg::Catalog for $ty {
            async fn list_namespaces(
                &self,
                parent: Option<&iceberg::NamespaceIdent>,
            ) -> iceberg::Result<Vec<iceberg::NamespaceIdent>> {
                self.inner.list_namespaces(parent).await
            }
            async fn create_namespace(
                &self,
                namespace: &iceberg::NamespaceIdent,
                properties: std::collections::HashMap<String, String>,
            ) -> iceberg::Result<iceberg::Namespace> {
                self.inner.create_namespace(namespace, properties).await
            }
            async fn get_namespace(
                &self,
                namespace: &iceberg::NamespaceIdent,
            ) -> iceberg::Result<iceberg::Namespace> {
                self.inner.get_namespace(namespace).await
            }
            async fn namespace_exists(
                &self,
                namespace: &iceberg::NamespaceIdent,
            ) -> iceberg::Result<bool> {
                self.inner.namespace_exists(namespace).await
            }
            async fn update_namespace(
                &self,
                namespace: &iceberg::NamespaceIdent,
                properties: std::collections::HashMap<String, String>,
            ) -> iceberg::Result<()> {
                self.inner.update_namespace(namespace, properties).await
            }
            async fn drop_namespace(&self, namespace: &iceberg::NamespaceIdent) -> iceberg::Result<()> {
                self.inner.drop_namespace(namespace).await
            }
            async fn list_tables(
                &self,
                namespace: &iceberg::NamespaceIdent,
            ) -> iceberg::Result<Vec<iceberg::TableIdent>> {
                self.inner.list_tables(namespace).await
            }
            async fn create_table(
                &self,
                namespace: &iceberg::NamespaceIdent,
                creation: iceberg::TableCreation,
            ) -> iceberg::Result<iceberg::table::Table> {
                self.inner.create_table(namespace, creation).await
            }
            async fn load_table(
                &self,
                table: &iceberg::TableIdent,
            ) -> iceberg::Result<iceberg::table::Table> {
                self.inner.load_table(table).await
            }
            async fn drop_table(&self, table: &iceberg::TableIdent) -> iceberg::Result<()> {
                self.inner.drop_table(table).await
            }
            async fn purge_table(&self, table: &iceberg::TableIdent) -> iceberg::Result<()> {
                self.inner.purge_table(table).await
            }
            async fn table_exists(&self, table: &iceberg::TableIdent) -> iceberg::Result<bool> {
                self.inner.table_exists(table).await
            }
            async fn rename_table(
                &self,
                src: &iceberg::TableIdent,
                dest: &iceberg::TableIdent,
            ) -> iceberg::Result<()> {
                self.inner.rename_table(src, dest).await
            }
            async fn register_table(
                &self,
                table: &iceberg::TableIdent,
                metadata_location: String,
            ) -> iceberg::Result<iceberg::table::Table> {
                self.inner.register_table(table, metadata_location).await
            }
            $($update)*
        }
    };
}
#[cfg(test)]
pub(crate) use delegate_catalog;

delegate_catalog! {
impl<'a> Catalog for OffsetGuard<'a> {
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        let current = self.inner.load_table(commit.identifier()).await?;
        let v = verdict(current.metadata(), self.group, self.commit_id, self.ranges);
        self.record(&v);
        match v {
            Verdict::Clear => self.inner.update_table(commit).await,
            // Nothing to add: the table already holds this commit's snapshot.
            Verdict::AlreadyCommitted { .. } => Ok(current),
            // Not retryable: the crate returns it at once.
            Verdict::Zombie(r) => Err(Error::new(
                ErrorKind::PreconditionFailed,
                format!("zombie commit refused: {r}"),
            )),
        }
    }
}
}
