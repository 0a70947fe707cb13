use apache_avro::types::Value;
use apache_avro::{Days, Decimal, Duration, Millis, Months, Schema, Uuid};
use rand::{Rng, SeedableRng};

use crate::decode::{DecodeError, Parsed, SchemaKind};

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
 {"name":"id","type":"long"},
 {"name":"ok","type":"boolean"},
 {"name":"qty","type":"int"},
 {"name":"name","type":"string"},
 {"name":"note","type":["null","string"]},
 {"name":"customer","type":{"type":"record","name":"Customer","fields":[
   {"name":"email","type":"string"},
   {"name":"tier","type":{"type":"enum","name":"Tier","symbols":["GOLD","SILVER"]}}]}},
 {"name":"billing","type":["null","Customer"]},
 {"name":"tags","type":{"type":"array","items":"string"}},
 {"name":"attrs","type":{"type":"map","values":"long"}},
 {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
 {"name":"total","type":{"type":"fixed","name":"Money","size":8,"logicalType":"decimal","precision":18,"scale":3}},
 {"name":"uid","type":{"type":"string","logicalType":"uuid"}},
 {"name":"day","type":{"type":"int","logicalType":"date"}},
 {"name":"t_ms","type":{"type":"int","logicalType":"time-millis"}},
 {"name":"t_us","type":{"type":"long","logicalType":"time-micros"}},
 {"name":"ts_ms","type":{"type":"long","logicalType":"timestamp-millis"}},
 {"name":"ts_us","type":{"type":"long","logicalType":"timestamp-micros"}},
 {"name":"ts_ns","type":{"type":"long","logicalType":"timestamp-nanos"}},
 {"name":"lts_ms","type":{"type":"long","logicalType":"local-timestamp-millis"}},
 {"name":"lts_us","type":{"type":"long","logicalType":"local-timestamp-micros"}},
 {"name":"lts_ns","type":{"type":"long","logicalType":"local-timestamp-nanos"}},
 {"name":"blob","type":"bytes"},
 {"name":"hash","type":{"type":"fixed","name":"Hash","size":4}},
 {"name":"ratio","type":"float"},
 {"name":"score","type":"double"},
 {"name":"span","type":{"type":"fixed","name":"Span","size":12,"logicalType":"duration"}}
]}"#;

fn customer(email: &str, tier: u32) -> Value {
    let symbol = ["GOLD", "SILVER"][tier as usize].to_string();
    Value::Record(vec![
        ("email".into(), Value::String(email.into())),
        ("tier".into(), Value::Enum(tier, symbol)),
    ])
}

/// An `Order` with `note` and `billing` as given (union values).
fn order(note: Value, billing: Value, ratio: f32) -> Value {
    let ms = 1_714_566_896_789_i64;
    Value::Record(vec![
        ("id".into(), Value::Long(42)),
        ("ok".into(), Value::Boolean(true)),
        ("qty".into(), Value::Int(-3)),
        ("name".into(), Value::String("Widget \"A\"\n".into())),
        ("note".into(), note),
        ("customer".into(), customer("a@b.c", 1)),
        ("billing".into(), billing),
        (
            "tags".into(),
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        ),
        (
            "attrs".into(),
            Value::Map([("z".into(), Value::Long(1)), ("a".into(), Value::Long(2))].into()),
        ),
        (
            "price".into(),
            Value::Decimal(Decimal::from(vec![0x04, 0xCE])),
        ),
        (
            "total".into(),
            Value::Decimal(Decimal::from((-5_i64).to_be_bytes())),
        ),
        (
            "uid".into(),
            Value::Uuid(Uuid::parse_str("123e4567-e89b-12d3-a456-426614174000").unwrap()),
        ),
        ("day".into(), Value::Date(19844)),
        ("t_ms".into(), Value::TimeMillis(45_296_789)),
        ("t_us".into(), Value::TimeMicros(45_296_789_012)),
        ("ts_ms".into(), Value::TimestampMillis(ms)),
        ("ts_us".into(), Value::TimestampMicros(ms * 1000 + 12)),
        (
            "ts_ns".into(),
            Value::TimestampNanos(ms * 1_000_000 + 12_345),
        ),
        ("lts_ms".into(), Value::LocalTimestampMillis(ms)),
        ("lts_us".into(), Value::LocalTimestampMicros(ms * 1000 + 12)),
        (
            "lts_ns".into(),
            Value::LocalTimestampNanos(ms * 1_000_000 + 12_345),
        ),
        ("blob".into(), Value::Bytes(vec![0, 1, 2, 255])),
        ("hash".into(), Value::Fixed(4, b"abcd".to_vec())),
        ("ratio".into(), Value::Float(ratio)),
        ("score".into(), Value::Double(2.5)),
        (
            "span".into(),
            Value::Duration(Duration::new(Months::new(1), Days::new(2), Millis::new(3))),
        ),
    ])
}

