//! An Iceberg table destination through `run`'s own path (`app::run_with_sinks`), against
//! librdkafka's mock cluster, the in-process S3 server and iceberg-catalog-sql on sqlite in a
//! temp dir: the table is created at start-up, every record that fits the columns is one row of
//! the table exactly once (read back with the iceberg crate's scan), bad records go to the
//! bucket's `_errors/`, Kafka's committed offsets equal the table's, `verify` finds every
//! record once through the table's current snapshot, and a restart adds the new records once
//! and none of the old ones again.

// The in-process S3 server (tests/support) is the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_s3_sink::config::Config;
use kafka_s3_sink::model::TopicPartition;
use kafka_s3_sink::sink::ObjectSink;
use kafka_s3_sink::table::offsets::{committed_offsets, row_coordinates};
use kafka_s3_sink::table::open::open_tables;
use kafka_s3_sink::verify::{self, VerifyOptions};
use support::{
    gen_events, start_pipeline, unique_group, GenOptions, Kafka, Msg, TestConfig, TestS3, BUCKET,
};

const TOPIC: &str = "ice";
const PARTITIONS: i32 = 2;

/// The destination of `cfg` made an Iceberg table partitioned by event hour and type, its
/// catalog on sqlite at `db`, its warehouse in bucket `warehouse`, committing every second.
fn table_config(cfg: &mut TestConfig, db: &std::path::Path, warehouse: &str) {
    if let Some(toml::Value::Table(r)) = cfg.destination(0).get_mut("routing") {
        r.remove("folder_template");
    }
    cfg.dest(0, "kafka_metadata_field", "_kafka")
        .dest(0, "batch.format", "parquet")
        .dest(0, "batch.max_records", 150);
    let columns: toml::Value = toml::from_str::<toml::Table>(
        r#"c = [
            { name = "message_id", path = "messageId", type = "string", required = true },
            { name = "event_type", path = "type", type = "string" },
            { name = "ts", path = "timestamp", type = "timestamp", required = true },
        ]"#,
    )
    .unwrap()["c"]
        .clone();
    cfg.dest(0, "parquet.columns", columns)
        .dest(0, "iceberg.namespace", "analytics")
        .dest(0, "iceberg.table", "events")
        .dest(0, "iceberg.partition_time", "hour")
        .dest(0, "iceberg.partition_fields", vec!["type"])
        .dest(0, "iceberg.commit_interval_secs", 1)
        .dest(0, "iceberg.catalog.kind", "sql")
        .dest(
            0,
            "iceberg.catalog.uri",
            format!("sqlite://{}?mode=rwc", db.display()),
        )
        .dest(
            0,
            "iceberg.catalog.warehouse",
            format!("s3://{warehouse}/warehouse"),
        );
}

/// (partition, offset) → times in the table's current snapshot, and the table's committed
/// offsets of the group.
async fn read_table(cfg: &Config) -> (BTreeMap<(i32, i64), usize>, BTreeMap<i32, i64>) {
    let sinks: Vec<Arc<dyn ObjectSink>> = kafka_s3_sink::app::s3_sinks(cfg).await;
    let metas: Vec<_> = cfg
        .destinations
        .iter()
        .map(kafka_s3_sink::app::object_meta)
        .collect();
    let (_, tables) = open_tables(cfg, &sinks, &metas).await.unwrap();
    let t = &tables["test"];
    let table = t.catalog.load_table(&t.ident).await.unwrap();
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(TOPIC, p))
        .collect();
    let offsets = committed_offsets(table.metadata(), &cfg.kafka.group_id, &tps)
        .into_iter()
        .map(|(tp, c)| (tp.partition, c.next))
        .collect();
    let seen = row_coordinates(&table, "_kafka").await.unwrap();
    (seen, offsets)
}

