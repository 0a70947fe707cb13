//! Delivery semantics against the real parts: librdkafka's mock cluster, the real pipeline and
//! aws-sdk-s3 talking to the in-process S3 server. Each test proves one promise: every record
//! reaches S3 (exactly once on a clean run, at least once across S3 failures and crashes), a
//! commit never passes a record that is not in S3, objects land in the right folders with the
//! right headers, and large files go by multipart upload without leftovers.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use support::{
    gen_events, hour_folder, malformed, round_robin, scan, start_pipeline, unique_group, Expected,
    GenOptions, Kafka, Malformed, Msg, OffsetReader, Produced, Scan, TestConfig, TestS3, BUCKET,
    GROUP_DEADLINE,
};

const ERRORS: &str = "_errors/";

/// Events spread round-robin over `partitions`, with `bad` malformed records mixed in at
/// regular positions; returns the messages and which indexes are malformed.
fn mixed(
    events: Vec<Vec<u8>>,
    bad: Vec<Malformed>,
    partitions: i32,
) -> (Vec<Msg>, BTreeMap<usize, Malformed>) {
    let total = events.len() + bad.len();
    let every = total / (bad.len() + 1);
    let mut bad = bad.into_iter();
    let mut events = events.into_iter();
    let mut values = Vec::with_capacity(total);
    let mut which = BTreeMap::new();
    for i in 0..total {
        let m = if (i + 1) % every == 0 {
            bad.next()
        } else {
            None
        };
        match m {
            Some(m) => {
                which.insert(i, m.clone());
                values.push(m.value);
            }
            None => match events.next() {
                Some(e) => values.push(e),
                None => {
                    let m = bad.next().expect("invariant: total = events + bad");
                    which.insert(i, m.clone());
                    values.push(m.value);
                }
            },
        }
    }
    (round_robin(values, partitions), which)
}

/// A topic fed in waves: each wave is the next `n` generator events with `bad` malformed records
/// mixed in, spread round-robin over the partitions; `expected` collects every record sent.
struct Waves {
    topic: &'static str,
    partitions: i32,
    events: std::vec::IntoIter<Vec<u8>>,
    expected: Expected,
}

impl Waves {
    fn new(topic: &'static str, partitions: i32, events: usize) -> Self {
        Waves {
            topic,
            partitions,
            events: gen_events(&GenOptions::new(events as u64)).into_iter(),
            expected: Expected::default(),
        }
    }

    /// Produces the next wave; returns the end offsets after it.
    async fn send(&mut self, kafka: &Kafka, n: usize, bad: usize, tag: &str) -> BTreeMap<i32, i64> {
        let events = self.events.by_ref().take(n).collect();
        let (msgs, bad) = mixed(events, malformed(bad, tag), self.partitions);
        self.expected.produce(kafka, self.topic, msgs, &bad).await;
        kafka.end_offsets(self.topic, self.partitions).await
    }
}

/// Waits until on every partition a refused PutObject carried a file starting at or past its
/// offset in `ends`: the wave after `ends` was consumed and sealed while S3 refused it.
async fn wait_refused_puts_from(s3: &TestS3, ends: &BTreeMap<i32, i64>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sealed = failed_puts(s3);
        if ends
            .iter()
            .all(|(p, end)| sealed.get(p).is_some_and(|o| o >= end))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused wave never reached S3: {sealed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the placement rules every test shares: data keys are
/// `<hour folder of each line's timestamp>events+<partition>+<first offset>.ndjson<suffix>`,
/// error keys `_errors/<reason>/events+<partition>+<first offset>.ndjson<suffix>`, and the
/// first line of an object is the record at its key's offset.
fn check_placement(s3: &TestS3, expected: &Expected, topic: &str, suffix: &str) {
    for obj in s3.objects(BUCKET) {
        let name = obj.key.rsplit('/').next().unwrap_or_default();
        let stem = name
            .strip_suffix(&format!(".ndjson{suffix}"))
            .unwrap_or_else(|| panic!("{}: not .ndjson{suffix}", obj.key));
        let mut parts = stem.split('+');
        assert_eq!(parts.next(), Some(topic), "{}", obj.key);
        let partition: i32 = parts.next().unwrap().parse().unwrap();
        let first: i64 = parts.next().unwrap().parse().unwrap();
        let lines = obj.lines();
        assert!(!lines.is_empty(), "{}: empty object", obj.key);
        let mut offsets = Vec::new();
        for line in &lines {
            let at = if obj.key.starts_with(ERRORS) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                Produced {
                    partition: v["partition"].as_i64().unwrap() as i32,
                    offset: v["offset"].as_i64().unwrap(),
                }
            } else {
                let e = &expected.events[&support::message_id(line).unwrap()];
                let t = e.time.expect("events have a timestamp");
                assert_eq!(
                    format!("{}/", obj.folder()),
                    hour_folder(t),
                    "{}: record {:?} with timestamp {t} in the wrong folder",
                    obj.key,
                    e.at
                );
                e.at
            };
            assert_eq!(at.partition, partition, "{}: foreign partition", obj.key);
            offsets.push(at.offset);
        }
        assert_eq!(offsets[0], first, "{}: key names the first offset", obj.key);
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "{}: lines not in offset order",
            obj.key
        );
    }
}

