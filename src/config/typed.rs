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
