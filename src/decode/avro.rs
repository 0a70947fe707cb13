//! Avro datums to JSON: apache-avro decodes the binary datum with the writer's schema (the one
//! the payload's id names) into its value tree, which is written as JSON straight into the
//! output, walking the schema alongside for what the tree does not carry (a decimal's scale).
//!
//! Invariants: records keep their schema's field order; map keys are written sorted (the tree
//! holds them in a hash map), so the same datum always gives the same text; a union is its
//! value, never `{"type": value}`; an error names the field where decoding failed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use apache_avro::schema::{Name, RecordField, ResolvedSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate, NaiveTime};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::{DecodeError, SchemaError};

#[cfg(test)]
mod tests;

/// Longest detail taken from an apache-avro error (some quote a decoded value).
const MAX_DETAIL_CHARS: usize = 160;

/// A parsed Avro schema with its references.
#[derive(Debug)]
pub(super) struct AvroDecoder {
    /// The referenced schemas in dependency order, then the main schema (last): the order
    /// apache-avro resolves names in.
    schemata: Vec<Schema>,
    /// Every named type by full name, to follow a reference while writing (a decimal's scale).
    names: HashMap<Name, Schema>,
}

impl AvroDecoder {
    /// Parses the main schema with its references' (name, text) and checks every name used
    /// resolves.
    pub(super) fn parse(text: &str, references: &[(String, String)]) -> Result<Self, SchemaError> {
        let avro = |e: apache_avro::Error| SchemaError::Avro(e.to_string());
        let (main, refs) = if references.is_empty() {
            (Schema::parse_str(text).map_err(avro)?, Vec::new())
        } else {
            Schema::parse_str_with_list(text, references.iter().map(|(_, t)| t.as_str()))
                .map_err(avro)?
        };
        let mut schemata = refs;
        schemata.push(main);
        // apache-avro resolves no reference to a decimal on a named fixed (it registers the
        // fixed's name for nothing else): each such reference becomes a copy of the decimal.
        let decimals: HashMap<Name, Schema> = names_of(&schemata)
            .into_iter()
            .filter(|(_, s)| matches!(s, Schema::Decimal(_)))
            .collect();
        if !decimals.is_empty() {
            for s in &mut schemata {
                inline_decimals(s, &decimals).map_err(avro)?;
            }
        }
        ResolvedSchema::try_from(schemata.iter().collect::<Vec<_>>()).map_err(avro)?;
        let names = names_of(&schemata);
        Ok(AvroDecoder { schemata, names })
    }

    fn main(&self) -> &Schema {
        self.schemata
            .last()
            .expect("invariant: parse pushes the main schema")
    }

    /// Heap bytes, estimated from the schema text: the tree and the name index hold a few
    /// times the text (names and symbols, boxed nodes, the hash maps' slots).
    pub(super) fn memory_bytes(&self, source_bytes: usize) -> usize {
        16 * source_bytes + 256 * (self.names.len() + self.schemata.len())
    }

    /// Decodes one datum and appends it as a JSON object: a record, or a union's record (a
    /// top-level union of record types is one topic holding several event types).
    pub(super) fn decode_into(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut reader = payload;
        let value = if self.schemata.len() == 1 {
            apache_avro::from_avro_datum(self.main(), &mut reader, None)
        } else {
            apache_avro::from_avro_datum_schemata(
                self.main(),
                self.schemata.iter().collect(),
                &mut reader,
                None,
            )
        };
        let value = value.map_err(|e| self.locate(payload, e))?;
        if !reader.is_empty() {
            return Err(DecodeError::AvroTrailing(reader.len()));
        }
        let record = match &value {
            Value::Union(_, v) => v,
            v => v,
        };
        if !matches!(record, Value::Record(_)) {
            let kind = apache_avro::schema::SchemaKind::from(record);
            return Err(DecodeError::Avro {
                at: String::new(),
                detail: format!("the datum is {kind:?}, not a record: it makes no JSON object"),
            });
        }
        self.write(&value, self.main(), out)
    }

