//! Metrics: one struct with a typed method per event, registered in a [`Registry`] that is passed
//! in (no global registry). Labels are bounded: topic, partition, destination and fixed reason
//! enums; never object keys or folders. Revoked partitions' series are removed.
//!
//! docs/operations.md lists every metric; `tests/observability.rs` checks that the
//! dashboard and alert rules only use metrics exported here.

use prometheus::{
    Gauge, GaugeVec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::health::Health;
use crate::model::{ErrorKind, FlushReason, QuarantineReason, TopicPartition, KEY_CONFLICT_LABELS};

/// `outcome` label values of the table commits counter.
pub const TABLE_COMMIT_OUTCOMES: [&str; 4] =
    ["committed", "already_committed", "refused", "failed"];

/// `outcome` label values of the Schema Registry requests counter: a schema, a 404, or an
/// outage (unreachable, timeout, 5xx, refused credentials).
pub const REGISTRY_OUTCOMES: [&str; 3] = ["ok", "not_found", "failed"];

/// Version and git revision baked into the build (`GIT_SHA` at compile time, if set).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git revision of the build.
pub const GIT_SHA: &str = match option_env!("GIT_SHA") {
    Some(s) => s,
    None => "unknown",
};

#[derive(Default)]
struct LagState {
    high: HashMap<TopicPartition, i64>,
    committed: HashMap<TopicPartition, i64>,
    /// Partitions assigned to this process.
    assigned: HashSet<TopicPartition>,
    /// Last committed lag of each partition (as the gauge shows it).
    committed_lag: HashMap<TopicPartition, i64>,
}

/// The committed lag of the partitions this process owns (see [`Metrics::lag_summary`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagSummary {
    /// Partitions assigned to this process.
    pub partitions: usize,
    /// Of those, the ones whose high watermark librdkafka has reported.
    pub known: usize,
    /// Sum over the known ones of high watermark − committed offset.
    pub committed_lag: i64,
}

impl LagSummary {
    /// At least one partition is owned, and every owned one is committed to the high watermark
    /// librdkafka last reported for it.
    pub fn drained(&self) -> bool {
        self.partitions > 0 && self.known == self.partitions && self.committed_lag == 0
    }
}

/// All metrics of one worker.
#[derive(Clone)]
pub struct Metrics {
    records_consumed: IntCounterVec,
    bytes_consumed: IntCounterVec,
    records_written: IntCounterVec,
    raw_bytes_written: IntCounterVec,
    compressed_bytes_written: IntCounterVec,
    objects_uploaded: IntCounterVec,
    last_upload: GaugeVec,
    records_filtered: IntCounterVec,
    quarantined: IntCounterVec,
    flushes: IntCounterVec,
    flush_records: HistogramVec,
    flush_bytes: HistogramVec,
    upload_seconds: HistogramVec,
    table_commits: IntCounterVec,
    table_commit_seconds: HistogramVec,
    table_commit_files: HistogramVec,
    table_commit_conflicts: IntCounterVec,
    records_already_held: IntCounterVec,
    multipart_parts: IntCounterVec,
    s3_requests: IntCounterVec,
    upload_retries: IntCounterVec,
    key_conflicts: IntCounterVec,
    orphans_aborted: IntCounterVec,
    upload_failures: IntCounterVec,
    aborted_uploads: IntCounterVec,
    commits: IntCounter,
    commit_failures: IntCounter,
    committed_offset: IntGaugeVec,
    last_commit: GaugeVec,
    high_watermark: IntGaugeVec,
    lag_committed: IntGaugeVec,
    lag_consumed: IntGaugeVec,
    buffered_bytes: IntGauge,
    open_files: IntGauge,
    oldest_buffered_age: Gauge,
    memory_budget_bytes: IntGauge,
    rebalances: IntCounterVec,
    ready: IntGauge,
    schema_registry_requests: IntCounterVec,
    schema_registry_up: IntGauge,
    schema_cache_bytes: IntGauge,
    schema_cache_schemas: IntGauge,
    lag: Arc<Mutex<LagState>>,
    /// Per worker: (buffered bytes, open files, oldest open file age).
    workers: Arc<Mutex<Vec<(usize, usize, f64)>>>,
    health: Arc<Health>,
    /// S3 failures already logged (see [`Metrics::s3_error_to_log`]).
    s3_errors: Arc<Mutex<crate::lograte::RepeatLog>>,
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    /// A metrics set on a private registry (tests, tools).
    pub fn unregistered() -> Self {
        // Registration into a fresh registry only fails on duplicate names, which `new` has none of.
        Self::new(&Registry::new()).expect("invariant: metric names are unique")
    }

