use prost_reflect::prost::Message;
use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, Value};
use rand::{Rng, SeedableRng};

use crate::decode::{DecodeError, Parsed, SchemaError, SchemaKind};

const ORDER: &str = r#"
syntax = "proto3";
package shop.v1;

import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "common/money.proto";

message Order {
  int64 id = 1;
  string name = 2;
  Status status = 3;
  repeated string tags = 4;
  map<string, int32> counts = 5;
  Line first_line = 6;
  repeated Line lines = 7;
  oneof payment {
    string card = 8;
    string iban = 9;
  }
  optional int32 priority = 10;
  google.protobuf.Timestamp created = 11;
  google.protobuf.StringValue coupon = 12;
  common.Money total = 13;
  bytes blob = 14;
  double ratio = 15;
  uint32 count = 16;

  message Line {
    string sku = 1;
    uint32 qty = 2;
  }
  enum Status {
    STATUS_UNKNOWN = 0;
    STATUS_PAID = 1;
  }
}

message Refund {
  string order_id = 1;
  message Reason {
    string text = 1;
  }
  Reason reason = 2;
}
"#;

const MONEY: &str = r#"
syntax = "proto3";
package common;
message Money {
  string currency = 1;
  int64 units = 2;
}
"#;

fn refs() -> Vec<(String, String)> {
    vec![("common/money.proto".to_string(), MONEY.to_string())]
}

fn parsed() -> Parsed {
    Parsed::parse(SchemaKind::Protobuf, ORDER, &refs()).unwrap()
}

/// The message type at `indexes` of the compiled schema.
fn message_type(p: &Parsed, indexes: &[usize]) -> MessageDescriptor {
    let super::super::Inner::Protobuf(d) = &p.inner else {
        panic!("not protobuf")
    };
    let mut desc = d.top[indexes[0]].clone();
    for &i in &indexes[1..] {
        let next = desc
            .child_messages()
            .filter(|m| !m.is_map_entry())
            .nth(i)
            .unwrap();
        desc = next;
    }
    desc
}

fn sub(desc: &MessageDescriptor, field: &str) -> DynamicMessage {
    let kind = desc.get_field_by_name(field).unwrap().kind();
    DynamicMessage::new(kind.as_message().unwrap().clone())
}

fn order(p: &Parsed) -> DynamicMessage {
    let desc = message_type(p, &[0]);
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name("id", Value::I64(42));
    m.set_field_by_name("name", Value::String("Widget".into()));
    m.set_field_by_name("status", Value::EnumNumber(1));
    m.set_field_by_name(
        "tags",
        Value::List(vec![Value::String("a".into()), Value::String("b".into())]),
    );
    m.set_field_by_name(
        "counts",
        Value::Map([(MapKey::String("x".into()), Value::I32(1))].into()),
    );
    let mut line = sub(&desc, "first_line");
    line.set_field_by_name("sku", Value::String("S1".into()));
    line.set_field_by_name("qty", Value::U32(2));
    m.set_field_by_name("first_line", Value::Message(line));
    let mut other = sub(&desc, "lines");
    other.set_field_by_name("sku", Value::String("S2".into()));
    m.set_field_by_name("lines", Value::List(vec![Value::Message(other)]));
    m.set_field_by_name("card", Value::String("4111".into()));
    m.set_field_by_name("priority", Value::I32(0));
    let mut created = sub(&desc, "created");
    created.set_field_by_name("seconds", Value::I64(1_714_566_896));
    created.set_field_by_name("nanos", Value::I32(789_000_000));
    m.set_field_by_name("created", Value::Message(created));
    let mut coupon = sub(&desc, "coupon");
    coupon.set_field_by_name("value", Value::String("SAVE10".into()));
    m.set_field_by_name("coupon", Value::Message(coupon));
    let mut total = sub(&desc, "total");
    total.set_field_by_name("currency", Value::String("EUR".into()));
    total.set_field_by_name("units", Value::I64(12));
    m.set_field_by_name("total", Value::Message(total));
    m.set_field_by_name("blob", Value::Bytes(vec![0, 1, 2, 255].into()));
    m.set_field_by_name("ratio", Value::F64(f64::NAN));
    m
}

