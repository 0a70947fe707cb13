//! `columns = "from_schema"`: a destination's Parquet and Iceberg columns come from the records'
//! Schema Registry schemas (the test kit's `schema_server`), against librdkafka's mock cluster,
//! the in-process S3 server and, for the table, iceberg-catalog-sql on sqlite. Avro v1 and a
//! compatible v2 (an optional field more) in one topic: the files and the table gain the new
//! column, and every column of every row equals the decoded record's field; records of an
//! incompatible v3 (a field's type changed) are quarantined as `schema_mismatch` naming the
//! field, and nothing is lost; a restart writes to the table with the columns it has.

// The in-process S3 server, the registry server (tests/support) are the test kit.
#![cfg(feature = "test-kit")]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use kafka_s3_sink::schema_server::SchemaServer;
use kafka_s3_sink::sink::ObjectSink;
use serde_json::{json, Value};
use support::{
    framed, order, servers, start_pipeline, unique_group, Kafka, Msg, TestConfig, TestS3, BUCKET,
    ORDER_V1, ORDER_V2,
};

/// v2 with `amount` a string: not a compatible change.
const ORDER_V3: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
  {"name":"messageId","type":"string"},
  {"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"amount","type":"string"}]}"#;

const PARTITIONS: i32 = 2;

/// The records: 40 of v1, 40 of v2, then 5 of v3; the JSON each decodes to by `messageId`.
fn records(v1: u32, v2: u32, v3: u32) -> (Vec<Msg>, HashMap<String, Value>) {
    let mut expected = HashMap::new();
    let mut msgs: Vec<Msg> = (0..80)
        .map(|i| {
            let (value, line) = order(i, if i < 40 { v1 } else { v2 }, i >= 40);
            expected.insert(format!("m{i}"), line);
            Msg::new(i as i32 % PARTITIONS, value)
        })
        .collect();
    let schema = apache_avro::Schema::parse_str(ORDER_V3).unwrap();
    for i in 80..85_i32 {
        use apache_avro::types::Value as Avro;
        let rec = Avro::Record(vec![
            ("messageId".into(), Avro::String(format!("m{i}"))),
            (
                "timestamp".into(),
                Avro::TimestampMillis(support::T0_MS + i64::from(i) * 60_000),
            ),
            ("amount".into(), Avro::String("12.5".into())),
        ]);
        let datum = apache_avro::to_avro_datum(&schema, rec).unwrap();
        msgs.push(Msg::new(i % PARTITIONS, framed(v3, &datum)));
    }
    (msgs, expected)
}

/// The topic, the servers, the three schemas registered and the records produced.
async fn produce(topic: &str) -> (Kafka, TestS3, SchemaServer, HashMap<String, Value>) {
    let (kafka, s3, registry) = servers(topic, PARTITIONS).await;
    let subject = format!("{topic}-value");
    let v1 = registry.register(&subject, "AVRO", ORDER_V1, json!([]));
    let v2 = registry.register(&subject, "AVRO", ORDER_V2, json!([]));
    let v3 = registry.register(&format!("{topic}-other"), "AVRO", ORDER_V3, json!([]));
    let (msgs, expected) = records(v1, v2, v3);
    kafka.produce(topic, msgs).await;
    (kafka, s3, registry, expected)
}

/// A from_schema Parquet destination reading Avro through `registry`.
fn config(kafka: &Kafka, s3: &TestS3, registry: &SchemaServer, topic: &str) -> TestConfig {
    let group = unique_group(topic);
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[topic], &s3.endpoint());
    cfg.set("kafka.schema_registry.url", registry.url())
        .dest(0, "value_format", "avro")
        .dest(0, "kafka_metadata_field", "_kafka")
        .dest(0, "batch.format", "parquet")
        .dest(0, "parquet.columns", "from_schema");
    cfg
}

/// A cell as the JSON value it came from (`None`: null).
fn cell(a: &dyn Array, r: usize) -> Option<Value> {
    if a.is_null(r) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Utf8 => json!(a.as_string::<i32>().value(r)),
        DataType::Int64 => json!(a.as_primitive::<Int64Type>().value(r)),
        DataType::Float64 => json!(a.as_primitive::<Float64Type>().value(r)),
        DataType::Timestamp(..) => {
            let us = a.as_primitive::<TimestampMicrosecondType>().value(r);
            let t = chrono::DateTime::from_timestamp_micros(us).unwrap();
            json!(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        }
        other => panic!("unexpected column type {other}"),
    })
}

/// Checks every schema column of every row of `b` against the decoded record (a `json`
/// column's text parsed; a column the row's schema lacks is null). Returns the rows' ids.
fn check_rows(b: &RecordBatch, expected: &HashMap<String, Value>) -> Vec<String> {
    let ids = b.column_by_name("messageId").expect("messageId column");
    let mut seen = Vec::new();
    for r in 0..b.num_rows() {
        let id = ids.as_string::<i32>().value(r).to_string();
        let want = &expected[&id];
        for (f, col) in b.schema().fields().iter().zip(b.columns()) {
            if f.name().starts_with("_kafka_") {
                continue;
            }
            let got = cell(col.as_ref(), r);
            let want = want.get(f.name()).cloned().unwrap_or(Value::Null);
            let got = match (got, &want) {
                (Some(Value::String(s)), Value::Array(_) | Value::Object(_)) => {
                    serde_json::from_str(&s).unwrap()
                }
                (g, _) => g.unwrap_or(Value::Null),
            };
            assert_eq!(got, want, "{id}: column {}", f.name());
        }
        seen.push(id);
    }
    seen
}

