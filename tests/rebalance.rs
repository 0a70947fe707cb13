//! Rebalance: a partition revoked from a worker is flushed, uploaded and committed before the
//! worker releases it, so the next owner starts where the first one stopped.
//!
//! Worker A consumes every partition of a topic and holds its records in open files (no size,
//! age or idle flush can fire); worker B then joins the same group, and the cooperative-sticky
//! rebalance moves some partitions from A to B. The test watches each worker through its own
//! Prometheus registry (records consumed per partition, flushes by reason, partitions
//! assigned/revoked), the group's offsets through a consumer that never subscribes, and S3
//! through the in-process server's folder.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_s3_sink::app;
use kafka_s3_sink::config::Config;
use kafka_s3_sink::metrics::Metrics;
use kafka_s3_sink::pipeline::RunStats;
use prometheus::Registry;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
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
        support::counter_sum(&self.registry, name, labels)
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
    /// Where B started on each revoked partition (A's commit; the end offset unless the broker
    /// refused the revoke commit).
    b_start: BTreeMap<i32, i64>,
    /// Objects A uploaded for the revoke.
    revoke_objects: usize,
}

/// A consumes [`FIRST`] records and holds them; B joins and the revoke moves some partitions
/// to B (checking flush, upload and commit before release); then [`SECOND`] more records are
/// consumed by their owners (B reads only the new records of its partitions). With
/// `refuse_revoke_commit`, the broker answers the revoke's commit with REBALANCE_IN_PROGRESS.
async fn rebalance_then_produce_more(refuse_revoke_commit: bool) -> Rebalanced {
    let s3 = TestS3::start().await;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let group = unique_group("rebalance");
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, PARTITIONS);

    let events = gen_events(&GenOptions::new((FIRST + SECOND) as u64));
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
    if refuse_revoke_commit {
        // A has committed nothing yet, so the next OffsetCommit is the revoke's.
        kafka.cluster().request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS],
        );
    }
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
    let mut b_start = BTreeMap::new();
    for p in &revoked {
        let at = committed.get(p).copied();
        assert!(
            !refuse_revoke_commit || at.is_none(),
            "partition {p} committed at {at:?} although the commit was refused"
        );
        if at != Some(per_partition) {
            // The mock broker answers REBALANCE_IN_PROGRESS to every commit while a new join
            // round is open (`rd_kafka_mock_cgrp_classic_check_state`, JOINING state; a real
            // broker accepts commits in PreparingRebalance), and one sometimes opens during the
            // revoke. Only that refusal excuses a missing commit; B then re-reads from `at`.
            let refused = a.counter("kafka_s3_sink_commit_failures_total", &[]);
            assert!(
                refused > 0,
                "revoked partition {p} committed at {at:?}, not its end offset {per_partition}, and no commit was refused: {committed:?}"
            );
            eprintln!(
                "warning: the broker refused A's revoke commit ({refused} commit failures); \
                 partition {p} stays at {at:?} and B re-reads it from there"
            );
        }
        b_start.insert(*p, at.unwrap_or(0));
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
    let b_want: BTreeMap<i32, u64> = b_start
        .iter()
        .map(|(p, start)| (*p, (per_partition - start) as u64 + new_per_partition))
        .collect();
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
            b_start,
            revoke_objects: keys_at_assign.len(),
        },
    }
}

impl World {
    /// Final checks after both workers stopped: every record is in S3, the only records in S3
    /// twice are those B re-read at or after A's commit (none when A's revoke commit went
    /// through), and the group committed every end offset.
    async fn check_final(self, a_stats: RunStats, b_stats: RunStats) {
        let per_partition = (FIRST / PARTITIONS as usize) as i64;
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
        let re_read: u64 = self
            .b_start
            .values()
            .map(|start| (per_partition - start) as u64)
            .sum();
        assert_eq!(
            b_stats.records_in,
            new_per_partition * self.revoked.len() as u64 + re_read,
            "B read only records from the commits A made on"
        );
        let found = scan(&self.s3.objects(BUCKET), &self.expected, "_errors/");
        assert!(found.unexpected.is_empty(), "{:?}", found.unexpected);
        assert_eq!(found.missing(&self.expected), [], "records missing from S3");
        for (at, keys) in &found.records {
            let may_repeat = self
                .b_start
                .get(&at.partition)
                .is_some_and(|start| (*start..per_partition).contains(&at.offset));
            assert!(
                keys.len() == 1 || (keys.len() == 2 && may_repeat),
                "{at:?} written {} times: {keys:?}",
                keys.len()
            );
        }
        // Keys come from (partition, first offset), so a re-read file usually rewrites the
        // same key: re-read records appear at most twice, often once.
        assert!(
            found.duplicates() as u64 <= re_read,
            "copies of re-read records"
        );
        eprintln!(
            "revoked {:?} from A ({} revoke objects, B started at {:?}), kept {:?}; {} objects for {} records",
            self.revoked,
            self.revoke_objects,
            self.b_start,
            self.kept,
            found.objects,
            found.data_lines
        );
        self.s3.stop().await;
    }
}