    /// Writes `value` (of `schema`) as JSON.
    fn write(
        &self,
        value: &Value,
        schema: &Schema,
        out: impl std::io::Write,
    ) -> Result<(), DecodeError> {
        let failed = RefCell::new(None);
        let walk = Walk {
            names: &self.names,
            failed: &failed,
        };
        let json = Json {
            value,
            schema: Some(schema),
            walk: &walk,
            at: None,
        };
        match serde_json::to_writer(out, &json) {
            Ok(()) => Ok(()),
            Err(e) => Err(failed.into_inner().unwrap_or_else(|| DecodeError::Avro {
                at: String::new(),
                detail: e.to_string(),
            })),
        }
    }

    /// The error for a datum that did not decode, with the field where it stopped: the slow
    /// path decodes again one field at a time (records only; the fast path decodes the whole
    /// datum at once and its error does not say where).
    fn locate(&self, payload: &[u8], whole: apache_avro::Error) -> DecodeError {
        let mut reader = payload;
        let mut path = Vec::new();
        let found = self.locate_in(self.main(), &mut reader, &mut path);
        let (at, detail) = match found {
            Some(detail) => (path.join("."), detail),
            None => (String::new(), whole.to_string()),
        };
        DecodeError::Avro {
            at,
            detail: short(&detail),
        }
    }

    fn locate_in<'s>(
        &'s self,
        schema: &'s Schema,
        reader: &mut &[u8],
        path: &mut Vec<&'s str>,
    ) -> Option<String> {
        let Schema::Record(record) = self.resolve(schema)? else {
            return None;
        };
        for RecordField { name, schema, .. } in &record.fields {
            path.push(name);
            if let Some(Schema::Record(_)) = self.resolve(schema) {
                if let Some(e) = self.locate_in(schema, reader, path) {
                    return Some(e);
                }
            } else {
                let value = apache_avro::from_avro_datum_schemata(
                    schema,
                    self.schemata.iter().collect(),
                    reader,
                    None,
                );
                match value {
                    Err(e) => return Some(e.to_string()),
                    // A string cut short reads as null: the walk tells.
                    Ok(v) => {
                        if let Err(DecodeError::Avro { detail, .. }) =
                            self.write(&v, schema, &mut std::io::sink())
                        {
                            return Some(detail);
                        }
                    }
                }
            }
            path.pop();
        }
        None
    }

    fn resolve<'s>(&'s self, schema: &'s Schema) -> Option<&'s Schema> {
        resolve(Some(schema), &self.names)
    }
}

/// At most [`MAX_DETAIL_CHARS`] characters of an error message.
fn short(detail: &str) -> String {
    match detail.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((i, _)) => format!("{}…", &detail[..i]),
        None => detail.to_string(),
    }
}

/// Every named type of `schemata` by full name.
fn names_of(schemata: &[Schema]) -> HashMap<Name, Schema> {
    let mut names = HashMap::new();
    for s in schemata {
        collect_names(s, &None, &mut names);
    }
    names
}

/// Replaces each reference to one of `decimals` in `schema` by a copy of the decimal.
fn inline_decimals(
    schema: &mut Schema,
    decimals: &HashMap<Name, Schema>,
) -> Result<(), apache_avro::Error> {
    match schema {
        Schema::Ref { name } => {
            if let Some(d) = decimals.get(name) {
                *schema = d.clone();
            }
        }
        Schema::Record(r) => {
            for f in &mut r.fields {
                inline_decimals(&mut f.schema, decimals)?;
            }
        }
        Schema::Array(a) => inline_decimals(&mut a.items, decimals)?,
        Schema::Map(m) => inline_decimals(&mut m.types, decimals)?,
        Schema::Union(u) => {
            let mut variants = u.variants().to_vec();
            for v in &mut variants {
                inline_decimals(v, decimals)?;
            }
            *u = UnionSchema::new(variants)?;
        }
        _ => {}
    }
    Ok(())
}

/// Records every named type of `schema` (records, enums, fixed, decimals on a named fixed)
/// under its full name.
fn collect_names(schema: &Schema, ns: &Option<String>, names: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(r) => {
            let full = r.name.fully_qualified_name(ns);
            let inner_ns = full.namespace.clone();
            names.insert(full, schema.clone());
            for f in &r.fields {
                collect_names(&f.schema, &inner_ns, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fully_qualified_name(ns), schema.clone());
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fully_qualified_name(ns), schema.clone());
        }
        Schema::Decimal(d) => {
            if let Schema::Fixed(f) = &*d.inner {
                names.insert(f.name.fully_qualified_name(ns), schema.clone());
            }
        }
        Schema::Array(a) => collect_names(&a.items, ns, names),
        Schema::Map(m) => collect_names(&m.types, ns, names),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_names(v, ns, names);
            }
        }
        _ => {}
    }
}

