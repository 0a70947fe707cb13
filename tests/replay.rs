//! Deterministic batching (`batch.deterministic = true`) against the real parts: after a crash,
//! the replay from the last commit rebuilds byte-identical objects at the same keys, so the
//! bucket ends with every record exactly once (0 duplicates), even though some of the replayed
//! files were already in S3.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_s3_sink::metrics::Metrics;
use support::{
    counter_sum, gen_events, round_robin, scan, start_pipeline, start_pipeline_with_metrics,
    unique_group, Expected, GenOptions, Kafka, OffsetReader, TestConfig, TestS3, BUCKET,
};
use tokio::time::Instant;

const TOPIC: &str = "replay";
const PARTITIONS: i32 = 2;
const WINDOW: i64 = 50;

fn key_of(partition: i32, offset: i64) -> String {
    format!("{TOPIC}+{partition}+{offset:020}.ndjson.gz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_replay_rebuilds_the_same_objects() {
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    let group = unique_group("replay");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(0, "batch.deterministic", true);
    cfg.dest(0, "batch.max_records", WINDOW);
    cfg.dest(0, "batch.max_age_secs", 250);
    // Only the last window's files go idle (the rest close when their window ends): once every
    // record is read, they hold the same records however often they are rebuilt.
    cfg.dest(0, "batch.idle_secs", 3);
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, PARTITIONS);

    // 500 events per partition over 3 days, 6 % late: each 50-offset window spreads over a few
    // hour folders. The object holding partition 0's window 100..150 (its file starting at 100)
    // cannot be stored, so partition 0's commit stays at 100 while later windows reach S3.
    let faults = s3.server.faults();
    let stuck = key_of(0, 100);
    let stuck_match = stuck.replace('+', "%2B"); // as it appears in the request path
    faults.fail_matching(u32::MAX, move |t| {
        t.is_put_object() && t.path.ends_with(&stuck_match)
    });
    let mut opts = GenOptions::new(1_000);
    opts.late_pct = 6.0;
    let mut expected = Expected::default();
    let msgs = round_robin(gen_events(&opts), PARTITIONS);
    expected
        .produce_unchecked(&kafka, TOPIC, msgs, &BTreeMap::new())
        .await;

    let first = start_pipeline(cfg.build()).await;
    let last_window = key_of(0, 400);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s3.keys(BUCKET).iter().any(|k| k.ends_with(&last_window)) {
        assert!(
            Instant::now() < deadline,
            "window 400 of partition 0 never reached S3"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The commits of windows 0 and 50 may still be on their way (uploads finish in any
    // order); partition 0's commit reaches 100 and never passes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let committed = reader.committed().await.get(&0).copied();
        assert!(
            committed.is_none_or(|c| c <= 100),
            "committed {committed:?}, past the stuck window's start"
        );
        if committed == Some(100) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "held at the stuck window's start: committed {committed:?}, want 100"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Partition 0's objects from offset 100 on: the replay rebuilds each of them.
    let replayed = |k: &String| {
        k.rsplit_once(&format!("{TOPIC}+0+"))
            .and_then(|(_, rest)| rest.get(..20)?.parse::<i64>().ok())
            .is_some_and(|o| o > 100)
    };
    let already = s3.keys(BUCKET).iter().filter(|k| replayed(k)).count();
    first.crash();

    // A new worker resumes from 100 (partition 0) and 450 (partition 1: its last window was
    // still open) and rebuilds what it re-reads.
    faults.clear();
    let registry = prometheus::Registry::new();
    let second = start_pipeline_with_metrics(cfg.build(), Metrics::new(&registry).unwrap()).await;
    let ends = kafka.end_offsets(TOPIC, PARTITIONS).await;
    reader.wait_committed(&ends, Duration::from_secs(60)).await;
    let stats = second.stop().await;
    reader.close().await;

    let identical = counter_sum(
        &registry,
        "kafka_s3_sink_key_conflicts_total",
        &[("resolution", "identical")],
    );
    let objects = s3.objects(BUCKET);
    let found = scan(&objects, &expected, "_errors/");
    assert!(found.unexpected.is_empty(), "{:?}", found.unexpected);
    assert_eq!(found.records.len(), expected.total(), "every record in S3");
    assert_eq!(found.duplicates(), 0, "a replay rebuilds the same objects");
    assert!(
        objects.iter().all(|o| !o.key.contains('~')),
        "no object had to be kept aside"
    );
    // Partition 0 resumes at its window-aligned commit (100); partition 1 at whatever it last
    // committed (the mock refuses commits while the group rebalances, so that varies).
    assert!(stats.records_in >= 400, "re-read: {}", stats.records_in);
    assert!(
        identical as usize >= already,
        "the {already} objects of partition 0 already in S3 were rebuilt identically ({identical})"
    );
    eprintln!(
        "deterministic replay: {} records, {} objects, {} re-read, {identical} rebuilt identically, 0 duplicates",
        expected.total(),
        objects.len(),
        stats.records_in
    );
    s3.stop().await;
}