impl Rebalanced {
    /// Stops A first (it flushes and commits its partitions; B takes them over at A's commits,
    /// with nothing to read), then B once it owns every partition and the group is stable;
    /// then runs the final checks.
    async fn stop_one_after_the_other(self) {
        let per_partition_end = (FIRST + SECOND) as i64 / i64::from(PARTITIONS);
        let a_stats = self.a.run.stop().await;
        let b = &self.b;
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
        let committed = self.world.reader.committed().await;
        for p in &self.world.kept {
            assert_eq!(
                committed.get(p),
                Some(&per_partition_end),
                "A committed its partition {p} on shutdown: {committed:?}"
            );
        }
        let b_stats = self.b.run.stop().await;
        self.world.check_final(a_stats, b_stats).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_commits_the_revoked_partitions_before_release() {
    rebalance_then_produce_more(false)
        .await
        .stop_one_after_the_other()
        .await;
}

/// The broker refuses the revoke's commit: A still uploads before release, B re-reads the
/// revoked partitions from the previous commit (none), and the end state is the same: every
/// record in S3 (a re-read one at most twice; usually once, as B rewrites the same keys),
/// every end offset committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_revoke_commit_falls_back_to_re_reading() {
    let r = rebalance_then_produce_more(true).await;
    assert!(
        r.world.b_start.values().all(|s| *s == 0),
        "B re-reads from the start: {:?}",
        r.world.b_start
    );
    r.stop_one_after_the_other().await;
}

/// Both workers stopping at once: B's leave starts a rebalance while A commits its last
/// offsets, and the mock broker refuses commits while the group is joining
/// (`REBALANCE_IN_PROGRESS`); the Kafka thread retries unconfirmed final commits (polling so
/// the group settles) before it leaves, so every partition ends committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_stop_commits_every_partition() {
    let r = rebalance_then_produce_more(false).await;
    let (a_stats, b_stats) = tokio::join!(r.a.run.stop(), r.b.run.stop());
    r.world.check_final(a_stats, b_stats).await;
}

/// A partition revoked from A and later given back to it is read again from where its last
/// owner committed. librdkafka clears a partition's queue forward when it stops fetching it, so
/// the Kafka thread forwards every partition into its batch queue again on each assignment; a
/// missed forward would leave the given-back partitions' new records unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_given_back_are_read_again() {
    /// Records produced after B left (25 per partition).
    const THIRD: usize = 100;
    let Rebalanced { a, b, mut world } = rebalance_then_produce_more(false).await;
    let assigned_before = a.rebalanced("assigned");
    let given_back = world.revoked.len() as u64;
    let _ = b.run.stop().await;
    poll_until(
        GROUP_DEADLINE,
        "B's partitions given back to A",
        || {
            a.check_running();
            (a.rebalanced("assigned") == assigned_before + given_back).then_some(())
        },
        || format!("A assigned {}", a.rebalanced("assigned")),
    )
    .await;
    let before = a.consumed();
    let third = gen_events(&GenOptions {
        seed: 7,
        ..GenOptions::new(THIRD as u64)
    });
    let produced = world
        .expected
        .produce(
            &world.kafka,
            TOPIC,
            round_robin(third, PARTITIONS),
            &BTreeMap::new(),
        )
        .await;
    assert_eq!(produced.len(), THIRD);
    let per = (THIRD / PARTITIONS as usize) as u64;
    poll_until(
        GROUP_DEADLINE,
        "the newest records of every partition consumed by A",
        || {
            a.check_running();
            let now = a.consumed();
            (0..PARTITIONS)
                .all(|p| {
                    now.get(&p).copied().unwrap_or(0) >= before.get(&p).copied().unwrap_or(0) + per
                })
                .then_some(())
        },
        || {
            format!(
                "A consumed {:?}, before the third batch {before:?}",
                a.consumed()
            )
        },
    )
    .await;
    let _ = a.run.stop().await;
    let found = scan(&world.s3.objects(BUCKET), &world.expected, "_errors/");
    assert!(found.unexpected.is_empty(), "{:?}", found.unexpected);
    assert_eq!(
        found.missing(&world.expected),
        [],
        "records missing from S3"
    );
    world.reader.close().await;
    world.s3.stop().await;
}
