use apache_avro::types::Value;
use apache_avro::Schema;
use rand::{Rng, SeedableRng};

use crate::decode::{Parsed, SchemaKind};

/// Every type the column-wise reader writes, nested and in unions.
const EVENT: &str = r#"{"type":"record","name":"Event","namespace":"t","fields":[
 {"name":"id","type":"long"},
 {"name":"ok","type":"boolean"},
 {"name":"qty","type":"int"},
 {"name":"name","type":"string"},
 {"name":"note","type":["null","string"]},
 {"name":"late","type":["string","null"]},
 {"name":"ratio","type":"float"},
 {"name":"score","type":"double"},
 {"name":"blob","type":"bytes"},
 {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","C"]}},
 {"name":"tags","type":{"type":"array","items":"string"}},
 {"name":"props","type":["null",{"type":"map","values":["null","boolean","long","double","string"]}]},
 {"name":"nums","type":{"type":"map","values":{"type":"array","items":"int"}}},
 {"name":"ctx","type":{"type":"record","name":"Ctx","fields":[
   {"name":"ip","type":["null","string"]},
   {"name":"lib","type":["null",{"type":"record","name":"Lib","fields":[
     {"name":"name","type":"string"},{"name":"kind","type":"Kind"}]}]}]}},
 {"name":"either","type":["long","string","Lib"]},
 {"name":"day","type":{"type":"int","logicalType":"date"}},
 {"name":"t_ms","type":{"type":"int","logicalType":"time-millis"}},
 {"name":"t_us","type":{"type":"long","logicalType":"time-micros"}},
 {"name":"ts_ms","type":{"type":"long","logicalType":"timestamp-millis"}},
 {"name":"ts_us","type":["null",{"type":"long","logicalType":"timestamp-micros"}]},
 {"name":"ts_ns","type":{"type":"long","logicalType":"timestamp-nanos"}},
 {"name":"lts_ms","type":{"type":"long","logicalType":"local-timestamp-millis"}},
 {"name":"lts_us","type":{"type":"long","logicalType":"local-timestamp-micros"}},
 {"name":"nothing","type":"null"}
]}"#;

fn text(rng: &mut impl Rng) -> String {
    const PARTS: [&str; 8] = ["a", "Zz", "é", "\"", "\\", "\n", "\u{1F600}", "\u{7f}"];
    (0..rng.random_range(0..6))
        .map(|_| PARTS[rng.random_range(0..PARTS.len())])
        .collect()
}

fn lib(rng: &mut impl Rng) -> Value {
    let k = rng.random_range(0..3u32);
    Value::Record(vec![
        ("name".into(), Value::String(text(rng))),
        (
            "kind".into(),
            Value::Enum(k, ["A", "B", "C"][k as usize].into()),
        ),
    ])
}

fn nullable<R: Rng>(rng: &mut R, make: impl FnOnce(&mut R) -> Value) -> Value {
    if rng.random_bool(0.3) {
        Value::Union(0, Box::new(Value::Null))
    } else {
        Value::Union(1, Box::new(make(rng)))
    }
}

fn scalar(rng: &mut impl Rng) -> Value {
    let v = match rng.random_range(0..5) {
        0 => Value::Null,
        1 => Value::Boolean(rng.random()),
        2 => Value::Long(rng.random()),
        3 => Value::Double(rng.random_range(-1e9..1e9)),
        _ => Value::String(text(rng)),
    };
    let branch = match v {
        Value::Null => 0,
        Value::Boolean(_) => 1,
        Value::Long(_) => 2,
        Value::Double(_) => 3,
        _ => 4,
    };
    Value::Union(branch, Box::new(v))
}

