//! Rebalance: a partition revoked from a worker is flushed, uploaded and committed before the
//! worker releases it, so the next owner starts where the first one stopped.
//!
//! Worker A consumes every partition of a topic and holds its records in open files (no size,
//! age or idle flush can fire); worker B then joins the same group, and the cooperative-sticky
//! rebalance moves some partitions from A to B. The test watches each worker through its own
//! Prometheus registry (records consumed per partition, flushes by reason, partitions
//! assigned/revoked), the group's offsets through a consumer that never subscribes, and S3
//! through the in-process server's folder.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_s3_sink::app;
use kafka_s3_sink::config::Config;
use kafka_s3_sink::metrics::Metrics;
use kafka_s3_sink::pipeline::RunStats;
use prometheus::Registry;
use support::{
    gen_events, round_robin, scan, unique_group, Expected, GenOptions, Kafka, OffsetReader,
    Running, TestConfig, TestS3, BUCKET, GROUP_DEADLINE,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "events";
const PARTITIONS: i32 = 4;
/// Records produced before B joins (100 per partition).
const FIRST: usize = 400;
/// Records produced after the rebalance (50 per partition).
const SECOND: usize = 200;

/// A running pipeline with its own metrics registry.
struct Worker {
    name: &'static str,
    run: Running,
    registry: Registry,
}

impl Worker {
    /// Starts the real pipeline like `support::start_pipeline`, but with a registry the test
    /// can read (progress is only published after uploads, not after intake).
    async fn start(name: &'static str, cfg: Config) -> Self {
        support::init_tracing();
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics register");
        let sinks = app::s3_sinks(&cfg).await;
        let token = CancellationToken::new();
        let (tx, progress) = tokio::sync::watch::channel(RunStats::default());
        let handle = tokio::spawn(app::run_with_sinks(
            cfg,
            sinks,
            metrics,
            token.clone(),
            Some(tx),
        ));
        Self {
            name,
            run: Running {
                token,
                handle,
                progress,
            },
            registry,
        }
    }

    /// Sum of counter `name` over the series whose labels include every pair of `labels`.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut total = 0.0;
        for family in self.registry.gather() {
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

    /// Records taken in, per partition (absent: none).
    fn consumed(&self) -> BTreeMap<i32, u64> {
        (0..PARTITIONS)
            .map(|p| {
                let ps = p.to_string();
                let n = self.counter(
                    "kafka_s3_sink_records_consumed_total",
                    &[("topic", TOPIC), ("partition", &ps)],
                );
                (p, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn flushes(&self, reason: &str) -> u64 {
        self.counter("kafka_s3_sink_flushes_total", &[("reason", reason)])
    }

    fn rebalanced(&self, event: &str) -> u64 {
        self.counter(
            "kafka_s3_sink_rebalance_partitions_total",
            &[("event", event)],
        )
    }

    fn check_running(&self) {
        assert!(
            !self.run.handle.is_finished(),
            "worker {} stopped early",
            self.name
        );
    }
}

/// Polls `done` every 50 ms until it returns `Some`, panicking with `what` and the last
/// `state()` after `within`.
async fn poll_until<T>(
    within: Duration,
    what: &str,
    mut done: impl FnMut() -> Option<T>,
    state: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "not {what} within {within:?}: {}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Partition of a `events+<partition>+<offset>.ndjson.gz` key.
fn partition_of(key: &str) -> i32 {
    let name = key.rsplit('/').next().unwrap_or_default();
    let mut parts = name.split('+');
    assert_eq!(parts.next(), Some(TOPIC), "{key}");
    parts
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{key}: no partition"))
}

fn worker_config(kafka: &Kafka, s3: &TestS3, group: &str, client: &str) -> Config {
    let mut cfg = TestConfig::new(&kafka.brokers(), group, &[TOPIC], &s3.endpoint());
    cfg.set("kafka.client_id", client)
        // Nothing flushes on its own during the test: only a revoke or the shutdown does.
        .dest(0, "batch.max_records", 1_000_000)
        .dest(0, "batch.max_age_secs", 120)
        .dest(0, "batch.idle_secs", 120)
        // Day folders: each partition holds several open files (three days of events).
        .dest(0, "routing.folder_template", "%Y/%m/%d/");
    cfg.build()
}

/// Two workers after the rebalance, each holding the records produced since in open files.
struct Rebalanced {
    a: Worker,
    b: Worker,
    world: World,
}

/// Everything but the workers.
struct World {
    s3: TestS3,
    kafka: Kafka,
    reader: OffsetReader,
    expected: Expected,
    /// Partitions moved from A to B.
    revoked: BTreeSet<i32>,
    /// Partitions A kept.
    kept: BTreeSet<i32>,
    /// Objects A uploaded for the revoke.
    revoke_objects: usize,
}

/// A consumes [`FIRST`] records and holds them; B joins and the revoke moves some partitions
/// to B (checking flush, upload and commit before release); then [`SECOND`] more records are
/// consumed by their owners (B reads only the new records of its partitions).
async fn rebalance_then_produce_more() -> Rebalanced {
    let s3 = TestS3::start().await;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let group = unique_group("rebalance");
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, PARTITIONS);

    let events = gen_events(&GenOptions::new(FIRST + SECOND));
    let (first, second) = events.split_at(FIRST);
    let mut expected = Expected::default();
    expected
        .produce(
            &kafka,
            TOPIC,
            round_robin(first.to_vec(), PARTITIONS),
            &BTreeMap::new(),
        )
        .await;
    let ends_first = kafka.end_offsets(TOPIC, PARTITIONS).await;
    let per_partition = (FIRST / PARTITIONS as usize) as i64;
    assert!(ends_first.values().all(|e| *e == per_partition));

    // A takes everything in and holds it: consumed, nothing uploaded, nothing committed.
    let a = Worker::start("A", worker_config(&kafka, &s3, &group, "worker-a")).await;
    let all: BTreeMap<i32, u64> = (0..PARTITIONS).map(|p| (p, per_partition as u64)).collect();
    poll_until(
        GROUP_DEADLINE,
        "all records consumed by A",
        || {
            a.check_running();
            (a.consumed() == all).then_some(())
        },
        || format!("A consumed {:?}", a.consumed()),
    )
    .await;
    assert_eq!(a.run.stats().objects, 0, "A uploaded before the rebalance");
    assert!(s3.keys(BUCKET).is_empty(), "objects before the rebalance");
    assert_eq!(
        reader.committed().await,
        BTreeMap::new(),
        "commit before upload"
    );
    assert_eq!(a.rebalanced("revoked"), 0);

    // B joins: the cooperative rebalance revokes some partitions from A. When B is first
    // given partitions, A must already have uploaded and committed them.
    let b = Worker::start("B", worker_config(&kafka, &s3, &group, "worker-b")).await;
    let keys_at_assign = poll_until(
        GROUP_DEADLINE,
        "partitions assigned to B",
        || {
            a.check_running();
            b.check_running();
            (b.rebalanced("assigned") > 0).then(|| s3.keys(BUCKET))
        },
        || {
            format!(
                "A revoked {}, B assigned {}, keys {:?}",
                a.rebalanced("revoked"),
                b.rebalanced("assigned"),
                s3.keys(BUCKET)
            )
        },
    )
    .await;
    let revoked_count = a.rebalanced("revoked");
    let moved = b.rebalanced("assigned");
    assert!(
        (1..PARTITIONS as u64).contains(&revoked_count),
        "A revoked {revoked_count} partitions"
    );
    assert_eq!(moved, revoked_count, "B got exactly what A gave up");
    let revoked: BTreeSet<i32> = keys_at_assign.iter().map(|k| partition_of(k)).collect();
    assert_eq!(
        revoked.len() as u64,
        revoked_count,
        "objects of every revoked partition (and only those) were in S3 when B got them: {keys_at_assign:?}"
    );
    assert_eq!(
        a.flushes("revoke"),
        keys_at_assign.len() as u64,
        "every object so far is a revoke flush"
    );
    for reason in ["size", "records", "age", "idle", "memory", "shutdown"] {
        assert_eq!(a.flushes(reason), 0, "A flushed for {reason}");
    }
    // The revoked partitions' records are all in S3, exactly once.
    let found = scan(&s3.objects(BUCKET), &expected, "_errors/");
    assert!(found.unexpected.is_empty(), "{:?}", found.unexpected);
    assert_eq!(found.duplicates(), 0);
    for p in &revoked {
        assert_eq!(
            found.contiguous_end(*p),
            per_partition,
            "partition {p} in S3"
        );
    }
    // The group's commit for the revoked partitions is their end offset: B starts there. A's
    // other partitions are still in open files: their commit, if any, has not moved past 0.
    let committed = reader.committed().await;
    let kept: BTreeSet<i32> = (0..PARTITIONS).filter(|p| !revoked.contains(p)).collect();
    for p in &revoked {
        assert_eq!(
            committed.get(p),
            Some(&per_partition),
            "revoked partition {p} committed to its end offset: {committed:?}"
        );
    }
    for p in &kept {
        assert!(
            committed.get(p).is_none_or(|o| *o == 0),
            "kept partition {p} committed past records not in S3: {committed:?}"
        );
    }

    // More records: B must read only the new ones of its partitions, A the new ones of its own.
    let produced = expected
        .produce(
            &kafka,
            TOPIC,
            round_robin(second.to_vec(), PARTITIONS),
            &BTreeMap::new(),
        )
        .await;
    let new_per_partition = (SECOND / PARTITIONS as usize) as u64;
    assert_eq!(produced.len(), SECOND);
    let b_want: BTreeMap<i32, u64> = revoked.iter().map(|p| (*p, new_per_partition)).collect();
    let a_want: BTreeMap<i32, u64> = (0..PARTITIONS)
        .map(|p| {
            let extra = if kept.contains(&p) {
                new_per_partition
            } else {
                0
            };
            (p, per_partition as u64 + extra)
        })
        .collect();
    poll_until(
        GROUP_DEADLINE,
        "the new records consumed",
        || {
            a.check_running();
            b.check_running();
            (b.consumed() == b_want && a.consumed() == a_want).then_some(())
        },
        || {
            format!(
                "A consumed {:?} (want {a_want:?}), B consumed {:?} (want {b_want:?})",
                a.consumed(),
                b.consumed()
            )
        },
    )
    .await;

    Rebalanced {
        a,
        b,
        world: World {
            s3,
            kafka,
            reader,
            expected,
            revoked,
            kept,
            revoke_objects: keys_at_assign.len(),
        },
    }
}

impl World {
    /// Final checks after both workers stopped: every record is in S3 exactly once (no worker
    /// re-read what the other had committed) and the group committed every end offset.
    async fn check_final(self, a_stats: RunStats, b_stats: RunStats) {
        let new_per_partition = (SECOND / PARTITIONS as usize) as u64;
        let ends = self.kafka.end_offsets(TOPIC, PARTITIONS).await;
        assert_eq!(ends.values().sum::<i64>(), (FIRST + SECOND) as i64);
        self.reader
            .wait_committed(&ends, Duration::from_secs(10))
            .await;
        self.reader.close().await;
        assert_eq!(
            a_stats.records_in,
            FIRST as u64 + new_per_partition * self.kept.len() as u64
        );
        assert_eq!(
            b_stats.records_in,
            new_per_partition * self.revoked.len() as u64,
            "B read only records after the commits A made"
        );
        let found = scan(&self.s3.objects(BUCKET), &self.expected, "_errors/");
        assert!(found.unexpected.is_empty(), "{:?}", found.unexpected);
        assert_eq!(found.missing(&self.expected), [], "records missing from S3");
        assert_eq!(found.duplicates(), 0, "records written twice");
        eprintln!(
            "revoked {:?} from A ({} revoke objects), kept {:?}; {} objects for {} records",
            self.revoked, self.revoke_objects, self.kept, found.objects, found.data_lines
        );
        self.s3.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_commits_the_revoked_partitions_before_release() {
    let r = rebalance_then_produce_more().await;
    // A stops first: it flushes and commits its partitions, and B takes them over at A's
    // commits (nothing to read); B stops once it owns every partition and the group is stable.
    let a_stats = r.a.run.stop().await;
    let (b, reader) = (&r.b, &r.world.reader);
    poll_until(
        GROUP_DEADLINE,
        "every partition assigned to B",
        || {
            b.check_running();
            (b.rebalanced("assigned") == PARTITIONS as u64).then_some(())
        },
        || format!("B assigned {}", b.rebalanced("assigned")),
    )
    .await;
    let committed = reader.committed().await;
    for p in &r.world.kept {
        assert_eq!(
            committed.get(p),
            Some(&((FIRST + SECOND) as i64 / i64::from(PARTITIONS))),
            "A committed its partition {p} on shutdown: {committed:?}"
        );
    }
    let b_stats = r.b.run.stop().await;
    r.world.check_final(a_stats, b_stats).await;
}

/// Both workers stopping at once: B's leave starts a rebalance while A commits its last
/// offsets, and the broker refuses commits during a rebalance (`REBALANCE_IN_PROGRESS`).
/// Ignored: it fails today (see the report on `source/kafka.rs` commit bookkeeping); run with
/// `cargo test --test rebalance -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known bug: a commit refused during the leave rebalance is never retried"]
async fn simultaneous_stop_commits_every_partition() {
    let r = rebalance_then_produce_more().await;
    let (a_stats, b_stats) = tokio::join!(r.a.run.stop(), r.b.run.stop());
    r.world.check_final(a_stats, b_stats).await;
}
