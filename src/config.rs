//! Configuration: one TOML file → `${VAR}` interpolation → raw serde structs (unknown keys
//! rejected, defaults filled) → [`Config`], validated once into typed values.
//!
//! Invariant: every mistake is reported as one [`ConfigError`] line naming the key and the fix,
//! and nothing downstream re-validates. Secrets are wrapped in [`Secret`], which never prints.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::template::{FileTemplate, FolderTemplate};

/// A start-up configuration mistake: the key it concerns and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error at `{key}`: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `destinations[0].encryption.mode`.
    pub key: String,
    /// What is wrong and how to fix it, on one line.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A secret string: deserializes normally, never shows its value in Debug, Display or Serialize.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the one place that needs it (the SDK credential provider).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

// ---------------------------------------------------------------- raw (user-facing) structs

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
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:9464".into(),
            unready_after_failing_secs: 120,
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

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Any other librdkafka property, passed through verbatim.
    #[serde(default)]
    pub properties: BTreeMap<String, toml::Value>,
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
}

impl Default for RawPipeline {
    fn default() -> Self {
        Self {
            memory_budget_bytes: 256 * 1024 * 1024,
            drain_deadline_secs: 20,
            shutdown_deadline_secs: 30,
            workers: 0,
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
    /// Bucket name.
    pub bucket: String,
    /// AWS region.
    #[serde(default = "d_region")]
    pub region: String,
    /// Endpoint of an S3-compatible store.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path-style addressing (needed by most S3-compatible stores).
    #[serde(default)]
    pub force_path_style: bool,
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
}

/// `[destinations.encryption]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEncryption {
    /// none | AES256 | aws:kms.
    pub mode: String,
    /// KMS key for aws:kms (default: the bucket's AWS-managed key).
    pub kms_key_id: Option<String>,
}

impl Default for RawEncryption {
    fn default() -> Self {
        Self {
            mode: "none".into(),
            kms_key_id: None,
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
    /// none | gzip.
    pub compression: String,
    /// gzip level 0–9.
    pub compression_level: u32,
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
}

impl Default for RawBatch {
    fn default() -> Self {
        Self {
            compression: "gzip".into(),
            compression_level: 6,
            max_bytes: 128 * 1024 * 1024,
            max_records: 1_000_000,
            max_age_secs: 300,
            idle_secs: 30,
            max_record_bytes: 8 * 1024 * 1024,
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
fn d_region() -> String {
    "us-east-1".into()
}
fn d_error_prefix() -> String {
    "_errors".into()
}
fn d_content_type() -> String {
    "application/x-ndjson".into()
}

// ---------------------------------------------------------------- validated (typed) config

/// The validated configuration the pipeline runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kafka consumer settings.
    pub kafka: KafkaConfig,
    /// Worker-wide limits.
    pub pipeline: PipelineConfig,
    /// Upload settings.
    pub upload: UploadConfig,
    /// Destinations, in file order.
    pub destinations: Vec<DestinationConfig>,
    /// HTTP listener.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// The raw form (after interpolation, defaults filled), for `check-config`.
    pub raw: RawConfig,
}

/// Validated `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address, `None` when disabled.
    pub listen: Option<std::net::SocketAddr>,
    /// Failing-uploads time after which the worker is not ready.
    pub unready_after: Duration,
}

/// Validated `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// tracing filter.
    pub level: String,
    /// JSON lines instead of plain text.
    pub json: bool,
}

/// Validated `[kafka]`.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Group id.
    pub group_id: String,
    /// Every librdkafka property to set, ours and the user's.
    pub properties: BTreeMap<String, String>,
}

/// Validated `[pipeline]`.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Memory budget in bytes.
    pub memory_budget_bytes: usize,
    /// Revoke drain deadline.
    pub drain_deadline: Duration,
    /// Shutdown deadline.
    pub shutdown_deadline: Duration,
    /// Workers (≥ 1); each gets `memory_budget_bytes / workers`.
    pub workers: usize,
}

/// Validated `[upload]`.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Part size and multipart threshold.
    pub part_size_bytes: usize,
    /// Requests in flight.
    pub concurrency: NonZeroUsize,
    /// Per-attempt timeout.
    pub request_timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay.
    pub initial_backoff: Duration,
    /// Ceiling.
    pub max_backoff: Duration,
    /// `None` = unlimited.
    pub max_attempts: Option<u32>,
}