fn assert_complete(scan: &Scan, expected: &Expected) {
    assert!(
        scan.unexpected.is_empty(),
        "unexpected: {:?}",
        scan.unexpected
    );
    let missing = scan.missing(expected);
    assert!(
        missing.is_empty(),
        "{} records missing from S3, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// A clean run: every record lands exactly once, in the folder of its own timestamp hour, in
/// readable gzip; malformed records land as envelopes under `_errors/<reason>/`; the offsets
/// committed in Kafka equal the partitions' end offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_delivers_every_record_exactly_once() {
    clean_run("gzip", ".gz").await;
}

/// The same clean run with zstd objects (`.zst`, one frame each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_with_zstd_delivers_every_record_exactly_once() {
    clean_run("zstd", ".zst").await;
}

async fn clean_run(compression: &str, suffix: &str) {
    const TOPIC: &str = "events";
    const PARTITIONS: i32 = 4;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    let group = unique_group("clean");

    let events = gen_events(&GenOptions::new(5_000));
    let (msgs, bad) = mixed(events, malformed(12, "clean"), PARTITIONS);
    let mut expected = Expected::default();
    expected.produce(&kafka, TOPIC, msgs, &bad).await;
    assert_eq!(expected.total(), 5_012);
    let ends = kafka.end_offsets(TOPIC, PARTITIONS).await;
    assert_eq!(ends.values().sum::<i64>(), 5_012);

    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(0, "batch.max_records", 10)
        .dest(0, "batch.compression", compression);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(5_012, Duration::from_secs(60))
        .await;
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, PARTITIONS);
    reader.wait_committed(&ends, GROUP_DEADLINE).await;
    let stats = run.stop().await;
    reader.close().await;

    let objects = s3.objects(BUCKET);
    let found = scan(&objects, &expected, ERRORS);
    assert_complete(&found, &expected);
    assert_eq!(found.duplicates(), 0, "a clean run writes each record once");
    assert_eq!(found.data_lines, 5_000);
    assert_eq!(found.error_lines, 12);
    check_placement(&s3, &expected, TOPIC, suffix);

    let folders: std::collections::BTreeSet<&str> = objects
        .iter()
        .filter(|o| !o.key.starts_with(ERRORS))
        .map(|o| o.folder())
        .collect();
    assert!(folders.len() >= 72, "3 days of hours: {}", folders.len());
    let reasons: std::collections::BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o.key.strip_prefix(ERRORS))
        .filter_map(|k| k.split('/').next())
        .collect();
    assert_eq!(
        reasons.into_iter().collect::<Vec<_>>(),
        ["bad_time", "missing_time", "not_json", "not_object"]
    );

    assert_eq!(stats.records_in, 5_012);
    assert_eq!(stats.records_written, 5_000);
    assert_eq!(stats.records_quarantined, 12);
    assert_eq!(stats.objects as usize, objects.len());
    let committed: BTreeMap<i32, i64> = stats
        .committed
        .iter()
        .map(|(tp, o)| (tp.partition, *o))
        .collect();
    assert_eq!(committed, ends);
    eprintln!(
        "clean run ({compression}): {} records, {} objects in {} hour folders, committed {ends:?}",
        expected.total(),
        objects.len(),
        folders.len()
    );
    s3.stop().await;
}