    /// Creates every series of a destination at zero, so dashboards and alerts see them before
    /// the first event (Prometheus cannot tell "never happened" from "not exported").
    pub fn init_destination(&self, dest: &str) {
        for c in [
            &self.records_written,
            &self.raw_bytes_written,
            &self.compressed_bytes_written,
            &self.objects_uploaded,
            &self.records_filtered,
            &self.multipart_parts,
            &self.s3_requests,
            &self.aborted_uploads,
            &self.orphans_aborted,
        ] {
            c.with_label_values(&[dest]);
        }
        for r in KEY_CONFLICT_LABELS {
            self.key_conflicts.with_label_values(&[dest, r]);
        }
        for r in FlushReason::ALL {
            self.flushes.with_label_values(&[dest, r.as_str()]);
        }
        for r in QuarantineReason::ALL {
            self.quarantined.with_label_values(&[dest, r.as_str()]);
        }
        for k in ErrorKind::ALL {
            self.upload_retries.with_label_values(&[dest, k.as_str()]);
            self.upload_failures.with_label_values(&[dest, k.as_str()]);
        }
        self.flush_records.with_label_values(&[dest]);
        self.flush_bytes.with_label_values(&[dest]);
        self.upload_seconds.with_label_values(&[dest]);
        self.records_already_held.with_label_values(&[dest]);
        for e in ["assigned", "revoked"] {
            self.rebalances.with_label_values(&[e]);
        }
    }

