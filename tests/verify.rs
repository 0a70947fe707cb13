//! `verify` against the real parts: the pipeline writes a topic (events, malformed records,
//! a tombstone, binary values, a filter and dropped fields) through the mock cluster into the
//! in-process S3 server; then `verify` must find every record exactly once, and must notice a
//! deleted object (missing, exit 1), copies (duplicated, with and without metadata), and lines of
//! records past `--to` (outside the range). The binary's exit codes are checked for usage
//! errors and unreachable services.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::time::{Duration, Instant};

use kafka_s3_sink::config::Config;
use kafka_s3_sink::verify::{self, ToOffset, VerifyOptions, VerifyReport};
use support::{
    gen_events, json_str, malformed, start_pipeline, unique_group, verify_binary, GenOptions,
    Kafka, Msg, OffsetReader, Produced, StoredObject, TestConfig, TestS3, BUCKET, GROUP_DEADLINE,
};

const TOPIC: &str = "events";
const PARTITIONS: i32 = 3;
const ERRORS: &str = "_errors/";

/// A topic written to S3 by the real pipeline.
struct Written {
    /// Kept alive: the mock cluster stops when dropped.
    _kafka: Kafka,
    s3: TestS3,
    cfg: TestConfig,
    /// Where each record landed, and whether the destination's filter drops it.
    records: Vec<(Produced, bool)>,
    quarantined: u64,
}

impl Written {
    fn config(&self) -> Config {
        self.cfg.build()
    }

    fn filtered(&self) -> u64 {
        self.records.iter().filter(|(_, f)| *f).count() as u64
    }

    fn total(&self) -> u64 {
        self.records.len() as u64
    }

    fn data_objects(&self) -> Vec<StoredObject> {
        self.s3
            .objects(BUCKET)
            .into_iter()
            .filter(|o| !o.key.starts_with(ERRORS))
            .collect()
    }
}

/// 1,500 events with `type = page` filtered out and `context.ip` dropped, 8 malformed records,
/// a tombstone and two binary values, round-robin over 3 partitions, drained by the pipeline
/// into files of at most 40 records.
async fn written(name: &str) -> Written {
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    let group = unique_group(name);

    let mut values: Vec<Option<Vec<u8>>> = gen_events(&GenOptions::new(1_500))
        .into_iter()
        .map(Some)
        .collect();
    let mut bad = 0;
    for (i, m) in malformed(8, name).into_iter().enumerate() {
        values.insert(100 + i * 170, Some(m.value));
        bad += 1;
    }
    values.insert(700, None);
    values.insert(900, Some(vec![0xff, 0xfe, b'{']));
    values.insert(1200, Some(vec![0xc3, 0x28]));
    bad += 3;
    let filtered: Vec<bool> = values
        .iter()
        .map(|v| {
            v.as_deref()
                .and_then(|v| json_str(v, "type"))
                .is_some_and(|t| t == "page")
        })
        .collect();
    let msgs: Vec<Msg> = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Msg {
            partition: (i as i32) % PARTITIONS,
            key: Some(format!("k{i}").into_bytes()),
            value,
            timestamp_ms: None,
            headers: Vec::new(),
        })
        .collect();
    let produced = kafka.produce(TOPIC, msgs).await;
    let total = produced.len() as i64;
    let ends = kafka.end_offsets(TOPIC, PARTITIONS).await;

    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(0, "batch.max_records", 40)
        .dest(0, "filter.field", "type")
        .dest(0, "filter.exclude", vec!["page"])
        .dest(0, "filter.drop_fields", vec!["context.ip"]);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(total, Duration::from_secs(60))
        .await;
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, PARTITIONS);
    reader.wait_committed(&ends, GROUP_DEADLINE).await;
    let stats = run.stop().await;
    reader.close().await;
    assert_eq!(stats.records_quarantined, bad);
    Written {
        _kafka: kafka,
        s3,
        cfg,
        records: produced.into_iter().zip(filtered).collect(),
        quarantined: bad,
    }
}

async fn verify_with(w: &Written, opts: VerifyOptions) -> VerifyReport {
    let report = verify::run(&w.config(), &opts)
        .await
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    eprintln!("{}", report.to_text());
    report
}

fn opts() -> VerifyOptions {
    VerifyOptions {
        // Small enough that the sort spills.
        max_memory_mb: 1,
        ..VerifyOptions::default()
    }
}

