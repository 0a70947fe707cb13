//! Parquet output (`batch.format = "parquet"`), against librdkafka's mock cluster and the
//! in-process S3 server: every record that fits the declared columns is one row, in a
//! `dt=…/hr=…/` folder of its own event time, with its Kafka coordinates as columns and its
//! JSON byte for byte in the raw column; records that do not fit go to
//! `_errors/schema_mismatch/` as NDJSON envelopes naming the column. `verify` audits the
//! destination by the rows' Kafka metadata columns (a deleted file's rows are missing), and
//! refuses, with the fix, a Parquet destination that writes no metadata columns.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::Array;
use kafka_s3_sink::verify::{self, VerifyOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::{
    gen_events, start_pipeline, unique_group, GenOptions, Kafka, Msg, TestConfig, TestS3, BUCKET,
};

/// Whether an event fits the declared columns below (the test's own reading of the rules:
/// `messageId` and `timestamp` required, `properties.position` an integer if present).
fn fits(v: &serde_json::Value) -> bool {
    let position_ok = match v.pointer("/properties/position") {
        None | Some(serde_json::Value::Null) => true,
        Some(p) => p.is_i64(),
    };
    v.get("messageId").is_some_and(|m| m.is_string()) && v.get("timestamp").is_some() && position_ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_carry_typed_columns_metadata_and_hive_folders() {
    const TOPIC: &str = "pq";
    const PARTITIONS: i32 = 2;
    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS);
    let s3 = TestS3::start().await;
    let group = unique_group("pq");
    let mut values = gen_events(&GenOptions::new(600));
    for bad in [
        r#"{"type":"track","messageId":"bad-1","timestamp":"2026-11-02T10:00:00Z","properties":{"position":"twelve"}}"#,
        r#"{"type":"track","messageId":"bad-2","timestamp":"2026-11-02T10:00:00Z","properties":{"position":1.5}}"#,
        r#"{"type":"track","timestamp":"2026-11-02T10:00:00Z"}"#,
    ] {
        values.push(bad.as_bytes().to_vec());
    }
    let msgs: Vec<Msg> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut m = Msg::new(i as i32 % PARTITIONS, v.clone());
            m.key = (i % 2 == 0).then(|| format!("k{i}").into_bytes());
            m
        })
        .collect();
    let produced = kafka.produce(TOPIC, msgs).await;
    let coords: HashMap<(i32, i64), (usize, &Vec<u8>)> = produced
        .iter()
        .zip(values.iter())
        .enumerate()
        .map(|(i, (p, v))| ((p.partition, p.offset), (i, v)))
        .collect();
    let parsed: Vec<serde_json::Value> = values
        .iter()
        .map(|v| serde_json::from_slice(v).unwrap())
        .collect();
    let fitting = parsed.iter().filter(|v| fits(v)).count();
    assert!(fitting >= 600, "the generated events all fit");

    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.dest(0, "kafka_metadata_field", "_kafka")
        .dest(0, "routing.folder_template", "dt=%Y-%m-%d/hr=%H/")
        .dest(0, "batch.format", "parquet")
        .dest(0, "batch.max_records", 150)
        .dest(0, "parquet.raw_column", "raw");
    let columns: toml::Value = toml::from_str::<toml::Table>(
        r#"c = [
            { name = "message_id", path = "messageId", type = "string", required = true },
            { name = "event_type", path = "type", type = "string" },
            { name = "ts", path = "timestamp", type = "timestamp", required = true },
            { name = "position", path = "properties.position", type = "int64" },
            { name = "full_screen", path = "properties.full_screen", type = "bool" },
            { name = "ip", path = "context.ip", type = "string" },
            { name = "traits", type = "json" },
        ]"#,
    )
    .unwrap()["c"]
        .clone();
    cfg.dest(0, "parquet.columns", columns);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(values.len() as i64, Duration::from_secs(60))
        .await;
    let stats = run.stop().await;
    assert_eq!(stats.records_quarantined as usize, values.len() - fitting);

    let key_re =
        regex_lite::Regex::new(r"^dt=(\d{4}-\d{2}-\d{2})/hr=(\d{2})/pq\+\d\+\d{20}\.parquet$")
            .unwrap();
    let mut rows = 0;
    let mut mismatches = 0;
    let mut details = Vec::new();
    for o in s3.objects(BUCKET) {
        if o.key.starts_with("_errors/") {
            assert!(
                o.key.starts_with("_errors/schema_mismatch/") && o.key.ends_with(".ndjson.gz"),
                "{}",
                o.key
            );
            for line in o.lines() {
                let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
                assert_eq!(v["reason"], "schema_mismatch");
                details.push(v["detail"].as_str().unwrap().to_string());
                mismatches += 1;
            }
            continue;
        }
        let caps = key_re
            .captures(&o.key)
            .unwrap_or_else(|| panic!("unexpected key {}", o.key));
        let folder = format!("{} {}", &caps[1], &caps[2]);
        assert_eq!(&o.data[..4], b"PAR1");
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(o.data.clone())).unwrap();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let col = |name: &str| batch.column_by_name(name).unwrap().clone();
            let raw = col("raw");
            let raw = raw.as_string::<i32>();
            let ts = col("ts");
            let ts = ts.as_primitive::<TimestampMicrosecondType>();
            let partition = col("_kafka_partition");
            let partition = partition.as_primitive::<Int32Type>();
            let offset = col("_kafka_offset");
            let offset = offset.as_primitive::<Int64Type>();
            let position = col("position");
            let position = position.as_primitive::<Int64Type>();
            let key = col("_kafka_key");
            let key = key.as_binary::<i32>();
            let message_id = col("message_id");
            let message_id = message_id.as_string::<i32>();
            let traits = col("traits");
            let traits = traits.as_string::<i32>();
            for r in 0..batch.num_rows() {
                rows += 1;
                let (i, produced) = coords[&(partition.value(r), offset.value(r))];
                assert_eq!(
                    raw.value(r).as_bytes(),
                    &produced[..],
                    "raw column is the record"
                );
                let v: serde_json::Value = serde_json::from_slice(produced).unwrap();
                assert_eq!(message_id.value(r), v["messageId"].as_str().unwrap());
                let t = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap())
                    .unwrap()
                    .to_utc();
                assert_eq!(ts.value(r), t.timestamp_micros());
                assert_eq!(folder, t.format("%Y-%m-%d %H").to_string(), "{}", o.key);
                match v.pointer("/properties/position") {
                    Some(p) => assert_eq!(position.value(r), p.as_i64().unwrap()),
                    None => assert!(position.is_null(r)),
                }
                match v.get("traits") {
                    Some(t) => assert_eq!(
                        serde_json::from_str::<serde_json::Value>(traits.value(r)).unwrap(),
                        *t
                    ),
                    None => assert!(traits.is_null(r)),
                }
                match i % 2 {
                    0 => assert_eq!(key.value(r), format!("k{i}").as_bytes()),
                    _ => assert!(key.is_null(r)),
                }
            }
        }
    }
    assert_eq!(rows, fitting);
    assert_eq!(mismatches, values.len() - fitting);
    // Each envelope says which column refused what.
    for want in [
        "column `position` (int64) does not take a string",
        "column `position` (int64) does not take a non-integer number",
        "column `message_id` is required and missing",
    ] {
        assert!(details.iter().any(|d| d == want), "{want} in {details:?}");
    }

    // verify matches every row by its _kafka_* columns (and raw text), every mismatch by its
    // envelope.
    let total = values.len() as u64;
    let r = verify::run(&cfg.build(), &VerifyOptions::default())
        .await
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    eprintln!("{}", r.to_text());
    assert_eq!((r.records, r.expected, r.found), (total, total, total));
    assert_eq!((r.missing, r.duplicated, r.outside_range), (0, 0, 0));
    assert_eq!(r.quarantined, mismatches as u64);
    assert!(r.unreadable.is_empty() && r.unattributed == 0);
    assert_eq!(r.exit_code(), 0);

    // A deleted file: its rows are missing, by offset.
    let victim = s3
        .objects(BUCKET)
        .into_iter()
        .find(|o| o.key.ends_with(".parquet"))
        .expect("a parquet file");
    let victim_rows = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(victim.data))
        .unwrap()
        .metadata()
        .file_metadata()
        .num_rows() as u64;
    assert!(victim_rows > 0);
    std::fs::remove_file(s3.server.object_path(BUCKET, &victim.key)).unwrap();
    let r = verify::run(&cfg.build(), &VerifyOptions::default())
        .await
        .unwrap();
    assert_eq!((r.missing, r.found), (victim_rows, total - victim_rows));
    assert_eq!(r.exit_code(), 1);

    // Without the metadata columns the rows cannot be placed: refused, naming the fix.
    let mut bare = cfg.clone();
    bare.destination(0).remove("kafka_metadata_field");
    let err = verify::run(&bare.build(), &VerifyOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().contains("set its kafka_metadata_field"),
        "{err}"
    );
    s3.stop().await;
}
