//! Test fixtures shared by the scenario tests: librdkafka's mock cluster with a producer that
//! reports each record's offset, committed offsets read back from Kafka, the in-process S3
//! server over a temp dir, a TOML config builder, the pipeline runner, deterministic events, and
//! readers for the objects written.
//!
//! Rules every helper follows (INFRA.md): no fixed ports, no sleeping to wait for something
//! (poll with a deadline), blocking rdkafka calls and consumer drops inside `spawn_blocking`.
//!
//! Each test file uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use kafka_s3_sink::app::{self, RunError};
use kafka_s3_sink::config::{self, Config};
use kafka_s3_sink::metrics::Metrics;
use kafka_s3_sink::pipeline::RunStats;
use kafka_s3_sink::s3server::{LocalS3, LocalS3Options};

/// Bucket every test writes to unless it says otherwise.
pub const BUCKET: &str = "sink-test";
/// Keys the local S3 server accepts.
pub const ACCESS_KEY: &str = "local-access-key";
/// Secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "local-secret-key";
/// Deadline for anything involving a consumer group (rebalances take 5–10 s on the mock).
pub const GROUP_DEADLINE: Duration = Duration::from_secs(30);

/// Installs a tracing subscriber once (level from `RUST_LOG`, default `warn`), printing through
/// the test harness so output shows only for failing tests.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// A group id no other test uses (name + process id + counter).
pub fn unique_group(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{name}-{}-{n}", std::process::id())
}

// ------------------------------------------------------------------------------------ Kafka

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

// --------------------------------------------------------------------------------------- S3

/// The in-process S3 server over a temp dir, with [`BUCKET`] created.
pub struct TestS3 {
    /// The server (faults, request log, endpoint).
    pub server: LocalS3,
    dir: tempfile::TempDir,
}

impl TestS3 {
    /// Starts the server on `127.0.0.1:0` over a fresh temp dir and creates [`BUCKET`].
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = LocalS3::start(LocalS3Options::new(dir.path().join("s3")))
            .await
            .expect("local S3 server");
        server.create_bucket_dir(BUCKET).expect("bucket");
        Self { server, dir }
    }

    /// Endpoint URL for the config.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Root folder of the server (buckets are its sub-folders; upload state lives here).
    pub fn root(&self) -> &Path {
        self.server.root()
    }

    /// Folder of `bucket`.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root().join(bucket)
    }

    /// Every object of `bucket`, read from disk, sorted by key.
    pub fn objects(&self, bucket: &str) -> Vec<StoredObject> {
        read_objects(&self.bucket_dir(bucket))
    }

    /// Keys of `bucket`, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        list_keys(&self.bucket_dir(bucket))
    }

    /// Whether `bucket` holds `key` (on disk, so only complete objects count).
    pub fn exists(&self, bucket: &str, key: &str) -> bool {
        self.server.object_path(bucket, key).is_file()
    }

    /// Names of multipart leftovers in the root (`.upload-*`, `.upload_id-*`).
    pub fn upload_leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.root())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the server (the files stay until the value is dropped).
    pub async fn stop(self) -> tempfile::TempDir {
        self.server.shutdown().await;
        self.dir
    }
}

/// One object as stored.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Key.
    pub key: String,
    /// Stored bytes.
    pub data: Vec<u8>,
}

impl StoredObject {
    /// The content: gunzipped (every member, [`flate2::read::MultiGzDecoder`]) when the key
    /// ends in `.gz`, else the stored bytes. Panics if a `.gz` object is not valid gzip.
    pub fn content(&self) -> Vec<u8> {
        if self.key.ends_with(".gz") {
            gunzip(&self.data).unwrap_or_else(|e| panic!("{}: not gzip: {e}", self.key))
        } else if self.key.ends_with(".zst") {
            zstd::stream::decode_all(&self.data[..])
                .unwrap_or_else(|e| panic!("{}: not zstd: {e}", self.key))
        } else {
            self.data.clone()
        }
    }

