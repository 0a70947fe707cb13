//! One table commit of a worker: the data files it uploaded since its last commit, appended as
//! one fast-append snapshot whose summary records each covered partition's next offset and the
//! commit's id, through the zombie guard; and creating the table when missing.
//!
//! Invariants: a commit either lands whole (files and offsets in one snapshot) or not at all;
//! it never lands on a table already past one of its partitions' first offsets
//! ([`super::guard`]); a concurrent commit by another worker is retried on the refreshed table
//! (the crate's `commit.retry.*` table properties: 4 retries from 100 ms by default) with the
//! same files and offsets, which are this worker's own and never computed from the table.
//! The crate's duplicate-file check (it reads every manifest of the table) is off: file names
//! are unique per writer and the offset check is what rules out duplicates.

use iceberg::spec::{Schema, SortOrder, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use std::collections::HashMap;

use super::datafile::{data_file, WrittenFile};
use super::guard::{verdict, OffsetGuard, PartitionRange, Refusal, Verdict};
use super::offsets::commit_properties;
use super::TableError;

/// One commit's content.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// Consumer group (part of the offset keys).
    pub group: String,
    /// Fresh for each commit (a UUID); a retry of the same commit reuses it.
    pub commit_id: String,
    /// The offsets covered, per partition.
    pub ranges: Vec<PartitionRange>,
    /// The data files, already in the table's storage.
    pub files: Vec<WrittenFile>,
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The snapshot was added.
    Committed {
        /// Its id.
        snapshot_id: i64,
        /// `update_table` attempts (1 + concurrent commits retried).
        attempts: u32,
    },
    /// The table already held this commit's snapshot (a retry after a lost answer, or after a
    /// crash before the Kafka commit).
    AlreadyCommitted {
        /// Its id.
        snapshot_id: i64,
    },
    /// The table is past a partition's first offset: the caller must not commit the Kafka
    /// offsets, and its files are orphans (unreferenced, for the table's maintenance).
    Refused(Refusal),
}

fn table_name(ident: &TableIdent) -> String {
    format!("{}.{}", ident.namespace().join("."), ident.name())
}

fn iceberg_err(ident: &TableIdent) -> impl Fn(iceberg::Error) -> TableError + '_ {
    move |source| TableError::Iceberg {
        table: table_name(ident),
        source: Box::new(source),
    }
}

/// Commits `req` to the table `ident` of `catalog`.
pub async fn commit(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    req: &CommitRequest,
) -> Result<CommitOutcome, TableError> {
    let err = iceberg_err(ident);
    let table = catalog.load_table(ident).await.map_err(&err)?;
    // Judged before writing any manifest, so a zombie writes nothing; the guard judges again
    // atomically with the commit.
    match verdict(table.metadata(), &req.group, &req.commit_id, &req.ranges) {
        Verdict::Clear => {}
        Verdict::AlreadyCommitted { snapshot_id } => {
            return Ok(CommitOutcome::AlreadyCommitted { snapshot_id })
        }
        Verdict::Zombie(r) => return Ok(CommitOutcome::Refused(r)),
    }
    let meta = table.metadata();
    let files = req
        .files
        .iter()
        .map(|f| data_file(meta.current_schema(), meta.default_partition_spec_id(), f))
        .collect::<Result<Vec<_>, _>>()?;
    let props = commit_properties(
        &req.group,
        &req.commit_id,
        req.ranges.iter().map(|r| (&r.tp, r.next)),
    );
    let tx = Transaction::new(&table);
    let tx = tx
        .fast_append()
        .with_check_duplicate(false)
        .set_snapshot_properties(props)
        .add_data_files(files)
        .apply(tx)
        .map_err(&err)?;
    let guard = OffsetGuard::new(catalog, &req.group, &req.commit_id, &req.ranges);
    let result = tx.commit(&guard).await;
    let log = guard.log();
    match (result, log.last) {
        (Err(_), Some(Verdict::Zombie(r))) => Ok(CommitOutcome::Refused(r)),
        (Err(e), _) => Err(err(e)),
        (Ok(_), Some(Verdict::AlreadyCommitted { snapshot_id })) => {
            Ok(CommitOutcome::AlreadyCommitted { snapshot_id })
        }
        (Ok(t), _) => Ok(CommitOutcome::Committed {
            snapshot_id: t
                .metadata()
                .current_snapshot_id()
                .expect("invariant: an append leaves a current snapshot"),
            attempts: log.attempts,
        }),
    }
}

/// The table `ident`, created with `schema` and `spec` (and its namespace) when missing and
/// `create` is set. Another worker creating it at the same time is not an error.
pub async fn ensure_table(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    schema: Schema,
    spec: UnboundPartitionSpec,
    create: bool,
) -> Result<Table, TableError> {
    let err = iceberg_err(ident);
    if catalog.table_exists(ident).await.map_err(&err)? {
        return catalog.load_table(ident).await.map_err(&err);
    }
    if !create {
        return Err(err(iceberg::Error::new(
            iceberg::ErrorKind::TableNotFound,
            "the table does not exist and create_if_missing is off; create it or turn create_if_missing on",
        )));
    }
    let ns: &NamespaceIdent = ident.namespace();
    if !catalog.namespace_exists(ns).await.map_err(&err)? {
        match catalog.create_namespace(ns, HashMap::new()).await {
            Ok(_) => {}
            Err(e) if e.kind() == iceberg::ErrorKind::NamespaceAlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
    }
    let creation = TableCreation::builder()
        .name(ident.name().to_string())
        .schema(schema)
        .partition_spec(spec)
        .sort_order(SortOrder::unsorted_order())
        .build();
    match catalog.create_table(ns, creation).await {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == iceberg::ErrorKind::TableAlreadyExists => {
            catalog.load_table(ident).await.map_err(&err)
        }
        Err(e) => Err(err(e)),
    }
}
