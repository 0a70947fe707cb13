//! A worker's totals ([`RunStats`]): records in, written, quarantined, filtered and already
//! held, objects and bytes uploaded, the last committed offsets; published after every upload
//! and commit, and summed over the workers of a run.

use crate::model::TopicPartition;

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
    /// Records skipped for a destination that already held them (a table's committed offset
    /// was past them at assignment).
    pub records_already_held: u64,
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
        self.records_already_held += other.records_already_held;
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
