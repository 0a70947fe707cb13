//! The user-facing configuration as written in the TOML file: serde structs with defaults and
//! `deny_unknown_fields`. Serialized back (with secrets redacted) by `check-config`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Secret;

/// The whole file as written by the user, with defaults filled in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Kafka consumer settings.
    pub kafka: RawKafka,
    /// Worker-wide settings.
    #[serde(default)]
    pub pipeline: RawPipeline,
    /// Upload and retry settings shared by all destinations.
    #[serde(default)]
    pub upload: RawUpload,
    /// Metrics and health endpoints.
    #[serde(default)]
    pub http: RawHttp,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// Where records go.
    pub destinations: Vec<RawDestination>,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// Serve /metrics, /healthz and /readyz.
    pub enabled: bool,
    /// Listen address.
    pub listen: String,
    /// /readyz turns not-ready once S3 requests have been failing this long.
    pub unready_after_failing_secs: u64,
    /// Connections served at once; a new one beyond it closes the oldest.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout_ms: u64,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:9464".into(),
            unready_after_failing_secs: 120,
            max_connections: 64,
            header_read_timeout_ms: 5000,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// tracing filter, e.g. `info` or `kafka_s3_sink=debug,info`.
    pub level: String,
    /// plain | json.
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "plain".into(),
        }
    }
}

/// `[kafka]`. Its `Debug` redacts sensitive properties.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// `client.id`.
    #[serde(default = "d_client_id")]
    pub client_id: String,
    /// Where a partition without a committed offset starts: earliest | latest.
    #[serde(default = "d_offset_reset")]
    pub auto_offset_reset: String,
    /// `session.timeout.ms`.
    #[serde(default = "d_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// `max.poll.interval.ms`.
    #[serde(default = "d_max_poll_interval_ms")]
    pub max_poll_interval_ms: u64,
    /// Typed TLS and SASL settings (`[kafka.security]`).
    #[serde(default, skip_serializing_if = "super::RawSecurity::is_unset")]
    pub security: super::RawSecurity,
    /// A Schema Registry for records in the Confluent wire format (`[kafka.schema_registry]`).
    #[serde(
        default,
        skip_serializing_if = "super::registry::RawSchemaRegistry::is_unset"
    )]
    pub schema_registry: super::registry::RawSchemaRegistry,
    /// Any other librdkafka property, passed through verbatim.
    #[serde(default)]
    pub properties: BTreeMap<String, toml::Value>,
}

impl std::fmt::Debug for RawKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawKafka")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("client_id", &self.client_id)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("max_poll_interval_ms", &self.max_poll_interval_ms)
            .field("security", &self.security)
            .field("schema_registry", &self.schema_registry)
            .field("properties", &super::RedactedProperties(&self.properties))
            .finish()
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPipeline {
    /// Bytes all open batches and queued uploads may hold before early flushes start.
    pub memory_budget_bytes: u64,
    /// Time allowed on a revoke to upload and commit the revoked partitions' records.
    pub drain_deadline_secs: u64,
    /// Time allowed on SIGTERM/SIGINT to flush, upload and commit before exiting.
    pub shutdown_deadline_secs: u64,
    /// Workers the assigned partitions are spread over (0 = one per CPU core).
    pub workers: usize,
    /// Files each worker keeps open at most (over all partitions, folders and destinations).
    pub max_open_files: usize,
}

impl Default for RawPipeline {
    fn default() -> Self {
        Self {
            memory_budget_bytes: 256 * 1024 * 1024,
            drain_deadline_secs: 20,
            shutdown_deadline_secs: 30,
            workers: 0,
            max_open_files: 16_384,
        }
    }
}

/// `[upload]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpload {
    /// Objects whose compressed size reaches this go by multipart upload, in parts of this size.
    pub part_size_bytes: u64,
    /// S3 requests in flight at once, over all destinations.
    pub concurrency: usize,
    /// Time limit of one S3 request attempt.
    pub request_timeout_secs: u64,
    /// First retry backoff; doubles up to `retry_max_backoff_ms`, with jitter.
    pub retry_initial_backoff_ms: u64,
    /// Ceiling of the retry backoff.
    pub retry_max_backoff_ms: u64,
    /// Attempts per request before the worker gives up and exits (0 = retry for ever).
    pub retry_max_attempts: u32,
    /// At start-up, abort multipart uploads under each destination's prefixes that are older
    /// than `orphaned_upload_min_age_secs` (left by a crashed or killed worker).
    pub abort_orphaned_uploads: bool,
    /// Age above which an in-progress multipart upload counts as abandoned.
    pub orphaned_upload_min_age_secs: u64,
}