/// Server-side encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// No SSE header.
    None,
    /// SSE-S3.
    Aes256,
    /// SSE-KMS with an optional key id.
    Kms {
        /// Key id or ARN.
        key_id: Option<String>,
    },
}

/// Static credentials or an assumed role; `None` fields mean the default chain.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Static key pair and optional token.
    pub static_keys: Option<(String, Secret, Option<Secret>)>,
    /// Role to assume.
    pub role_arn: Option<String>,
    /// External id for the role.
    pub external_id: Option<Secret>,
}

/// Time value format of the event-time field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// RFC 3339 strings; numbers as epoch seconds, or milliseconds above 10^11.
    Auto,
    /// RFC 3339 strings only.
    Rfc3339,
    /// Epoch seconds (number or numeric string).
    EpochSeconds,
    /// Epoch milliseconds (number or numeric string).
    EpochMillis,
}

/// Where a record's date comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSource {
    /// A JSON field; undatable records are quarantined.
    EventTime {
        /// Path segments.
        path: Vec<String>,
        /// Value format.
        format: TimeFormat,
    },
    /// A JSON field, else the upload (processing) time.
    EventTimeOrUploadTime {
        /// Path segments.
        path: Vec<String>,
        /// Value format.
        format: TimeFormat,
    },
    /// The Kafka record timestamp; records without one are quarantined.
    KafkaTimestamp,
    /// The time the file is uploaded.
    UploadTime,
    /// No date folders.
    None,
}

/// Whether each record is dated, or the whole file by its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Every record goes to the folder of its own time.
    Record,
    /// A file goes to the folder of its first record's time (mParticle).
    FirstEvent,
}

/// Compression of objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain NDJSON.
    None,
    /// gzip at a level 0–9.
    Gzip {
        /// Level.
        level: u32,
    },
}

impl Compression {
    /// File-name suffix every object of this compression ends with.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => ".gz",
        }
    }
}

/// Validated routing of one destination.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Time source.
    pub time_source: TimeSource,
    /// Per record or per file.
    pub granularity: Granularity,
    /// Timezone of folder dates.
    pub timezone: chrono_tz::Tz,
    /// Folder template.
    pub folder: FolderTemplate,
    /// File-name template.
    pub file: FileTemplate,
    /// Latest accepted event time, relative to the clock.
    pub max_future: Option<Duration>,
    /// Earliest accepted event time, relative to the clock.
    pub max_past: Option<Duration>,
}

/// Validated rotation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Compression.
    pub compression: Compression,
    /// Compressed-size limit.
    pub max_bytes: u64,
    /// Record-count limit.
    pub max_records: u64,
    /// Age limit, from the first record.
    pub max_age: Duration,
    /// Idle limit, from the last record.
    pub idle: Duration,
    /// Largest accepted record value.
    pub max_record_bytes: Option<u64>,
}

/// Validated filter.
#[derive(Debug, Clone, Default)]
pub struct FilterConfig {
    /// Event-type field path.
    pub field: Option<Vec<String>>,
    /// Values to keep (empty: all).
    pub include: Vec<String>,
    /// Values to drop.
    pub exclude: Vec<String>,
    /// Field paths to remove.
    pub drop_fields: Vec<Vec<String>>,
}

/// One validated destination.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Name.
    pub name: String,
    /// Topics feeding it.
    pub topics: Vec<String>,
    /// Bucket.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Custom endpoint.
    pub endpoint: Option<String>,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
    /// Error folder, ending in `/`.
    pub error_prefix: String,
    /// Storage class.
    pub storage_class: Option<String>,
    /// `{app}`.
    pub app_name: String,
    /// `{source}` override.
    pub source_id: Option<String>,
    /// Content-Type.
    pub content_type: String,
    /// Whether to send `Content-Encoding: gzip`.
    pub content_encoding_header: bool,
    /// Credentials.
    pub credentials: Credentials,
    /// SSE.
    pub encryption: Encryption,
    /// Routing.
    pub routing: RoutingConfig,
    /// Rotation.
    pub batch: BatchConfig,
    /// Filters.
    pub filter: FilterConfig,
}

const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
];

/// librdkafka properties the connector owns; setting them in `[kafka.properties]` is an error.
const MANAGED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("group.id", "kafka.group_id"),
    (
        "enable.auto.commit",
        "nothing: offsets are committed only after upload",
    ),
    (
        "enable.auto.offset.store",
        "nothing: offsets are committed only after upload",
    ),
    ("session.timeout.ms", "kafka.session_timeout_ms"),
    ("max.poll.interval.ms", "kafka.max_poll_interval_ms"),
    ("auto.offset.reset", "kafka.auto_offset_reset"),
    ("client.id", "kafka.client_id"),
];