    /// NDJSON lines of the content (without newlines). Panics if the content does not end in a
    /// newline (a torn last line).
    pub fn lines(&self) -> Vec<Vec<u8>> {
        let content = self.content();
        split_lines(&content).unwrap_or_else(|| panic!("{}: last line has no newline", self.key))
    }

    /// Folder part of the key (up to and including the last `/`).
    pub fn folder(&self) -> &str {
        self.key.rsplit_once('/').map_or("", |(f, _)| f)
    }
}

/// Decompresses a (possibly multi-member) gzip stream.
pub fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// Lines of NDJSON content; `None` if non-empty content does not end with `\n`.
pub fn split_lines(content: &[u8]) -> Option<Vec<Vec<u8>>> {
    if content.is_empty() {
        return Some(Vec::new());
    }
    let body = content.strip_suffix(b"\n")?;
    Some(body.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect())
}

/// Keys under a bucket folder, sorted (`/`-separated, relative to the folder).
pub fn list_keys(bucket_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![bucket_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in rd.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(bucket_dir) {
                let key: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(key.join("/"));
            }
        }
    }
    out.sort();
    out
}

/// Every object under a bucket folder, sorted by key.
pub fn read_objects(bucket_dir: &Path) -> Vec<StoredObject> {
    list_keys(bucket_dir)
        .into_iter()
        .filter_map(|key| {
            // A file can vanish between listing and reading only if something deletes it; skip.
            let data = std::fs::read(bucket_dir.join(&key)).ok()?;
            Some(StoredObject { key, data })
        })
        .collect()
}

// ------------------------------------------------------------------------------------ config

/// A connector config as a TOML table, with test defaults, edited by dotted paths.
///
/// Destination keys: [`dest`](Self::dest). Defaults: one destination `test` writing to
/// [`BUCKET`] on the local S3 server with static keys and path style; `session_timeout_ms = 6000`, `drain_deadline_secs = 5`,
/// `shutdown_deadline_secs = 20`; gzip, `max_records = 500`, `max_age_secs = 60`,
/// `idle_secs = 1`; retry backoff 50–500 ms; `%Y/%m/%d/%H/` folders on the `timestamp` field.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// The whole file.
    pub table: toml::Table,
}

