//! The validated configuration the connector runs on: typed values (durations, enums, parsed
//! templates), produced only by [`super::validate`].

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use super::{RawConfig, Secret};
use crate::template::{FileTemplate, FolderTemplate};

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
    /// The secret values the file holds or references, to scrub from every log line and error
    /// (set by [`super::parse`]; empty from [`super::validate`] alone).
    pub secrets: crate::redact::Secrets,
}

impl Config {
    /// How the budget is shared out: the schema cache's share first (`[kafka.schema_registry]`),
    /// the rest between the fetch path and the files (`budget::plan`).
    pub fn plan(&self) -> crate::budget::Plan {
        crate::budget::plan(
            self.pipeline.memory_budget_bytes - super::validate::schema_cache_bytes(&self.kafka),
            self.pipeline.workers,
        )
    }
}

/// Validated `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address, `None` when disabled.
    pub listen: Option<std::net::SocketAddr>,
    /// Failing-uploads time after which the worker is not ready.
    pub unready_after: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
}

/// Validated `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// tracing filter.
    pub level: String,
    /// JSON lines instead of plain text.
    pub json: bool,
}

/// Validated `[kafka]`. Its `Debug` redacts sensitive properties.
#[derive(Clone)]
pub struct KafkaConfig {
    /// Topics to subscribe to (names and patterns).
    pub topics: TopicSet,
    /// Group id.
    pub group_id: String,
    /// Every librdkafka property to set, ours and the user's.
    pub properties: BTreeMap<String, String>,
    /// Settings that work but weaken security (e.g. SASL without TLS), for `check-config`
    /// and the start-up log.
    pub warnings: Vec<String>,
    /// SASL OAUTHBEARER with MSK IAM tokens (`sasl_mechanism = "AWS_MSK_IAM"`).
    pub msk_iam: Option<MskIamConfig>,
    /// The Schema Registry (`[kafka.schema_registry]`), if set.
    pub schema_registry: Option<super::registry::SchemaRegistryConfig>,
}

/// Where the MSK IAM token's credentials come from: the AWS default chain, or a role assumed
/// with it, for the cluster's region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskIamConfig {
    /// The cluster's region (the token is signed for it).
    pub region: String,
    /// A role to assume for the credentials.
    pub role_arn: Option<String>,
    /// STS session name when assuming `role_arn` (per replica: the pod name).
    pub session_name: String,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("topics", &self.topics.entries())
            .field("group_id", &self.group_id)
            .field("properties", &super::RedactedProperties(&self.properties))
            .field("msk_iam", &self.msk_iam)
            .field("schema_registry", &self.schema_registry)
            .finish()
    }
}

/// Topics as configured: exact names, and patterns (entries starting with `^`, regular
/// expressions matched against whole topic names, as librdkafka subscribes to them).
#[derive(Debug, Clone)]
pub struct TopicSet {
    entries: Vec<String>,
    names: Vec<String>,
    patterns: Vec<regex::Regex>,
}

impl TopicSet {
    /// Parses `entries` (for the error, `key` names the list).
    pub fn parse(key: &str, entries: &[String]) -> Result<Self, super::ConfigError> {
        let mut names = Vec::new();
        let mut patterns = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if e.trim().is_empty() {
                return Err(super::ConfigError::new(
                    format!("{key}[{i}]"),
                    "must not be empty; list topic names or ^patterns",
                ));
            }
            if e.starts_with('^') {
                let re = regex::Regex::new(e).map_err(|err| {
                    let why = err.to_string().replace('\n', " ");
                    super::ConfigError::new(
                        format!("{key}[{i}]"),
                        format!("{e:?} is not a valid pattern ({why}); a topic starting with ^ is a regular expression"),
                    )
                })?;
                patterns.push(re);
            } else {
                names.push(e.clone());
            }
        }
        Ok(Self {
            entries: entries.to_vec(),
            names,
            patterns,
        })
    }

    /// The entries as written (what the consumer subscribes to).
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// Whether records of `topic` belong to this set.
    pub fn matches(&self, topic: &str) -> bool {
        self.names.iter().any(|n| n == topic) || self.patterns.iter().any(|p| p.is_match(topic))
    }

    /// The exact names, when there is no pattern.
    pub fn exact(&self) -> Option<&[String]> {
        self.patterns.is_empty().then_some(&self.names[..])
    }

    /// Whether `entry` is one of the entries as written.
    pub fn has_entry(&self, entry: &str) -> bool {
        self.entries.iter().any(|e| e == entry)
    }
}

impl PartialEq for TopicSet {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl DestinationConfig {
    /// What this destination's key placeholders can hold (for the longest key and the key
    /// pattern, see `template/shape.rs`).
    pub fn key_shape(&self) -> crate::template::KeyShape<'_> {
        crate::template::KeyShape {
            topics: self.topics.exact(),
            source: self.source_id.as_deref(),
            destination: &self.name,
            app: &self.app_name,
        }
    }
}