/// Reads, interpolates and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "--config",
            format!(
                "cannot read {}: {e}; pass an existing TOML file",
                path.display()
            ),
        )
    })?;
    parse(&text, &|name| std::env::var(name).ok())
}

/// Parses config text; `env` resolves `${VAR}` references (injected so tests stay pure).
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let msg = e.message().replace('\n', " ");
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(0);
        ConfigError::new(
            format!("line {line}"),
            format!("invalid TOML: {msg}; fix the syntax"),
        )
    })?;
    crate::interpolate::interpolate_table(&mut table, "", env)?;
    let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
        |e: serde_path_to_error::Error<toml::de::Error>| {
            let key = e.path().to_string();
            let msg = e.inner().message().replace('\n', " ");
            let fix = if msg.starts_with("unknown field") {
                "; remove it or fix its spelling (see README config reference)"
            } else if msg.starts_with("missing field") {
                "; add it (see README config reference)"
            } else {
                "; see README config reference"
            };
            ConfigError::new(
                if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                format!("{msg}{fix}"),
            )
        },
    )?;
    validate(raw)
}

/// Turns the raw config into typed values, checking every field and cross-field rule.
pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let kafka = validate_kafka(&raw.kafka)?;
    let p = &raw.pipeline;
    if p.memory_budget_bytes < 16 * 1024 * 1024 {
        return Err(ConfigError::new(
            "pipeline.memory_budget_bytes",
            "must be at least 16777216 (16 MiB)",
        ));
    }
    let pipeline = PipelineConfig {
        memory_budget_bytes: usize::try_from(p.memory_budget_bytes).map_err(|_| {
            ConfigError::new(
                "pipeline.memory_budget_bytes",
                "too large for this platform",
            )
        })?,
        drain_deadline: positive_secs("pipeline.drain_deadline_secs", p.drain_deadline_secs)?,
        workers: match p.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        },
        shutdown_deadline: positive_secs(
            "pipeline.shutdown_deadline_secs",
            p.shutdown_deadline_secs,
        )?,
    };
    if pipeline.workers > 256 || pipeline.memory_budget_bytes / pipeline.workers < 4 * 1024 * 1024 {
        return Err(ConfigError::new(
            "pipeline.workers",
            "each worker needs at least 4 MiB of memory_budget_bytes (and at most 256 workers); lower workers or raise the budget",
        ));
    }
    if pipeline.drain_deadline.as_millis() >= u128::from(raw.kafka.session_timeout_ms) {
        return Err(ConfigError::new(
            "pipeline.drain_deadline_secs",
            format!(
                "must be shorter than kafka.session_timeout_ms ({} ms), or the group evicts the worker while it drains; lower it or raise the session timeout",
                raw.kafka.session_timeout_ms
            ),
        ));
    }
    let upload = validate_upload(&raw.upload)?;
    let http = HttpConfig {
        listen: if raw.http.enabled {
            Some(raw.http.listen.parse().map_err(|_| {
                ConfigError::new(
                    "http.listen",
                    format!(
                        "{:?} is not an address; use host:port like 0.0.0.0:9464",
                        raw.http.listen
                    ),
                )
            })?)
        } else {
            None
        },
        unready_after: positive_secs(
            "http.unready_after_failing_secs",
            raw.http.unready_after_failing_secs,
        )?,
    };
    let log = LogConfig {
        level: raw.log.level.clone(),
        json: match raw.log.format.as_str() {
            "plain" => false,
            "json" => true,
            other => {
                return Err(ConfigError::new(
                    "log.format",
                    format!("unknown value {other:?}; use plain or json"),
                ))
            }
        },
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        return Err(ConfigError::new(
            "log.level",
            format!(
                "{:?} is not a log filter; use e.g. info or kafka_s3_sink=debug,info",
                log.level
            ),
        ));
    }
    if raw.destinations.is_empty() {
        return Err(ConfigError::new(
            "destinations",
            "at least one [[destinations]] entry is required",
        ));
    }
    let mut destinations = Vec::with_capacity(raw.destinations.len());
    for (i, d) in raw.destinations.iter().enumerate() {
        let dest = validate_destination(&format!("destinations[{i}]"), d, &raw.kafka.topics)?;
        if destinations
            .iter()
            .any(|o: &DestinationConfig| o.name == dest.name)
        {
            return Err(ConfigError::new(
                format!("destinations[{i}].name"),
                format!(
                    "duplicate destination name {:?}; names must be unique",
                    dest.name
                ),
            ));
        }
        destinations.push(dest);
    }
    Ok(Config {
        kafka,
        pipeline,
        upload,
        destinations,
        http,
        log,
        raw,
    })
}