impl TestConfig {
    /// Defaults for `topics` on `brokers`, group `group`, S3 at `endpoint`.
    pub fn new(brokers: &str, group: &str, topics: &[&str], endpoint: &str) -> Self {
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = {topics:?}
session_timeout_ms = 6000

[pipeline]
drain_deadline_secs = 5
shutdown_deadline_secs = 20

[upload]
retry_initial_backoff_ms = 50
retry_max_backoff_ms = 500

[[destinations]]
name = "test"
bucket = "{BUCKET}"
endpoint = "{endpoint}"
force_path_style = true

[destinations.credentials]
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"

[destinations.routing]
time_source = "event_time"
time_field = "timestamp"
folder_template = "%Y/%m/%d/%H/"

[destinations.batch]
compression = "gzip"
max_records = 500
max_age_secs = 60
idle_secs = 1
"#
        );
        let table: toml::Table = text.parse().expect("invariant: the default config is TOML");
        Self { table }
    }

    /// Sets a key outside the destinations (`set("upload.part_size_bytes", 5242880)`),
    /// creating tables on the way; use [`dest`](Self::dest) for destination keys.
    pub fn set(&mut self, path: &str, value: impl Into<toml::Value>) -> &mut Self {
        let segments: Vec<&str> = path.split('.').collect();
        let (last, parents) = segments.split_last().expect("non-empty path");
        let mut cur = &mut self.table;
        for seg in parents {
            let next = cur
                .entry((*seg).to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = match next {
                toml::Value::Table(t) => t,
                other => panic!("{path}: {seg} is {other:?}, not a table"),
            };
        }
        cur.insert((*last).to_owned(), value.into());
        self
    }

    /// Removes a top-level section key (`remove("upload", "concurrency")`); no-op if absent.
    pub fn remove(&mut self, section: &str, key: &str) -> &mut Self {
        if let Some(toml::Value::Table(t)) = self.table.get_mut(section) {
            t.remove(key);
        }
        self
    }

    /// Sets a key of destination `i` (`dest(0, "batch.max_records", 100)`).
    pub fn dest(&mut self, i: usize, path: &str, value: impl Into<toml::Value>) -> &mut Self {
        let (parent, last) = match path.rsplit_once('.') {
            Some((p, l)) => (Some(p), l),
            None => (None, path),
        };
        let d = self.destination(i);
        let mut cur = d;
        if let Some(parent) = parent {
            for seg in parent.split('.') {
                let next = cur
                    .entry(seg.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                cur = match next {
                    toml::Value::Table(t) => t,
                    other => panic!("destinations[{i}].{path}: {seg} is {other:?}, not a table"),
                };
            }
        }
        cur.insert(last.to_owned(), value.into());
        self
    }

    /// Destination `i` as a table (panics if absent).
    pub fn destination(&mut self, i: usize) -> &mut toml::Table {
        match self.table.get_mut("destinations") {
            Some(toml::Value::Array(a)) => match a.get_mut(i) {
                Some(toml::Value::Table(t)) => t,
                _ => panic!("no destination {i}"),
            },
            _ => panic!("no destinations"),
        }
    }

    /// Appends a copy of destination 0 named `name` writing to `bucket`; returns its index.
    pub fn add_destination(&mut self, name: &str, bucket: &str) -> usize {
        let mut copy = self.destination(0).clone();
        copy.insert("name".into(), name.into());
        copy.insert("bucket".into(), bucket.into());
        match self.table.get_mut("destinations") {
            Some(toml::Value::Array(a)) => {
                a.push(toml::Value::Table(copy));
                a.len() - 1
            }
            _ => panic!("no destinations"),
        }
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        toml::to_string(&self.table).expect("invariant: a table serializes")
    }

    /// Parses and validates through the connector's own parser (no environment).
    pub fn build(&self) -> Config {
        let text = self.toml();
        config::parse(&text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }
}

// ---------------------------------------------------------------------------------- pipeline

/// A pipeline running in a task, with its shutdown token and progress channel.
pub struct Running {
    /// Cancelling it starts a clean shutdown.
    pub token: CancellationToken,
    /// The run's task.
    pub handle: JoinHandle<Result<RunStats, RunError>>,
    /// Totals after every upload and commit.
    pub progress: watch::Receiver<RunStats>,
}

/// Starts the real pipeline (S3 sinks from the config) in a task.
pub async fn start_pipeline(cfg: Config) -> Running {
    start_pipeline_with_metrics(cfg, Metrics::unregistered()).await
}

/// [`start_pipeline`] with the caller's metrics (e.g. `Metrics::new(&registry)`, read back with
/// [`counter_sum`]).
pub async fn start_pipeline_with_metrics(cfg: Config, metrics: Metrics) -> Running {
    init_tracing();
    let sinks = app::s3_sinks(&cfg).await;
    let token = CancellationToken::new();
    let (tx, progress) = watch::channel(RunStats::default());
    let handle = tokio::spawn(app::run_with_sinks(
        cfg,
        sinks,
        metrics,
        token.clone(),
        Some(tx),
    ));
    Running {
        token,
        handle,
        progress,
    }
}

impl Running {
    /// The latest totals.
    pub fn stats(&self) -> RunStats {
        self.progress.borrow().clone()
    }

    /// Waits until `done` holds for the published totals; panics with them after `within`, or if
    /// the run ended first.
    pub async fn wait_until(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&RunStats) -> bool,
    ) -> RunStats {
        let deadline = Instant::now() + within;
        loop {
            {
                let s = self.progress.borrow_and_update();
                if done(&s) {
                    return s.clone();
                }
            }
            assert!(
                !self.handle.is_finished(),
                "the pipeline stopped before {what}: {:?}",
                self.stats()
            );
            assert!(
                Instant::now() < deadline,
                "not {what} within {within:?}: {:?}",
                self.stats()
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), self.progress.changed()).await;
        }
    }

    /// Waits until the pipeline's own view of committed offsets (summed over partitions of
    /// every topic) reaches `total`.
    pub async fn wait_committed_total(&mut self, total: i64, within: Duration) -> RunStats {
        self.wait_until(within, &format!("{total} offsets committed"), |s| {
            s.committed.values().sum::<i64>() >= total
        })
        .await
    }

    /// Clean shutdown: cancels the token and waits (bounded) for the run's result.
    pub async fn stop(self) -> RunStats {
        self.token.cancel();
        match tokio::time::timeout(Duration::from_secs(60), self.handle).await {
            Ok(Ok(Ok(stats))) => stats,
            Ok(Ok(Err(e))) => panic!("pipeline failed: {e}"),
            Ok(Err(e)) => panic!("pipeline task: {e}"),
            Err(_) => panic!("pipeline did not stop within 60 s"),
        }
    }

    /// Simulated crash: aborts the run's task without cancelling the token, so nothing more is
    /// flushed or committed. Uploads already handed to the uploader may still finish (they run
    /// in their own tasks), like requests in flight when a process dies. The Kafka thread sees
    /// its channels closed and leaves the group without committing.
    pub fn crash(self) {
        self.handle.abort();
    }
}

