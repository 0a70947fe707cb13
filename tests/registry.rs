//! Records in the Confluent wire format, read through a Schema Registry (the test kit's
//! `schema_server`), against librdkafka's mock cluster and the in-process S3 server: Avro v1 and
//! v2 of a subject in one topic become JSON lines routed by their decoded event time; each
//! quarantine reason (`not_framed`, `unknown_schema`, `undecodable`) carries its record; each
//! schema id is fetched once; a registry outage pauses consumption without quarantining or
//! losing anything; a cache smaller than the schemas still writes every record; Protobuf and
//! JSON text share a topic under `value_format = "auto"`, with Avro keys; declared Parquet
//! columns hold the decoded values.

// The in-process S3 server, the registry server (tests/support) and `demo` are the test kit.
#![cfg(feature = "test-kit")]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use apache_avro::types::Value as Avro;
use kafka_s3_sink::metrics::Metrics;
use serde_json::{json, Value};
use support::{
    counter_sum, framed, order, servers, start_pipeline, start_pipeline_with_metrics, unique_group,
    Msg, TestConfig, TestS3, BUCKET, ORDER_V1, ORDER_V2, T0_MS,
};

/// Every written line by `messageId`, and the quarantined lines by reason.
fn read_back(s3: &TestS3) -> (HashMap<String, Value>, BTreeMap<String, Vec<Value>>) {
    let mut written = HashMap::new();
    let mut quarantined: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in s3.objects(BUCKET) {
        for line in o.lines() {
            let v: Value = serde_json::from_slice(&line).unwrap();
            if o.key.starts_with("_errors/") {
                let reason = v["reason"].as_str().unwrap().to_string();
                quarantined.entry(reason).or_default().push(v);
            } else {
                let id = v["messageId"].as_str().unwrap().to_string();
                assert!(written.insert(id, v).is_none(), "duplicate in {}", o.key);
            }
        }
    }
    (written, quarantined)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_v1_and_v2_become_json_lines_and_each_bad_record_has_its_reason() {
    const TOPIC: &str = "orders-avro";
    let (kafka, s3, registry) = servers(TOPIC, 2).await;
    let v1 = registry.register("orders-avro-value", "AVRO", ORDER_V1, json!([]));
    let v2 = registry.register("orders-avro-value", "AVRO", ORDER_V2, json!([]));
    assert_ne!(v1, v2);
    let mut msgs = Vec::new();
    let mut expected = HashMap::new();
    for i in 0..120 {
        let (value, line) = order(i, if i < 60 { v1 } else { v2 }, i >= 60);
        expected.insert(format!("m{i}"), line);
        msgs.push(Msg::new(i as i32 % 2, value));
    }
    // Not framed, an id the registry does not know, a datum cut short.
    msgs.push(Msg::new(0, br#"{"messageId":"plain"}"#.to_vec()));
    msgs.push(Msg::new(1, framed(9999, b"\x02a")));
    let (whole, _) = order(500, v1, false);
    msgs.push(Msg::new(0, whole[..whole.len() - 4].to_vec()));
    kafka.produce(TOPIC, msgs).await;

    let group = unique_group("avro");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.set("kafka.schema_registry.url", registry.url())
        .dest(0, "value_format", "avro")
        .dest(0, "batch.max_records", 50);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(123, Duration::from_secs(60)).await;
    let stats = run.stop().await;
    assert_eq!(stats.records_written, 120, "{stats:?}");
    assert_eq!(stats.records_quarantined, 3, "{stats:?}");

    let (written, quarantined) = read_back(&s3);
    assert_eq!(written.len(), 120);
    for (id, line) in &expected {
        assert_eq!(&written[id], line, "{id}");
    }
    // Routed by the decoded event time: order 0 at 10:00, order 61 past 11:00.
    let keys: Vec<String> = s3.objects(BUCKET).into_iter().map(|o| o.key).collect();
    assert!(
        keys.iter().any(|k| k.starts_with("2026/11/03/10/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("2026/11/03/11/")),
        "{keys:?}"
    );
    let reasons: Vec<&str> = quarantined.keys().map(String::as_str).collect();
    assert_eq!(reasons, ["not_framed", "undecodable", "unknown_schema"]);
    let detail = |r: &str| quarantined[r][0]["detail"].as_str().unwrap().to_string();
    assert!(
        detail("unknown_schema").contains("9999"),
        "{}",
        detail("unknown_schema")
    );
    assert!(
        detail("undecodable").contains(&format!("schema {v1}")),
        "{}",
        detail("undecodable")
    );
    // The quarantined record is the one produced, whole.
    assert_eq!(
        quarantined["not_framed"][0]["value"],
        r#"{"messageId":"plain"}"#
    );
    // The start-up check, then each id once (the 404 is remembered too).
    assert_eq!(registry.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_pauses_consumption_and_loses_nothing() {
    const TOPIC: &str = "orders-outage";
    let (kafka, s3, registry) = servers(TOPIC, 2).await;
    let id = registry.register("orders-outage-value", "AVRO", ORDER_V1, json!([]));
    let group = unique_group("outage");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.set("kafka.schema_registry.url", registry.url())
        .set("kafka.schema_registry.unready_after_secs", 1)
        .dest(0, "value_format", "avro");
    let prom = prometheus::Registry::new();
    let metrics = Metrics::new(&prom).unwrap();
    let mut run = start_pipeline_with_metrics(cfg.build(), metrics.clone()).await;
    // Wait until the start-up check passed (the group is joined), then take the registry down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while registry.requests() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no start-up check");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    registry.set_down(true);
    let msgs: Vec<Msg> = (0..40)
        .map(|i| Msg::new(i % 2, order(i as usize, id, false).0))
        .collect();
    kafka.produce(TOPIC, msgs).await;
    let failed = |p: &prometheus::Registry| {
        counter_sum(
            p,
            "kafka_s3_sink_schema_registry_requests_total",
            &[("outcome", "failed")],
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while failed(&prom) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the registry was not retried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = run.stats();
    assert_eq!(stats.records_written, 0, "{stats:?}");
    assert_eq!(stats.records_quarantined, 0, "{stats:?}");
    assert!(stats.committed.values().all(|&o| o == 0), "{stats:?}");
    // Failing past unready_after_secs: not ready, with the registry named.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(why) = metrics.health().not_ready_reason() {
            if why.contains("Schema Registry") {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "still ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Retried with backoff, one attempt at a time per waiting worker: a few requests, not one
    // per turn of the worker's loop.
    let attempts = failed(&prom);
    assert!(attempts < 40, "{attempts} failed requests");
    registry.set_down(false);
    run.wait_committed_total(40, Duration::from_secs(60)).await;
    let stats = run.stop().await;
    assert_eq!(stats.records_written, 40, "{stats:?}");
    assert_eq!(stats.records_quarantined, 0, "{stats:?}");
    assert_eq!(read_back(&s3).0.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_smaller_than_the_schemas_still_writes_every_record() {
    const TOPIC: &str = "many-schemas";
    const SCHEMAS: usize = 40;
    let (kafka, s3, registry) = servers(TOPIC, 1).await;
    // Forty record schemas of a hundred fields each: more than the 64 KiB cache holds.
    let mut msgs = Vec::new();
    for s in 0..SCHEMAS {
        let mut fields = vec![json!({"name": "messageId", "type": "string"})];
        fields.push(json!({"name": "timestamp", "type": "string"}));
        fields.extend((0..100).map(|f| json!({"name": format!("f{f}"), "type": "long"})));
        let text = json!({"type": "record", "name": format!("R{s}"), "fields": fields}).to_string();
        let id = registry.register(&format!("s{s}"), "AVRO", &text, json!([]));
        let schema = apache_avro::Schema::parse_str(&text).unwrap();
        for r in 0..3 {
            let mut rec = vec![
                ("messageId".to_string(), Avro::String(format!("s{s}-r{r}"))),
                (
                    "timestamp".to_string(),
                    Avro::String("2026-11-03T10:00:00Z".into()),
                ),
            ];
            rec.extend((0..100).map(|f| (format!("f{f}"), Avro::Long(f))));
            let datum = apache_avro::to_avro_datum(&schema, Avro::Record(rec)).unwrap();
            msgs.push(Msg::new(0, framed(id, &datum)));
        }
    }
    // The same schemas again, in another order: evicted ones are fetched again.
    let again: Vec<Msg> = msgs.iter().rev().cloned().collect();
    let total = msgs.len() * 2;
    msgs.extend(again);
    kafka.produce(TOPIC, msgs).await;
    let group = unique_group("cache");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.set("kafka.schema_registry.url", registry.url())
        .set("kafka.schema_registry.cache_bytes", 65_536)
        .dest(0, "value_format", "avro");
    let prom = prometheus::Registry::new();
    let metrics = Metrics::new(&prom).unwrap();
    let mut run = start_pipeline_with_metrics(cfg.build(), metrics).await;
    run.wait_committed_total(total as i64, Duration::from_secs(60))
        .await;
    let stats = run.stop().await;
    assert_eq!(stats.records_written as usize, total, "{stats:?}");
    assert_eq!(stats.records_quarantined, 0, "{stats:?}");
    let held = prom
        .gather()
        .into_iter()
        .find(|m| m.name() == "kafka_s3_sink_schema_cache_bytes")
        .map(|m| m.get_metric()[0].get_gauge().get_value())
        .unwrap();
    assert!(held <= 65_536.0, "{held}");
    assert!(
        registry.requests() > SCHEMAS as u64,
        "evicted schemas are fetched again"
    );
}

const ORDER_PROTO: &str = r#"syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
message Order {
  string messageId = 1;
  string timestamp = 2;
  int64 qty = 3;
  repeated string tags = 4;
  google.protobuf.Timestamp created = 5;
  message Line { string sku = 1; }
  Line line = 6;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_and_json_text_share_a_topic_under_auto_with_avro_keys() {
    use prost_reflect::{DescriptorPool, DynamicMessage, Value as Pb};
    const TOPIC: &str = "orders-auto";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("order.proto"), ORDER_PROTO).unwrap();
    let fds = protox::compile(["order.proto"], [dir.path()]).unwrap();
    let pool = DescriptorPool::from_file_descriptor_set(fds).unwrap();
    let desc = pool.get_message_by_name("shop.Order").unwrap();

    let (kafka, s3, registry) = servers(TOPIC, 1).await;
    let id = registry.register("orders-auto-value", "PROTOBUF", ORDER_PROTO, json!([]));
    const KEY: &str =
        r#"{"type":"record","name":"OrderKey","fields":[{"name":"id","type":"long"}]}"#;
    let key_id = registry.register("orders-auto-key", "AVRO", KEY, json!([]));
    let key_schema = apache_avro::Schema::parse_str(KEY).unwrap();
    let mut msgs = Vec::new();
    for i in 0..20i64 {
        if i % 2 == 0 {
            let line = format!(r#"{{"messageId":"j{i}","timestamp":"2026-11-03T10:00:00Z"}}"#);
            let mut m = Msg::new(0, line.into_bytes());
            m.key = Some(format!("k{i}").into_bytes());
            msgs.push(m);
            continue;
        }
        let mut m = DynamicMessage::new(desc.clone());
        m.set_field_by_name("messageId", Pb::String(format!("p{i}")));
        m.set_field_by_name("timestamp", Pb::String("2026-11-03T10:00:00Z".into()));
        m.set_field_by_name("qty", Pb::I64(i));
        let created_desc = desc.get_field_by_name("created").unwrap().kind();
        let mut created = DynamicMessage::new(created_desc.as_message().unwrap().clone());
        created.set_field_by_name("seconds", Pb::I64(1_793_700_000 + i));
        m.set_field_by_name("created", Pb::Message(created));
        // Message index [0] (the file's first message) is the single byte 0.
        let mut payload = vec![0];
        payload.extend(prost_reflect::prost::Message::encode_to_vec(&m));
        let mut msg = Msg::new(0, framed(id, &payload));
        let key = Avro::Record(vec![("id".to_string(), Avro::Long(i))]);
        msg.key = Some(framed(
            key_id,
            &apache_avro::to_avro_datum(&key_schema, key).unwrap(),
        ));
        msgs.push(msg);
    }
    kafka.produce(TOPIC, msgs).await;
    let group = unique_group("auto");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.set("kafka.schema_registry.url", registry.url())
        .dest(0, "value_format", "auto")
        .dest(0, "key_format", "auto")
        .dest(0, "kafka_metadata_field", "_kafka");
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(20, Duration::from_secs(60)).await;
    let stats = run.stop().await;
    assert_eq!(stats.records_quarantined, 0, "{stats:?}");
    // `verify` reads each record the same way (decoded value, decoded key in the metadata).
    let opts = kafka_s3_sink::verify::VerifyOptions::default();
    let r = kafka_s3_sink::verify::run(&cfg.build(), &opts)
        .await
        .unwrap();
    assert_eq!((r.expected, r.found, r.missing), (20, 20, 0), "{r:#?}");
    let (mut written, _) = read_back(&s3);
    assert_eq!(written.len(), 20);
    assert_eq!(written["j0"]["timestamp"], "2026-11-03T10:00:00Z");
    // A framed key is its decoded JSON text in the metadata; a plain one stays as it is.
    assert_eq!(written["j0"]["_kafka"]["key"], "k0");
    assert_eq!(written["p3"]["_kafka"]["key"], r#"{"id":3}"#);
    for v in written.values_mut() {
        v.as_object_mut().unwrap().remove("_kafka");
    }
    // The proto3 JSON mapping with the .proto's field names: int64 as a string, every field
    // without presence written (an unset message field has presence: left out), Timestamp as
    // RFC 3339.
    assert_eq!(
        written["p3"],
        json!({
            "messageId": "p3",
            "timestamp": "2026-11-03T10:00:00Z",
            "qty": "3",
            "tags": [],
            "created": "2026-11-03T10:00:03Z",
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_avro_fills_declared_parquet_columns() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, TimestampMicrosecondType};
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    const TOPIC: &str = "orders-parquet";
    let (kafka, s3, registry) = servers(TOPIC, 2).await;
    let v1 = registry.register("orders-parquet-value", "AVRO", ORDER_V1, json!([]));
    let v2 = registry.register("orders-parquet-value", "AVRO", ORDER_V2, json!([]));
    let mut expected = HashMap::new();
    let msgs: Vec<Msg> = (0..80)
        .map(|i| {
            let (value, line) = order(i, if i < 40 { v1 } else { v2 }, i >= 40);
            expected.insert(format!("m{i}"), line);
            Msg::new(i as i32 % 2, value)
        })
        .collect();
    kafka.produce(TOPIC, msgs).await;
    let group = unique_group("avro-parquet");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &[TOPIC], &s3.endpoint());
    cfg.set("kafka.schema_registry.url", registry.url())
        .dest(0, "value_format", "avro")
        .dest(0, "batch.format", "parquet")
        .dest(0, "parquet.raw_column", "raw");
    let columns: toml::Value = toml::from_str::<toml::Table>(
        r#"c = [
            { name = "message_id", path = "messageId", type = "string", required = true },
            { name = "ts", path = "timestamp", type = "timestamp", required = true },
            { name = "amount", path = "amount", type = "double" },
            { name = "status", path = "status", type = "string" },
            { name = "tags", path = "tags", type = "json" },
            { name = "note", path = "note", type = "string" },
            { name = "coupon", path = "coupon", type = "string" },
        ]"#,
    )
    .unwrap()["c"]
        .clone();
    cfg.dest(0, "parquet.columns", columns);
    let mut run = start_pipeline(cfg.build()).await;
    run.wait_committed_total(80, Duration::from_secs(60)).await;
    let stats = run.stop().await;
    assert_eq!(stats.records_quarantined, 0, "{stats:?}");
    let mut rows = 0;
    for o in s3.objects(BUCKET) {
        assert!(o.key.ends_with(".parquet"), "{}", o.key);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(o.data.clone()))
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let (ids, ts, amount) = (col("message_id"), col("ts"), col("amount"));
            let (status, tags, note, coupon, raw) = (
                col("status"),
                col("tags"),
                col("note"),
                col("coupon"),
                col("raw"),
            );
            for r in 0..b.num_rows() {
                rows += 1;
                let id = ids.as_string::<i32>().value(r);
                let want = &expected[id];
                let i: i64 = id[1..].parse().unwrap();
                // The column values are the decoded record's: the same as its raw JSON.
                let micros = ts.as_primitive::<TimestampMicrosecondType>().value(r);
                assert_eq!(micros, (T0_MS + i * 60_000) * 1000, "{id}");
                let amount = amount.as_primitive::<Float64Type>().value(r);
                assert_eq!(json!(amount), want["amount"], "{id}");
                assert_eq!(status.as_string::<i32>().value(r), want["status"], "{id}");
                let tags: Value = serde_json::from_str(tags.as_string::<i32>().value(r)).unwrap();
                assert_eq!(tags, want["tags"], "{id}");
                let text = |a: &arrow_array::ArrayRef| {
                    (!a.is_null(r)).then(|| json!(a.as_string::<i32>().value(r)))
                };
                assert_eq!(text(&note).unwrap_or(Value::Null), want["note"], "{id}");
                let coupon_want = want.get("coupon").cloned().unwrap_or(Value::Null);
                assert_eq!(text(&coupon).unwrap_or(Value::Null), coupon_want, "{id}");
                let raw: Value = serde_json::from_str(raw.as_string::<i32>().value(r)).unwrap();
                assert_eq!(&raw, want, "{id}");
            }
        }
    }
    assert_eq!(rows, 80);
}
