//! Avro datums of one schema decoded together: arrow-avro reads a window of framed values into
//! Arrow arrays, and each row is written as the JSON text `json.rs` writes for the same datum
//! (the same serializer call for every value, the same formats). Per record this is several
//! times cheaper than apache-avro's value tree (BENCHMARKS.md, "Schema Registry input").
//!
//! Only a schema without references whose every type has its counterpart below is read this
//! way: records, the primitive types, enums, arrays (of items that take bytes), maps, unions,
//! and the date, time and timestamp logical types. Fixed, decimal, uuid and duration fields keep
//! a schema on the record-by-record path. A value that does not decode whole (or whose row the
//! writer refuses) is left to be read alone, which says why; its neighbours are decoded again
//! without it, so a value's line does not depend on the values around it.
//!
//! Invariant: [`Columnar::decode`] gives one entry per value, in order: `None`, or the line
//! [`super::AvroDecoder::decode_into`] writes for it. Two exceptions, datums no writer makes,
//! which arrow-avro reads and apache-avro refuses: a boolean byte other than 0 or 1 (read as
//! true) and a nullable union's branch index out of range (read as the value).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, Time32MillisecondType, Time64MicrosecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use arrow_schema::{DataType, Fields, TimeUnit, UnionMode};
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::json::{float, time_of_day};

/// A schema's column-wise reader (its text; arrow-avro builds a decoder from it per window).
#[derive(Debug)]
pub(crate) struct Columnar {
    text: Arc<str>,
}

impl Columnar {
    /// The reader of schema `text`, when every type in it is one this module writes.
    pub(crate) fn new(text: &str) -> Option<Columnar> {
        let c = Columnar { text: text.into() };
        let decoder = c.decoder(0, 1).ok()?;
        supported_fields(decoder.schema().fields()).then_some(c)
    }

    /// Heap bytes held.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.text.len()
    }

    /// A decoder of framed values of schema `id`, for `rows` of them. (A decoder is not reused
    /// across batches: arrow-avro 58 leaves a union's offsets of one batch in the next.)
    fn decoder(
        &self,
        id: u32,
        rows: usize,
    ) -> Result<arrow_avro::reader::Decoder, arrow_schema::ArrowError> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store.set(Fingerprint::Id(id), AvroSchema::new(self.text.to_string()))?;
        ReaderBuilder::new()
            .with_writer_schema_store(store)
            .with_active_fingerprint(Fingerprint::Id(id))
            .with_batch_size(rows.max(1))
            .build_decoder()
    }

    /// Each value's JSON line: `values` are framed values (magic byte, id, datum), each of
    /// schema `id`. `None` for a value that does not decode whole or cannot be written (read it
    /// alone: the value tree says why), for the values after [`MAX_FAILURES`] such values or
    /// once the lines reach [`MAX_LINES_BYTES`], and for all of them if the decoder panicked
    /// (arrow-avro negates a block count of `i64::MIN`, which overflows).
    pub(crate) fn decode(&self, id: u32, values: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
        std::panic::catch_unwind(|| self.decode_window(id, values))
            .unwrap_or_else(|_| vec![None; values.len()])
    }

    /// See [`Self::decode`]. A value that fails leaves the decoder holding part of it: the
    /// values before it (since the last failure) are decoded again on a new decoder and
    /// written, and the window goes on after it. So each value's line is what the window
    /// reader makes of that value alone, whatever its neighbours.
    fn decode_window(&self, id: u32, values: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
        let mut window = Window {
            lines: vec![None; values.len()],
            bytes: 0,
        };
        let (mut start, mut failures) = (0, 0);
        while start < values.len() && failures < MAX_FAILURES {
            let Ok(mut decoder) = self.decoder(id, values.len() - start) else {
                break;
            };
            let mut good = Vec::new();
            let mut failed = None;
            for (k, v) in values.iter().enumerate().skip(start) {
                let room = decoder.capacity();
                // One value is one row, every byte of it read.
                match decoder.decode(v) {
                    Ok(used) if used == v.len() && decoder.capacity() + 1 == room => good.push(k),
                    _ => {
                        failed = Some(k);
                        break;
                    }
                }
            }
            let Some(k) = failed else {
                window.write(&mut decoder, &good);
                break;
            };
            failures += 1;
            if !good.is_empty() {
                let Ok(mut again) = self.decoder(id, good.len()) else {
                    break;
                };
                if good.iter().all(|&g| again.decode(values[g]).is_ok()) {
                    window.write(&mut again, &good);
                }
            }
            start = k + 1;
        }
        window.lines
    }
}

/// Failed values after which the rest of a window is read value by value (each failure costs
/// two decoders, about 80 µs each for the bench's schema).
const MAX_FAILURES: usize = 8;