/// Sum of counter `name` over the series whose labels include every pair of `labels`.
pub fn counter_sum(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut total = 0.0;
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let has = |(k, v): &(&str, &str)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            };
            if labels.iter().all(has) {
                total += m.get_counter().get_value();
            }
        }
    }
    total as u64
}

// ------------------------------------------------------------------------------------ events

pub use kafka_s3_sink::eventgen::GenOptions;

/// Deterministic Segment-like events (one JSON object per element, no newline), each with a
/// unique `messageId` and an RFC 3339 `timestamp`: the repository's generator
/// (`kafka_s3_sink::eventgen`, the one `gen-events`, `demo` and the benchmarks use).
pub fn gen_events(opts: &GenOptions) -> Vec<Vec<u8>> {
    kafka_s3_sink::eventgen::generate(opts)
}

/// A malformed record and the quarantine reason (folder name under `_errors/`) it must get.
#[derive(Debug, Clone)]
pub struct Malformed {
    /// The value.
    pub value: Vec<u8>,
    /// `QuarantineReason::as_str` of the expected reason.
    pub reason: &'static str,
}

/// `n` malformed records cycling through: not JSON, JSON without `timestamp`, an unreadable
/// `timestamp`, a JSON array. Each is unique (numbered with `tag`).
pub fn malformed(n: usize, tag: &str) -> Vec<Malformed> {
    (0..n)
        .map(|i| match i % 4 {
            0 => Malformed {
                value: format!("not json {tag}-{i} {{").into_bytes(),
                reason: "not_json",
            },
            1 => Malformed {
                value: format!(r#"{{"type":"track","messageId":"bad-{tag}-{i}"}}"#).into_bytes(),
                reason: "missing_time",
            },
            2 => Malformed {
                value: format!(
                    r#"{{"type":"track","messageId":"bad-{tag}-{i}","timestamp":"yesterday-ish"}}"#
                )
                .into_bytes(),
                reason: "bad_time",
            },
            _ => Malformed {
                value: format!(r#"["{tag}",{i}]"#).into_bytes(),
                reason: "not_object",
            },
        })
        .collect()
}

/// A JSON string field of an event (`messageId`, `timestamp`, …).
pub fn json_str(line: &[u8], field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v.get(field)?.as_str().map(str::to_owned)
}

/// The `messageId` of an event line.
pub fn message_id(line: &[u8]) -> Option<String> {
    json_str(line, "messageId")
}

/// The RFC 3339 `timestamp` of an event line.
pub fn event_time(line: &[u8]) -> Option<DateTime<Utc>> {
    let s = json_str(line, "timestamp")?;
    DateTime::parse_from_rfc3339(&s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The `%Y/%m/%d/%H/` folder of a time (UTC).
pub fn hour_folder(t: DateTime<Utc>) -> String {
    t.format("%Y/%m/%d/%H/").to_string()
}

/// Sets the `timestamp` field of an event line (keeps field order).
pub fn with_timestamp(line: &[u8], t: DateTime<Utc>) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(line).expect("event is JSON");
    v["timestamp"] = serde_json::Value::String(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    v.to_string().into_bytes()
}

/// Spreads `values` round-robin over `partitions` partitions, key-less.
pub fn round_robin(values: impl IntoIterator<Item = Vec<u8>>, partitions: i32) -> Vec<Msg> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Msg::new((i as i64 % i64::from(partitions)) as i32, v))
        .collect()
}

// ------------------------------------------------------------------------- what S3 must hold

/// An event produced to Kafka.
#[derive(Debug, Clone)]
pub struct ExpectedEvent {
    /// Where it landed.
    pub at: Produced,
    /// Its exact bytes.
    pub line: Vec<u8>,
    /// Its `timestamp`.
    pub time: Option<DateTime<Utc>>,
}

/// Everything produced to one topic: events by `messageId`, malformed records by position.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Events by `messageId`.
    pub events: HashMap<String, ExpectedEvent>,
    /// Malformed records by position.
    pub errors: BTreeMap<Produced, Malformed>,
}

impl Expected {
    /// Records an event (panics on a duplicate `messageId`).
    pub fn add_event(&mut self, line: &[u8], at: Produced) {
        let id = message_id(line).expect("event has a messageId");
        let prev = self.events.insert(
            id.clone(),
            ExpectedEvent {
                at,
                line: line.to_vec(),
                time: event_time(line),
            },
        );
        assert!(prev.is_none(), "duplicate messageId {id} in test data");
    }

    /// Records a malformed record.
    pub fn add_malformed(&mut self, m: &Malformed, at: Produced) {
        self.errors.insert(at, m.clone());
    }

    /// [`produce`](Self::produce) without the check that the mock kept every record: for
    /// tests that consume while producing more than a partition keeps.
    pub async fn produce_unchecked(
        &mut self,
        kafka: &Kafka,
        topic: &str,
        msgs: Vec<Msg>,
        malformed: &BTreeMap<usize, Malformed>,
    ) -> Vec<Produced> {
        let values: Vec<Option<Vec<u8>>> = msgs.iter().map(|m| m.value.clone()).collect();
        let produced = kafka.produce(topic, msgs).await;
        for (i, (v, at)) in values.iter().zip(&produced).enumerate() {
            match malformed.get(&i) {
                Some(m) => self.add_malformed(m, *at),
                None => self.add_event(v.as_deref().expect("event has a value"), *at),
            }
        }
        produced
    }

    /// Records produced (events and malformed).
    pub fn total(&self) -> usize {
        self.events.len() + self.errors.len()
    }

    /// Every position produced.
    pub fn positions(&self) -> BTreeSet<Produced> {
        self.events
            .values()
            .map(|e| e.at)
            .chain(self.errors.keys().copied())
            .collect()
    }

    /// Produces `msgs` (whose values are events or the given malformed records) and records
    /// where each landed. `malformed` lists the indexes in `msgs` that are malformed. Panics if
    /// the mock cluster deleted any record of the touched partitions (its 5 MiB limit).
    pub async fn produce(
        &mut self,
        kafka: &Kafka,
        topic: &str,
        msgs: Vec<Msg>,
        malformed: &BTreeMap<usize, Malformed>,
    ) -> Vec<Produced> {
        let produced = self.produce_unchecked(kafka, topic, msgs, malformed).await;
        let partitions = produced.iter().map(|p| p.partition + 1).max().unwrap_or(0);
        let starts = kafka.start_offsets(topic, partitions).await;
        assert!(
            starts.values().all(|lo| *lo == 0),
            "the mock cluster deleted old records (log start offsets {starts:?}): it keeps only \
             5 MiB of stored batches per partition; produce less or consume while producing"
        );
        produced
    }
}

/// What the objects of a bucket hold, matched against [`Expected`].
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Keys holding each expected record (more than one: duplicates).
    pub records: BTreeMap<Produced, Vec<String>>,
    /// Lines that match nothing expected, or differ from it (key, description).
    pub unexpected: Vec<(String, String)>,
    /// Objects read.
    pub objects: usize,
    /// Data lines read.
    pub data_lines: usize,
    /// Error-envelope lines read.
    pub error_lines: usize,
}