fn encode(schema: &str, value: Value) -> Vec<u8> {
    apache_avro::to_avro_datum(&Schema::parse_str(schema).unwrap(), value).unwrap()
}

fn decode(p: &Parsed, payload: &[u8]) -> Result<String, DecodeError> {
    let mut out = Vec::new();
    p.decode_into(payload, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn parsed(schema: &str) -> Parsed {
    Parsed::parse(SchemaKind::Avro, schema, &[]).unwrap()
}

/// Whether datums of `p` take the fast path (names resolved once).
fn resolved_once(p: &Parsed) -> bool {
    match &p.inner {
        crate::decode::Inner::Avro(d) => d.reader.is_some(),
        _ => false,
    }
}

const ORDER_TAIL: &str = concat!(
    r#""tags":["a","b"],"attrs":{"a":2,"z":1},"price":"12.30","total":"-0.005","#,
    r#""uid":"123e4567-e89b-12d3-a456-426614174000","day":"2024-05-01","#,
    r#""t_ms":"12:34:56.789","t_us":"12:34:56.789012","#,
    r#""ts_ms":"2024-05-01T12:34:56.789Z","ts_us":"2024-05-01T12:34:56.789012Z","#,
    r#""ts_ns":"2024-05-01T12:34:56.789012345Z","lts_ms":"2024-05-01T12:34:56.789","#,
    r#""lts_us":"2024-05-01T12:34:56.789012","lts_ns":"2024-05-01T12:34:56.789012345","#,
    r#""blob":"AAEC/w==","hash":"YWJjZA==","#,
);

#[test]
fn every_type_maps_to_its_natural_json() {
    let p = parsed(ORDER);
    assert_eq!(p.kind(), SchemaKind::Avro);
    let value = order(
        Value::Union(0, Box::new(Value::Null)),
        Value::Union(1, Box::new(customer("x@y.z", 0))),
        f32::NAN,
    );
    assert!(resolved_once(&p));
    let text = decode(&p, &encode(ORDER, value)).unwrap();
    let expected = [
        r#"{"id":42,"ok":true,"qty":-3,"name":"Widget \"A\"\n","note":null,"#,
        r#""customer":{"email":"a@b.c","tier":"SILVER"},"#,
        r#""billing":{"email":"x@y.z","tier":"GOLD"},"#,
        ORDER_TAIL,
        r#""ratio":"NaN","score":2.5,"span":{"months":1,"days":2,"millis":3}}"#,
    ]
    .concat();
    assert_eq!(text, expected);
    serde_json::from_str::<serde_json::Value>(&text).unwrap();
}

#[test]
fn unions_are_their_value_and_null_records_are_null() {
    let p = parsed(ORDER);
    let value = order(
        Value::Union(1, Box::new(Value::String("hi".into()))),
        Value::Union(0, Box::new(Value::Null)),
        1.5,
    );
    let text = decode(&p, &encode(ORDER, value)).unwrap();
    assert!(text.contains(r#""note":"hi","#), "{text}");
    assert!(text.contains(r#""billing":null,"#), "{text}");
    assert!(text.contains(r#""ratio":1.5,"#), "{text}");
}

#[test]
fn infinite_floats_are_strings() {
    let schema = r#"{"type":"record","name":"R","fields":[
        {"name":"a","type":"double"},{"name":"b","type":"float"},{"name":"c","type":"double"}]}"#;
    let value = Value::Record(vec![
        ("a".into(), Value::Double(f64::INFINITY)),
        ("b".into(), Value::Float(f32::NEG_INFINITY)),
        ("c".into(), Value::Double(-0.25)),
    ]);
    let text = decode(&parsed(schema), &encode(schema, value)).unwrap();
    assert_eq!(text, r#"{"a":"Infinity","b":"-Infinity","c":-0.25}"#);
}

#[test]
fn decimals_keep_their_scale_at_any_width() {
    use super::json::decimal_text;
    assert_eq!(decimal_text(&[0x04, 0xCE], 2), "12.30");
    assert_eq!(decimal_text(&[0xFF], 3), "-0.001");
    assert_eq!(decimal_text(&[0x00], 2), "0.00");
    assert_eq!(decimal_text(&[0x7F], 0), "127");
    assert_eq!(decimal_text(&[], 1), "0.0");
    // 2^128 (17 bytes): past i128.
    let mut wide = vec![0x01];
    wide.extend([0; 16]);
    assert_eq!(
        decimal_text(&wide, 4),
        "34028236692093846346337460743176821.1456"
    );
    let mut negative = vec![0xFF; 17];
    negative[16] = 0x9C; // -100
    assert_eq!(decimal_text(&negative, 1), "-10.0");
}

#[test]
fn named_types_come_from_references() {
    let customer_ref = r#"{"type":"record","name":"Customer","namespace":"shop","fields":[
        {"name":"email","type":"string"},
        {"name":"tier","type":"shop.Tier"}]}"#;
    let tier_ref =
        r#"{"type":"enum","name":"Tier","namespace":"shop","symbols":["GOLD","SILVER"]}"#;
    let main = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"who","type":"Customer"},
        {"name":"also","type":["null","shop.Customer"]}]}"#;
    let refs = [
        ("shop.Tier".to_string(), tier_ref.to_string()),
        ("shop.Customer".to_string(), customer_ref.to_string()),
    ];
    let p = Parsed::parse(SchemaKind::Avro, main, &refs).unwrap();
    assert!(resolved_once(&p));
    let (schema, schemata) = Schema::parse_str_with_list(main, [tier_ref, customer_ref]).unwrap();
    let value = Value::Record(vec![
        ("who".into(), customer("a@b.c", 0)),
        (
            "also".into(),
            Value::Union(1, Box::new(customer("d@e.f", 1))),
        ),
    ]);
    let payload =
        apache_avro::to_avro_datum_schemata(&schema, schemata.iter().collect(), value).unwrap();
    assert_eq!(
        decode(&p, &payload).unwrap(),
        r#"{"who":{"email":"a@b.c","tier":"GOLD"},"also":{"email":"d@e.f","tier":"SILVER"}}"#
    );
    // Without the references the names do not resolve.
    let e = Parsed::parse(SchemaKind::Avro, main, &[]).unwrap_err();
    assert!(e.to_string().starts_with("Avro schema: "), "{e}");
}

#[test]
fn a_decimal_named_type_used_twice_keeps_its_scale() {
    let schema = r#"{"type":"record","name":"R","namespace":"n","fields":[
        {"name":"a","type":{"type":"fixed","name":"Money","size":4,"logicalType":"decimal","precision":8,"scale":2}},
        {"name":"b","type":["null","n.Money"]}]}"#;
    let p = parsed(schema);
    let value = Value::Record(vec![
        (
            "a".into(),
            Value::Decimal(Decimal::from(1234_i32.to_be_bytes())),
        ),
        (
            "b".into(),
            Value::Union(
                1,
                Box::new(Value::Decimal(Decimal::from((-1_i32).to_be_bytes()))),
            ),
        ),
    ]);
    // apache-avro cannot write with that schema either: the same bytes from a copy of the type.
    let writer = schema.replace(
        r#"["null","n.Money"]"#,
        r#"["null",{"type":"fixed","name":"Copy","size":4,"logicalType":"decimal","precision":8,"scale":2}]"#,
    );
    assert_eq!(
        decode(&p, &encode(&writer, value)).unwrap(),
        r#"{"a":"12.34","b":"-0.01"}"#
    );
}