/// The quarantined records' details, all `schema_mismatch`.
fn mismatches(s3: &TestS3) -> Vec<String> {
    let mut out = Vec::new();
    for o in s3.objects(BUCKET) {
        if !o.key.starts_with("_errors/") {
            continue;
        }
        for line in o.lines() {
            let v: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["reason"], "schema_mismatch", "{v}");
            out.push(v["detail"].as_str().unwrap().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_take_the_columns_of_each_schema() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    const TOPIC: &str = "orders-from-schema";
    let (kafka, s3, registry, expected) = produce(TOPIC).await;
    let cfg = config(&kafka, &s3, &registry, TOPIC);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(85, Duration::from_secs(60)).await;
    let stats = run.stop().await;
    assert_eq!(stats.records_quarantined, 5, "{stats:?}");
    let details = mismatches(&s3);
    assert_eq!(details.len(), 5);
    for d in &details {
        assert!(
            d.starts_with("field `amount` is string in schema")
                && d.contains("its column is double"),
            "{d}"
        );
    }
    let mut seen = Vec::new();
    let mut layouts = Vec::new();
    for o in s3.objects(BUCKET) {
        if o.key.starts_with("_errors/") {
            continue;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(o.data.clone()))
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let names: Vec<String> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            layouts.push(names);
            seen.extend(check_rows(&b, &expected));
        }
    }
    seen.sort();
    let mut want: Vec<String> = expected.keys().cloned().collect();
    want.sort();
    assert_eq!(seen, want, "every v1 and v2 record once");
    let v1 = ["messageId", "timestamp", "amount", "status", "tags", "note"];
    for l in &layouts {
        assert_eq!(l[..6], v1, "{l:?}");
        assert!(
            l.len() == 12 || (l.len() == 13 && l[6] == "coupon"),
            "{l:?}"
        );
    }
    assert!(
        layouts.iter().any(|l| l.contains(&"coupon".to_string())),
        "v2's field became a column"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iceberg_table_gains_a_compatible_schemas_fields() {
    use futures::TryStreamExt;
    const TOPIC: &str = "orders-table";
    let (kafka, s3, registry, expected) = produce(TOPIC).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&kafka, &s3, &registry, TOPIC);
    if let Some(toml::Value::Table(r)) = cfg.destination(0).get_mut("routing") {
        r.remove("folder_template");
        r.remove("time_field");
        r.insert("time_source".into(), "kafka_timestamp".into());
    }
    cfg.dest(0, "iceberg.namespace", "shop")
        .dest(0, "iceberg.table", "orders")
        .dest(0, "iceberg.partition_time", "hour")
        .dest(0, "iceberg.commit_interval_secs", 1)
        .dest(0, "iceberg.catalog.kind", "sql")
        .dest(
            0,
            "iceberg.catalog.uri",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("catalog.db").display()
            ),
        )
        .dest(
            0,
            "iceberg.catalog.warehouse",
            format!("s3://{BUCKET}/warehouse"),
        );
    let config = cfg.build();
    let mut run = start_pipeline(config.clone()).await;
    run.wait_committed_total(85, Duration::from_secs(90)).await;
    let stats = run.stop().await;
    assert_eq!(stats.records_quarantined, 5, "{stats:?}");
    assert_eq!(mismatches(&s3).len(), 5);

    // A restart starts from the table's columns (`tags` a string column there, a json column
    // for the schema) and writes more v2 records with them.
    let v2 = registry.register(&format!("{TOPIC}-value"), "AVRO", ORDER_V2, json!([]));
    let mut expected = expected;
    let more: Vec<Msg> = (85..95)
        .map(|i| {
            let (value, line) = order(i, v2, true);
            expected.insert(format!("m{i}"), line);
            Msg::new(i as i32 % PARTITIONS, value)
        })
        .collect();
    kafka.produce(TOPIC, more).await;
    let mut run = start_pipeline(config.clone()).await;
    run.wait_committed_total(95, Duration::from_secs(90)).await;
    let stats = run.stop().await;
    assert_eq!(stats.records_quarantined, 0, "{stats:?}");

    let sinks: Vec<Arc<dyn ObjectSink>> = kafka_s3_sink::app::s3_sinks(&config).await;
    let metas: Vec<_> = config
        .destinations
        .iter()
        .map(kafka_s3_sink::app::object_meta)
        .collect();
    let (_, tables) = kafka_s3_sink::table::open::open_tables(&config, &sinks, &metas)
        .await
        .unwrap();
    let t = &tables["test"];
    let table = t.catalog.load_table(&t.ident).await.unwrap();
    let schema = table.metadata().current_schema();
    let coupon = schema
        .field_by_name("coupon")
        .expect("v2's field in the table");
    assert!(!coupon.required);
    assert!(schema.field_by_name("amount").is_some());
    assert!(
        table.metadata().schemas_iter().count() >= 2,
        "the columns came by schema updates"
    );
    let mut batches = table
        .scan()
        .select_all()
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(b) = batches.try_next().await.unwrap() {
        seen.extend(check_rows(&b, &expected));
    }
    seen.sort();
    let mut want: Vec<String> = expected.keys().cloned().collect();
    want.sort();
    assert_eq!(
        seen, want,
        "every v1 and v2 record once, its columns its fields"
    );
}
