//! Records in the Confluent wire format for the Schema Registry scenarios: an Avro `Order`
//! subject in two compatible versions, the 5-byte frame, each order's expected JSON line, and
//! the servers those scenarios start.

use apache_avro::types::Value as Avro;
use kafka_s3_sink::schema_server::SchemaServer;
use serde_json::{json, Value};

use super::{Kafka, TestS3};

/// The mock cluster with `topic` of `partitions`, the in-process S3 server and the registry.
pub async fn servers(topic: &str, partitions: i32) -> (Kafka, TestS3, SchemaServer) {
    let kafka = Kafka::start();
    kafka.create_topic(topic, partitions);
    let s3 = TestS3::start().await;
    let registry = SchemaServer::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    (kafka, s3, registry)
}

/// v1 of the `shop.Order` record.
pub const ORDER_V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
  {"name":"messageId","type":"string"},
  {"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"amount","type":"double"},
  {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"note","type":["null","string"],"default":null}]}"#;

/// v1 plus an optional field: a compatible evolution.
pub const ORDER_V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
  {"name":"messageId","type":"string"},
  {"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"amount","type":"double"},
  {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"coupon","type":["null","string"],"default":null}]}"#;

/// 2026-11-03T10:00:00Z.
pub const T0_MS: i64 = 1_793_700_000_000;

/// `payload` framed for schema `id`: the magic byte 0, the id big-endian, the payload.
pub fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Order `i` written with v1 (`v2`: with v2 and a coupon on even orders), framed for `id`, and
/// the JSON line expected for it.
pub fn order(i: usize, id: u32, v2: bool) -> (Vec<u8>, Value) {
    let schema = apache_avro::Schema::parse_str(if v2 { ORDER_V2 } else { ORDER_V1 }).unwrap();
    let ts = T0_MS + i as i64 * 60_000;
    let note = i.is_multiple_of(3).then(|| format!("note {i}"));
    let mut fields = vec![
        ("messageId".to_string(), Avro::String(format!("m{i}"))),
        ("timestamp".to_string(), Avro::TimestampMillis(ts)),
        ("amount".to_string(), Avro::Double(i as f64 + 0.5)),
        (
            "status".to_string(),
            Avro::Enum((i % 2) as u32, ["NEW", "PAID"][i % 2].into()),
        ),
        (
            "tags".to_string(),
            Avro::Array(vec![
                Avro::String("a".into()),
                Avro::String(format!("t{i}")),
            ]),
        ),
        (
            "note".to_string(),
            match &note {
                Some(n) => Avro::Union(1, Box::new(Avro::String(n.clone()))),
                None => Avro::Union(0, Box::new(Avro::Null)),
            },
        ),
    ];
    let at = chrono::DateTime::from_timestamp_millis(ts)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let status = ["NEW", "PAID"][i % 2];
    let mut expected = json!({
        "messageId": format!("m{i}"),
        "timestamp": at,
        "amount": i as f64 + 0.5,
        "status": status,
        "tags": ["a", format!("t{i}")],
        "note": note,
    });
    if v2 {
        let coupon = i.is_multiple_of(2).then(|| format!("C{i}"));
        fields.push((
            "coupon".to_string(),
            match &coupon {
                Some(c) => Avro::Union(1, Box::new(Avro::String(c.clone()))),
                None => Avro::Union(0, Box::new(Avro::Null)),
            },
        ));
        expected["coupon"] = json!(coupon);
    }
    let datum = apache_avro::to_avro_datum(&schema, Avro::Record(fields)).unwrap();
    (framed(id, &datum), expected)
}