/// Fixed-hour events into one partition with compression off: the file outgrows the 5 MiB part
/// size, so it streams as a multipart upload; the object is byte-identical to the records'
/// lines and no part files remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_goes_by_multipart_upload() {
    const TOPIC: &str = "big";
    const PART_SIZE: usize = 5 * 1024 * 1024; // S3's minimum

    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, 1);
    let s3 = TestS3::start().await;
    let group = unique_group("multipart");

    let mut opts = GenOptions::new(30_000);
    opts.start = Utc.with_ymd_and_hms(2026, 11, 2, 10, 30, 0).unwrap();
    opts.days = 0.0005; // 43 s, all in hour 10
    opts.late_pct = 0.0;
    let events = gen_events(&opts);
    let mut body = Vec::new();
    for e in &events {
        body.extend_from_slice(e);
        body.push(b'\n');
    }
    // The file must take at least three parts (a first, a middle and a short last one).
    assert!(
        body.len() > 2 * PART_SIZE,
        "{} bytes: generate more events",
        body.len()
    );
    let msgs: Vec<Msg> = events.into_iter().map(|e| Msg::new(0, e)).collect();
    let mut expected = Expected::default();
    expected
        .produce(&kafka, TOPIC, msgs, &BTreeMap::new())
        .await;

    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.set("upload.part_size_bytes", PART_SIZE as i64)
        .dest(0, "batch.compression", "none")
        .dest(0, "batch.max_records", 1_000_000)
        .dest(0, "batch.max_bytes", 20 * 1024 * 1024);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(30_000, Duration::from_secs(90))
        .await;
    let stats = run.stop().await;

    let objects = s3.objects(BUCKET);
    assert_eq!(
        objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        ["2026/11/02/10/big+0+00000000000000000000.ndjson"]
    );
    assert!(
        objects[0].data == body,
        "object ({} bytes) differs from the lines ({} bytes)",
        objects[0].data.len(),
        body.len()
    );
    let found = scan(&objects, &expected, ERRORS);
    assert_complete(&found, &expected);
    assert_eq!(found.duplicates(), 0);

    let requests = s3.server.requests();
    let count = |f: fn(&kafka_s3_sink::s3server::RecordedRequest) -> bool| {
        requests
            .iter()
            .filter(|r| f(r) && r.status == Some(200))
            .count()
    };
    let creates = count(|r| r.target().is_create_multipart());
    let parts = count(|r| r.target().is_upload_part());
    let completes = count(|r| r.target().is_complete_multipart());
    let puts = count(|r| r.target().is_put_object());
    assert_eq!(creates, 1, "{requests:#?}");
    let expected_parts = body.len().div_ceil(PART_SIZE);
    assert_eq!(parts, expected_parts);
    assert_eq!(completes, 1);
    assert_eq!(puts, 0, "no PutObject for a multipart file");
    assert!(
        s3.upload_leftovers().is_empty(),
        "leftovers: {:?}",
        s3.upload_leftovers()
    );
    assert_eq!(stats.objects, 1);
    eprintln!("multipart: {} bytes in {parts} parts, 1 object", body.len());
    s3.stop().await;
}

/// Reads the group's commits from Kafka, THEN the objects from S3 (objects are never deleted,
/// so whatever was in S3 when a commit was made is still there), and checks that no commit
/// passes a record missing from S3: per partition, committed ≤ the first offset not found in
/// any object. Returns the commits.
async fn commits_covered(
    reader: &OffsetReader,
    s3: &TestS3,
    expected: &Expected,
) -> BTreeMap<i32, i64> {
    let committed = reader.committed().await;
    let found = scan(&s3.objects(BUCKET), expected, ERRORS);
    assert!(found.unexpected.is_empty(), "{:?}", found.unexpected);
    for (p, c) in &committed {
        let end = found.contiguous_end(*p);
        assert!(
            *c <= end,
            "partition {p}: committed offset {c} passes offset {end}, which is not in S3"
        );
    }
    committed
}

