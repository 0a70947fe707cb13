//! Domain types and vocabulary shared by every stage: topic-partitions, offsets and consumed
//! records, and the small closed sets the stages hand each other and label metrics with (why a
//! record was quarantined, which folder a file is for, a Parquet cell, why a file was flushed,
//! how an S3 request failed).
//!
//! Invariant: this module imports no other module of the crate but its own [`json`] writers, so
//! every stage (and the metrics that observe them) can depend on it without depending on another
//! stage. These types are free of rdkafka and AWS SDK types so the router, batcher and offset
//! tracker can be tested as plain values.

use bytes::Bytes;
use chrono::NaiveDateTime;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub mod json;

/// A Kafka topic and partition.
#[derive(Debug, Clone, Eq, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name (shared, since every record carries it).
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// Builds a topic-partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl PartialEq for TopicPartition {
    /// Same content; the shared topic name is compared by pointer first (every record of a
    /// partition carries a clone of one `Arc`), by content only when the pointers differ.
    fn eq(&self, other: &Self) -> bool {
        self.partition == other.partition
            && (Arc::ptr_eq(&self.topic, &other.topic) || self.topic == other.topic)
    }
}

impl std::hash::Hash for TopicPartition {
    /// By content, consistent with `eq`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.topic.hash(state);
        self.partition.hash(state);
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// The wall clock the data path reads (the router's time window and upload-time folders, the
/// upload time in object keys): [`system_clock`] in production, a fixed or stepped time in tests,
/// which then need no sleeps.
pub type Clock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> Clock {
    Arc::new(chrono::Utc::now)
}

/// One record as consumed from Kafka, detached from the client's buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where it came from.
    pub tp: TopicPartition,
    /// Its offset in the partition.
    pub offset: i64,
    /// Kafka timestamp in epoch milliseconds (create or log-append time), if the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// The record key, if any.
    pub key: Option<Bytes>,
    /// The record value; `None` for a tombstone. Usually a slice of its chunk's buffer (see
    /// [`crate::source::ChunkBuilder`]): one allocation per chunk, not per record.
    pub value: Option<Bytes>,
    /// The record's headers as a JSON array (`[{"key":"…","value":"…"}]`, see
    /// [`crate::source::headers_json`]); collected only when a destination writes Kafka
    /// metadata, else `None`.
    pub headers: Option<Bytes>,
}

impl Record {
    /// Size of the value in bytes (0 for a tombstone).
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, Bytes::len)
    }
}

/// Why a record was quarantined. A small fixed set: it is a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuarantineReason {
    /// Null value (Kafka tombstone).
    Tombstone,
    /// Zero-length value.
    Empty,
    /// Value is not valid UTF-8.
    InvalidUtf8,
    /// Value is not JSON (or nests deeper than the parser allows).
    NotJson,
    /// JSON, but not an object.
    NotObject,
    /// Objects/arrays nested deeper than the scanner accepts.
    TooDeep,
    /// The event-time field is absent.
    MissingTime,
    /// The event-time field cannot be read as a time.
    BadTime,
    /// The time source is the Kafka timestamp and the record has none.
    NoKafkaTimestamp,
    /// The record's time is outside the accepted window (`max_future_secs` / `max_past_secs`).
    TimeOutOfRange,
    /// The value is larger than `max_record_bytes`.
    TooLarge,
    /// A value does not fit its declared Parquet column's type (or a required one is missing).
    SchemaMismatch,
    /// A destination reads the Confluent wire format and the value lacks its magic byte and
    /// schema id.
    NotFramed,
    /// The Schema Registry has no schema with the value's id (or the schema does not parse).
    UnknownSchema,
    /// The value does not decode against its schema.
    Undecodable,
}

impl QuarantineReason {
    /// Every reason (to initialise metric series at zero).
    pub const ALL: [Self; 15] = [
        Self::Tombstone,
        Self::Empty,
        Self::InvalidUtf8,
        Self::NotJson,
        Self::NotObject,
        Self::TooDeep,
        Self::MissingTime,
        Self::BadTime,
        Self::NoKafkaTimestamp,
        Self::TimeOutOfRange,
        Self::TooLarge,
        Self::SchemaMismatch,
        Self::NotFramed,
        Self::UnknownSchema,
        Self::Undecodable,
    ];

