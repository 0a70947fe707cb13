//! The JSON writer of a decoded Avro value tree: walks the value with its schema (for a
//! decimal's scale, a reference's named type, the logical type of a named fixed) and writes
//! straight into the output through serde_json, building no intermediate JSON tree.
//!
//! Invariants: records keep their field order and map keys are sorted; floats that JSON cannot
//! hold are the strings `"NaN"`, `"Infinity"`, `"-Infinity"`; the first error met is kept with
//! the dotted path of its field.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use apache_avro::schema::Name;
use apache_avro::types::Value;
use apache_avro::Schema;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use chrono::format::Item;
use chrono::{DateTime, NaiveDate, NaiveTime};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::{resolve, FIXED_LOGICAL_TYPE};
use crate::decode::DecodeError;

/// What every node of one write shares: the named types, and the first error met (with its
/// field), which serde's error type cannot carry.
pub(super) struct Walk<'a> {
    pub(super) names: &'a HashMap<Name, Schema>,
    pub(super) failed: &'a RefCell<Option<DecodeError>>,
}

/// The field a node sits in, up to the top.
pub(super) struct At<'b> {
    name: &'b str,
    up: Option<&'b At<'b>>,
}

impl At<'_> {
    fn path(at: Option<&At<'_>>) -> String {
        let mut names = Vec::new();
        let mut cur = at;
        while let Some(a) = cur {
            names.push(a.name);
            cur = a.up;
        }
        names.reverse();
        names.join(".")
    }
}

/// One value of the tree with its schema (`None` where the schema is not known: a reference
/// to an alias), written as JSON.
pub(super) struct Json<'a, 'b> {
    pub(super) value: &'a Value,
    pub(super) schema: Option<&'a Schema>,
    pub(super) walk: &'b Walk<'a>,
    pub(super) at: Option<&'b At<'b>>,
}

impl<'a, 'b> Json<'a, 'b> {
    fn child(&self, value: &'a Value, schema: Option<&'a Schema>) -> Json<'a, 'b> {
        Json {
            value,
            schema,
            walk: self.walk,
            at: self.at,
        }
    }

    /// Records the error with this node's field, for [`AvroDecoder::decode_into`] to return.
    fn fail<E: serde::ser::Error>(&self, detail: String) -> E {
        let mut failed = self.walk.failed.borrow_mut();
        if failed.is_none() {
            *failed = Some(DecodeError::Avro {
                at: At::path(self.at),
                detail: detail.clone(),
            });
        }
        E::custom(detail)
    }
}

