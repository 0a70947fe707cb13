//! Presets: each shipped example config (`examples/*.toml`) runs as shipped except for where it
//! connects (brokers through `${KAFKA_BROKERS}`, `destinations[0]` re-pointed at the in-process
//! S3 server) and test timings (6 s session timeout, 5 s drain deadline, 1 s idle flush), and
//! every object key it produces matches the layout its seed document describes:
//!
//! - MetaRouter (seed 000): `YYYY/MM/DD/HH/<file>`, by each record's own UTC event hour, raw JSON
//!   lines;
//! - Astronomer (seed 001): the same under `Astronomer-logs/`;
//! - mParticle (seeds 002, 004): `<folder>/YYYY-MM-DD/<App>_<20-digit UTC time>_<5 digits>.txt`,
//!   dated by the first event of the file; `.txt.gz` with "Use Compression";
//! - Segment (seed 003): `segment-logs/<source-id>/YYYY-MM-DD/<file>.gz`, by the UTC day the
//!   record reached Kafka (its Kafka timestamp), gzip NDJSON without `Content-Encoding`.
//!
//! Every test also checks that each produced record is in exactly one object, byte for byte,
//! and that the group's committed offsets (read back from Kafka) are the end offsets.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use kafka_s3_sink::config;
use kafka_s3_sink::pipeline::RunStats;
use kafka_s3_sink::s3server::RecordedRequest;
use regex_lite::Regex;
use support::{
    gen_events, message_id, round_robin, scan, start_pipeline, Expected, ExpectedEvent, GenOptions,
    Kafka, OffsetReader, StoredObject, TestS3, ACCESS_KEY, BUCKET, GROUP_DEADLINE, SECRET_KEY,
};

const PARTITIONS: i32 = 3;
const EVENTS: usize = 300;

/// What a preset run left behind.
struct Outcome {
    expected: Expected,
    /// Kafka timestamps set explicitly, by `messageId`.
    kafka_times: HashMap<String, DateTime<Utc>>,
    stats: RunStats,
    objects: Vec<StoredObject>,
    requests: Vec<RecordedRequest>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
}

impl Outcome {
    /// The produced event of each line of `o`, in order.
    fn records_of(&self, o: &StoredObject) -> Vec<&ExpectedEvent> {
        o.lines()
            .iter()
            .map(|l| {
                let id =
                    message_id(l).unwrap_or_else(|| panic!("{}: line without messageId", o.key));
                &self.expected.events[&id]
            })
            .collect()
    }

    /// Requests that create objects (PutObject or CreateMultipartUpload).
    fn object_writes(&self) -> Vec<&RecordedRequest> {
        self.requests
            .iter()
            .filter(|r| r.target().is_put_object() || r.target().is_create_multipart())
            .collect()
    }
}

/// The example file as shipped, re-pointed at the local S3 server: only bucket, endpoint,
/// path style, region and credentials of `destinations[0]` change (a `role_arn` is removed;
/// `${VAR}` credentials stay and resolve through the env closure), plus test timings: session
/// timeout 6 s, drain deadline 5 s, idle flush 1 s. `patch` may change more.
fn preset_text(file: &str, endpoint: &str, patch: impl FnOnce(&mut toml::Table)) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("example config exists");
    let mut t: toml::Table = text.parse().expect("example is valid TOML");
    let kafka = t["kafka"].as_table_mut().expect("[kafka]");
    kafka.insert("session_timeout_ms".into(), 6000.into());
    let pipeline = t
        .entry("pipeline")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .expect("[pipeline]");
    pipeline.insert("drain_deadline_secs".into(), 5.into());
    let dests = t["destinations"].as_array_mut().expect("[[destinations]]");
    let d = dests[0].as_table_mut().expect("destination table");
    d.insert("bucket".into(), BUCKET.into());
    d.insert("endpoint".into(), endpoint.into());
    d.insert("force_path_style".into(), true.into());
    d.insert("region".into(), "us-east-1".into());
    let creds = d
        .entry("credentials")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .expect("credentials table");
    creds.remove("role_arn");
    if !creds.contains_key("access_key_id") {
        creds.insert("access_key_id".into(), ACCESS_KEY.into());
        creds.insert("secret_access_key".into(), SECRET_KEY.into());
    }
    let batch = d
        .entry("batch")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .expect("batch table");
    batch.insert("idle_secs".into(), 1.into());
    patch(&mut t);
    toml::to_string(&t).expect("TOML serializes")
}