    /// Stable name used in error folders and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tombstone => "tombstone",
            Self::Empty => "empty",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::NotJson => "not_json",
            Self::NotObject => "not_object",
            Self::TooDeep => "too_deep",
            Self::MissingTime => "missing_time",
            Self::BadTime => "bad_time",
            Self::NoKafkaTimestamp => "no_kafka_timestamp",
            Self::TimeOutOfRange => "time_out_of_range",
            Self::TooLarge => "too_large",
            Self::SchemaMismatch => "schema_mismatch",
            Self::NotFramed => "not_framed",
            Self::UnknownSchema => "unknown_schema",
            Self::Undecodable => "undecodable",
        }
    }
}

/// Where a written record's folder comes from. The second member identifies the values of the
/// folder template's `{field:…}` placeholders (the XXH3-128 of the sanitised values; 0 without
/// such placeholders), so records with other values go to other files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FolderKey {
    /// Known now: the folder template's slot (None: template without dates).
    Slot(Option<NaiveDateTime>, u128),
    /// Decided when the file is sealed (first-event or upload-time dating).
    AtSeal(u128),
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// Missing, or JSON null.
    Null,
    /// For string and json columns.
    Str(Cow<'a, str>),
    /// For int64 columns.
    Int(i64),
    /// For double columns.
    Float(f64),
    /// For bool columns.
    Bool(bool),
    /// For timestamp columns: microseconds since the epoch, UTC.
    Micros(i64),
}

/// Why a file was closed. A small fixed set: it is a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushReason {
    /// Compressed size reached `max_bytes`.
    Size,
    /// Record count reached `max_records`.
    Records,
    /// First record older than `max_age_secs`.
    Age,
    /// No record for `idle_secs`.
    Idle,
    /// The memory budget forced it.
    Memory,
    /// `max_open_files` files were open and this one was written least recently.
    OpenFiles,
    /// Its partition is being revoked.
    Revoke,
    /// The worker is shutting down.
    Shutdown,
    /// Its destination's commit is due (an Iceberg table closes its data files every
    /// `commit_interval_secs`, so each commit takes every record read before it).
    Commit,
    /// Its destination's columns grew with a new schema (`columns = "from_schema"`): later
    /// records go to files with the new columns.
    Schema,
}

impl FlushReason {
    /// Every reason (to initialise metric series at zero).
    pub const ALL: [Self; 10] = [
        Self::Size,
        Self::Records,
        Self::Age,
        Self::Idle,
        Self::Memory,
        Self::OpenFiles,
        Self::Revoke,
        Self::Shutdown,
        Self::Commit,
        Self::Schema,
    ];

    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Records => "records",
            Self::Age => "age",
            Self::Idle => "idle",
            Self::Memory => "memory",
            Self::OpenFiles => "open_files",
            Self::Revoke => "revoke",
            Self::Shutdown => "shutdown",
            Self::Commit => "commit",
            Self::Schema => "schema",
        }
    }
}

/// Coarse class of a failed request, for retry decisions and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 429/503 SlowDown and similar.
    Throttle,
    /// Other 5xx.
    Server,
    /// The request timed out.
    Timeout,
    /// Connection refused, reset or DNS failure.
    Network,
    /// A 4xx the store will answer the same way again for this object (e.g. NoSuchUpload).
    Permanent,
    /// A conditional write found the key taken (412 PreconditionFailed, 409
    /// ConditionalRequestConflict): the uploader resolves it, never by blind retry.
    Conflict,
    /// The store can never accept this request as formed (KeyTooLong, InvalidArgument,
    /// EntityTooLarge…): retrying, or restarting, would fail the same way. The worker stops with
    /// S3's answer in the error; the configuration (or the store) must change.
    Invalid,
    /// Any other client-side or 4xx error (credentials, bucket missing): retried, as an
    /// operator can fix it while the worker waits.
    Other,
}

impl ErrorKind {
    /// Every kind (to initialise metric series at zero).
    pub const ALL: [Self; 8] = [
        Self::Throttle,
        Self::Server,
        Self::Timeout,
        Self::Network,
        Self::Permanent,
        Self::Conflict,
        Self::Invalid,
        Self::Other,
    ];

    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::Server => "5xx",
            Self::Timeout => "timeout",
            Self::Network => "network",
            Self::Permanent => "permanent",
            Self::Conflict => "conflict",
            Self::Invalid => "invalid",
            Self::Other => "other",
        }
    }

    /// Whether retrying the same request can succeed.
    pub fn retryable(self) -> bool {
        !matches!(self, Self::Permanent | Self::Conflict | Self::Invalid)
    }
}

/// Labels of the ways the uploader resolves an object key that a conditional write found taken
/// (`upload::Resolution::label`): a metrics label set, initialised at zero per destination.
pub const KEY_CONFLICT_LABELS: [&str; 6] = [
    "own_attempt",
    "identical",
    "covered",
    "superseded",
    "written_aside",
    "moved_aside",
];