/// `schema` with a reference followed to the named type.
fn resolve<'s>(schema: Option<&'s Schema>, names: &'s HashMap<Name, Schema>) -> Option<&'s Schema> {
    match schema {
        Some(Schema::Ref { name }) => names.get(name),
        other => other,
    }
}

/// What every node of one write shares: the named types, and the first error met (with its
/// field), which serde's error type cannot carry.
struct Walk<'a> {
    names: &'a HashMap<Name, Schema>,
    failed: &'a RefCell<Option<DecodeError>>,
}

/// The field a node sits in, up to the top.
struct At<'b> {
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
struct Json<'a, 'b> {
    value: &'a Value,
    schema: Option<&'a Schema>,
    walk: &'b Walk<'a>,
    at: Option<&'b At<'b>>,
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
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, (name, v)) in fields.iter().enumerate() {
                    let field_schema = record.and_then(|r| {
                        r.fields
                            .get(k)
                            .filter(|f| f.name == *name)
                            .or_else(|| r.lookup.get(name).and_then(|&i| r.fields.get(i)))
                            .map(|f| &f.schema)
                    });
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
                s.collect_str(&date.format("%Y-%m-%d"))
            }
            Value::TimeMillis(ms) => {
                let t = time_of_day(i64::from(*ms), 1_000)
                    .ok_or_else(|| self.fail(format!("time-millis {ms} not within a day")))?;
                s.collect_str(&t.format("%H:%M:%S%.3f"))
            }
            Value::TimeMicros(us) => {
                let t = time_of_day(*us, 1_000_000)
                    .ok_or_else(|| self.fail(format!("time-micros {us} not within a day")))?;
                s.collect_str(&t.format("%H:%M:%S%.6f"))
            }
            Value::TimestampMillis(t) => {
                timestamp(self, s, DateTime::from_timestamp_millis(*t), "%.3fZ", *t)
            }
            Value::TimestampMicros(t) => {
                timestamp(self, s, DateTime::from_timestamp_micros(*t), "%.6fZ", *t)
            }
            Value::TimestampNanos(t) => timestamp(
                self,
                s,
                Some(DateTime::from_timestamp_nanos(*t)),
                "%.9fZ",
                *t,
            ),
            Value::LocalTimestampMillis(t) => {
                timestamp(self, s, DateTime::from_timestamp_millis(*t), "%.3f", *t)
            }
            Value::LocalTimestampMicros(t) => {
                timestamp(self, s, DateTime::from_timestamp_micros(*t), "%.6f", *t)
            }
            Value::LocalTimestampNanos(t) => timestamp(
                self,
                s,
                Some(DateTime::from_timestamp_nanos(*t)),
                "%.9f",
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

/// A float as a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"` (JSON has no such numbers).
fn float<S: Serializer>(
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
fn time_of_day(n: i64, per_second: i64) -> Option<NaiveTime> {
    if n < 0 {
        return None;
    }
    let secs = u32::try_from(n / per_second).ok()?;
    let nanos = u32::try_from((n % per_second) * (1_000_000_000 / per_second)).ok()?;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
}

/// An instant as RFC 3339 with the fraction and suffix of `tail` (`%.3fZ`: milliseconds, UTC).
fn timestamp<S: Serializer>(
    node: &Json<'_, '_>,
    s: S,
    t: Option<DateTime<chrono::Utc>>,
    tail: &str,
    raw: i64,
) -> Result<S::Ok, S::Error> {
    let t = t.ok_or_else(|| node.fail(format!("timestamp {raw} out of range")))?;
    let mut format = String::with_capacity(20);
    format.push_str("%Y-%m-%dT%H:%M:%S");
    format.push_str(tail);
    s.collect_str(&t.format(&format))
}

/// The decimal text of a two's-complement big-endian unscaled value with `scale` digits after
/// the point: `[0x04, 0xCE]` at scale 2 is `"12.30"`.
fn decimal_text(unscaled: &[u8], scale: usize) -> String {
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