fn event(rng: &mut impl Rng) -> Value {
    let ms: i64 = rng.random_range(-100_000_000_000..4_000_000_000_000);
    let floats = [f32::NAN, f32::INFINITY, -0.0, 1.5e-7, 3.25];
    let props: Vec<(String, Value)> = (0..rng.random_range(0..5))
        .map(|k| (format!("{}{k}", text(rng)), scalar(rng)))
        .collect();
    let nums: Vec<(String, Value)> = (0..rng.random_range(0..3))
        .map(|k| {
            let items = (0..rng.random_range(0..3)).map(|_| Value::Int(rng.random()));
            (format!("n{k}"), Value::Array(items.collect()))
        })
        .collect();
    let either = match rng.random_range(0..3) {
        0 => Value::Union(0, Box::new(Value::Long(rng.random()))),
        1 => Value::Union(1, Box::new(Value::String(text(rng)))),
        _ => Value::Union(2, Box::new(lib(rng))),
    };
    let k = rng.random_range(0..3u32);
    let late = if rng.random_bool(0.5) {
        Value::Union(1, Box::new(Value::Null))
    } else {
        Value::Union(0, Box::new(Value::String(text(rng))))
    };
    Value::Record(vec![
        ("id".into(), Value::Long(rng.random())),
        ("ok".into(), Value::Boolean(rng.random())),
        ("qty".into(), Value::Int(rng.random())),
        ("name".into(), Value::String(text(rng))),
        ("note".into(), nullable(rng, |r| Value::String(text(r)))),
        ("late".into(), late),
        (
            "ratio".into(),
            Value::Float(floats[rng.random_range(0..floats.len())]),
        ),
        ("score".into(), Value::Double(rng.random::<f64>() * 1e300)),
        (
            "blob".into(),
            Value::Bytes((0..rng.random_range(0..9)).map(|_| rng.random()).collect()),
        ),
        (
            "kind".into(),
            Value::Enum(k, ["A", "B", "C"][k as usize].into()),
        ),
        (
            "tags".into(),
            Value::Array(
                (0..rng.random_range(0..4))
                    .map(|_| Value::String(text(rng)))
                    .collect(),
            ),
        ),
        (
            "props".into(),
            nullable(rng, |_| Value::Map(props.into_iter().collect())),
        ),
        ("nums".into(), Value::Map(nums.into_iter().collect())),
        (
            "ctx".into(),
            Value::Record(vec![
                ("ip".into(), nullable(rng, |r| Value::String(text(r)))),
                ("lib".into(), nullable(rng, lib)),
            ]),
        ),
        ("either".into(), either),
        (
            "day".into(),
            Value::Date(rng.random_range(-800_000..800_000)),
        ),
        (
            "t_ms".into(),
            Value::TimeMillis(rng.random_range(0..86_400_000)),
        ),
        (
            "t_us".into(),
            Value::TimeMicros(rng.random_range(0..86_400_000_000)),
        ),
        ("ts_ms".into(), Value::TimestampMillis(ms)),
        (
            "ts_us".into(),
            nullable(rng, |_| Value::TimestampMicros(ms * 1000 + 7)),
        ),
        (
            "ts_ns".into(),
            Value::TimestampNanos(ms * 1_000_000 + 12_345),
        ),
        ("lts_ms".into(), Value::LocalTimestampMillis(ms)),
        ("lts_us".into(), Value::LocalTimestampMicros(ms * 1000 + 3)),
        ("nothing".into(), Value::Null),
    ])
}

/// Framed values (magic byte, `id`, datum) of `schema`.
fn framed(schema: &str, id: u32, values: Vec<Value>) -> Vec<Vec<u8>> {
    let schema = Schema::parse_str(schema).unwrap();
    values
        .into_iter()
        .map(|v| {
            let mut out = vec![0];
            out.extend(id.to_be_bytes());
            out.extend(apache_avro::to_avro_datum(&schema, v).unwrap());
            out
        })
        .collect()
}

fn one_by_one(p: &Parsed, values: &[Vec<u8>]) -> Vec<Vec<u8>> {
    values
        .iter()
        .map(|v| {
            let mut out = Vec::new();
            p.decode_into(&v[5..], &mut out).unwrap();
            out
        })
        .collect()
}

#[test]
fn a_window_reads_as_each_datum_alone_does() {
    let p = Parsed::parse(SchemaKind::Avro, EVENT, &[]).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for window in [1, 7, 300] {
        let values = framed(EVENT, 9, (0..window).map(|_| event(&mut rng)).collect());
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let lines = p.decode_many(9, &refs).expect("read column-wise");
        let expected = one_by_one(&p, &values);
        for (k, (got, want)) in lines.iter().zip(&expected).enumerate() {
            let got = got.as_deref().expect("every datum read in the window");
            assert_eq!(
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(want),
                "datum {k} of {window}"
            );
        }
        assert_eq!(lines.len(), window);
    }
}

/// The window's lines of `values`, which read column-wise.
fn window(p: &Parsed, values: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
    p.decode_many(9, values).expect("read column-wise")
}

#[test]
fn a_bad_datum_is_left_to_be_read_alone_and_its_neighbours_are_not() {
    let p = Parsed::parse(SchemaKind::Avro, EVENT, &[]).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let good = framed(EVENT, 9, (0..5).map(|_| event(&mut rng)).collect());
    let expected = one_by_one(&p, &good);
    let mut cut = good[2].clone();
    cut.truncate(cut.len() - 3);
    let mut long = good[2].clone();
    long.extend([2, 2]);
    // Bytes left over that read as a second framed datum.
    let mut two = good[2].clone();
    two.extend(&good[3]);
    let mut other_id = good[2].clone();
    other_id[4] = 8;
    for bad in [cut, long, two, other_id, vec![0, 0, 0, 0, 9]] {
        let mut values: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
        values[2] = &bad;
        values[4] = &bad;
        let lines = window(&p, &values);
        for k in [0, 1, 3] {
            assert_eq!(lines[k].as_ref(), Some(&expected[k]), "{bad:?}");
        }
        assert!(lines[2].is_none() && lines[4].is_none(), "{bad:?}");
        // (Another id's datum reads with its own schema, out of this group.)
        assert!(bad[4] == 8 || p.decode_into(&bad[5..], &mut Vec::new()).is_err());
    }
    // Past 8 failed values, the rest of the window is read alone.
    let bad: &[u8] = &[0, 0, 0, 0, 9];
    for (failed, read) in [(7, true), (8, false)] {
        let mut values = vec![bad; failed];
        values.push(&good[0]);
        assert_eq!(window(&p, &values)[failed].is_some(), read, "{failed}");
    }
    // Whatever the window makes of noise, it is what the value tree makes of it, or the
    // value tree refuses it.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    for _ in 0..300 {
        let mut noise = vec![0, 0, 0, 0, 9];
        noise.extend((0..rng.random_range(0..60)).map(|_| rng.random::<u8>()));
        let mut alone = Vec::new();
        let one = p.decode_into(&noise[5..], &mut alone);
        if let [Some(line)] = &window(&p, &[&noise])[..] {
            assert!(one.is_err() || *line == alone, "{noise:?}: {one:?}");
        }
    }
}

