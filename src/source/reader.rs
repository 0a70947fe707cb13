//! Read-only Kafka access for audits (`verify`): partitions of a topic, watermarks, a group's
//! committed offsets, and the records of fixed offset ranges, through a consumer that is
//! assigned partitions and never joins, commits for or otherwise disturbs the group.
//!
//! Invariants: every call to Kafka has a bounded wait (a reader that makes no progress for
//! [`ReaderOptions::timeout`] fails with [`ReaderError::Stalled`] instead of hanging); only
//! domain types ([`TopicPartition`], [`Record`]) cross this file's boundary.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::msk_iam::{AuthContext, MskIamAuth};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::KafkaConfig;
use crate::model::{Record, TopicPartition};

/// Why a read-only Kafka request failed.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// librdkafka refused the configuration (`[kafka]` / `[kafka.properties]`).
    #[error("kafka client configuration: {0}")]
    Config(String),
    /// Kafka did not answer a request in time, or answered with an error.
    #[error("kafka {what}: {message}")]
    Request {
        /// What was asked.
        what: String,
        /// Kafka's answer.
        message: String,
    },
    /// The topic does not exist (or is not visible with these credentials).
    #[error("topic `{topic}` does not exist in kafka ({message})")]
    UnknownTopic {
        /// Topic.
        topic: String,
        /// Kafka's error.
        message: String,
    },
    /// Reading made no progress for too long.
    #[error("no record from kafka for {secs} s while reading {pending} partition(s), e.g. {example} (reading to offset {to})")]
    Stalled {
        /// Seconds waited.
        secs: u64,
        /// Partitions not finished.
        pending: usize,
        /// One of them.
        example: TopicPartition,
        /// Its end offset (exclusive).
        to: i64,
    },
}

/// Settings of a [`RangeReader`].
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Longest wait for any request, and for progress while reading.
    pub timeout: Duration,
    /// librdkafka's prefetch queue (`queued.max.messages.kbytes`): bounds the reader's memory.
    pub queue_kbytes: usize,
}

/// One partition's offset range to read: `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRange {
    /// Partition.
    pub tp: TopicPartition,
    /// First offset.
    pub from: i64,
    /// End offset (exclusive).
    pub to: i64,
}

/// A read-only consumer. Blocking: call it from a blocking thread.
pub struct RangeReader {
    consumer: BaseConsumer<AuthContext>,
    timeout: Duration,
}

fn request(what: impl Into<String>, e: KafkaError) -> ReaderError {
    ReaderError::Request {
        what: what.into(),
        message: e.to_string(),
    }
}

impl RangeReader {
    /// A consumer with the config's brokers, group id and properties (security settings), with
    /// auto-commit off and a prefetch queue of `queue_kbytes`.
    pub fn connect(cfg: &KafkaConfig, opts: &ReaderOptions) -> Result<Self, ReaderError> {
        let mut cc = ClientConfig::new();
        for (k, v) in &cfg.properties {
            cc.set(k, v);
        }
        cc.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("statistics.interval.ms", "0")
            .set("auto.offset.reset", "earliest")
            .set(
                "queued.max.messages.kbytes",
                opts.queue_kbytes.max(1024).to_string(),
            );
        let auth = match &cfg.msk_iam {
            Some(m) => Some(MskIamAuth::new(m).map_err(|e| ReaderError::Config(e.to_string()))?),
            None => None,
        };
        let consumer: BaseConsumer<AuthContext> = cc
            .create_with_context(AuthContext::new(auth))
            .map_err(|e| {
                ReaderError::Config(match super::kafka::property_error(&e) {
                    Some(p) => p.to_string(),
                    None => e.to_string(),
                })
            })?;
        AuthContext::first_token(&consumer, opts.timeout);
        Ok(Self {
            consumer,
            timeout: opts.timeout,
        })
    }

