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
mod tests;