#[test]
fn the_window_reads_what_the_value_tree_refuses_in_two_cases() {
    let schema = r#"{"type":"record","name":"R","fields":[
        {"name":"b","type":"boolean"},{"name":"n","type":["null","long"]}]}"#;
    let p = Parsed::parse(SchemaKind::Avro, schema, &[]).unwrap();
    let read = |datum: &[u8]| {
        let mut value = vec![0, 0, 0, 0, 9];
        value.extend(datum);
        let line = window(&p, &[&value]).remove(0);
        (
            line.map(|l| String::from_utf8(l).unwrap()),
            p.decode_into(datum, &mut Vec::new()).is_ok(),
        )
    };
    assert_eq!(read(&[1, 2, 6]), (Some(r#"{"b":true,"n":3}"#.into()), true));
    // A boolean byte of 2, a branch index of 2 in a two-branch union.
    assert_eq!(
        read(&[2, 0]),
        (Some(r#"{"b":true,"n":null}"#.into()), false)
    );
    assert_eq!(
        read(&[0, 4, 6]),
        (Some(r#"{"b":false,"n":3}"#.into()), false)
    );
}

#[test]
fn a_block_count_that_overflows_the_decoder_is_left_to_be_read_alone() {
    let schema = r#"{"type":"record","name":"R","fields":[
        {"name":"a","type":{"type":"array","items":"int"}}]}"#;
    let p = Parsed::parse(SchemaKind::Avro, schema, &[]).unwrap();
    // A block count of i64::MIN (zigzag: all ones), which arrow-avro negates.
    let mut value = vec![0, 0, 0, 0, 9];
    value.extend([0xff; 9]);
    value.push(0x01);
    assert_eq!(window(&p, &[&value]), vec![None]);
    assert!(p.decode_into(&value[5..], &mut Vec::new()).is_err());
}

#[test]
fn values_past_the_lines_bound_are_left_to_be_read_alone() {
    let symbol = "S".repeat(200);
    let schema = format!(
        r#"{{"type":"record","name":"R","fields":[{{"name":"a","type":{{"type":"array",
        "items":{{"type":"enum","name":"E","symbols":["{symbol}"]}}}}}}]}}"#
    );
    let p = Parsed::parse(SchemaKind::Avro, &schema, &[]).unwrap();
    let items = |n: usize| vec![Value::Enum(0, symbol.clone()); n];
    // About 6 KB of datum each, 1.2 MB of JSON each.
    let big = framed(
        &schema,
        9,
        vec![Value::Record(vec![("a".into(), Value::Array(items(6000)))]); 2],
    );
    let refs: Vec<&[u8]> = big.iter().map(Vec::as_slice).collect();
    let lines = window(&p, &refs);
    assert!(lines[0].is_some() && lines[1].is_none());
}

#[test]
fn schemas_with_other_types_are_read_one_by_one() {
    let fixed = r#"{"type":"record","name":"R","fields":[
        {"name":"h","type":{"type":"fixed","name":"H","size":2}}]}"#;
    let decimal = r#"{"type":"record","name":"R","fields":[
        {"name":"d","type":{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}}]}"#;
    let uuid = r#"{"type":"record","name":"R","fields":[
        {"name":"u","type":{"type":"string","logicalType":"uuid"}}]}"#;
    let union = r#"[{"type":"record","name":"A","fields":[{"name":"a","type":"int"}]},"null"]"#;
    let nulls = r#"{"type":"record","name":"R","fields":[
        {"name":"n","type":{"type":"array","items":"null"}}]}"#;
    for schema in [fixed, decimal, uuid, union, nulls] {
        let p = Parsed::parse(SchemaKind::Avro, schema, &[]).unwrap();
        assert!(
            p.decode_many(1, &[&[0, 0, 0, 0, 1, 0]]).is_none(),
            "{schema}"
        );
    }
}
