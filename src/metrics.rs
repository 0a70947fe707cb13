//! Metrics: one struct with a typed method per event, registered in a [`Registry`] that is passed
//! in (no global registry). Labels are bounded: topic, partition, destination and fixed reason
//! enums; never object keys or folders.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::batch::FlushReason;
use crate::model::TopicPartition;
use crate::router::QuarantineReason;
use crate::sink::ErrorKind;

/// All metrics of one worker.
#[derive(Clone)]
pub struct Metrics {
    records_consumed: IntCounterVec,
    bytes_consumed: IntCounterVec,
    records_written: IntCounterVec,
    raw_bytes_written: IntCounterVec,
    compressed_bytes_written: IntCounterVec,
    records_filtered: IntCounterVec,
    quarantined: IntCounterVec,
    flushes: IntCounterVec,
    flush_records: Histogram,
    flush_bytes: Histogram,
    upload_seconds: HistogramVec,
    multipart_parts: IntCounterVec,
    upload_retries: IntCounterVec,
    upload_failures: IntCounterVec,
    commits: IntCounter,
    commit_failures: IntCounter,
    committed_offset: IntGaugeVec,
    buffered_bytes: IntGauge,
    open_files: IntGauge,
    memory_budget_bytes: IntGauge,
    rebalances: IntCounterVec,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Registers every metric in `r`.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let tp = &["topic", "partition"];
        let dest = &["destination"];
        let records_buckets = prometheus::exponential_buckets(10.0, 10.0, 7)?;
        let bytes_buckets = prometheus::exponential_buckets(1024.0, 4.0, 11)?;
        let m = Self {
            records_consumed: counter_vec(
                r,
                "kafka_s3_sink_records_consumed_total",
                "Records taken in from Kafka.",
                tp,
            )?,
            bytes_consumed: counter_vec(
                r,
                "kafka_s3_sink_bytes_consumed_total",
                "Value bytes taken in from Kafka.",
                tp,
            )?,
            records_written: counter_vec(
                r,
                "kafka_s3_sink_records_written_total",
                "Records in objects uploaded to S3 (error objects included).",
                dest,
            )?,
            raw_bytes_written: counter_vec(
                r,
                "kafka_s3_sink_raw_bytes_written_total",
                "Uncompressed bytes of uploaded objects.",
                dest,
            )?,
            compressed_bytes_written: counter_vec(
                r,
                "kafka_s3_sink_compressed_bytes_written_total",
                "Bytes of uploaded objects as stored.",
                dest,
            )?,
            records_filtered: counter_vec(
                r,
                "kafka_s3_sink_records_filtered_total",
                "Records dropped by an event-type filter.",
                dest,
            )?,
            quarantined: counter_vec(
                r,
                "kafka_s3_sink_records_quarantined_total",
                "Records written to the error folder, by reason.",
                &["destination", "reason"],
            )?,
            flushes: counter_vec(
                r,
                "kafka_s3_sink_flushes_total",
                "Files closed, by reason.",
                &["destination", "reason"],
            )?,
            flush_records: histogram(
                r,
                "kafka_s3_sink_flush_records",
                "Records per closed file.",
                records_buckets,
            )?,
            flush_bytes: histogram(
                r,
                "kafka_s3_sink_flush_bytes",
                "Stored bytes per closed file.",
                bytes_buckets,
            )?,
            upload_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "kafka_s3_sink_upload_duration_seconds",
                        "Time from closing a file to its object being in S3.",
                    )
                    .buckets(prometheus::exponential_buckets(0.01, 2.5, 12)?),
                    dest,
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            multipart_parts: counter_vec(
                r,
                "kafka_s3_sink_multipart_parts_total",
                "Multipart parts uploaded.",
                dest,
            )?,
            upload_retries: counter_vec(
                r,
                "kafka_s3_sink_upload_retries_total",
                "S3 requests retried, by error kind.",
                &["destination", "kind"],
            )?,
            upload_failures: counter_vec(
                r,
                "kafka_s3_sink_upload_failures_total",
                "S3 requests failed, by error kind.",
                &["destination", "kind"],
            )?,
            commits: {
                let c = IntCounter::new(
                    "kafka_s3_sink_commits_total",
                    "Offset commits sent to Kafka.",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            commit_failures: {
                let c = IntCounter::new(
                    "kafka_s3_sink_commit_failures_total",
                    "Offset commits Kafka refused.",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            committed_offset: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "kafka_s3_sink_committed_offset",
                        "Last offset committed (next offset to read).",
                    ),
                    tp,
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            buffered_bytes: {
                let g = IntGauge::new(
                    "kafka_s3_sink_buffered_bytes",
                    "Memory held by open files and queued parts.",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            open_files: {
                let g = IntGauge::new("kafka_s3_sink_open_files", "Files being filled.")?;
                r.register(Box::new(g.clone()))?;
                g
            },
            memory_budget_bytes: {
                let g = IntGauge::new(
                    "kafka_s3_sink_memory_budget_bytes",
                    "Configured memory budget.",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            rebalances: counter_vec(
                r,
                "kafka_s3_sink_rebalance_partitions_total",
                "Partitions assigned or revoked.",
                &["event"],
            )?,
        };
        Ok(m)
    }

    /// A metrics set on a private registry (tests, tools).
    pub fn unregistered() -> Self {
        // Registration into a fresh registry only fails on duplicate names, which `new` has none of.
        Self::new(&Registry::new()).expect("invariant: metric names are unique")
    }

    /// A chunk of records was taken in.
    pub fn consumed(&self, tp: &TopicPartition, records: u64, bytes: u64) {
        let p = tp.partition.to_string();
        let l = [tp.topic.as_ref(), p.as_str()];
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
        self.flush_records.observe(records as f64);
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
        self.flush_bytes.observe(stored as f64);
        self.upload_seconds
            .with_label_values(&[dest])
            .observe(seconds);
    }

    /// A multipart part was uploaded.
    pub fn part_uploaded(&self, dest: &str) {
        self.multipart_parts.with_label_values(&[dest]).inc();
    }

    /// An S3 request failed and will be retried.
    pub fn upload_retry(&self, dest: &str, kind: ErrorKind) {
        self.upload_retries
            .with_label_values(&[dest, kind.as_str()])
            .inc();
    }

    /// An S3 request failed for good.
    pub fn upload_failed(&self, dest: &str, kind: ErrorKind) {
        self.upload_failures
            .with_label_values(&[dest, kind.as_str()])
            .inc();
    }

    /// Offsets were committed.
    pub fn committed(&self, offsets: &[(TopicPartition, i64)]) {
        self.commits.inc();
        for (tp, off) in offsets {
            let p = tp.partition.to_string();
            self.committed_offset
                .with_label_values(&[tp.topic.as_ref(), p.as_str()])
                .set(*off);
        }
    }

    /// A commit failed.
    pub fn commit_failed(&self) {
        self.commit_failures.inc();
    }

    /// Current memory use and open files.
    pub fn buffer_state(&self, bytes: usize, open_files: usize, budget: usize) {
        self.buffered_bytes.set(bytes as i64);
        self.open_files.set(open_files as i64);
        self.memory_budget_bytes.set(budget as i64);
    }

    /// Partitions were assigned (`assigned = true`) or revoked.
    pub fn rebalance(&self, assigned: bool, partitions: usize) {
        let event = if assigned { "assigned" } else { "revoked" };
        self.rebalances
            .with_label_values(&[event])
            .inc_by(partitions as u64);
    }
}