impl Serialize for Json<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let schema = resolve(self.schema, self.walk.names);
        match self.value {
            Value::Null if matches!(schema, Some(Schema::String)) => {
                // apache-avro reads a string cut short by the end of the payload as null.
                Err(self.fail("string cut short: the payload is truncated".to_string()))
            }
            Value::Null => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i32(*i),
            Value::Long(i) => s.serialize_i64(*i),
            Value::Float(f) => float(s, f64::from(*f), |s| s.serialize_f32(*f)),
            Value::Double(f) => float(s, *f, |s| s.serialize_f64(*f)),
            Value::Fixed(_, b) if fixed_logical_type(schema).is_some() => {
                self.fixed_logical(s, b, fixed_logical_type(schema))
            }
            Value::Bytes(b) | Value::Fixed(_, b) => {
                s.collect_str(&Base64Display::new(b, &STANDARD))
            }
            Value::String(t) | Value::Enum(_, t) => s.serialize_str(t),
            Value::Uuid(u) => s.collect_str(&u.hyphenated()),
            Value::Union(i, v) => {
                let variant = match schema {
                    Some(Schema::Union(u)) => {
                        usize::try_from(*i).ok().and_then(|i| u.variants().get(i))
                    }
                    _ => None,
                };
                self.child(v, variant).serialize(s)
            }
            Value::Array(items) => {
                let item_schema = match schema {
                    Some(Schema::Array(a)) => Some(&*a.items),
                    _ => None,
                };
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&self.child(item, item_schema))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let value_schema = match schema {
                    Some(Schema::Map(m)) => Some(&*m.types),
                    _ => None,
                };
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut map = s.serialize_map(Some(sorted.len()))?;
                for (k, v) in sorted {
                    map.serialize_entry(k, &self.child(v, value_schema))?;
                }
                map.end()
            }
            Value::Record(fields) => {
                let record = match schema {
                    Some(Schema::Record(r)) => Some(r),
                    _ => None,
                };
                // A tree decoded with this schema holds its fields in the schema's order (apache-avro
                // reads a record field by field): then a field's schema is found by its position,
                // with no name compared; otherwise by its name.
                let in_order = record.filter(|r| r.fields.len() == fields.len());
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, (name, v)) in fields.iter().enumerate() {
                    let field_schema = match in_order {
                        Some(r) => r.fields.get(k).map(|f| &f.schema),
                        None => record.and_then(|r| {
                            r.lookup
                                .get(name)
                                .and_then(|&i| r.fields.get(i))
                                .map(|f| &f.schema)
                        }),
                    };
                    let at = At { name, up: self.at };
                    let child = Json {
                        value: v,
                        schema: field_schema,
                        walk: self.walk,
                        at: Some(&at),
                    };
                    map.serialize_entry(name, &child)?;
                }
                map.end()
            }
            Value::Decimal(d) => {
                let Some(Schema::Decimal(ds)) = schema else {
                    return Err(self.fail("decimal without its schema's scale".to_string()));
                };
                let bytes = Vec::<u8>::try_from(d).map_err(|e| self.fail(e.to_string()))?;
                s.serialize_str(&decimal_text(&bytes, ds.scale))
            }
            Value::BigDecimal(d) => s.serialize_str(&d.to_plain_string()),
            Value::Date(days) => {
                let date = NaiveDate::from_epoch_days(*days)
                    .ok_or_else(|| self.fail(format!("date {days} days from 1970 out of range")))?;
                s.collect_str(&date.format_with_items(items!("%Y-%m-%d").iter()))
            }
            Value::TimeMillis(ms) => {
                let t = time_of_day(i64::from(*ms), 1_000)
                    .ok_or_else(|| self.fail(format!("time-millis {ms} not within a day")))?;
                s.collect_str(&t.format_with_items(items!("%H:%M:%S%.3f").iter()))
            }
            Value::TimeMicros(us) => {
                let t = time_of_day(*us, 1_000_000)
                    .ok_or_else(|| self.fail(format!("time-micros {us} not within a day")))?;
                s.collect_str(&t.format_with_items(items!("%H:%M:%S%.6f").iter()))
            }
            Value::TimestampMillis(t) => {
                let items = items!("%Y-%m-%dT%H:%M:%S%.3fZ");
                timestamp(self, s, DateTime::from_timestamp_millis(*t), items, *t)
            }
            Value::TimestampMicros(t) => {
                let items = items!("%Y-%m-%dT%H:%M:%S%.6fZ");
                timestamp(self, s, DateTime::from_timestamp_micros(*t), items, *t)
            }
            Value::TimestampNanos(t) => timestamp(
                self,
                s,
                Some(DateTime::from_timestamp_nanos(*t)),
                items!("%Y-%m-%dT%H:%M:%S%.9fZ"),
                *t,
            ),
            Value::LocalTimestampMillis(t) => {
                let items = items!("%Y-%m-%dT%H:%M:%S%.3f");
                timestamp(self, s, DateTime::from_timestamp_millis(*t), items, *t)
            }
            Value::LocalTimestampMicros(t) => {
                let items = items!("%Y-%m-%dT%H:%M:%S%.6f");
                timestamp(self, s, DateTime::from_timestamp_micros(*t), items, *t)
            }
            Value::LocalTimestampNanos(t) => timestamp(
                self,
                s,
                Some(DateTime::from_timestamp_nanos(*t)),
                items!("%Y-%m-%dT%H:%M:%S%.9f"),
                *t,
            ),
            Value::Duration(d) => {
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry("months", &u32::from(d.months()))?;
                map.serialize_entry("days", &u32::from(d.days()))?;
                map.serialize_entry("millis", &u32::from(d.millis()))?;
                map.end()
            }
        }
    }
}