#[test]
fn truncated_datums_are_errors_naming_the_field() {
    let p = parsed(ORDER);
    let payload = encode(
        ORDER,
        order(
            Value::Union(1, Box::new(Value::String("a note".into()))),
            Value::Union(0, Box::new(Value::Null)),
            0.5,
        ),
    );
    for len in 0..payload.len() {
        let mut out = b"kept".to_vec();
        let e = p.decode_into(&payload[..len], &mut out).unwrap_err();
        assert_eq!(out, b"kept", "nothing appended at {len}");
        assert!(matches!(e, DecodeError::Avro { .. }), "{len}: {e}");
    }
    // Cut inside `name` (the varint 42, true, -3, the length 11, then "Wid"): the string field is
    // named, the payload is not quoted.
    let e = decode(&p, &payload[..7]).unwrap_err().to_string();
    assert!(e.starts_with("Avro field `name`: "), "{e}");
    assert!(!e.contains("Wid"), "{e}");
    // Cut inside the nested record.
    let at = payload.windows(5).position(|w| w == b"a@b.c").unwrap();
    let e = decode(&p, &payload[..at + 2]).unwrap_err().to_string();
    assert!(e.starts_with("Avro field `customer.email`: "), "{e}");
}

#[test]
fn bytes_after_the_datum_are_an_error() {
    let schema = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    let mut payload = encode(schema, Value::Record(vec![("a".into(), Value::Int(7))]));
    assert_eq!(decode(&parsed(schema), &payload).unwrap(), r#"{"a":7}"#);
    payload.extend([1, 2]);
    assert_eq!(
        decode(&parsed(schema), &payload).unwrap_err(),
        DecodeError::AvroTrailing(2)
    );
}

#[test]
fn random_bytes_never_panic() {
    let p = parsed(ORDER);
    let small = parsed(
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":["null","string"]},
        {"name":"b","type":{"type":"array","items":{"type":"map","values":"double"}}}]}"#,
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut out = Vec::new();
    for _ in 0..3000 {
        let len = rng.random_range(0..80);
        let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        out.clear();
        let _ = p.decode_into(&payload, &mut out);
        let _ = small.decode_into(&payload, &mut out);
    }
}

