//! Apache Iceberg tables: the destination kind that appends the Parquet data files this
//! connector writes to an Iceberg table, committing each partition's Kafka offsets in the same
//! snapshot (exactly once; docs/iceberg.md).
//!
//! - configuration: `[destinations.iceberg]` is parsed and checked with the rest of the
//!   configuration ([`crate::config::iceberg`]: catalog, namespace, table, partitioning,
//!   interval, and the destination settings a table refuses).
//! - [`catalog`]: the catalog of each kind (sql, rest, glue, s3tables) over the table's storage.
//! - [`schema`]: the table schema and partition spec derived from the Parquet columns, and the
//!   writer schema carrying field ids.
//! - [`datafile`]: an uploaded Parquet file described as an Iceberg data file (partition values,
//!   column statistics from its footer), and data-file names.
//! - [`evolve`]: a `from_schema` table's new optional columns, added before the data files that
//!   hold them are written.
//! - [`offsets`]: the snapshot-summary keys holding Kafka offsets, read back through the
//!   snapshot history, and the snapshot-expiry horizon.
//! - [`guard`]: the `Catalog` decorator that refuses a zombie's commit atomically with the
//!   commit's own snapshot requirement.
//! - [`storage`]: the table's files through the connector's S3 seam (`iceberg`'s `Storage` over
//!   an [`crate::sink::ObjectSink`]).
//! - [`commit`]: one fast-append snapshot of a worker's files and offsets, retried on
//!   concurrent commits.
//! - [`open`]: each Iceberg destination's catalog and table at start-up, and the writer
//!   settings its data files need.
//! - [`kind`]: the table behind the destination seam: data-file names, landed files kept until
//!   the interval's commit, the offsets each commit may record.
//!
//! Invariant: the `iceberg` crate's types stay inside this module; the rest of the connector
//! sees [`commit::CommitOutcome`], [`TableError`] and plain offsets.

pub mod catalog;
pub mod commit;
pub mod datafile;
pub mod evolve;
pub mod guard;
pub mod kind;
pub mod offsets;
pub mod open;
pub mod schema;
pub mod storage;

/// A failure talking to the catalog or describing a data file.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The catalog or the table's files answered an error.
    #[error("iceberg table {table}: {source}")]
    Iceberg {
        /// `namespace.table`.
        table: String,
        /// The crate's error (boxed: it is large). Its text is in this error's message, so it
        /// is not also its `source` (a chain would print it twice).
        source: Box<iceberg::Error>,
    },
    /// The table cannot take this destination's files (its location, its schema).
    #[error("iceberg table {table}: {message}")]
    Setup {
        /// `namespace.table`.
        table: String,
        /// What is wrong, and the fix.
        message: String,
    },
    /// A data file cannot be registered as it is.
    #[error("data file {path}: {message}")]
    DataFile {
        /// Its location.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl TableError {
    /// Whether a later attempt may succeed (a concurrent commit, a passing catalog fault).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Iceberg { source, .. } => source.retryable(),
            Self::DataFile { .. } | Self::Setup { .. } => false,
        }
    }
}

#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod tests;