impl Json<'_, '_> {
    /// A `uuid` fixed as its text, a `duration` fixed as `{"months","days","millis"}`.
    fn fixed_logical<S: Serializer>(
        &self,
        s: S,
        b: &[u8],
        logical: Option<&str>,
    ) -> Result<S::Ok, S::Error> {
        match (logical, b.len()) {
            (Some("uuid"), 16) => {
                let u = apache_avro::Uuid::from_slice(b).map_err(|e| self.fail(e.to_string()))?;
                s.collect_str(&u.hyphenated())
            }
            (Some("duration"), 12) => {
                let part = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry("months", &part(0))?;
                map.serialize_entry("days", &part(4))?;
                map.serialize_entry("millis", &part(8))?;
                map.end()
            }
            (l, n) => Err(self.fail(format!("{} fixed of {n} bytes", l.unwrap_or("?")))),
        }
    }
}

/// The logical type kept on a named fixed (see `FIXED_LOGICAL_TYPE`).
fn fixed_logical_type(schema: Option<&Schema>) -> Option<&str> {
    match schema {
        Some(Schema::Fixed(f)) => f.attributes.get(FIXED_LOGICAL_TYPE)?.as_str(),
        _ => None,
    }
}

/// A float as a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"` (JSON has no such numbers).
pub(super) fn float<S: Serializer>(
    s: S,
    f: f64,
    finite: impl FnOnce(S) -> Result<S::Ok, S::Error>,
) -> Result<S::Ok, S::Error> {
    if f.is_nan() {
        s.serialize_str("NaN")
    } else if f.is_infinite() {
        s.serialize_str(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        finite(s)
    }
}

/// The time of day `n` units (`per_second` to the second) after midnight.
pub(super) fn time_of_day(n: i64, per_second: i64) -> Option<NaiveTime> {
    if n < 0 {
        return None;
    }
    let secs = u32::try_from(n / per_second).ok()?;
    let nanos = u32::try_from((n % per_second) * (1_000_000_000 / per_second)).ok()?;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
}

/// An instant as RFC 3339 in the form of `items` (`%Y-%m-%dT%H:%M:%S%.3fZ`: milliseconds, UTC).
fn timestamp<S: Serializer>(
    node: &Json<'_, '_>,
    s: S,
    t: Option<DateTime<chrono::Utc>>,
    items: &'static [Item<'static>],
    raw: i64,
) -> Result<S::Ok, S::Error> {
    let t = t.ok_or_else(|| node.fail(format!("timestamp {raw} out of range")))?;
    s.collect_str(&t.format_with_items(items.iter()))
}

/// The decimal text of a two's-complement big-endian unscaled value with `scale` digits after
/// the point: `[0x04, 0xCE]` at scale 2 is `"12.30"`.
pub(super) fn decimal_text(unscaled: &[u8], scale: usize) -> String {
    let digits = if unscaled.len() <= 16 {
        let fill = if unscaled.first().is_some_and(|b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut be = [fill; 16];
        be[16 - unscaled.len()..].copy_from_slice(unscaled);
        i128::from_be_bytes(be).to_string()
    } else {
        num_bigint::BigInt::from_signed_bytes_be(unscaled).to_string()
    };
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", digits.as_str()),
    };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let mut text = String::with_capacity(digits.len() + scale + 3);
    text.push_str(sign);
    if digits.len() <= scale {
        let _ = write!(text, "0.{}{digits}", "0".repeat(scale - digits.len()));
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        let _ = write!(text, "{int}.{frac}");
    }
    text
}