/// Starts a mock cluster and the local S3 server, produces [`EVENTS`] generated events
/// round-robin over [`PARTITIONS`] (with Kafka timestamps `kafka_time(i)` where given), runs the
/// preset until every record is committed, stops it cleanly and reads the bucket back. Checks
/// on the way that the group's committed offsets in Kafka are the end offsets.
async fn run_preset(
    file: &str,
    topic: &str,
    env: &[(&str, &str)],
    patch: impl FnOnce(&mut toml::Table),
    kafka_time: impl Fn(usize) -> Option<DateTime<Utc>>,
) -> Outcome {
    let s3 = TestS3::start().await;
    let kafka = Kafka::start();
    kafka.create_topic(topic, PARTITIONS);
    let events = gen_events(&GenOptions::new(EVENTS as u64));
    let mut msgs = round_robin(events.clone(), PARTITIONS);
    let mut kafka_times = HashMap::new();
    for (i, (m, e)) in msgs.iter_mut().zip(&events).enumerate() {
        if let Some(t) = kafka_time(i) {
            m.timestamp_ms = Some(t.timestamp_millis());
            kafka_times.insert(message_id(e).expect("messageId"), t);
        }
    }
    let mut expected = Expected::default();
    expected
        .produce(&kafka, topic, msgs, &BTreeMap::new())
        .await;

    let text = preset_text(file, &s3.endpoint(), patch);
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    vars.insert("KAFKA_BROKERS".into(), kafka.brokers());
    let cfg = config::parse(&text, &|name| vars.get(name).cloned())
        .unwrap_or_else(|e| panic!("{file} does not load: {e}\n{text}"));
    let group = cfg.kafka.group_id.clone();

    let started = Utc::now();
    let mut run = start_pipeline(cfg).await;
    run.wait_committed_total(EVENTS as i64, GROUP_DEADLINE)
        .await;
    let stats = run.stop().await;
    let finished = Utc::now();

    let reader = OffsetReader::new(&kafka.brokers(), &group, topic, PARTITIONS);
    let committed = reader.committed().await;
    reader.close().await;
    let ends = kafka.end_offsets(topic, PARTITIONS).await;
    assert_eq!(
        committed, ends,
        "{file}: committed offsets are the end offsets"
    );
    assert_eq!(ends.values().sum::<i64>(), EVENTS as i64);

    let objects = s3.objects(BUCKET);
    let requests = s3.server.requests();
    eprintln!(
        "{file}: {} records in {} objects, committed after {:.1} s, first keys: {:?}",
        stats.records_written,
        objects.len(),
        (finished - started).as_seconds_f64(),
        objects.iter().take(2).map(|o| &o.key).collect::<Vec<_>>()
    );
    s3.stop().await;
    let out = Outcome {
        expected,
        kafka_times,
        stats,
        objects,
        requests,
        started,
        finished,
    };
    assert_each_record_once(&out);
    out
}

/// Each produced record is in exactly one object, byte for byte, and nothing else is there.
fn assert_each_record_once(out: &Outcome) {
    let found = scan(&out.objects, &out.expected, "_errors/");
    assert!(found.unexpected.is_empty(), "{:?}", found.unexpected);
    assert_eq!(found.missing(&out.expected), [], "records missing from S3");
    assert_eq!(found.duplicates(), 0, "records in several objects");
    assert_eq!(found.data_lines, EVENTS);
    assert_eq!(found.error_lines, 0);
    assert_eq!(out.stats.records_in, EVENTS as u64);
    assert_eq!(out.stats.records_written, EVENTS as u64);
    assert_eq!(out.stats.records_quarantined, 0);
    assert_eq!(out.stats.objects, out.objects.len() as u64);
}