/// Samples [`commits_covered`] until the commits equal `target`; returns the samples taken.
async fn sample_until(
    reader: &OffsetReader,
    s3: &TestS3,
    expected: &Expected,
    target: &BTreeMap<i32, i64>,
    within: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut samples = 0;
    loop {
        let committed = commits_covered(reader, s3, expected).await;
        samples += 1;
        if &committed == target {
            return samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "commits {committed:?} did not reach {target:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (partition, first offset) named by an object key as the server saw it in a request path.
fn key_position(path: &str) -> Option<(i32, i64)> {
    let name = path.rsplit('/').next()?.replace("%2B", "+");
    let stem = name.split(".ndjson").next()?;
    let mut parts = stem.split('+').skip(1);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// For each partition, the highest first offset among PutObject requests the fault plan
/// answered: which files the worker has sealed and is retrying.
fn failed_puts(s3: &TestS3) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for r in s3.server.requests() {
        if r.fault_injected && r.target().is_put_object() {
            if let Some((p, o)) = key_position(&r.path) {
                let e = out.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        }
    }
    out
}

/// S3 fails the first requests, then some PutObjects mid-run, then everything for a while: no
/// commit read from Kafka ever passes a record that is not in S3, commits stand still during
/// the outage, and after recovery every record is there exactly once (retries rewrite the same
/// key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_failures_never_let_a_commit_pass_a_missing_record() {
    use kafka_s3_sink::s3server::Fault;
    const TOPIC: &str = "flaky";
    const PARTITIONS: i32 = 3;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    let group = unique_group("flaky");
    let faults = s3.server.faults();
    faults.fail_next(5);

    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(0, "batch.max_records", 25);
    let run = start_pipeline(cfg.build()).await;
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, PARTITIONS);
    let mut waves = Waves::new(TOPIC, PARTITIONS, 3_000);
    let mut samples = 0;
    let wait = Duration::from_secs(60);

    // Wave 1 while the first 5 requests fail.
    let ends1 = waves.send(&kafka, 1_000, 4, "w1").await;
    samples += sample_until(&reader, &s3, &waves.expected, &ends1, wait).await;
    assert_eq!(faults.injected(), 5);

    // Wave 2 with PutObject failing 13 times (503 and 500).
    faults.fail_matching(10, |t| t.is_put_object());
    faults.fail_matching_with(3, Fault::internal_error(), |t| t.is_put_object());
    let ends2 = waves.send(&kafka, 1_000, 4, "w2").await;
    samples += sample_until(&reader, &s3, &waves.expected, &ends2, wait).await;
    assert_eq!(faults.injected(), 18);

    // Wave 3 during an outage: every request fails until 40 more faults were answered; the
    // commits must not move.
    faults.fail_matching(u32::MAX, |_| true);
    let ends3 = waves.send(&kafka, 1_000, 4, "w3").await;
    let expected = waves.expected;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while faults.injected() < 18 + 40 {
        let committed = commits_covered(&reader, &s3, &expected).await;
        samples += 1;
        assert_eq!(committed, ends2, "commits moved while S3 was down");
        assert!(tokio::time::Instant::now() < deadline, "no retries seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outage_faults = faults.injected() - 18;
    faults.clear();
    samples += sample_until(&reader, &s3, &expected, &ends3, wait).await;
    let stats = run.stop().await;
    reader.close().await;

    let objects = s3.objects(BUCKET);
    let found = scan(&objects, &expected, ERRORS);
    assert_complete(&found, &expected);
    assert_eq!(found.duplicates(), 0, "retries rewrite the same key");
    check_placement(&s3, &expected, TOPIC, ".gz");
    assert_eq!(stats.records_in as usize, expected.total());
    assert!(s3.upload_leftovers().is_empty());
    // Every key that was refused was written in the end.
    for r in s3.server.requests() {
        if r.fault_injected && r.target().is_put_object() {
            let key = r
                .path
                .trim_start_matches(&format!("/{BUCKET}/"))
                .replace("%2B", "+");
            assert!(
                s3.exists(BUCKET, &key),
                "{key} was refused and never written"
            );
        }
    }
    eprintln!(
        "s3 failures: {} records, {} objects, {} faults injected ({outage_faults} during the \
         outage), {samples} commit samples all covered by S3",
        expected.total(),
        objects.len(),
        faults.injected()
    );
    s3.stop().await;
}

/// A worker crashes (its task aborted: no flush, no commit, no clean leave) while S3 refuses
/// its uploads; a new worker in the same group resumes from the last commit. In the end every
/// record is in S3 at least once, the group's commits equal the end offsets, and the new worker
/// re-read only what was not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_crash_loses_nothing() {
    const TOPIC: &str = "crash";
    const PARTITIONS: i32 = 2;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    let group = unique_group("crash");
    let faults = s3.server.faults();
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(0, "batch.max_records", 20);
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, PARTITIONS);
    let mut waves = Waves::new(TOPIC, PARTITIONS, 2_000);

    let mut first = start_pipeline(cfg.build()).await;
    let ends1 = waves.send(&kafka, 1_000, 4, "a").await;
    first
        .wait_committed_total(ends1.values().sum(), Duration::from_secs(60))
        .await;
    reader.wait_committed(&ends1, GROUP_DEADLINE).await;

    // Wave 2 is consumed and sealed, but S3 refuses every PutObject: nothing more commits.
    faults.fail_matching(u32::MAX, |t| t.is_put_object());
    let ends2 = waves.send(&kafka, 1_000, 4, "b").await;
    wait_refused_puts_from(&s3, &ends1).await;
    let expected = waves.expected;
    first.crash();
    assert_eq!(
        reader.committed().await,
        ends1,
        "a crash commits nothing more"
    );

    // S3 recovers; uploads the dead worker had in flight may still land (like requests already
    // sent when a process dies). A new worker joins the same group.
    faults.clear();
    let mut second = start_pipeline(cfg.build()).await;
    reader.wait_committed(&ends2, Duration::from_secs(60)).await;
    let wave2: i64 = ends2.values().sum::<i64>() - ends1.values().sum::<i64>();
    second
        .wait_until(Duration::from_secs(30), "wave 2 re-read", |s| {
            s.records_in as i64 >= wave2
        })
        .await;
    let stats = second.stop().await;
    reader.wait_committed(&ends2, GROUP_DEADLINE).await;
    reader.close().await;

    let objects = s3.objects(BUCKET);
    let found = scan(&objects, &expected, ERRORS);
    assert_complete(&found, &expected);
    check_placement(&s3, &expected, TOPIC, ".gz");
    assert_eq!(
        stats.records_in as i64, wave2,
        "the new worker starts at the last commit"
    );
    eprintln!(
        "crash/restart: {} records, {} objects, {} duplicates, second worker re-read {} records",
        expected.total(),
        objects.len(),
        found.duplicates(),
        stats.records_in
    );
    s3.stop().await;
}

/// A clean shutdown while S3 is down gives up after `shutdown_deadline_secs`, commits only what
/// is in S3, and a later worker delivers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_with_s3_down_commits_only_what_is_in_s3() {
    const TOPIC: &str = "down";
    const PARTITIONS: i32 = 2;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    let group = unique_group("down");
    let faults = s3.server.faults();
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.set("pipeline.shutdown_deadline_secs", 2)
        .dest(0, "batch.max_records", 50);
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, PARTITIONS);
    let mut waves = Waves::new(TOPIC, PARTITIONS, 800);

    let mut first = start_pipeline(cfg.build()).await;
    let ends1 = waves.send(&kafka, 400, 2, "a").await;
    first
        .wait_committed_total(ends1.values().sum(), Duration::from_secs(60))
        .await;

    faults.fail_matching(u32::MAX, |_| true);
    let ends2 = waves.send(&kafka, 400, 2, "b").await;
    wait_refused_puts_from(&s3, &ends1).await;
    let expected = waves.expected;
    let started = tokio::time::Instant::now();
    let stats = first.stop().await;
    let took = started.elapsed();
    let committed: BTreeMap<i32, i64> = stats
        .committed
        .iter()
        .map(|(tp, o)| (tp.partition, *o))
        .collect();
    assert_eq!(committed, ends1, "the stopped worker's last commits");
    assert_eq!(reader.committed().await, ends1);
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
    let found = scan(&s3.objects(BUCKET), &expected, ERRORS);
    assert!(
        !found.missing(&expected).is_empty(),
        "wave 2 is not in S3 yet"
    );

    faults.clear();
    let second = start_pipeline(cfg.build()).await;
    reader.wait_committed(&ends2, Duration::from_secs(60)).await;
    second.stop().await;
    reader.close().await;
    let found = scan(&s3.objects(BUCKET), &expected, ERRORS);
    assert_complete(&found, &expected);
    eprintln!(
        "shutdown with S3 down: stopped in {took:?} at {ends1:?}; restart delivered the rest \
         ({} duplicates)",
        found.duplicates()
    );
    s3.stop().await;
}

