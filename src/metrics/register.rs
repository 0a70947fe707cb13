//! Registration of every metric of [`Metrics`] in the registry passed in: names, help texts,
//! label sets and histogram buckets in one place; and the same list as data ([`catalogue`]).
//!
//! Invariant: every name is registered once; `Metrics::new` fails only on a duplicate name in the
//! registry it is given. [`catalogue`] lists exactly what `Metrics::new` registers, because it
//! records the same registrations.

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};
use std::sync::{Arc, Mutex, PoisonError};

use super::{LagState, Metrics, GIT_SHA, VERSION};
use crate::health::Health;

/// One exported metric, as registered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MetricInfo {
    /// Full name (`kafka_s3_sink_...`; a histogram's series add `_bucket`, `_sum`, `_count`).
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Label names, in registration order.
    pub labels: Vec<String>,
    /// Help text.
    pub help: String,
}

/// Every metric `Metrics::new` registers, in registration order.
pub fn catalogue() -> prometheus::Result<Vec<MetricInfo>> {
    let rec = Recorder::default();
    Metrics::register_in(&rec)?;
    Ok(rec
        .seen
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner))
}

/// Where the metrics are registered: a [`Registry`], or the [`Recorder`] of [`catalogue`].
trait Registrar {
    fn add(&self, c: Box<dyn Collector>) -> prometheus::Result<()>;
}

impl Registrar for Registry {
    fn add(&self, c: Box<dyn Collector>) -> prometheus::Result<()> {
        self.register(c)
    }
}

/// A registry that also notes what is registered in it.
#[derive(Default)]
struct Recorder {
    registry: Registry,
    seen: Mutex<Vec<MetricInfo>>,
}

impl Registrar for Recorder {
    fn add(&self, c: Box<dyn Collector>) -> prometheus::Result<()> {
        let kinds: Vec<&'static str> = c
            .collect()
            .iter()
            .map(|f| match f.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::HISTOGRAM => "histogram",
                _ => "gauge",
            })
            .collect();
        let infos: Vec<MetricInfo> = c
            .desc()
            .iter()
            .zip(kinds)
            .map(|(d, kind)| MetricInfo {
                name: d.fq_name.clone(),
                kind,
                labels: d.variable_labels.clone(),
                help: d.help.clone(),
            })
            .collect();
        self.registry.register(c)?;
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(infos);
        Ok(())
    }
}

fn reg<T: Collector + Clone + 'static>(r: &impl Registrar, c: T) -> prometheus::Result<T> {
    r.add(Box::new(c.clone()))?;
    Ok(c)
}