fn positive_secs(key: &str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(ConfigError::new(key, "must be at least 1 (seconds)"));
    }
    Ok(Duration::from_secs(v))
}

fn validate_kafka(k: &RawKafka) -> Result<KafkaConfig, ConfigError> {
    if k.brokers.trim().is_empty() {
        return Err(ConfigError::new(
            "kafka.brokers",
            "must not be empty; set host:port[,host:port]",
        ));
    }
    if k.group_id.trim().is_empty() {
        return Err(ConfigError::new("kafka.group_id", "must not be empty"));
    }
    if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
        return Err(ConfigError::new(
            "kafka.topics",
            "list at least one non-empty topic name",
        ));
    }
    if !matches!(k.auto_offset_reset.as_str(), "earliest" | "latest") {
        return Err(ConfigError::new(
            "kafka.auto_offset_reset",
            format!(
                "unknown value {:?}; use earliest or latest",
                k.auto_offset_reset
            ),
        ));
    }
    let mut props = BTreeMap::new();
    props.insert("bootstrap.servers".to_string(), k.brokers.clone());
    props.insert("group.id".into(), k.group_id.clone());
    props.insert("client.id".into(), k.client_id.clone());
    props.insert("enable.auto.commit".into(), "false".into());
    props.insert("enable.auto.offset.store".into(), "false".into());
    props.insert("auto.offset.reset".into(), k.auto_offset_reset.clone());
    props.insert(
        "session.timeout.ms".into(),
        k.session_timeout_ms.to_string(),
    );
    props.insert(
        "max.poll.interval.ms".into(),
        k.max_poll_interval_ms.to_string(),
    );
    props.insert(
        "partition.assignment.strategy".into(),
        "cooperative-sticky".into(),
    );
    props.insert("enable.partition.eof".into(), "false".into());
    // Statistics feed the lag metrics; a smaller prefetch keeps memory near the budget.
    props.insert("statistics.interval.ms".into(), "5000".into());
    props.insert("queued.max.messages.kbytes".into(), "16384".into());
    for (name, value) in &k.properties {
        let key = format!("kafka.properties.\"{name}\"");
        if let Some((_, instead)) = MANAGED_PROPERTIES.iter().find(|(p, _)| p == name) {
            return Err(ConfigError::new(
                key,
                format!("is managed by the connector; set {instead} instead"),
            ));
        }
        let v = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(ConfigError::new(key, "must be a string, number or boolean")),
        };
        props.insert(name.clone(), v);
    }
    Ok(KafkaConfig {
        topics: k.topics.clone(),
        group_id: k.group_id.clone(),
        properties: props,
    })
}

fn validate_upload(u: &RawUpload) -> Result<UploadConfig, ConfigError> {
    const MIN_PART: u64 = 5 * 1024 * 1024;
    const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
    if !(MIN_PART..=MAX_PART).contains(&u.part_size_bytes) {
        return Err(ConfigError::new(
            "upload.part_size_bytes",
            "must be between 5242880 (5 MiB, S3's minimum part) and 5368709120 (5 GiB)",
        ));
    }
    let concurrency = NonZeroUsize::new(u.concurrency)
        .ok_or_else(|| ConfigError::new("upload.concurrency", "must be at least 1"))?;
    if u.retry_initial_backoff_ms == 0 || u.retry_max_backoff_ms < u.retry_initial_backoff_ms {
        return Err(ConfigError::new(
            "upload.retry_max_backoff_ms",
            "retry_initial_backoff_ms must be ≥ 1 and ≤ retry_max_backoff_ms",
        ));
    }
    Ok(UploadConfig {
        part_size_bytes: u.part_size_bytes as usize,
        concurrency,
        request_timeout: positive_secs("upload.request_timeout_secs", u.request_timeout_secs)?,
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(u.retry_initial_backoff_ms),
            max_backoff: Duration::from_millis(u.retry_max_backoff_ms),
            max_attempts: (u.retry_max_attempts > 0).then_some(u.retry_max_attempts),
        },
    })
}