/// Reads `objects` and matches every line: data lines by `messageId` (bytes must be identical),
/// lines under `error_prefix` (e.g. `"_errors/"`) as envelopes whose `partition`/`offset` name a
/// malformed record, whose `value` is its original bytes and whose folder is its reason.
pub fn scan(objects: &[StoredObject], expected: &Expected, error_prefix: &str) -> Scan {
    let mut out = Scan {
        objects: objects.len(),
        ..Scan::default()
    };
    for obj in objects {
        for line in obj.lines() {
            if let Some(rest) = obj.key.strip_prefix(error_prefix) {
                out.error_lines += 1;
                let reason_dir = rest.split('/').next().unwrap_or_default();
                let v: serde_json::Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        out.unexpected
                            .push((obj.key.clone(), format!("envelope is not JSON: {e}")));
                        continue;
                    }
                };
                let at = Produced {
                    partition: v["partition"].as_i64().unwrap_or(-1) as i32,
                    offset: v["offset"].as_i64().unwrap_or(-1),
                };
                let Some(m) = expected.errors.get(&at) else {
                    out.unexpected.push((
                        obj.key.clone(),
                        format!("envelope of unknown record {at:?}"),
                    ));
                    continue;
                };
                let value = kafka_s3_sink::envelope::original_value(&line);
                if value.as_deref() != Some(m.value.as_slice()) {
                    out.unexpected.push((
                        obj.key.clone(),
                        format!("envelope {at:?}: value {value:?} is not the original"),
                    ));
                }
                if v["reason"].as_str() != Some(m.reason) || reason_dir != m.reason {
                    out.unexpected.push((
                        obj.key.clone(),
                        format!(
                            "envelope {at:?}: reason {} in folder {reason_dir}, expected {}",
                            v["reason"], m.reason
                        ),
                    ));
                }
                out.records.entry(at).or_default().push(obj.key.clone());
            } else {
                out.data_lines += 1;
                let Some(e) = message_id(&line).and_then(|id| expected.events.get(&id)) else {
                    out.unexpected.push((
                        obj.key.clone(),
                        format!("unknown line {}", String::from_utf8_lossy(&line)),
                    ));
                    continue;
                };
                if e.line != line {
                    out.unexpected
                        .push((obj.key.clone(), format!("line of {:?} changed", e.at)));
                }
                out.records.entry(e.at).or_default().push(obj.key.clone());
            }
        }
    }
    out
}

impl Scan {
    /// Expected records found nowhere.
    pub fn missing(&self, expected: &Expected) -> Vec<Produced> {
        expected
            .positions()
            .into_iter()
            .filter(|p| !self.records.contains_key(p))
            .collect()
    }

    /// Extra copies over all records (0 = exactly once).
    pub fn duplicates(&self) -> usize {
        self.records
            .values()
            .map(|k| k.len().saturating_sub(1))
            .sum()
    }

    /// The first offset of `partition`, counting from 0, not found in any object: every
    /// commit of that partition must be at most this.
    pub fn contiguous_end(&self, partition: i32) -> i64 {
        let mut next = 0;
        for p in self.records.keys().filter(|p| p.partition == partition) {
            if p.offset != next {
                break;
            }
            next += 1;
        }
        next
    }
}