fn put_raw(s3: &TestS3, key: &str, data: &[u8]) {
    let path = s3.bucket_dir(BUCKET).join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn remove(s3: &TestS3, key: &str) {
    std::fs::remove_file(s3.server.object_path(BUCKET, key)).unwrap();
}

/// After a clean run every expected record is found once, envelopes included, and the filter
/// and dropped fields agree with the pipeline; the binary says the same and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_verifies_complete() {
    let w = written("verify-clean").await;
    let r = verify_with(&w, opts()).await;
    assert_eq!(r.records, w.total());
    assert_eq!(r.filtered, w.filtered());
    assert!(r.filtered > 0, "the generator makes page events");
    assert_eq!(r.expected, w.total() - w.filtered());
    assert_eq!(r.found, r.expected);
    assert_eq!(
        (r.missing, r.duplicated, r.outside_range),
        (0, 0, 0),
        "{r:#?}"
    );
    assert_eq!(r.quarantined, w.quarantined);
    assert_eq!(r.objects, w.s3.keys(BUCKET).len() as u64);
    assert_eq!(r.unattributed + r.bad_envelopes + r.other_topics, 0);
    assert!(r.unreadable.is_empty());
    assert_eq!(
        r.sorted_entries,
        2 * r.expected,
        "one entry per record and per copy"
    );
    assert_eq!(r.partitions.len(), PARTITIONS as usize);
    assert!(r.partitions.iter().all(|p| p.committed == Some(p.to)));

    let (code, stdout, stderr, _) = verify_binary(&w.cfg.toml(), &["--max-memory-mb", "1"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().last().unwrap(), r.summary());
    let (code, stdout, _, _) = verify_binary(&w.cfg.toml(), &["--json"]).await;
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["found"], r.found);
    assert_eq!(
        v["partitions"].as_array().unwrap().len(),
        PARTITIONS as usize
    );
    w.s3.stop().await;
}

/// A deleted data object: its records are missing (with their offsets as examples) and the
/// binary exits 1. A deleted error object: its envelopes are missing too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_objects_are_missing() {
    let w = written("verify-deleted").await;
    let data = w.data_objects();
    let victim = &data[data.len() / 2];
    let lines = victim.lines().len() as u64;
    assert!(lines > 1);
    remove(&w.s3, &victim.key);
    let r = verify_with(&w, opts()).await;
    assert_eq!(r.missing, lines, "{r:#?}");
    assert_eq!(r.found, r.expected - lines);
    assert_eq!((r.duplicated, r.outside_range), (0, 0));
    assert_eq!(r.missing_examples.len() as u64, lines.min(20));
    let first: i64 = victim
        .key
        .rsplit('+')
        .next()
        .and_then(|s| s.split('.').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        r.missing_examples[0].offset, first,
        "{:?}",
        r.missing_examples
    );

    let (code, stdout, stderr, _) = verify_binary(&w.cfg.toml(), &[]).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("missing={lines} ")), "{stdout}");
    assert!(stdout.contains(&format!("missing: {TOPIC}/")), "{stdout}");

    let errors =
        w.s3.objects(BUCKET)
            .into_iter()
            .find(|o| o.key.starts_with(ERRORS))
            .expect("an error object");
    remove(&w.s3, &errors.key);
    let r2 = verify_with(&w, opts()).await;
    assert_eq!(r2.missing, lines + errors.lines().len() as u64);
    assert_eq!(r2.quarantined, w.quarantined - errors.lines().len() as u64);
    w.s3.stop().await;
}