fn counters(
    r: &impl Registrar,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    reg(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn int_gauges(
    r: &impl Registrar,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    reg(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

fn histograms(
    r: &impl Registrar,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> prometheus::Result<HistogramVec> {
    reg(
        r,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?,
    )
}

impl Metrics {
    /// Registers every metric in `r`.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        Self::register_in(r)
    }

    fn register_in(r: &impl Registrar) -> prometheus::Result<Self> {
        let tp = &["topic", "partition"];
        let dest = &["destination"];
        let build = int_gauges(
            r,
            "kafka_s3_sink_build_info",
            "Build version and git revision (always 1).",
            &["version", "git_sha"],
        )?;
        build.with_label_values(&[VERSION, GIT_SHA]).set(1);
        Ok(Self {
            records_consumed: counters(
                r,
                "kafka_s3_sink_records_consumed_total",
                "Records taken in from Kafka.",
                tp,
            )?,
            bytes_consumed: counters(
                r,
                "kafka_s3_sink_bytes_consumed_total",
                "Value bytes taken in from Kafka.",
                tp,
            )?,
            records_written: counters(
                r,
                "kafka_s3_sink_records_written_total",
                "Records in objects now in S3 (error objects included).",
                dest,
            )?,
            raw_bytes_written: counters(
                r,
                "kafka_s3_sink_raw_bytes_written_total",
                "Uncompressed bytes of objects now in S3.",
                dest,
            )?,
            compressed_bytes_written: counters(
                r,
                "kafka_s3_sink_compressed_bytes_written_total",
                "Stored bytes of objects now in S3.",
                dest,
            )?,
            objects_uploaded: counters(
                r,
                "kafka_s3_sink_objects_uploaded_total",
                "Objects now in S3.",
                dest,
            )?,
            last_upload: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "kafka_s3_sink_last_upload_timestamp_seconds",
                        "Unix time of the last object put in S3.",
                    ),
                    dest,
                )?,
            )?,
            records_filtered: counters(
                r,
                "kafka_s3_sink_records_filtered_total",
                "Records dropped by an event-type filter.",
                dest,
            )?,
            quarantined: counters(
                r,
                "kafka_s3_sink_records_quarantined_total",
                "Records written to the error folder, by reason.",
                &["destination", "reason"],
            )?,
            flushes: counters(
                r,
                "kafka_s3_sink_flushes_total",
                "Files closed, by reason.",
                &["destination", "reason"],
            )?,
            flush_records: histograms(
                r,
                "kafka_s3_sink_flush_records",
                "Records per closed file.",
                dest,
                prometheus::exponential_buckets(10.0, 4.0, 10)?,
            )?,
            flush_bytes: histograms(
                r,
                "kafka_s3_sink_flush_bytes",
                "Stored bytes per uploaded object.",
                dest,
                prometheus::exponential_buckets(1024.0, 4.0, 12)?,
            )?,
            upload_seconds: histograms(
                r,
                "kafka_s3_sink_upload_duration_seconds",
                "Time from closing a file to its object being in S3.",
                dest,
                prometheus::exponential_buckets(0.01, 2.5, 12)?,
            )?,
            table_commits: counters(
                r,
                "kafka_s3_sink_table_commits_total",
                "Iceberg table commits, by outcome.",
                &["destination", "outcome"],
            )?,
            table_commit_seconds: histograms(
                r,
                "kafka_s3_sink_table_commit_duration_seconds",
                "Time of one Iceberg table commit, its retries included.",
                dest,
                prometheus::exponential_buckets(0.01, 2.5, 12)?,
            )?,
            table_commit_files: histograms(
                r,
                "kafka_s3_sink_table_commit_data_files",
                "Data files added by one Iceberg table commit.",
                dest,
                prometheus::exponential_buckets(1.0, 4.0, 10)?,
            )?,
            table_commit_conflicts: counters(
                r,
                "kafka_s3_sink_table_commit_conflicts_total",
                "Concurrent Iceberg commits retried on the refreshed table.",
                dest,
            )?,
            records_already_held: counters(
                r,
                "kafka_s3_sink_records_already_held_total",
                "Records skipped for a destination that already held them (a table's committed offset at assignment).",
                dest,
            )?,
            multipart_parts: counters(
                r,
                "kafka_s3_sink_multipart_parts_total",
                "Multipart parts uploaded.",
                dest,
            )?,
            s3_requests: counters(
                r,
                "kafka_s3_sink_s3_requests_total",
                "S3 request attempts (every retry counts).",
                dest,
            )?,
            upload_retries: counters(
                r,
                "kafka_s3_sink_upload_retries_total",
                "S3 requests failed and retried, by error kind.",
                &["destination", "kind"],
            )?,
            upload_failures: counters(
                r,
                "kafka_s3_sink_upload_failures_total",
                "S3 requests failed for good, by error kind.",
                &["destination", "kind"],
            )?,
            aborted_uploads: counters(
                r,
                "kafka_s3_sink_multipart_aborts_total",
                "Multipart uploads aborted.",
                dest,
            )?,
            key_conflicts: counters(
                r,
                "kafka_s3_sink_key_conflicts_total",
                "Conditional writes that found their key taken, by how they were resolved.",
                &["destination", "resolution"],
            )?,
            orphans_aborted: counters(
                r,
                "kafka_s3_sink_orphaned_uploads_aborted_total",
                "Abandoned multipart uploads aborted by the start-up cleanup.",
                dest,
            )?,
            commits: reg(
                r,
                IntCounter::new(
                    "kafka_s3_sink_commits_total",
                    "Offset commits sent to Kafka.",
                )?,
            )?,
            commit_failures: reg(
                r,
                IntCounter::new(
                    "kafka_s3_sink_commit_failures_total",
                    "Offset commits Kafka refused.",
                )?,
            )?,
            committed_offset: int_gauges(
                r,
                "kafka_s3_sink_committed_offset",
                "Last committed offset (next offset to read).",
                tp,
            )?,
            last_commit: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "kafka_s3_sink_last_commit_timestamp_seconds",
                        "Unix time of the partition's last commit.",
                    ),
                    tp,
                )?,
            )?,
            high_watermark: int_gauges(
                r,
                "kafka_s3_sink_high_watermark",
                "Partition high watermark (from librdkafka statistics).",
                tp,
            )?,
            lag_committed: int_gauges(
                r,
                "kafka_s3_sink_consumer_lag_committed",
                "High watermark minus committed offset: records not yet safely in S3.",
                tp,
            )?,
            lag_consumed: int_gauges(
                r,
                "kafka_s3_sink_consumer_lag_consumed",
                "High watermark minus consumed position: records not yet read.",
                tp,
            )?,
            buffered_bytes: reg(
                r,
                IntGauge::new(
                    "kafka_s3_sink_buffered_bytes",
                    "Memory held by open files and queued upload bytes.",
                )?,
            )?,
            open_files: reg(
                r,
                IntGauge::new("kafka_s3_sink_open_files", "Files being filled.")?,
            )?,
            oldest_buffered_age: reg(
                r,
                Gauge::new(
                    "kafka_s3_sink_oldest_buffered_record_age_seconds",
                    "Age of the oldest open file (its first record's arrival).",
                )?,
            )?,
            memory_budget_bytes: reg(
                r,
                IntGauge::new(
                    "kafka_s3_sink_memory_budget_bytes",
                    "Configured memory budget.",
                )?,
            )?,
            rebalances: counters(
                r,
                "kafka_s3_sink_rebalance_partitions_total",
                "Partitions assigned or revoked.",
                &["event"],
            )?,
            ready: reg(
                r,
                IntGauge::new("kafka_s3_sink_ready", "1 when /readyz answers ready.")?,
            )?,
            schema_registry_requests: counters(
                r,
                "kafka_s3_sink_schema_registry_requests_total",
                "Schema Registry requests, by outcome (ok, not_found, failed).",
                &["outcome"],
            )?,
            schema_registry_up: reg(
                r,
                IntGauge::new(
                    "kafka_s3_sink_schema_registry_up",
                    "0 while the Schema Registry's last request failed (consumption waits), else 1.",
                )?,
            )?,
            schema_cache_bytes: reg(
                r,
                IntGauge::new(
                    "kafka_s3_sink_schema_cache_bytes",
                    "Bytes the parsed schemas hold (charged to the memory budget).",
                )?,
            )?,
            schema_cache_schemas: reg(
                r,
                IntGauge::new(
                    "kafka_s3_sink_schema_cache_schemas",
                    "Parsed schemas in the cache.",
                )?,
            )?,
            lag: Arc::new(Mutex::new(LagState::default())),
            workers: Arc::new(Mutex::new(Vec::new())),
            health: Arc::new(Health::default()),
            s3_errors: Arc::new(Mutex::new(crate::lograte::RepeatLog::default())),
        })
    }
}