/// Most bytes of JSON a window's lines may take; the values after are read alone (a few bytes
/// of datum can make many of JSON: an enum's long symbol, a timestamp).
const MAX_LINES_BYTES: usize = 2 << 20;

/// A window's lines so far.
struct Window {
    lines: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

impl Window {
    /// Writes the rows `decoder` holds, those of the values at `at`, each as a JSON object,
    /// until the lines take [`MAX_LINES_BYTES`].
    fn write(&mut self, decoder: &mut arrow_avro::reader::Decoder, at: &[usize]) {
        let Ok(Some(batch)) = decoder.flush() else {
            return;
        };
        if batch.num_rows() != at.len() {
            return;
        }
        let fields = batch.schema_ref().fields().clone();
        for (row, &i) in at.iter().enumerate() {
            let mut out = Vec::with_capacity(256);
            let record = Row {
                fields: &fields,
                columns: batch.columns(),
                row,
            };
            if serde_json::to_writer(&mut out, &record).is_ok() {
                if self.bytes + out.len() > MAX_LINES_BYTES {
                    return;
                }
                self.bytes += out.len();
                self.lines[i] = Some(out);
            }
        }
    }
}

/// Whether every field's type is one [`Cell`] writes.
fn supported_fields(fields: &Fields) -> bool {
    fields.iter().all(|f| supported(f.data_type()))
}

fn supported(t: &DataType) -> bool {
    match t {
        DataType::Null
        | DataType::Boolean
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::Binary
        | DataType::Date32
        | DataType::Time32(TimeUnit::Millisecond)
        | DataType::Time64(TimeUnit::Microsecond) => true,
        DataType::Timestamp(_, tz) => tz.as_deref().is_none_or(|z| z == "+00:00" || z == "UTC"),
        DataType::Dictionary(k, v) => **k == DataType::Int32 && **v == DataType::Utf8,
        // Items that take no bytes (nulls, records of nulls) would let a few bytes of datum
        // claim any number of them: apache-avro's allocation limit refuses those.
        DataType::List(item) => supported(item.data_type()) && !empty(item.data_type()),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) => {
                kv.len() == 2
                    && *kv[0].data_type() == DataType::Utf8
                    && supported(kv[1].data_type())
            }
            _ => false,
        },
        DataType::Struct(fields) => supported_fields(fields),
        DataType::Union(fields, UnionMode::Dense) => {
            fields.iter().all(|(_, f)| supported(f.data_type()))
        }
        _ => false,
    }
}

/// Whether a value of type `t` can take no bytes of a datum.
fn empty(t: &DataType) -> bool {
    match t {
        DataType::Null => true,
        DataType::Struct(fields) => fields.iter().all(|f| empty(f.data_type())),
        _ => false,
    }
}

/// A row of a record's columns: a JSON object of its fields in order.
struct Row<'a> {
    fields: &'a Fields,
    columns: &'a [ArrayRef],
    row: usize,
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (f, a) in self.fields.iter().zip(self.columns) {
            map.serialize_entry(
                f.name(),
                &Cell {
                    array: a,
                    row: self.row,
                },
            )?;
        }
        map.end()
    }
}

/// One value of an array.
struct Cell<'a> {
    array: &'a dyn Array,
    row: usize,
}