/// Copies of an object (server-side copy keeps the metadata; a raw copy without metadata is
/// attributed by its default-template key) are counted as duplicates, and the report names
/// the keys holding them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_objects_are_duplicated() {
    let w = written("verify-copied").await;
    let data = w.data_objects();
    let a = &data[0];
    let b = &data[data.len() - 1];
    let sinks = kafka_s3_sink::app::s3_sinks(&w.config()).await;
    let copy_key = format!("copies/{}", a.key);
    sinks[0]
        .copy(&a.key, &copy_key, &Default::default())
        .await
        .unwrap();
    let name = b.key.rsplit('/').next().unwrap();
    put_raw(&w.s3, &format!("legacy/{name}"), &b.data);
    let r = verify_with(&w, opts()).await;
    let (na, nb) = (a.lines().len() as u64, b.lines().len() as u64);
    assert_eq!(r.duplicated, na + nb, "{r:#?}");
    assert_eq!((r.missing, r.outside_range), (0, 0));
    assert!(
        r.duplicate_examples
            .iter()
            .any(|d| d.keys.contains(&copy_key) && d.copies == 2),
        "{:?}",
        r.duplicate_examples
    );
    // An object of another naming scheme and no metadata is reported, not guessed.
    put_raw(&w.s3, "other/App_20260101_00001.txt", b"{\"a\":1}\n");
    let r = verify_with(&w, opts()).await;
    assert_eq!(r.unattributed, 1);
    assert_eq!(r.unattributed_keys, vec!["other/App_20260101_00001.txt"]);
    assert_eq!(r.missing, 0);
    w.s3.stop().await;
}

/// With `--to` below the end, lines of later records are outside the range (and the objects
/// holding them are named); with a group that never committed, nothing is expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_to_are_outside_the_range() {
    let w = written("verify-range").await;
    const TO: i64 = 200;
    let past: Vec<&(Produced, bool)> = w.records.iter().filter(|(p, _)| p.offset >= TO).collect();
    let outside = past.iter().filter(|(_, f)| !f).count() as u64;
    let r = verify_with(
        &w,
        VerifyOptions {
            to: ToOffset::Offset(TO),
            ..opts()
        },
    )
    .await;
    assert_eq!(r.records, w.total() - past.len() as u64);
    assert_eq!((r.missing, r.duplicated), (0, 0), "{r:#?}");
    assert_eq!(r.outside_range, outside);
    assert!(!r.outside_range_keys.is_empty());

    let (code, stdout, _, _) = verify_binary(&w.cfg.toml(), &["--to", "200", "--from", "0"]).await;
    assert_eq!(code, Some(0), "outside the range does not fail: {stdout}");
    assert!(
        stdout.contains(&format!("outside_range={outside} ")),
        "{stdout}"
    );
    assert!(stdout.contains("outside range: "), "{stdout}");

    // Another group, no commits: nothing expected, everything in S3 outside the range.
    let mut other = w.cfg.clone();
    other.set("kafka.group_id", unique_group("never-committed"));
    let r = verify::run(&other.build(), &opts()).await.unwrap();
    assert_eq!((r.records, r.expected, r.missing), (0, 0, 0));
    assert_eq!(r.outside_range, w.total() - w.filtered());
    assert!(r.partitions.iter().all(|p| p
        .note
        .as_deref()
        .is_some_and(|n| n.contains("no committed offset"))));
    w.s3.stop().await;
}

/// Commits `offset` for `group` on one partition, as a member of the group (the mock cluster
/// refuses commits from outside it).
async fn commit_offset(brokers: &str, group: &str, partition: i32, offset: i64) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let (brokers, group) = (brokers.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        c.subscribe(&[TOPIC]).unwrap();
        let deadline = Instant::now() + GROUP_DEADLINE;
        while c.assignment().unwrap().count() == 0 {
            assert!(Instant::now() < deadline, "never joined the group");
            let _ = c.poll(Duration::from_millis(100));
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, partition, rdkafka::Offset::Offset(offset))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
}

/// A group committed past a partition's high watermark (a truncated log, a broker that lost
/// records): `verify` reads up to the commit, and when those records do not come it refuses to
/// pass (exit 3, naming the partition) instead of checking up to the watermark and reporting
/// missing=0; `--to latest` still audits what Kafka has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_past_the_high_watermark_cannot_pass() {
    let w = written("verify-past-end").await;
    let brokers = w._kafka.brokers();
    let ends = w._kafka.end_offsets(TOPIC, PARTITIONS).await;
    let group = w.config().kafka.group_id.clone();
    commit_offset(&brokers, &group, 1, ends[&1] + 25).await;
    let reader = OffsetReader::new(&brokers, &group, TOPIC, PARTITIONS);
    let mut want = ends.clone();
    want.insert(1, ends[&1] + 25);
    reader.wait_committed(&want, GROUP_DEADLINE).await;
    reader.close().await;

    let quick = VerifyOptions {
        kafka_timeout: Duration::from_secs(5),
        ..opts()
    };
    let e = verify::run(&w.config(), &quick).await.unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{TOPIC}[1] committed {} but its high watermark is {}",
            ends[&1] + 25,
            ends[&1]
        )),
        "{text}"
    );

    let (code, stdout, stderr, _) = verify_binary(&w.cfg.toml(), &[]).await;
    assert_eq!(
        code,
        Some(3),
        "{stdout}
{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("high watermark"), "{stderr}");
    let (code, stdout, stderr, _) = verify_binary(&w.cfg.toml(), &["--to", "latest"]).await;
    assert_eq!(
        code,
        Some(0),
        "{stdout}
{stderr}"
    );
    assert!(stdout.contains("missing=0 "), "{stdout}");
    w.s3.stop().await;
}