/// A destination with `encryption.mode = "AES256"` and gzip, flushed by the shutdown: every
/// PutObject and
/// CreateMultipartUpload carries `x-amz-server-side-encryption: AES256` and
/// `content-type: application/x-ndjson` and no `content-encoding` (the default, so S3 clients
/// do not gunzip silently); keys end in `.gz`. One partition gets a > 5 MiB gzip file (events
/// padded with random text, produced while the worker consumes, since the mock keeps only
/// 5 MiB per partition), so the multipart path streams gzip parts that still decode as one
/// stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_content_headers_on_every_object() {
    use base64::Engine;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    const TOPIC: &str = "sse";
    const BIG: usize = 9_000;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, 2);
    let s3 = TestS3::start().await;
    let group = unique_group("sse");

    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.set("upload.part_size_bytes", 5_242_880)
        .dest(0, "encryption.mode", "AES256")
        .dest(0, "batch.compression_level", 1)
        .dest(0, "batch.max_records", 1_000_000)
        // Nothing flushes before the shutdown (which seals, uploads and commits everything), so
        // pauses between produced chunks cannot split the big file.
        .dest(0, "batch.idle_secs", 120)
        .dest(0, "batch.max_age_secs", 120);
    let registry = prometheus::Registry::new();
    let metrics = kafka_s3_sink::metrics::Metrics::new(&registry).expect("metrics");
    let run = support::start_pipeline_with_metrics(cfg.build(), metrics).await;
    let consumed = || {
        support::counter_sum(
            &registry,
            "kafka_s3_sink_records_consumed_total",
            &[("topic", TOPIC)],
        )
    };

    // Partition 1: ordinary events over three days, small objects (PutObject).
    let mut expected = Expected::default();
    let small: Vec<Msg> = gen_events(&GenOptions::new(300))
        .into_iter()
        .map(|e| Msg::new(1, e))
        .collect();
    expected
        .produce(&kafka, TOPIC, small, &BTreeMap::new())
        .await;

    // Partition 0: one hour of events padded with 800 random base64 characters each.
    let mut opts = GenOptions::new(BIG as u64);
    opts.seed = 7;
    opts.start = Utc.with_ymd_and_hms(2026, 11, 2, 10, 30, 0).unwrap();
    opts.days = 0.0005;
    opts.late_pct = 0.0;
    let mut rng = StdRng::seed_from_u64(7);
    let big: Vec<Vec<u8>> = gen_events(&opts)
        .into_iter()
        .map(|e| {
            let mut v: serde_json::Value = serde_json::from_slice(&e).unwrap();
            let pad: Vec<u8> = (0..600).map(|_| rng.random()).collect();
            v["pad"] = base64::engine::general_purpose::STANDARD.encode(pad).into();
            v.to_string().into_bytes()
        })
        .collect();
    let mut big_body = Vec::new();
    for e in &big {
        big_body.extend_from_slice(e);
        big_body.push(b'\n');
    }
    let mut produced = 300;
    for chunk in big.chunks(2_250) {
        let msgs = chunk.iter().map(|e| Msg::new(0, e.clone())).collect();
        expected
            .produce_unchecked(&kafka, TOPIC, msgs, &BTreeMap::new())
            .await;
        produced += chunk.len() as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while consumed() < produced {
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker consumed {} of {produced}",
                consumed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let stats = run.stop().await;
    let ends = kafka.end_offsets(TOPIC, 2).await;
    let committed: BTreeMap<i32, i64> = stats
        .committed
        .iter()
        .map(|(tp, o)| (tp.partition, *o))
        .collect();
    assert_eq!(committed, ends, "the shutdown committed everything");
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, 2);
    assert_eq!(reader.committed().await, ends);
    reader.close().await;
    assert_eq!(stats.records_in, produced, "the worker read every record");

    let objects = s3.objects(BUCKET);
    let found = scan(&objects, &expected, ERRORS);
    assert_complete(&found, &expected);
    assert_eq!(found.duplicates(), 0);
    check_placement(&s3, &expected, TOPIC, ".gz");
    let big_key = "2026/11/02/10/sse+0+00000000000000000000.ndjson.gz";
    let big_obj = objects
        .iter()
        .find(|o| o.key == big_key)
        .expect("big object");
    assert!(
        big_obj.data.len() > 5_242_880,
        "{} bytes",
        big_obj.data.len()
    );
    assert!(
        big_obj.content() == big_body,
        "gzip multipart content differs"
    );

    let requests = s3.server.requests();
    let mut puts = 0;
    let mut creates = 0;
    for r in &requests {
        let t = r.target();
        if !(t.is_put_object() || t.is_create_multipart()) {
            continue;
        }
        if t.is_put_object() {
            puts += 1;
        } else {
            creates += 1;
        }
        assert_eq!(
            r.header("x-amz-server-side-encryption"),
            Some("AES256"),
            "{r:?}"
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/x-ndjson"),
            "{r:?}"
        );
        assert_eq!(r.header("content-encoding"), None, "{r:?}");
        assert!(r.path.ends_with(".gz"), "{r:?}");
    }
    let parts = requests
        .iter()
        .filter(|r| r.target().is_upload_part())
        .count();
    assert_eq!(creates, 1, "one multipart object");
    assert_eq!(parts, big_obj.data.len().div_ceil(5_242_880));
    assert_eq!(puts + 1, objects.len(), "every other object by PutObject");
    assert!(objects.iter().all(|o| o.key.ends_with(".gz")));
    assert!(s3.upload_leftovers().is_empty());
    eprintln!(
        "sse: {} objects ({puts} PutObject, {creates} multipart in {parts} parts, {} gzip bytes), \
         all with AES256 and application/x-ndjson",
        objects.len(),
        big_obj.data.len()
    );
    s3.stop().await;
}

