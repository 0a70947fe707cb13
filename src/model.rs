//! Domain types shared by every stage: topic-partitions, offsets and consumed records.
//!
//! These types are free of rdkafka and AWS SDK types so the router, batcher and offset tracker can
//! be tested as plain values.

use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

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
    /// [`crate::envelope::headers_json`]); collected only when a destination writes Kafka
    /// metadata, else `None`.
    pub headers: Option<Bytes>,
}

impl Record {
    /// Size of the value in bytes (0 for a tombstone).
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, Bytes::len)
    }
}