fn split_path(key: &str, path: &str) -> Result<Vec<String>, ConfigError> {
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            key,
            format!("invalid field path {path:?}; use dotted names like context.sent_at"),
        ));
    }
    Ok(parts)
}

fn validate_destination(
    at: &str,
    d: &RawDestination,
    kafka_topics: &[String],
) -> Result<DestinationConfig, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    if d.name.trim().is_empty() {
        return Err(ConfigError::new(key("name"), "must not be empty"));
    }
    if d.bucket.trim().is_empty() || d.bucket.contains('/') {
        return Err(ConfigError::new(
            key("bucket"),
            "set a bucket name (no slashes; put folders in `prefix`)",
        ));
    }
    let topics = if d.topics.is_empty() {
        kafka_topics.to_vec()
    } else {
        for t in &d.topics {
            if !kafka_topics.contains(t) {
                return Err(ConfigError::new(
                    key("topics"),
                    format!("topic {t:?} is not in kafka.topics; subscribe to it there too"),
                ));
            }
        }
        d.topics.clone()
    };
    if let Some(ep) = &d.endpoint {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return Err(ConfigError::new(
                key("endpoint"),
                format!("{ep:?} must start with http:// or https://"),
            ));
        }
    }
    if let Some(sc) = &d.storage_class {
        if !STORAGE_CLASSES.contains(&sc.as_str()) {
            return Err(ConfigError::new(
                key("storage_class"),
                format!(
                    "unknown storage class {sc:?}; use one of {}",
                    STORAGE_CLASSES.join(", ")
                ),
            ));
        }
    }
    let encryption = match d.encryption.mode.as_str() {
        "none" | "" => Encryption::None,
        "AES256" | "AES-256" => Encryption::Aes256,
        "aws:kms" => Encryption::Kms {
            key_id: d.encryption.kms_key_id.clone(),
        },
        other => {
            return Err(ConfigError::new(
                key("encryption.mode"),
                format!("unknown value {other:?}; use none, AES256 or aws:kms"),
            ))
        }
    };
    if d.encryption.kms_key_id.is_some() && !matches!(encryption, Encryption::Kms { .. }) {
        return Err(ConfigError::new(
            key("encryption.kms_key_id"),
            "is only used with mode = \"aws:kms\"; set the mode or remove the key id",
        ));
    }
    let c = &d.credentials;
    let static_keys = match (&c.access_key_id, &c.secret_access_key) {
        (Some(a), Some(s)) => Some((a.clone(), s.clone(), c.session_token.clone())),
        (None, None) => None,
        _ => {
            return Err(ConfigError::new(
                key("credentials"),
                "set both access_key_id and secret_access_key, or neither (default AWS chain)",
            ))
        }
    };
    let credentials = Credentials {
        static_keys,
        role_arn: c.role_arn.clone(),
        external_id: c.external_id.clone(),
    };
    let routing = validate_routing(at, &d.routing)?;
    let batch = validate_batch(at, &d.batch)?;
    let filter = FilterConfig {
        field: d
            .filter
            .field
            .as_deref()
            .map(|f| split_path(&key("filter.field"), f))
            .transpose()?,
        include: d.filter.include.clone(),
        exclude: d.filter.exclude.clone(),
        drop_fields: d
            .filter
            .drop_fields
            .iter()
            .map(|f| split_path(&key("filter.drop_fields"), f))
            .collect::<Result<_, _>>()?,
    };
    if filter.field.is_none() && !(filter.include.is_empty() && filter.exclude.is_empty()) {
        return Err(ConfigError::new(
            key("filter.field"),
            "include/exclude need the event-type field; set field = \"type\" (or \"event\")",
        ));
    }
    Ok(DestinationConfig {
        name: d.name.clone(),
        topics,
        bucket: d.bucket.clone(),
        region: d.region.clone(),
        endpoint: d.endpoint.clone(),
        force_path_style: d.force_path_style,
        prefix: normalize_folder(&d.prefix),
        error_prefix: normalize_folder(&d.error_prefix),
        storage_class: d.storage_class.clone(),
        app_name: d.app_name.clone(),
        source_id: d.source_id.clone(),
        content_type: d.content_type.clone(),
        content_encoding_header: d.content_encoding_header,
        credentials,
        encryption,
        routing,
        batch,
        filter,
    })
}

/// `a/b` → `a/b/`, `/x/` → `x/`, empty stays empty.
fn normalize_folder(p: &str) -> String {
    let t = p.trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}/")
    }
}