/// A request S3 can never accept as formed (400 KeyTooLongError here; InvalidArgument and the
/// like are classified the same way) stops the worker at once with S3's answer in the error:
/// no retry loop, nothing of the refused file committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_request_stops_the_worker_without_retrying() {
    use kafka_s3_sink::s3server::Fault;
    const TOPIC: &str = "invalid";
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, 1);
    let s3 = TestS3::start().await;
    let group = unique_group("invalid");
    let faults = s3.server.faults();
    faults.fail_matching_with(
        u32::MAX,
        Fault {
            status: 400,
            code: "KeyTooLongError".into(),
            message: "Your key is too long".into(),
        },
        |t| t.is_put_object(),
    );
    let events = gen_events(&GenOptions::new(50));
    let mut expected = Expected::default();
    expected
        .produce(
            &kafka,
            TOPIC,
            events.into_iter().map(|e| Msg::new(0, e)).collect(),
            &BTreeMap::new(),
        )
        .await;
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(0, "batch.max_records", 10);
    let run = start_pipeline(cfg.build()).await;
    let result = tokio::time::timeout(Duration::from_secs(60), run.handle)
        .await
        .expect("the worker stops on its own")
        .expect("the run task");
    let err = result.expect_err("an invalid request is fatal").to_string();
    assert!(err.contains("KeyTooLongError"), "{err}");
    assert!(err.contains("invalid"), "classified as invalid: {err}");
    let mut tries: BTreeMap<String, usize> = BTreeMap::new();
    for r in s3.server.requests().iter().filter(|r| r.fault_injected) {
        *tries.entry(r.path.clone()).or_default() += 1;
    }
    assert!(!tries.is_empty());
    assert!(
        tries.values().all(|&n| n == 1),
        "each refused file was tried once, never retried: {tries:?}"
    );
    let reader = OffsetReader::new(&kafka.brokers(), &group, TOPIC, 1);
    assert_eq!(
        reader.committed().await.get(&0).copied().unwrap_or(0),
        0,
        "nothing committed"
    );
    reader.close().await;
    s3.stop().await;
}