/// Each partition's offset in the table is past its last row and at most its end (the records
/// after the last row are quarantined; their error files may land after the table's last
/// commit, so Kafka's offset may be ahead of the table's).
fn assert_offsets(
    table: &BTreeMap<i32, i64>,
    rows: &BTreeMap<(i32, i64), usize>,
    ends: &BTreeMap<i32, i64>,
) {
    assert_eq!(
        table.keys().collect::<Vec<_>>(),
        ends.keys().collect::<Vec<_>>()
    );
    for (p, end) in ends {
        let last = rows.keys().filter(|(q, _)| q == p).map(|(_, o)| *o).max();
        let t = table[p];
        assert!(
            last.is_none_or(|l| l < t) && t <= *end,
            "partition {p}: table offset {t}, last row {last:?}, end {end}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_holds_every_record_once_and_kafka_commits_after_it() {
    table_run(BUCKET).await;
}

/// The same with the table's warehouse in another bucket than the destination's (as an S3
/// Tables table bucket is): the data and table files go there, the error folder stays in the
/// destination's bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_in_another_bucket_takes_the_data_files_and_the_errors_stay() {
    table_run("lake").await;
}

async fn table_run(warehouse: &str) {
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    std::fs::create_dir_all(s3.bucket_dir(warehouse)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let group = unique_group("ice");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    table_config(&mut cfg, &dir.path().join("catalog.db"), warehouse);
    let config = cfg.build();

    let mut values = gen_events(&GenOptions::new(400));
    values.push(b"not json".to_vec());
    values.push(br#"{"type":"track","timestamp":"2026-11-02T10:00:00Z"}"#.to_vec());
    let msgs: Vec<Msg> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Msg::new(i as i32 % PARTITIONS, v.clone()))
        .collect();
    let produced = kafka.produce(TOPIC, msgs).await;
    let bad: Vec<(i32, i64)> = produced[produced.len() - 2..]
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect();

    let mut run = start_pipeline(config.clone()).await;
    run.wait_committed_total(values.len() as i64, Duration::from_secs(90))
        .await;
    let stats = run.stop().await;
    assert_eq!(stats.records_quarantined, 2);

    let (seen, table_offsets) = read_table(&config).await;
    let want: BTreeMap<(i32, i64), usize> = produced
        .iter()
        .map(|p| (p.partition, p.offset))
        .filter(|c| !bad.contains(c))
        .map(|c| (c, 1))
        .collect();
    assert_eq!(seen, want, "every fitting record once");
    let ends = kafka.end_offsets(TOPIC, PARTITIONS).await;
    assert_offsets(&table_offsets, &seen, &ends);
    let errors: Vec<_> = s3
        .objects(BUCKET)
        .into_iter()
        .filter(|o| o.key.starts_with("_errors/"))
        .collect();
    let error_lines: usize = errors.iter().map(|o| o.lines().len()).sum();
    assert_eq!(error_lines, 2, "the bad records are in _errors/");
    let table_files = s3
        .keys(warehouse)
        .into_iter()
        .filter(|k| k.starts_with("warehouse/analytics/events/"))
        .count();
    assert!(
        table_files > 0,
        "the table's files are in s3://{warehouse}/"
    );
    if warehouse != BUCKET {
        assert!(
            s3.keys(BUCKET).iter().all(|k| k.starts_with("_errors/")),
            "only the error folder in the destination's bucket: {:?}",
            s3.keys(BUCKET)
        );
    }

    // `verify` audits the table through its current snapshot and the error folder.
    let r = verify::run(&config, &VerifyOptions::default())
        .await
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    eprintln!("{}", r.to_text());
    let total = values.len() as u64;
    assert_eq!((r.records, r.expected, r.found), (total, total, total));
    assert_eq!((r.missing, r.duplicated, r.outside_range), (0, 0, 0));
    assert_eq!(r.quarantined, 2);
    assert_eq!(r.exit_code(), 0);

    // A restart: new records are added once, none of the old ones again.
    let more = gen_events(&GenOptions {
        seed: 7,
        ..GenOptions::new(100)
    });
    let msgs: Vec<Msg> = more
        .iter()
        .enumerate()
        .map(|(i, v)| Msg::new(i as i32 % PARTITIONS, v.clone()))
        .collect();
    let produced2 = kafka.produce(TOPIC, msgs).await;
    let mut run = start_pipeline(config.clone()).await;
    run.wait_committed_total((values.len() + more.len()) as i64, Duration::from_secs(90))
        .await;
    run.stop().await;
    let (seen, table_offsets) = read_table(&config).await;
    let mut want = want;
    for p in &produced2 {
        want.insert((p.partition, p.offset), 1);
    }
    assert_eq!(seen, want, "the restart added the new records once");
    assert_offsets(
        &table_offsets,
        &seen,
        &kafka.end_offsets(TOPIC, PARTITIONS).await,
    );
}

/// `demo --format iceberg` writes a table with a sqlite catalog in `--dir`: every good record is
/// a row (rows + quarantined = records in), and it prints how to query the files on disk.
#[test]
fn the_demo_writes_a_table_and_says_how_to_query_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafka-s3-sink"))
        .args(["demo", "--format", "iceberg", "--records", "1000"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |label: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
    };
    let (rows, bad, records) = (
        value("rows:"),
        value("records quarantined:"),
        value("records in:"),
    );
    assert_eq!(records, 1000);
    assert!(rows > 900, "{text}");
    assert_eq!(rows + bad, records, "{text}");
    assert!(text.contains("iceberg_scan("), "{text}");
    assert!(dir.path().join("catalog.db").is_file());
}
