//! Kafka for the scenario tests: librdkafka's in-process mock cluster, a producer that reports
//! where each record landed, and a reader of a group's committed offsets that never joins it.
//!
//! Invariant: blocking rdkafka calls and consumer drops run inside `spawn_blocking`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::time::Instant;

use super::unique_group;

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Target partition.
    pub partition: i32,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value (`None` = tombstone).
    pub value: Option<Vec<u8>>,
    /// Kafka timestamp in ms (`None`: the producer's clock).
    pub timestamp_ms: Option<i64>,
    /// Record headers, in order (`None`: a null header value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Msg {
    /// A record with a value and no key, timestamp or headers.
    pub fn new(partition: i32, value: impl Into<Vec<u8>>) -> Self {
        Self {
            partition,
            key: None,
            value: Some(value.into()),
            timestamp_ms: None,
            headers: Vec::new(),
        }
    }
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Produced {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// librdkafka's in-process mock cluster (one broker). Not `Send`: keep it in the test body and
/// pass [`Kafka::brokers`] to anything spawned.
///
/// Measured limit: a mock partition keeps only its newest 5 MiB of stored message sets (and
/// 100,000 records); older ones are deleted and the log start moves up, so a consumer that
/// starts later silently begins past them (librdkafka `rdkafka_mock.c`, `max_size`/`max_cnt`).
/// [`produce`](Self::produce) compresses with zstd (stored size ≈ 1/6 of JSON events), and
/// [`Expected::produce`] checks that nothing was deleted.
pub struct Kafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    brokers: String,
}

impl Kafka {
    /// Starts a one-broker mock cluster.
    pub fn start() -> Self {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let brokers = cluster.bootstrap_servers();
        Self { cluster, brokers }
    }

    /// `bootstrap.servers` of the cluster.
    pub fn brokers(&self) -> String {
        self.brokers.clone()
    }

    /// The cluster itself (request errors, broker down/up, …).
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.cluster
            .create_topic(topic, partitions, 1)
            .expect("create topic");
    }

    /// Produces `msgs` in order and waits for every delivery; returns where each landed,
    /// index-aligned with `msgs`. Panics on any delivery failure.
    pub async fn produce(&self, topic: &str, msgs: Vec<Msg>) -> Vec<Produced> {
        produce(&self.brokers, topic, msgs).await
    }

    /// High watermark (end offset) of each partition `0..partitions`.
    pub async fn end_offsets(&self, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        let r = OffsetReader::new(
            &self.brokers,
            &unique_group("watermarks"),
            topic,
            partitions,
        );
        let out = r.end_offsets().await;
        r.close().await;
        out
    }

    /// Low watermark (log start offset) of each partition `0..partitions`: above 0 once the
    /// mock deleted old records (see the type's doc).
    pub async fn start_offsets(&self, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        let r = OffsetReader::new(
            &self.brokers,
            &unique_group("watermarks"),
            topic,
            partitions,
        );
        let out = r
            .watermarks()
            .await
            .into_iter()
            .map(|(p, (lo, _))| (p, lo))
            .collect();
        r.close().await;
        out
    }
}

#[derive(Default)]
struct DeliveryLog {
    results: Mutex<Vec<Option<Result<Produced, String>>>>,
}

struct RecordingContext(Arc<DeliveryLog>);

impl ClientContext for RecordingContext {}

impl ProducerContext for RecordingContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let r = match result {
            Ok(m) => Ok(Produced {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err(e.to_string()),
        };
        if let Ok(mut log) = self.0.results.lock() {
            log[index] = Some(r);
        }
    }
}

/// Produces `msgs` to `topic` on `brokers` (see [`Kafka::produce`]).
pub async fn produce(brokers: &str, topic: &str, msgs: Vec<Msg>) -> Vec<Produced> {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || produce_blocking(&brokers, &topic, &msgs))
        .await
        .expect("producer thread")
}

fn produce_blocking(brokers: &str, topic: &str, msgs: &[Msg]) -> Vec<Produced> {
    use rdkafka::error::KafkaError;
    use rdkafka::producer::BaseProducer;
    use rdkafka::types::RDKafkaErrorCode;

    let log = Arc::new(DeliveryLog::default());
    *log.results.lock().unwrap() = vec![None; msgs.len()];
    let producer: BaseProducer<RecordingContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        // The mock keeps only 5 MiB of stored batches per partition: store them compressed.
        .set("compression.type", "zstd")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(RecordingContext(log.clone()))
        .expect("producer");
    for (i, m) in msgs.iter().enumerate() {
        let mut rec =
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, i).partition(m.partition);
        if let Some(k) = &m.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &m.value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(ts) = m.timestamp_ms {
            rec = rec.timestamp(ts);
        }
        if !m.headers.is_empty() {
            let mut h = rdkafka::message::OwnedHeaders::new();
            for (k, v) in &m.headers {
                h = h.insert(rdkafka::message::Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            rec = rec.headers(h);
        }
        let mut pending = Some(rec);
        while let Some(r) = pending.take() {
            match producer.send(r) {
                Ok(()) => {}
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    producer.poll(Duration::from_millis(10));
                    pending = Some(r);
                }
                Err((e, _)) => panic!("produce #{i}: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    let results = std::mem::take(&mut *log.results.lock().unwrap());
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(Ok(p)) => p,
            Some(Err(e)) => panic!("delivery of #{i} failed: {e}"),
            None => panic!("no delivery report for #{i}"),
        })
        .collect()
}

/// Reads a group's committed offsets (and the end offsets) through Kafka, with a consumer that
/// never subscribes, so it does not disturb the group.
#[derive(Clone)]
pub struct OffsetReader {
    consumer: Arc<BaseConsumer>,
    topic: String,
    partitions: i32,
}

impl OffsetReader {
    /// A reader for `group`'s offsets on `topic`, partitions `0..partitions`.
    pub fn new(brokers: &str, group: &str, topic: &str, partitions: i32) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("offset reader consumer");
        Self {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            partitions,
        }
    }

    /// Committed offset ("next to read") per partition; partitions without a commit are absent.
    pub async fn committed(&self) -> BTreeMap<i32, i64> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.committed_blocking())
            .await
            .expect("offset reader thread")
    }

    fn committed_blocking(&self) -> BTreeMap<i32, i64> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        // The coordinator may not be known yet right after start: retry briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let got = loop {
            match self
                .consumer
                .committed_offsets(tpl.clone(), Duration::from_secs(5))
            {
                Ok(got) => break got,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "committed_offsets failed; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("committed_offsets: {e}"),
            }
        };
        got.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }

    /// High watermark per partition.
    pub async fn end_offsets(&self) -> BTreeMap<i32, i64> {
        self.watermarks()
            .await
            .into_iter()
            .map(|(p, (_, hi))| (p, hi))
            .collect()
    }

    /// (low, high) watermarks per partition.
    pub async fn watermarks(&self) -> BTreeMap<i32, (i64, i64)> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            (0..this.partitions)
                .map(|p| {
                    let w = this
                        .consumer
                        .fetch_watermarks(&this.topic, p, Duration::from_secs(10))
                        .expect("fetch watermarks");
                    (p, w)
                })
                .collect()
        })
        .await
        .expect("offset reader thread")
    }

    /// Polls until the committed offsets equal `expected` (every partition), or panics with the
    /// last value read once `within` has passed.
    pub async fn wait_committed(&self, expected: &BTreeMap<i32, i64>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.committed().await;
            if &got == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "committed offsets {got:?} did not reach {expected:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drops the consumer off the async threads (a consumer's drop can block).
    pub async fn close(self) {
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}