impl Default for RawUpload {
    fn default() -> Self {
        Self {
            part_size_bytes: 8 * 1024 * 1024,
            concurrency: 8,
            request_timeout_secs: 60,
            retry_initial_backoff_ms: 200,
            retry_max_backoff_ms: 30_000,
            retry_max_attempts: 0,
            abort_orphaned_uploads: true,
            orphaned_upload_min_age_secs: 6 * 3600,
        }
    }
}

/// One `[[destinations]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// Name used in logs and metrics.
    pub name: String,
    /// Topics feeding it (default: all of `kafka.topics`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// How record values are read: json (default) | avro | protobuf | json_schema | auto (the
    /// last four through `[kafka.schema_registry]`).
    #[serde(default)]
    pub value_format: super::registry::ValueFormat,
    /// How record keys are read for the Kafka metadata: raw (default) | avro | protobuf |
    /// json_schema | auto.
    #[serde(default)]
    pub key_format: super::registry::KeyFormat,
    /// Bucket name.
    pub bucket: String,
    /// AWS region.
    #[serde(default = "d_region")]
    pub region: String,
    /// Endpoint of an S3-compatible store.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// PEM file of CA certificates to trust besides the system's (an endpoint with a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Path-style addressing (needed by most S3-compatible stores).
    #[serde(default)]
    pub force_path_style: bool,
    /// auto | signed | unsigned: whether SigV4 covers the body's SHA-256 (auto: only over
    /// plain http://).
    #[serde(default = "d_payload_signing")]
    pub payload_signing: String,
    /// Key prefix (the seeds' "folder name" / "path prefix"), without leading slash.
    #[serde(default)]
    pub prefix: String,
    /// Folder, under the prefix, for quarantined records.
    #[serde(default = "d_error_prefix")]
    pub error_prefix: String,
    /// S3 storage class, e.g. STANDARD_IA.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// `{app}` in file templates (mParticle's App Name).
    #[serde(default)]
    pub app_name: String,
    /// `{source}` in templates (Segment's source id); default: the topic.
    #[serde(default)]
    pub source_id: Option<String>,
    /// Content-Type of objects.
    #[serde(default = "d_content_type")]
    pub content_type: String,
    /// Set `Content-Encoding: gzip` on gzip objects (off: S3 clients would decompress silently).
    #[serde(default)]
    pub content_encoding_header: bool,
    /// Write with `If-None-Match: *` so no object ever replaces another (turn off only for
    /// stores that reject conditional writes).
    #[serde(default = "d_true")]
    pub conditional_writes: bool,
    /// Add the record's Kafka coordinates (topic, partition, offset, timestamp, key, headers) to
    /// each line as one member of this name (off when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_metadata_field: Option<String>,
    /// Account id that must own the bucket: sent with every request (`x-amz-expected-bucket-owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_bucket_owner: Option<String>,
    /// Credentials (default: the AWS default chain).
    #[serde(default)]
    pub credentials: RawCredentials,
    /// Server-side encryption.
    #[serde(default)]
    pub encryption: RawEncryption,
    /// Time source and key templates.
    #[serde(default)]
    pub routing: RawRouting,
    /// File rotation and compression.
    #[serde(default)]
    pub batch: RawBatch,
    /// Event-type filters and dropped fields.
    #[serde(default)]
    pub filter: RawFilter,
    /// Parquet columns (with `batch.format = "parquet"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<super::parquet::RawParquet>,
    /// An Apache Iceberg table to append the data files to, instead of objects under a prefix
    /// (docs/iceberg.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iceberg: Option<super::iceberg::RawIceberg>,
}

/// `[destinations.credentials]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCredentials {
    /// Static access key id (with `secret_access_key`).
    pub access_key_id: Option<String>,
    /// Static secret key.
    pub secret_access_key: Option<Secret>,
    /// Static session token.
    pub session_token: Option<Secret>,
    /// Role to assume on top of the base credentials.
    pub role_arn: Option<String>,
    /// External id for the assumed role.
    pub external_id: Option<Secret>,
    /// Session name of the assumed role (default: `kafka-s3-sink-<hostname>`, the pod name on
    /// Kubernetes, so CloudTrail tells replicas apart).
    pub role_session_name: Option<String>,
}