    /// Readiness state shared with the HTTP listener.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn tp_labels(tp: &TopicPartition) -> [String; 2] {
        [tp.topic.to_string(), tp.partition.to_string()]
    }

    /// Records of one partition were taken in.
    pub fn consumed(&self, tp: &TopicPartition, records: u64, bytes: u64) {
        let l = Self::tp_labels(tp);
        self.records_consumed.with_label_values(&l).inc_by(records);
        self.bytes_consumed.with_label_values(&l).inc_by(bytes);
    }

    /// A record was filtered out.
    pub fn filtered(&self, dest: &str) {
        self.records_filtered.with_label_values(&[dest]).inc();
    }

    /// A record was sent to the error folder.
    pub fn quarantined(&self, dest: &str, reason: QuarantineReason) {
        self.quarantined
            .with_label_values(&[dest, reason.as_str()])
            .inc();
    }

    /// A file was closed.
    pub fn flushed(&self, dest: &str, reason: FlushReason, records: u64) {
        self.flushes
            .with_label_values(&[dest, reason.as_str()])
            .inc();
        self.flush_records
            .with_label_values(&[dest])
            .observe(records as f64);
    }

    /// An object is in S3.
    pub fn uploaded(&self, dest: &str, records: u64, raw: u64, stored: u64, seconds: f64) {
        self.records_written
            .with_label_values(&[dest])
            .inc_by(records);
        self.raw_bytes_written
            .with_label_values(&[dest])
            .inc_by(raw);
        self.compressed_bytes_written
            .with_label_values(&[dest])
            .inc_by(stored);
        self.objects_uploaded.with_label_values(&[dest]).inc();
        self.last_upload.with_label_values(&[dest]).set(now_secs());
        self.flush_bytes
            .with_label_values(&[dest])
            .observe(stored as f64);
        self.upload_seconds
            .with_label_values(&[dest])
            .observe(seconds);
    }

    /// Creates a table destination's commit series at zero.
    pub fn init_table(&self, dest: &str) {
        for o in TABLE_COMMIT_OUTCOMES {
            self.table_commits.with_label_values(&[dest, o]);
        }
        self.table_commit_seconds.with_label_values(&[dest]);
        self.table_commit_files.with_label_values(&[dest]);
        self.table_commit_conflicts.with_label_values(&[dest]);
    }

    /// A table commit ended: `outcome` one of [`TABLE_COMMIT_OUTCOMES`]; `files` data files;
    /// `conflicts` concurrent commits retried on the refreshed table.
    pub fn table_commit(
        &self,
        dest: &str,
        outcome: &str,
        seconds: f64,
        files: usize,
        conflicts: u32,
    ) {
        self.table_commits.with_label_values(&[dest, outcome]).inc();
        self.table_commit_seconds
            .with_label_values(&[dest])
            .observe(seconds);
        if outcome == "committed" {
            self.table_commit_files
                .with_label_values(&[dest])
                .observe(files as f64);
        }
        self.table_commit_conflicts
            .with_label_values(&[dest])
            .inc_by(u64::from(conflicts));
    }

    /// Records skipped for a destination that already held them (a table's committed offset
    /// at assignment).
    pub fn already_held(&self, dest: &str, records: u64) {
        self.records_already_held
            .with_label_values(&[dest])
            .inc_by(records);
    }

    /// A multipart part was uploaded.
    pub fn part_uploaded(&self, dest: &str) {
        self.multipart_parts.with_label_values(&[dest]).inc();
    }

    /// An S3 request attempt finished: `Ok` when the store answered as it should (a refused
    /// conditional write included), else the failure's one-line description, which readiness
    /// reports.
    pub fn s3_request(&self, dest: &str, result: Result<(), &str>) {
        self.s3_requests.with_label_values(&[dest]).inc();
        match result {
            Ok(()) => self.health.s3_succeeded(),
            Err(e) => self.health.s3_failed(e),
        }
    }

    /// Whether to log this S3 failure now: `Some(repeats not shown)` once per 10 s per cause
    /// (operation, bucket, class, status, code: `SinkError::cause`), shared by every worker of
    /// the process.
    pub fn s3_error_to_log(&self, cause: &str) -> Option<u64> {
        self.s3_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(cause)
    }

    /// An S3 request failed and will be retried.
    pub fn upload_retry(&self, dest: &str, kind: ErrorKind) {
        self.upload_retries
            .with_label_values(&[dest, kind.as_str()])
            .inc();
    }

    /// A conditional write found its key taken and was resolved as `resolution`.
    pub fn key_conflict(&self, dest: &str, resolution: &str) {
        self.key_conflicts
            .with_label_values(&[dest, resolution])
            .inc();
    }

    /// The start-up cleanup aborted `n` abandoned multipart uploads.
    pub fn orphans_aborted(&self, dest: &str, n: u64) {
        self.orphans_aborted.with_label_values(&[dest]).inc_by(n);
    }

    /// An S3 request failed for good.
    pub fn upload_failed(&self, dest: &str, kind: ErrorKind) {
        self.upload_failures
            .with_label_values(&[dest, kind.as_str()])
            .inc();
    }

    /// A multipart upload was aborted.
    pub fn multipart_aborted(&self, dest: &str) {
        self.aborted_uploads.with_label_values(&[dest]).inc();
    }

    /// Offsets were committed.
    pub fn committed(&self, offsets: &[(TopicPartition, i64)]) {
        self.commits.inc();
        let now = now_secs();
        let Ok(mut lag) = self.lag.lock() else { return };
        for (tp, off) in offsets {
            let l = Self::tp_labels(tp);
            self.committed_offset.with_label_values(&l).set(*off);
            self.last_commit.with_label_values(&l).set(now);
            lag.committed.insert(tp.clone(), *off);
            if let Some(&high) = lag.high.get(tp) {
                let n = (high - off).max(0);
                self.lag_committed.with_label_values(&l).set(n);
                lag.committed_lag.insert(tp.clone(), n);
            }
        }
    }

    /// A commit failed.
    pub fn commit_failed(&self) {
        self.commit_failures.inc();
    }

    /// librdkafka statistics for an assigned partition: high watermark, the consumer's position,
    /// the group's committed offset and the log start offset (negative when unknown). Before the
    /// group's first commit, committed lag counts from the log start, so a new group that never
    /// manages to commit still shows its lag.
    pub fn partition_stats(
        &self,
        tp: &TopicPartition,
        high: i64,
        position: i64,
        kafka_committed: i64,
        log_start: i64,
    ) {
        if high < 0 {
            return;
        }
        let l = Self::tp_labels(tp);
        self.high_watermark.with_label_values(&l).set(high);
        let Ok(mut lag) = self.lag.lock() else { return };
        lag.high.insert(tp.clone(), high);
        let committed = lag
            .committed
            .get(tp)
            .copied()
            .or((kafka_committed >= 0).then_some(kafka_committed))
            .or(Some(log_start.max(0)));
        if let Some(c) = committed {
            let n = (high - c).max(0);
            self.lag_committed.with_label_values(&l).set(n);
            lag.committed_lag.insert(tp.clone(), n);
        }
        let pos = if position >= 0 {
            Some(position)
        } else {
            committed
        };
        if let Some(p) = pos {
            self.lag_consumed
                .with_label_values(&l)
                .set((high - p).max(0));
        }
    }

    /// Partitions were assigned (`assigned = true`) or revoked; revoked ones lose their series.
    pub fn rebalance(&self, assigned: bool, partitions: &[TopicPartition]) {
        let event = if assigned { "assigned" } else { "revoked" };
        self.rebalances
            .with_label_values(&[event])
            .inc_by(partitions.len() as u64);
        let Ok(mut lag) = self.lag.lock() else { return };
        if assigned {
            lag.assigned.extend(partitions.iter().cloned());
            return;
        }
        for tp in partitions {
            let l = Self::tp_labels(tp);
            let l = [l[0].as_str(), l[1].as_str()];
            for g in [
                &self.high_watermark,
                &self.lag_committed,
                &self.lag_consumed,
                &self.committed_offset,
            ] {
                let _ = g.remove_label_values(&l);
            }
            let _ = self.last_commit.remove_label_values(&l);
            lag.high.remove(tp);
            lag.committed.remove(tp);
            lag.assigned.remove(tp);
            lag.committed_lag.remove(tp);
        }
    }

    /// The committed lag of the partitions assigned to this process, from the high watermarks
    /// of librdkafka's statistics and the commits.
    pub fn lag_summary(&self) -> LagSummary {
        let Ok(lag) = self.lag.lock() else {
            return LagSummary::default();
        };
        let mut out = LagSummary {
            partitions: lag.assigned.len(),
            ..LagSummary::default()
        };
        for tp in &lag.assigned {
            if let Some(n) = lag.committed_lag.get(tp) {
                out.known += 1;
                out.committed_lag += n;
            }
        }
        out
    }

    /// One worker's memory use, open files and age of its oldest open file; the gauges show
    /// the process totals (sums, and the maximum age) over all workers.
    pub fn buffer_state(
        &self,
        shard: usize,
        bytes: usize,
        open_files: usize,
        oldest_age_secs: f64,
    ) {
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        if workers.len() <= shard {
            workers.resize(shard + 1, (0, 0, 0.0));
        }
        workers[shard] = (bytes, open_files, oldest_age_secs);
        self.buffered_bytes
            .set(workers.iter().map(|w| w.0 as i64).sum());
        self.open_files
            .set(workers.iter().map(|w| w.1 as i64).sum());
        self.oldest_buffered_age
            .set(workers.iter().map(|w| w.2).fold(0.0, f64::max));
        self.refresh_ready();
    }

    /// The configured memory budget (all workers together).
    pub fn set_memory_budget(&self, bytes: usize) {
        self.memory_budget_bytes.set(bytes as i64);
    }

    /// A Schema Registry request ended: `outcome` is one of [`REGISTRY_OUTCOMES`]. An answer
    /// (`ok`, `not_found`) sets the registry up, a `failed` request down.
    pub fn registry_request(&self, outcome: &str) {
        self.schema_registry_requests
            .with_label_values(&[outcome])
            .inc();
        match outcome {
            "failed" => self.schema_registry_up.set(0),
            _ => self.schema_registry_up.set(1),
        }
    }

    /// The Schema Registry is configured: its series start at zero and up.
    pub fn init_registry(&self) {
        for o in REGISTRY_OUTCOMES {
            self.schema_registry_requests.with_label_values(&[o]);
        }
        self.schema_registry_up.set(1);
    }

    /// What the parsed-schema cache holds.
    pub fn schema_cache(&self, bytes: usize, schemas: usize) {
        self.schema_cache_bytes.set(bytes as i64);
        self.schema_cache_schemas.set(schemas as i64);
    }

    /// Updates the readiness gauge from the health state (also done before every scrape).
    pub fn refresh_ready(&self) {
        self.ready
            .set(i64::from(self.health.not_ready_reason().is_none()));
    }
}

mod register;
pub use register::{catalogue, MetricInfo};
#[cfg(test)]
mod tests;