fn decode(p: &Parsed, payload: &[u8]) -> Result<String, DecodeError> {
    let mut out = Vec::new();
    p.decode_into(payload, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn framed(indexes: &[u8], m: &DynamicMessage) -> Vec<u8> {
    let mut payload = indexes.to_vec();
    payload.extend(m.encode_to_vec());
    payload
}

const ORDER_JSON: &str = concat!(
    r#"{"id":"42","name":"Widget","status":"STATUS_PAID","tags":["a","b"],"counts":{"x":1},"#,
    r#""first_line":{"sku":"S1","qty":2},"lines":[{"sku":"S2","qty":0}],"card":"4111","#,
    r#""priority":0,"created":"2024-05-01T12:34:56.789Z","coupon":"SAVE10","#,
    r#""total":{"currency":"EUR","units":"12"},"blob":"AAEC/w==","ratio":"NaN","count":0}"#,
);

#[test]
fn the_first_message_by_the_zero_byte_or_its_index() {
    let p = parsed();
    assert_eq!(p.kind(), SchemaKind::Protobuf);
    let m = order(&p);
    assert_eq!(decode(&p, &framed(&[0], &m)).unwrap(), ORDER_JSON);
    // Count 1 (zigzag 2), index 0.
    assert_eq!(decode(&p, &framed(&[2, 0], &m)).unwrap(), ORDER_JSON);
}

#[test]
fn defaults_are_written_and_unset_fields_with_presence_left_out() {
    let p = parsed();
    let m = DynamicMessage::new(message_type(&p, &[0]));
    assert_eq!(
        decode(&p, &framed(&[0], &m)).unwrap(),
        concat!(
            r#"{"id":"0","name":"","status":"STATUS_UNKNOWN","tags":[],"counts":{},"#,
            r#""lines":[],"blob":"","ratio":0.0,"count":0}"#
        )
    );
}

#[test]
fn indexes_pick_later_and_nested_messages() {
    let p = parsed();
    let refund = message_type(&p, &[1]);
    let mut m = DynamicMessage::new(refund.clone());
    m.set_field_by_name("order_id", Value::String("o-1".into()));
    let mut reason = sub(&refund, "reason");
    reason.set_field_by_name("text", Value::String("broken".into()));
    m.set_field_by_name("reason", Value::Message(reason.clone()));
    assert_eq!(
        decode(&p, &framed(&[2, 2], &m)).unwrap(),
        r#"{"order_id":"o-1","reason":{"text":"broken"}}"#
    );
    // [1, 0]: count 2 (zigzag 4), then 1 and 0 (zigzag 2 and 0).
    assert_eq!(
        message_type(&p, &[1, 0]).full_name(),
        "shop.v1.Refund.Reason"
    );
    assert_eq!(
        decode(&p, &framed(&[4, 2, 0], &reason)).unwrap(),
        r#"{"text":"broken"}"#
    );
}

#[test]
fn indexes_out_of_range_or_unreadable_are_errors() {
    let p = parsed();
    let m = order(&p);
    let e = decode(&p, &framed(&[2, 10], &m)).unwrap_err();
    assert_eq!(
        e,
        DecodeError::MessageIndex {
            index: 5,
            available: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "Protobuf message index 5 out of range (2 messages at that level)"
    );
    // Negative (zigzag 1 is -1).
    assert!(matches!(
        decode(&p, &framed(&[2, 1], &m)).unwrap_err(),
        DecodeError::MessageIndex { index: -1, .. }
    ));
    // Refund has one nested message: [1, 1] names none.
    assert!(matches!(
        decode(&p, &[4, 2, 2]).unwrap_err(),
        DecodeError::MessageIndex {
            index: 1,
            available: 1
        }
    ));
    assert!(matches!(
        decode(&p, &[]).unwrap_err(),
        DecodeError::MessageIndexes(_)
    ));
    assert!(matches!(
        decode(&p, &[0x80]).unwrap_err(),
        DecodeError::MessageIndexes(_)
    ));
    // A count of 100 (zigzag 200) is refused before reading indexes.
    assert!(matches!(
        decode(&p, &[0xC8, 0x01]).unwrap_err(),
        DecodeError::MessageIndexes(_)
    ));
}

#[test]
fn garbage_messages_are_errors_naming_the_type() {
    let p = parsed();
    let e = decode(&p, &[0, 0x0A, 0x05, b'a']).unwrap_err().to_string();
    assert!(e.starts_with("Protobuf message `shop.v1.Order`: "), "{e}");
    let mut out = b"kept".to_vec();
    p.decode_into(&[0, 0xff, 0xff], &mut out).unwrap_err();
    assert_eq!(out, b"kept");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for _ in 0..3000 {
        let len = rng.random_range(0..80);
        let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        out.clear();
        let _ = p.decode_into(&payload, &mut out);
        // The same bytes as the first message's body.
        let mut zero = vec![0];
        zero.extend(&payload);
        let _ = p.decode_into(&zero, &mut out);
    }
}

#[test]
fn imports_must_be_among_the_references() {
    let e = Parsed::parse(SchemaKind::Protobuf, ORDER, &[]).unwrap_err();
    assert!(matches!(e, SchemaError::Protobuf(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "Protobuf schema: import 'common/money.proto' not found"
    );
    let bad_ref = [("common/money.proto".to_string(), "message {".to_string())];
    let e = Parsed::parse(SchemaKind::Protobuf, ORDER, &bad_ref).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Protobuf schema: in common/money.proto: expected an identifier, but found '{'"
    );
    let e = Parsed::parse(
        SchemaKind::Protobuf,
        "syntax = \"proto3\";\nenum E { A = 0; }",
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, SchemaError::NoMessage), "{e}");
    let e = Parsed::parse(SchemaKind::Protobuf, "message {", &[]).unwrap_err();
    assert!(e.to_string().starts_with("Protobuf schema: "), "{e}");
}

#[test]
fn memory_grows_with_the_schema() {
    let small = Parsed::parse(
        SchemaKind::Protobuf,
        "syntax = \"proto3\"; message A { int32 a = 1; }",
        &[],
    )
    .unwrap();
    let big = parsed();
    assert!(small.memory_bytes() < big.memory_bytes());
    assert!(big.memory_bytes() > ORDER.len() + MONEY.len());
}

#[test]
fn nested_indexes_leave_out_map_entries() {
    let p = parsed();
    // Order's nested types: CountsEntry (for `counts`, declared first) and Line; [0, 0] is Line.
    assert_eq!(message_type(&p, &[0, 0]).full_name(), "shop.v1.Order.Line");
    let mut line = DynamicMessage::new(message_type(&p, &[0, 0]));
    line.set_field_by_name("sku", Value::String("S9".into()));
    assert_eq!(
        decode(&p, &framed(&[4, 0, 0], &line)).unwrap(),
        r#"{"sku":"S9","qty":0}"#
    );
    assert!(matches!(
        decode(&p, &framed(&[4, 0, 2], &line)).unwrap_err(),
        DecodeError::MessageIndex {
            index: 1,
            available: 1
        }
    ));
}

#[test]
fn confluent_built_in_imports_resolve() {
    let schema = r#"
syntax = "proto3";
package pay;
import "confluent/meta.proto";
import "confluent/type/decimal.proto";
message Payment {
  option (confluent.message_meta) = { doc: "a payment" };
  string id = 1 [(confluent.field_meta) = { doc: "the id", params: [{ key: "k", value: "v" }] }];
  confluent.type.Decimal amount = 2;
}
"#;
    let p = Parsed::parse(SchemaKind::Protobuf, schema, &[]).unwrap();
    let desc = message_type(&p, &[0]);
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name("id", Value::String("p1".into()));
    let mut amount = sub(&desc, "amount");
    amount.set_field_by_name("value", Value::Bytes(vec![0x04, 0xCE].into()));
    amount.set_field_by_name("scale", Value::I32(2));
    m.set_field_by_name("amount", Value::Message(amount));
    assert_eq!(
        decode(&p, &framed(&[0], &m)).unwrap(),
        r#"{"id":"p1","amount":{"value":"BM4=","precision":0,"scale":2}}"#
    );
}

#[test]
fn an_enum_number_the_schema_does_not_declare_is_the_number() {
    let schema = "syntax = \"proto3\";\nenum E { A = 0; }\nmessage M { E e = 1; }";
    let p = Parsed::parse(SchemaKind::Protobuf, schema, &[]).unwrap();
    assert_eq!(decode(&p, &[0, 8, 7]).unwrap(), r#"{"e":7}"#);
}

#[test]
fn a_base64_serialized_descriptor_reads_like_its_source() {
    use base64::Engine as _;
    use prost_reflect::prost::Message as _;
    let p = parsed();
    let file = message_type(&p, &[0]).parent_file();
    let pool = file.parent_pool().clone();
    let b64 = |name: &str| {
        let f = pool.get_file_by_name(name).unwrap();
        base64::engine::general_purpose::STANDARD.encode(f.file_descriptor_proto().encode_to_vec())
    };
    let main = b64(file.name());
    let refs = vec![("common/money.proto".to_string(), b64("common/money.proto"))];
    let serialized = Parsed::parse(SchemaKind::Protobuf, &main, &refs).unwrap();
    let m = order(&p);
    assert_eq!(decode(&serialized, &framed(&[0], &m)).unwrap(), ORDER_JSON);
    // Neither source nor a descriptor: the source's error.
    let e = Parsed::parse(SchemaKind::Protobuf, "bm90IGEgZGVzY3JpcHRvcg==", &[]).unwrap_err();
    assert!(e.to_string().starts_with("Protobuf schema"), "{e}");
}