/// `[destinations.encryption]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEncryption {
    /// none | AES256 | aws:kms.
    pub mode: String,
    /// KMS key for aws:kms (default: the bucket's AWS-managed key).
    pub kms_key_id: Option<String>,
    /// S3 Bucket Key for aws:kms (fewer KMS requests).
    pub bucket_key: bool,
    /// KMS encryption context for aws:kms (string pairs, added to every object's encryption).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
}

impl Default for RawEncryption {
    fn default() -> Self {
        Self {
            mode: "none".into(),
            kms_key_id: None,
            bucket_key: false,
            context: BTreeMap::new(),
        }
    }
}

/// `[destinations.routing]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRouting {
    /// event_time | kafka_timestamp | upload_time | event_time_or_upload_time | none.
    pub time_source: String,
    /// Dotted path of the event-time field.
    pub time_field: String,
    /// auto | rfc3339 | epoch_seconds | epoch_millis.
    pub time_format: String,
    /// record | first_event: date each record, or the whole file by its first record.
    pub granularity: String,
    /// IANA timezone of folder dates.
    pub timezone: String,
    /// strftime folder template with `{topic}` `{partition}` `{source}` `{destination}`.
    pub folder_template: String,
    /// File-name template.
    pub file_template: String,
    /// Quarantine records dated more than this far ahead of the clock (0 = no limit).
    pub max_future_secs: u64,
    /// Quarantine records dated more than this far behind the clock (0 = no limit).
    pub max_past_secs: u64,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            max_future_secs: 86_400,
            max_past_secs: 0,
            time_source: "event_time".into(),
            time_field: "timestamp".into(),
            time_format: "auto".into(),
            granularity: "record".into(),
            timezone: "UTC".into(),
            folder_template: "%Y/%m/%d/%H/".into(),
            file_template: "{topic}+{partition}+{start_offset}.ndjson".into(),
        }
    }
}

/// `[destinations.batch]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBatch {
    /// ndjson | parquet: what data files hold (quarantine files are NDJSON either way).
    pub format: String,
    /// none | gzip | zstd (NDJSON files; with Parquet, the quarantine files).
    pub compression: String,
    /// gzip level 0–9 (default 6), zstd level 1–19 (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<u32>,
    /// Rotate when the compressed file reaches this size.
    pub max_bytes: u64,
    /// Rotate after this many records.
    pub max_records: u64,
    /// Rotate when the file's first record is this old.
    pub max_age_secs: u64,
    /// Flush a file that received no record for this long.
    pub idle_secs: u64,
    /// Quarantine records whose value is larger than this (0 = no limit).
    pub max_record_bytes: u64,
    /// Files hold fixed offset windows of `max_records` and commits land on window starts, so
    /// a replay rebuilds the same objects (no duplicates after a crash).
    pub deterministic: bool,
}

impl Default for RawBatch {
    fn default() -> Self {
        Self {
            format: "ndjson".into(),
            compression: "gzip".into(),
            compression_level: None,
            max_bytes: 128 * 1024 * 1024,
            max_records: 1_000_000,
            max_age_secs: 300,
            idle_secs: 30,
            max_record_bytes: 8 * 1024 * 1024,
            deterministic: false,
        }
    }
}

/// `[destinations.filter]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFilter {
    /// Dotted path of the event-type field, e.g. `type` or `event`.
    pub field: Option<String>,
    /// Keep only records whose field value is listed.
    pub include: Vec<String>,
    /// Drop records whose field value is listed.
    pub exclude: Vec<String>,
    /// Dotted paths of fields removed from every record before writing.
    pub drop_fields: Vec<String>,
}

fn d_client_id() -> String {
    "kafka-s3-sink".into()
}
fn d_offset_reset() -> String {
    "earliest".into()
}
fn d_session_timeout_ms() -> u64 {
    45_000
}
fn d_max_poll_interval_ms() -> u64 {
    300_000
}
fn d_true() -> bool {
    true
}
fn d_region() -> String {
    "us-east-1".into()
}

fn d_payload_signing() -> String {
    "auto".into()
}

fn d_error_prefix() -> String {
    "_errors".into()
}
fn d_content_type() -> String {
    "application/x-ndjson".into()
}