impl<'a> Cell<'a> {
    fn at(array: &'a dyn Array, row: usize) -> Self {
        Cell { array, row }
    }
}

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (a, i) = (self.array, self.row);
        if a.is_null(i) {
            return s.serialize_unit();
        }
        match a.data_type() {
            DataType::Null => s.serialize_unit(),
            DataType::Boolean => s.serialize_bool(a.as_boolean().value(i)),
            DataType::Int32 => s.serialize_i32(a.as_primitive::<Int32Type>().value(i)),
            DataType::Int64 => s.serialize_i64(a.as_primitive::<Int64Type>().value(i)),
            DataType::Float32 => {
                let f = a.as_primitive::<Float32Type>().value(i);
                float(s, f64::from(f), |s| s.serialize_f32(f))
            }
            DataType::Float64 => {
                let f = a.as_primitive::<Float64Type>().value(i);
                float(s, f, |s| s.serialize_f64(f))
            }
            DataType::Utf8 => s.serialize_str(a.as_string::<i32>().value(i)),
            DataType::Binary => s.collect_str(&Base64Display::new(
                a.as_binary::<i32>().value(i),
                &STANDARD,
            )),
            DataType::Dictionary(..) => {
                let d = a.as_dictionary::<Int32Type>();
                let key = usize::try_from(d.keys().value(i)).map_err(S::Error::custom)?;
                let symbols = d.values().as_string::<i32>();
                if key >= symbols.len() {
                    return Err(S::Error::custom("enum index out of range"));
                }
                s.serialize_str(symbols.value(key))
            }
            DataType::Date32 => {
                let days = a.as_primitive::<arrow_array::types::Date32Type>().value(i);
                let date = NaiveDate::from_epoch_days(days)
                    .ok_or_else(|| S::Error::custom("date out of range"))?;
                s.collect_str(&date.format_with_items(items!("%Y-%m-%d").iter()))
            }
            DataType::Time32(_) => {
                let ms = a.as_primitive::<Time32MillisecondType>().value(i);
                let t = time_of_day(i64::from(ms), 1_000)
                    .ok_or_else(|| S::Error::custom("time-millis not within a day"))?;
                s.collect_str(&t.format_with_items(items!("%H:%M:%S%.3f").iter()))
            }
            DataType::Time64(_) => {
                let us = a.as_primitive::<Time64MicrosecondType>().value(i);
                let t = time_of_day(us, 1_000_000)
                    .ok_or_else(|| S::Error::custom("time-micros not within a day"))?;
                s.collect_str(&t.format_with_items(items!("%H:%M:%S%.6f").iter()))
            }
            DataType::Timestamp(unit, tz) => timestamp(s, a, i, *unit, tz.is_some()),
            DataType::List(_) => {
                let list = a.as_list::<i32>();
                let offsets = list.value_offsets();
                let (from, to) = (offsets[i] as usize, offsets[i + 1] as usize);
                let items = list.values();
                let mut seq = s.serialize_seq(Some(to - from))?;
                for k in from..to {
                    seq.serialize_element(&Cell::at(items.as_ref(), k))?;
                }
                seq.end()
            }
            DataType::Map(..) => {
                let m = a.as_map();
                let offsets = m.value_offsets();
                let (from, to) = (offsets[i] as usize, offsets[i + 1] as usize);
                let keys = m.keys().as_string::<i32>();
                let values = m.values();
                // Sorted by key, as the value tree's map is written.
                let mut entries: Vec<(&str, usize)> =
                    (from..to).map(|k| (keys.value(k), k)).collect();
                entries.sort_unstable_by(|x, y| x.0.cmp(y.0));
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, k) in entries {
                    map.serialize_entry(key, &Cell::at(values.as_ref(), k))?;
                }
                map.end()
            }
            DataType::Struct(fields) => {
                let st = a.as_struct();
                Row {
                    fields,
                    columns: st.columns(),
                    row: i,
                }
                .serialize(s)
            }
            DataType::Union(..) => {
                let u = a.as_union();
                let child = u.child(u.type_id(i));
                Cell::at(child.as_ref(), u.value_offset(i)).serialize(s)
            }
            other => Err(S::Error::custom(format!("no JSON for {other}"))),
        }
    }
}

/// An instant as `json.rs` writes it: RFC 3339 to the unit's digits, `Z` when it is UTC (a
/// `timestamp-*`), none when local (a `local-timestamp-*`).
fn timestamp<S: Serializer>(
    s: S,
    a: &dyn Array,
    i: usize,
    unit: TimeUnit,
    utc: bool,
) -> Result<S::Ok, S::Error> {
    use arrow_array::types::{
        TimestampMicrosecondType as Us, TimestampMillisecondType as Ms,
        TimestampNanosecondType as Ns,
    };
    let (t, items) = match (unit, utc) {
        (TimeUnit::Millisecond, true) => (
            DateTime::from_timestamp_millis(a.as_primitive::<Ms>().value(i)),
            items!("%Y-%m-%dT%H:%M:%S%.3fZ"),
        ),
        (TimeUnit::Millisecond, false) => (
            DateTime::from_timestamp_millis(a.as_primitive::<Ms>().value(i)),
            items!("%Y-%m-%dT%H:%M:%S%.3f"),
        ),
        (TimeUnit::Microsecond, true) => (
            DateTime::from_timestamp_micros(a.as_primitive::<Us>().value(i)),
            items!("%Y-%m-%dT%H:%M:%S%.6fZ"),
        ),
        (TimeUnit::Microsecond, false) => (
            DateTime::from_timestamp_micros(a.as_primitive::<Us>().value(i)),
            items!("%Y-%m-%dT%H:%M:%S%.6f"),
        ),
        (TimeUnit::Nanosecond, true) => (
            Some(DateTime::from_timestamp_nanos(
                a.as_primitive::<Ns>().value(i),
            )),
            items!("%Y-%m-%dT%H:%M:%S%.9fZ"),
        ),
        (TimeUnit::Nanosecond, false) => (
            Some(DateTime::from_timestamp_nanos(
                a.as_primitive::<Ns>().value(i),
            )),
            items!("%Y-%m-%dT%H:%M:%S%.9f"),
        ),
        (TimeUnit::Second, _) => return Err(S::Error::custom("timestamp in seconds")),
    };
    let t = t.ok_or_else(|| S::Error::custom("timestamp out of range"))?;
    s.collect_str(&t.format_with_items(items.iter()))
}

#[cfg(test)]
mod tests {
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
}