#[test]
fn memory_grows_with_the_schema() {
    let one = parsed(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#);
    let big = parsed(ORDER);
    assert!(one.memory_bytes() < big.memory_bytes());
    assert!(big.memory_bytes() > ORDER.len());
}

#[test]
fn bad_schemas_are_schema_errors() {
    for bad in [
        "",
        "{",
        r#"{"type":"record","name":"R"}"#,
        r#"{"type":"nope"}"#,
    ] {
        let e = Parsed::parse(SchemaKind::Avro, bad, &[]).unwrap_err();
        assert!(e.to_string().starts_with("Avro schema: "), "{bad}: {e}");
    }
}

#[test]
fn a_datum_that_is_no_record_is_an_error() {
    let e = decode(
        &parsed(r#""string""#),
        &encode(r#""string""#, Value::String("x".into())),
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "Avro: the datum is String, not a record: it makes no JSON object"
    );
    let union = r#"[{"type":"record","name":"A","fields":[{"name":"a","type":"int"}]},
        {"type":"record","name":"B","fields":[{"name":"b","type":"string"}]}, "null"]"#;
    let p = parsed(union);
    let b = Value::Record(vec![("b".into(), Value::String("x".into()))]);
    let payload = encode(union, Value::Union(1, Box::new(b)));
    assert_eq!(decode(&p, &payload).unwrap(), r#"{"b":"x"}"#);
    let null = encode(union, Value::Union(2, Box::new(Value::Null)));
    assert!(decode(&p, &null)
        .unwrap_err()
        .to_string()
        .contains("Null, not a record"));
}

#[test]
fn uuid_and_duration_on_named_fixed_types() {
    let schema = r#"{"type":"record","name":"R","namespace":"n","fields":[
        {"name":"u","type":{"type":"fixed","name":"U","size":16,"logicalType":"uuid"}},
        {"name":"d","type":{"type":"fixed","name":"D","size":12,"logicalType":"duration"}},
        {"name":"e","type":["null","D"]},
        {"name":"s","type":{"type":"string","logicalType":"uuid"}}]}"#;
    let p = parsed(schema);
    // Written as plain fixed types: the same bytes.
    let writer = schema
        .replace(r#","logicalType":"uuid"}},"#, "}},")
        .replace(r#","logicalType":"duration""#, "");
    let uuid = Uuid::parse_str("123e4567-e89b-12d3-a456-426614174000").unwrap();
    let mut d = Vec::new();
    for n in [14_u32, 2, 86_400_000] {
        d.extend(n.to_le_bytes());
    }
    let value = Value::Record(vec![
        ("u".into(), Value::Fixed(16, uuid.as_bytes().to_vec())),
        ("d".into(), Value::Fixed(12, d.clone())),
        ("e".into(), Value::Union(1, Box::new(Value::Fixed(12, d)))),
        ("s".into(), Value::String(uuid.to_string())),
    ]);
    assert_eq!(
        decode(&p, &encode(&writer, value)).unwrap(),
        concat!(
            r#"{"u":"123e4567-e89b-12d3-a456-426614174000","#,
            r#""d":{"months":14,"days":2,"millis":86400000},"#,
            r#""e":{"months":14,"days":2,"millis":86400000},"#,
            r#""s":"123e4567-e89b-12d3-a456-426614174000"}"#
        )
    );
}

#[test]
fn big_decimals_are_plain_decimal_text() {
    let schema = r#"{"type":"record","name":"R","fields":[
        {"name":"b","type":{"type":"bytes","logicalType":"big-decimal"}}]}"#;
    let big: apache_avro::BigDecimal = "-1234.5678".parse().unwrap();
    let value = Value::Record(vec![("b".into(), Value::BigDecimal(big))]);
    assert_eq!(
        decode(&parsed(schema), &encode(schema, value)).unwrap(),
        r#"{"b":"-1234.5678"}"#
    );
}

#[test]
fn a_recursive_type_from_a_reference() {
    let node = r#"{"type":"record","name":"Node","namespace":"l","fields":[
        {"name":"v","type":"int"},{"name":"next","type":["null","Node"]}]}"#;
    let main = r#"{"type":"record","name":"List","namespace":"l","fields":[
        {"name":"head","type":["null","l.Node"]},{"name":"tail","type":["null","Node"]}]}"#;
    let refs = [("l.Node".to_string(), node.to_string())];
    let p = Parsed::parse(SchemaKind::Avro, main, &refs).unwrap();
    assert!(resolved_once(&p));
    let (schema, schemata) = Schema::parse_str_with_list(main, [node]).unwrap();
    let leaf = |v| {
        Value::Record(vec![
            ("v".into(), Value::Int(v)),
            ("next".into(), Value::Union(0, Box::new(Value::Null))),
        ])
    };
    let two = Value::Record(vec![
        ("v".into(), Value::Int(1)),
        ("next".into(), Value::Union(1, Box::new(leaf(2)))),
    ]);
    let value = Value::Record(vec![
        ("head".into(), Value::Union(1, Box::new(two))),
        ("tail".into(), Value::Union(1, Box::new(leaf(3)))),
    ]);
    let payload =
        apache_avro::to_avro_datum_schemata(&schema, schemata.iter().collect(), value).unwrap();
    assert_eq!(
        decode(&p, &payload).unwrap(),
        r#"{"head":{"v":1,"next":{"v":2,"next":null}},"tail":{"v":3,"next":null}}"#
    );
}