fn validate_routing(at: &str, r: &RawRouting) -> Result<RoutingConfig, ConfigError> {
    let key = |k: &str| format!("{at}.routing.{k}");
    let format = match r.time_format.as_str() {
        "auto" => TimeFormat::Auto,
        "rfc3339" => TimeFormat::Rfc3339,
        "epoch_seconds" => TimeFormat::EpochSeconds,
        "epoch_millis" => TimeFormat::EpochMillis,
        other => {
            return Err(ConfigError::new(
                key("time_format"),
                format!(
                    "unknown value {other:?}; use auto, rfc3339, epoch_seconds or epoch_millis"
                ),
            ))
        }
    };
    let path = || split_path(&key("time_field"), &r.time_field);
    let time_source = match r.time_source.as_str() {
        "event_time" => TimeSource::EventTime {
            path: path()?,
            format,
        },
        "event_time_or_upload_time" => TimeSource::EventTimeOrUploadTime {
            path: path()?,
            format,
        },
        "kafka_timestamp" => TimeSource::KafkaTimestamp,
        "upload_time" => TimeSource::UploadTime,
        "none" => TimeSource::None,
        other => return Err(ConfigError::new(
            key("time_source"),
            format!("unknown value {other:?}; use event_time, kafka_timestamp, upload_time, event_time_or_upload_time or none"),
        )),
    };
    let granularity = match r.granularity.as_str() {
        "record" => Granularity::Record,
        "first_event" => Granularity::FirstEvent,
        other => {
            return Err(ConfigError::new(
                key("granularity"),
                format!("unknown value {other:?}; use record or first_event"),
            ))
        }
    };
    let timezone: chrono_tz::Tz = r.timezone.parse().map_err(|_| {
        ConfigError::new(
            key("timezone"),
            format!(
                "unknown timezone {:?}; use an IANA name like UTC or Europe/Berlin",
                r.timezone
            ),
        )
    })?;
    let folder = FolderTemplate::parse(&r.folder_template)
        .map_err(|m| ConfigError::new(key("folder_template"), m))?;
    if time_source == TimeSource::None && folder.uses_time() {
        return Err(ConfigError::new(
            key("folder_template"),
            "uses date directives but time_source is none; remove the % directives or pick a time source",
        ));
    }
    let file = FileTemplate::parse(&r.file_template)
        .map_err(|m| ConfigError::new(key("file_template"), m))?;
    Ok(RoutingConfig {
        time_source,
        granularity,
        timezone,
        folder,
        file,
        max_future: (r.max_future_secs > 0).then(|| Duration::from_secs(r.max_future_secs)),
        max_past: (r.max_past_secs > 0).then(|| Duration::from_secs(r.max_past_secs)),
    })
}

fn validate_batch(at: &str, b: &RawBatch) -> Result<BatchConfig, ConfigError> {
    let key = |k: &str| format!("{at}.batch.{k}");
    let compression = match b.compression.as_str() {
        "none" => Compression::None,
        "gzip" => {
            if b.compression_level > 9 {
                return Err(ConfigError::new(
                    key("compression_level"),
                    "gzip level must be 0–9",
                ));
            }
            Compression::Gzip {
                level: b.compression_level,
            }
        }
        other => {
            return Err(ConfigError::new(
                key("compression"),
                format!("unknown value {other:?}; use gzip or none"),
            ))
        }
    };
    if b.max_bytes < 1024 {
        return Err(ConfigError::new(key("max_bytes"), "must be at least 1024"));
    }
    if b.max_records == 0 {
        return Err(ConfigError::new(key("max_records"), "must be at least 1"));
    }
    Ok(BatchConfig {
        compression,
        max_bytes: b.max_bytes,
        max_records: b.max_records,
        max_age: positive_secs(&key("max_age_secs"), b.max_age_secs)?,
        idle: positive_secs(&key("idle_secs"), b.idle_secs)?,
        max_record_bytes: (b.max_record_bytes > 0).then_some(b.max_record_bytes),
    })
}

/// The resolved config as TOML with every secret redacted (for `check-config`).
pub fn render_redacted(raw: &RawConfig) -> String {
    let mut raw = raw.clone();
    for (k, v) in raw.kafka.properties.iter_mut() {
        let lk = k.to_ascii_lowercase();
        if ["password", "secret", "token", "key"]
            .iter()
            .any(|s| lk.contains(s) && !lk.ends_with(".location"))
        {
            *v = toml::Value::String("<redacted>".into());
        }
    }
    toml::to_string_pretty(&raw).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

#[cfg(test)]
mod tests;