/// For `{topic}+{partition}+{start_offset}` names: the object holds records of that partition
/// only, in offset order, starting at that offset.
fn assert_offset_named(key: &str, partition: &str, start: &str, records: &[&ExpectedEvent]) {
    let partition: i32 = partition.parse().expect("partition number");
    let start: i64 = start.parse().expect("start offset");
    assert!(records.iter().all(|r| r.at.partition == partition), "{key}");
    assert_eq!(
        records[0].at.offset, start,
        "{key}: named by its first offset"
    );
    assert!(
        records.windows(2).all(|w| w[0].at.offset < w[1].at.offset),
        "{key}: records in offset order"
    );
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

fn time_of(e: &ExpectedEvent) -> DateTime<Utc> {
    e.time.expect("generated events have a timestamp")
}

/// MetaRouter and Astronomer: `<prefix>YYYY/MM/DD/HH/events+<p>+<offset>.json`, each record in
/// the folder of its own UTC event hour, raw line-separated JSON, SSE header as configured.
fn check_hourly_layout(out: &Outcome, prefix: &str, sse: &str) {
    let re = Regex::new(&format!(
        r"^{}(\d{{4}}/\d{{2}}/\d{{2}}/\d{{2}})/events\+(\d+)\+(\d+)\.json$",
        regex_lite::escape(prefix)
    ))
    .expect("regex");
    let mut hours = BTreeSet::new();
    for o in &out.objects {
        let caps = re
            .captures(&o.key)
            .unwrap_or_else(|| panic!("key {:?} does not match {re}", o.key));
        let folder = &caps[1];
        hours.insert(folder.to_string());
        assert!(!is_gzip(&o.data), "{}: raw JSON, not gzip", o.key);
        assert!(
            o.data.starts_with(b"{"),
            "{}: starts with a JSON object",
            o.key
        );
        let records = out.records_of(o);
        for r in &records {
            assert_eq!(
                time_of(r).format("%Y/%m/%d/%H").to_string(),
                folder,
                "{}: a record of another hour",
                o.key
            );
        }
        assert_offset_named(&o.key, &caps[2], &caps[3], &records);
    }
    // Three days of events: one folder per hour that has events, far more than a day's worth.
    assert!(hours.len() > 48, "only {} hour folders", hours.len());
    let writes = out.object_writes();
    assert_eq!(writes.len(), out.objects.len());
    for w in writes {
        assert_eq!(w.header("x-amz-server-side-encryption"), Some(sse), "{w:?}");
        assert_eq!(w.header("content-encoding"), None, "{w:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metarouter_hourly_folders_of_raw_json() {
    // The shipped file reads its keys from ${AWS_ACCESS_KEY_ID} / ${AWS_SECRET_ACCESS_KEY}.
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let out = run_preset("metarouter.toml", "events", &env, |_| {}, |_| None).await;
    check_hourly_layout(&out, "", "AES256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn astronomer_hourly_folders_under_its_prefix() {
    let out = run_preset("astronomer.toml", "events", &[], |_| {}, |_| None).await;
    check_hourly_layout(&out, "Astronomer-logs/", "aws:kms");
}

/// mParticle: `mparticle-events/YYYY-MM-DD/mPTravel_<20 digits>_<5 digits>.txt[.gz]`, the date
/// of the file's first event, the 20 digits the UTC upload time.
fn check_mparticle(out: &Outcome, gzip: bool) {
    let ext = if gzip { r"\.txt\.gz" } else { r"\.txt" };
    let re = Regex::new(&format!(
        r"^mparticle-events/(\d{{4}}-\d{{2}}-\d{{2}})/mPTravel_(\d{{20}})_(\d{{5}}){ext}$"
    ))
    .expect("regex");
    let mut spans_days = 0;
    for o in &out.objects {
        let caps = re
            .captures(&o.key)
            .unwrap_or_else(|| panic!("key {:?} does not match {re}", o.key));
        let records = out.records_of(o);
        let day = |e: &ExpectedEvent| time_of(e).format("%Y-%m-%d").to_string();
        let first_day = day(records[0]);
        assert_eq!(&caps[1], first_day, "{}: folder of the first event", o.key);
        if records.iter().any(|r| day(r) != first_day) {
            spans_days += 1;
        }
        let stamp = NaiveDateTime::parse_from_str(&caps[2][..14], "%Y%m%d%H%M%S")
            .expect("UTC timestamp digits")
            .and_utc();
        let (lo, hi) = (
            out.started - chrono::Duration::seconds(1),
            out.finished + chrono::Duration::seconds(1),
        );
        assert!(
            lo <= stamp && stamp <= hi,
            "{}: upload time {stamp} outside the run ({lo}..{hi})",
            o.key
        );
        assert_eq!(is_gzip(&o.data), gzip, "{}: compression", o.key);
    }
    // The folder is the first event's day even when later events of the file are on other days
    // (each partition's file covers all three days).
    assert!(spans_days > 0, "no file holds events of several days");
    for w in out.object_writes() {
        assert_eq!(w.header("content-encoding"), None, "{w:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mparticle_first_event_day_folders_plain_text() {
    let out = run_preset("mparticle.toml", "events", &[], |_| {}, |_| None).await;
    check_mparticle(&out, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mparticle_use_compression_writes_txt_gz() {
    let gzip = |t: &mut toml::Table| {
        t["destinations"][0]["batch"]
            .as_table_mut()
            .expect("batch table")
            .insert("compression".into(), "gzip".into());
    };
    let out = run_preset("mparticle.toml", "events", &[], gzip, |_| None).await;
    check_mparticle(&out, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_received_day_folders_of_gzip_ndjson() {
    const SOURCE: &str = "src-Ab12Cd34";
    // "Received" times unrelated to the events' own timestamps (2026-11-01..04): three days from
    // 2026-11-10, in stream order, so a folder from the JSON `timestamp` could never match. In
    // the past: by default a time more than a day ahead of the clock is quarantined.
    let received_start = Utc
        .with_ymd_and_hms(2026, 11, 10, 0, 0, 0)
        .single()
        .expect("valid date");
    let span_ms = 3 * 24 * 3600 * 1000_i64;
    let received = move |i: usize| {
        Some(received_start + chrono::Duration::milliseconds(i as i64 * span_ms / EVENTS as i64))
    };
    let out = run_preset(
        "segment.toml",
        "segment-events",
        &[("SEGMENT_SOURCE_ID", SOURCE)],
        |_| {},
        received,
    )
    .await;
    let re = Regex::new(&format!(
        r"^segment-logs/{SOURCE}/(\d{{4}}-\d{{2}}-\d{{2}})/segment-events\+(\d+)\+(\d+)\.json\.gz$"
    ))
    .expect("regex");
    let mut days = BTreeSet::new();
    for o in &out.objects {
        let caps = re
            .captures(&o.key)
            .unwrap_or_else(|| panic!("key {:?} does not match {re}", o.key));
        let day = &caps[1];
        days.insert(day.to_string());
        assert!(is_gzip(&o.data), "{}: gzip", o.key);
        let records = out.records_of(o);
        for (r, line) in records.iter().zip(o.lines()) {
            let id = message_id(&line).expect("messageId");
            let kafka_day = out.kafka_times[&id].format("%Y-%m-%d").to_string();
            assert_eq!(
                kafka_day, day,
                "{}: folder is the Kafka (received) day",
                o.key
            );
            assert_ne!(time_of(r).format("%Y-%m-%d").to_string(), day);
        }
        assert_offset_named(&o.key, &caps[2], &caps[3], &records);
    }
    assert_eq!(
        days.into_iter().collect::<Vec<_>>(),
        ["2026-11-10", "2026-11-11", "2026-11-12"]
    );
    assert_eq!(out.object_writes().len(), out.objects.len());
    assert!(
        out.requests
            .iter()
            .all(|r| r.header("content-encoding").is_none()),
        "no request carries Content-Encoding"
    );
}

/// The Hive-style preset: `events/dt=YYYY-MM-DD/hr=HH/events+<p>+<offset>.ndjson.zst`, zstd
/// (one frame per object), each record in the `dt`/`hr` of its own UTC event time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hive_style_folders_of_zstd_ndjson() {
    let out = run_preset("hive.toml", "events", &[], |_| {}, |_| None).await;
    let re = Regex::new(
        r"^events/dt=(\d{4}-\d{2}-\d{2})/hr=(\d{2})/events\+(\d+)\+(\d{20})\.ndjson\.zst$",
    )
    .expect("regex");
    for o in &out.objects {
        let caps = re
            .captures(&o.key)
            .unwrap_or_else(|| panic!("key {:?} does not match {re}", o.key));
        assert!(
            o.data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
            "{}: zstd",
            o.key
        );
        for r in out.records_of(o) {
            let t = time_of(r);
            assert_eq!(t.format("%Y-%m-%d").to_string(), &caps[1], "{}", o.key);
            assert_eq!(t.format("%H").to_string(), &caps[2], "{}", o.key);
        }
    }
}