impl DestinationConfig {
    /// Whether values or keys are read through the Schema Registry.
    pub fn reads_registry(&self) -> bool {
        self.value_format.framed() || self.key_format.decoded_as().is_some()
    }

    /// Suffix every data file name ends with: the compression's for NDJSON, none for Parquet
    /// (its columns are compressed inside the file).
    pub fn data_suffix(&self) -> &'static str {
        match self.parquet {
            Some(_) => "",
            None => self.batch.compression.suffix(),
        }
    }
}

impl BatchConfig {
    /// Most uncompressed bytes an object of this destination can hold, with a wide margin:
    /// 64 × `max_bytes` (objects close at `max_bytes` compressed, and NDJSON rarely compresses
    /// past 20:1), at least 1 GiB. Reading an existing object (`verify`, a key found taken)
    /// stops there, so a decompression bomb in the bucket is an error, not an OOM or an
    /// endless read.
    pub fn max_object_raw_bytes(&self) -> u64 {
        self.max_bytes.saturating_mul(64).max(1 << 30)
    }

    /// Longest line an object of this destination can hold: a quarantined record of
    /// `max_record_bytes` as base64 in its envelope (4/3 of it, plus 64 KiB); 1 GiB without a
    /// record limit.
    pub fn max_line_bytes(&self) -> u64 {
        self.max_record_bytes
            .map_or(1 << 30, |m| m.saturating_mul(4) / 3 + (64 << 10))
    }
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
    /// Files each worker keeps open at most.
    pub max_open_files: usize,
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
    /// Start-up cleanup: abort multipart uploads older than this (`None`: off).
    pub orphan_min_age: Option<Duration>,
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
        /// Use an S3 Bucket Key.
        bucket_key: bool,
        /// Encryption context as S3 takes it: base64 of its JSON object.
        context: Option<String>,
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
    /// Session name of the assumed role.
    pub role_session_name: String,
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
    /// zstd at a level 1–19, one frame per object.
    Zstd {
        /// Level.
        level: i32,
    },
}

/// gzip level when `compression_level` is not set: the usual `gzip` default.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// zstd level of NDJSON files and of Parquet columns when `compression_level` is not set.
/// Level 1: end to end on event JSON it is the fastest zstd level and compresses better than
/// levels 2 and 3 (BENCHMARKS.md, "Codecs").
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

impl std::fmt::Display for Compression {
    /// `none`, `gzip level 6`, `zstd level 1`: what a summary prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Gzip { level } => write!(f, "gzip level {level}"),
            Compression::Zstd { level } => write!(f, "zstd level {level}"),
        }
    }
}

impl Compression {
    /// File-name suffix every object of this compression ends with.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => ".gz",
            Compression::Zstd { .. } => ".zst",
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
    /// Offset-window files and window-aligned commits.
    pub deterministic: bool,
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

/// `payload_signing`: whether a write's SigV4 signature covers its body's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadSigning {
    /// Only over plain `http://`. Over TLS the body is protected in transit, and S3 checks the
    /// CRC32 checksum the SDK sends with every write, so hashing each body once more for the
    /// signature only costs CPU (boto3, the Java SDK 2.x and the JavaScript SDK do not sign S3
    /// bodies over HTTPS either); over plain HTTP the signature is its only tamper-proof check.
    Auto,
    /// Always (for stores that refuse `UNSIGNED-PAYLOAD`).
    Signed,
    /// Never.
    Unsigned,
}

impl PayloadSigning {
    /// Whether writes to `endpoint` (`None`: AWS's own, https) sign their bodies.
    pub fn signs(self, endpoint: Option<&str>) -> bool {
        match self {
            Self::Auto => endpoint.is_some_and(|e| !e.starts_with("https://")),
            Self::Signed => true,
            Self::Unsigned => false,
        }
    }
}

/// One validated destination.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Name.
    pub name: String,
    /// Topics feeding it (names and patterns).
    pub topics: TopicSet,
    /// How record values are read (JSON text, or through the Schema Registry).
    pub value_format: super::registry::ValueFormat,
    /// How record keys are read for the Kafka metadata (raw, or through the Schema Registry).
    pub key_format: super::registry::KeyFormat,
    /// Bucket.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Custom endpoint.
    pub endpoint: Option<String>,
    /// Extra CA certificates (PEM file) to trust for HTTPS, checked at start-up.
    pub ca_file: Option<String>,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// Whether request signatures cover the body's SHA-256 (`payload_signing`).
    pub payload_signing: PayloadSigning,
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
    /// Conditional writes (`If-None-Match: *`).
    pub conditional_writes: bool,
    /// Member name of the Kafka metadata added to each line, if any.
    pub kafka_metadata_field: Option<String>,
    /// Account id the bucket must belong to (sent with every request).
    pub expected_bucket_owner: Option<String>,
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
    /// Declared Parquet columns: set when data files are Parquet (`batch.format`).
    pub parquet: Option<std::sync::Arc<super::ParquetConfig>>,
    /// The Iceberg table the data files are appended to (None: objects under the prefix).
    pub iceberg: Option<std::sync::Arc<super::iceberg::IcebergConfig>>,
}