    /// Every topic name in the cluster's metadata, sorted (to expand subscription patterns).
    pub fn topic_names(&self) -> Result<Vec<String>, ReaderError> {
        let md = self
            .consumer
            .fetch_metadata(None, self.timeout)
            .map_err(|e| request("metadata of all topics", e))?;
        let mut out: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Partition numbers of `topic`, sorted.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, ReaderError> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(|e| request(format!("metadata of `{topic}`"), e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(ReaderError::UnknownTopic {
                topic: topic.into(),
                message: "absent from the metadata".into(),
            });
        };
        if let Some(err) = t.error() {
            return Err(ReaderError::UnknownTopic {
                topic: topic.into(),
                message: format!("{err:?}"),
            });
        }
        let mut out: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// (log start, high watermark) of a partition.
    pub fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64), ReaderError> {
        self.consumer
            .fetch_watermarks(&tp.topic, tp.partition, self.timeout)
            .map_err(|e| request(format!("watermarks of {tp}"), e))
    }

    /// The group's committed offset ("next to read") of each partition, index-aligned with
    /// `tps`; `None` where the group never committed.
    pub fn committed(&self, tps: &[TopicPartition]) -> Result<Vec<Option<i64>>, ReaderError> {
        let mut tpl = TopicPartitionList::new();
        for tp in tps {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        // Right after start the group coordinator may not be known yet: retry until the timeout.
        let deadline = Instant::now() + self.timeout;
        let got = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.consumer.committed_offsets(tpl.clone(), left) {
                Ok(got) => break got,
                Err(e) if Instant::now() + Duration::from_millis(200) < deadline => {
                    tracing::debug!(error = %e, "committed offsets not available yet; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(request("committed offsets of the group", e)),
            }
        };
        let mut by_tp: HashMap<(String, i32), Option<i64>> = HashMap::new();
        for e in got.elements() {
            let off = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            by_tp.insert((e.topic().to_string(), e.partition()), off);
        }
        Ok(tps
            .iter()
            .map(|tp| {
                by_tp
                    .get(&(tp.topic.to_string(), tp.partition))
                    .copied()
                    .flatten()
            })
            .collect())
    }

    /// Reads every record of `ranges` (empty ranges are skipped) and hands each to `f`, in
    /// offset order per partition. Returns when every range is read to its end (or Kafka has
    /// nothing more below it: compacted or transactional gaps), or fails when nothing arrives
    /// for the timeout.
    pub fn read<E: From<ReaderError>>(
        &self,
        ranges: &[OffsetRange],
        mut f: impl FnMut(&Record) -> Result<(), E>,
    ) -> Result<(), E> {
        let ranges: Vec<&OffsetRange> = ranges.iter().filter(|r| r.from < r.to).collect();
        if ranges.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        let mut pending: HashMap<(Arc<str>, i32), i64> = HashMap::new();
        for r in &ranges {
            tpl.add_partition_offset(&r.tp.topic, r.tp.partition, Offset::Offset(r.from))
                .map_err(|e| request(format!("offset {} of {}", r.from, r.tp), e))?;
            pending.insert((r.tp.topic.clone(), r.tp.partition), r.to);
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| request("assign partitions", e))?;
        let topics: Vec<Arc<str>> = ranges.iter().map(|r| r.tp.topic.clone()).collect();
        let mut last_progress = Instant::now();
        let mut done: Vec<(Arc<str>, i32)> = Vec::new();
        while !pending.is_empty() {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let Some(topic) = topics.iter().find(|t| t.as_ref() == m.topic()) else {
                        continue;
                    };
                    let key = (topic.clone(), m.partition());
                    let Some(&to) = pending.get(&key) else {
                        continue;
                    };
                    if m.offset() < to {
                        let rec = Record {
                            tp: TopicPartition::new(topic.clone(), m.partition()),
                            offset: m.offset(),
                            timestamp_ms: m.timestamp().to_millis(),
                            key: m.key().map(bytes::Bytes::copy_from_slice),
                            value: m.payload().map(bytes::Bytes::copy_from_slice),
                            headers: Some(bytes::Bytes::from({
                                use rdkafka::message::Headers;
                                match m.headers() {
                                    Some(h) => crate::source::headers_json(
                                        h.iter().map(|h| (h.key, h.value)),
                                    ),
                                    None => crate::source::headers_json([]),
                                }
                            })),
                        };
                        f(&rec)?;
                    }
                    if m.offset() + 1 >= to {
                        done.push(key);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    // At the end of what Kafka has (or idle): partitions whose position reached
                    // their end are done even if the last offsets were gaps.
                    self.finished_by_position(&pending, &mut done);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consume error while verifying");
                    if is_fatal(&e) {
                        return Err(request("consume", e).into());
                    }
                }
            }
            if !done.is_empty() {
                let mut stop = TopicPartitionList::new();
                for key in done.drain(..) {
                    if pending.remove(&key).is_some() {
                        stop.add_partition(&key.0, key.1);
                    }
                }
                // Stop fetching finished partitions (failure only costs memory for a while).
                let _ = self.consumer.pause(&stop);
                last_progress = Instant::now();
            }
            if !pending.is_empty() && last_progress.elapsed() >= self.timeout {
                let ((topic, partition), to) = pending
                    .iter()
                    .min()
                    .map(|(k, v)| (k.clone(), *v))
                    .expect("invariant: pending is not empty");
                return Err(ReaderError::Stalled {
                    secs: self.timeout.as_secs(),
                    pending: pending.len(),
                    example: TopicPartition::new(topic, partition),
                    to,
                }
                .into());
            }
        }
        let _ = self.consumer.unassign();
        Ok(())
    }

    fn finished_by_position(
        &self,
        pending: &HashMap<(Arc<str>, i32), i64>,
        done: &mut Vec<(Arc<str>, i32)>,
    ) {
        let Ok(pos) = self.consumer.position() else {
            return;
        };
        for e in pos.elements() {
            if let Offset::Offset(o) = e.offset() {
                if let Some((key, _)) = pending.iter().find(|((t, p), to)| {
                    t.as_ref() == e.topic() && *p == e.partition() && o >= **to
                }) {
                    done.push(key.clone());
                }
            }
        }
    }
}

/// The consumer's fatal errors, and a SASL authentication failure too: a one-shot read gives up
/// on it, where the long-running consumer keeps retrying.
fn is_fatal(e: &KafkaError) -> bool {
    super::kafka::is_fatal(e)
        || e.rdkafka_error_code()
            == Some(rdkafka::types::RDKafkaErrorCode::SaslAuthenticationFailed)
}