fn unreachable_config(brokers: &str, endpoint: &str) -> String {
    TestConfig::new(brokers, "g", &[TOPIC], endpoint).toml()
}

/// Usage errors exit 2 with one line; an unreachable S3 or Kafka exits 3 within its timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_for_usage_errors_and_unreachable_services() {
    let text = unreachable_config("127.0.0.1:1", "http://127.0.0.1:1");
    for args in [
        &["--destination", "nope"][..],
        &["--topic", "other"][..],
        &["--from", "soon"][..],
        &["--max-memory-mb", "0"][..],
    ] {
        let (code, stdout, stderr, _) = verify_binary(&text, args).await;
        assert_eq!(code, Some(2), "{args:?}: {stdout}\n{stderr}");
        if args[0] != "--from" {
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            assert!(stderr.contains(args[0]), "{stderr}");
        }
    }
    let (code, _, stderr, _) = verify_binary("[kafka]\n", &[]).await;
    assert_eq!(code, Some(2), "{stderr}");

    // S3 refuses connections; Kafka answers.
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, 1);
    let (code, _, stderr, took) = verify_binary(
        &unreachable_config(&kafka.brokers(), "http://127.0.0.1:1"),
        &[],
    )
    .await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(took < Duration::from_secs(60), "{took:?}");

    // Kafka is not there; S3 answers (an empty bucket).
    let s3 = TestS3::start().await;
    let (code, _, stderr, took) =
        verify_binary(&unreachable_config("127.0.0.1:1", &s3.endpoint()), &[]).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("kafka"), "{stderr}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    eprintln!("unreachable kafka detected in {took:?}");
    s3.stop().await;
}

/// Measurement, not a check (`cargo test --release --test verify -- --ignored --nocapture`):
/// 200,000 events over 8 partitions written by the pipeline, then the binary's `verify` under
/// `/usr/bin/time -v` with small and large `--max-memory-mb`; prints wall time and peak RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: 200k records, prints time and peak RSS of the verify binary"]
async fn measure_verify_on_200k_records() {
    const N: usize = 200_000;
    const PARTS: i32 = 8;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTS);
    let s3 = TestS3::start().await;
    let group = unique_group("verify-measure");
    let msgs = support::round_robin(gen_events(&GenOptions::new(N as u64)), PARTS);
    kafka.produce(TOPIC, msgs).await;
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(0, "batch.max_records", 5_000);
    let started = Instant::now();
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(N as i64, Duration::from_secs(600))
        .await;
    run.stop().await;
    eprintln!("pipeline wrote {N} records in {:?}", started.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.toml");
    std::fs::write(&path, cfg.toml()).unwrap();
    for mb in ["4", "32", "256"] {
        let out = tokio::process::Command::new("/usr/bin/time")
            .arg("-v")
            .arg(env!("CARGO_BIN_EXE_kafka-s3-sink"))
            .args(["verify", "--config"])
            .arg(&path)
            .args(["--max-memory-mb", mb])
            .env("KAFKA_S3_SINK_LOG", "info")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        let pick = |name: &str| {
            stderr
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        for l in stderr
            .lines()
            .filter(|l| l.contains(" side read") || l.contains("merge-join"))
        {
            eprintln!("{l}");
        }
        eprintln!(
            "--max-memory-mb {mb}: {} | {} | {} | {}\n{}",
            pick("Elapsed (wall clock)"),
            pick("Percent of CPU"),
            pick("Maximum resident set size"),
            stdout.lines().rev().nth(1).unwrap_or_default(),
            stdout.lines().last().unwrap_or_default()
        );
    }
    s3.stop().await;
}
