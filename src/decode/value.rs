//! What a destination reads from one record's value under its `value_format`: the value as it
//! is (JSON text), its decoded JSON, a quarantine reason with the decoder's message, or the id
//! of a schema that must be fetched first; and, for a whole record ([`view`]), what the
//! destination routes once its value and key are read. The pipeline and `verify` both read
//! records through [`view`], so they see the same bytes.
//!
//! Invariant: only an outage-free answer decides a quarantine: a schema that is not cached is
//! [`Read::Missing`], never a reason.

use std::sync::Arc;

use bytes::Bytes;

use super::registry::Lookup;
use super::{split_frame, Parsed, SchemaKind};
use crate::config::registry::{KeyFormat, ValueFormat};
use crate::model::{QuarantineReason, Record};

/// A destination's view of one value.
#[derive(Debug)]
pub enum Read {
    /// Route the value as it is (JSON text, a tombstone, an empty value).
    AsIs,
    /// Route this decoded JSON object instead.
    Json(Vec<u8>),
    /// Quarantine the record for this reason, with this detail.
    Quarantine(QuarantineReason, String),
    /// The schema of this id must be fetched first.
    Missing(u32),
}

/// The id of the schema `value` needs under `format`, if any (`None`: not framed, or JSON).
pub fn schema_id(format: ValueFormat, value: Option<&[u8]>) -> Option<u32> {
    match (format, value) {
        (ValueFormat::Json, _) | (_, None) => None,
        (_, Some(v)) => split_frame(v).ok().map(|(id, _)| id),
    }
}

/// Whether `format` reads payloads of schemas of `kind` (`auto` reads every kind).
pub fn takes(format: ValueFormat, kind: SchemaKind) -> bool {
    let expected = match format {
        ValueFormat::Avro => SchemaKind::Avro,
        ValueFormat::Protobuf => SchemaKind::Protobuf,
        ValueFormat::JsonSchema => SchemaKind::Json,
        ValueFormat::Json | ValueFormat::Auto => return true,
    };
    expected == kind
}

/// Reads `value` under `format`; `lookup` answers from the schemas at hand (`None`: not
/// fetched).
pub fn read(
    format: ValueFormat,
    value: Option<&[u8]>,
    lookup: impl Fn(u32) -> Option<Result<Arc<Parsed>, Lookup>>,
) -> Read {
    let v = match (format, value) {
        (ValueFormat::Json, _) | (_, None) => return Read::AsIs,
        (_, Some([])) => return Read::AsIs,
        (_, Some(v)) => v,
    };
    let (id, payload) = match split_frame(v) {
        Ok(f) => f,
        Err(_) if format == ValueFormat::Auto => return Read::AsIs,
        Err(e) => return Read::Quarantine(QuarantineReason::NotFramed, e.to_string()),
    };
    let schema = match lookup(id) {
        None => return Read::Missing(id),
        Some(Ok(s)) => s,
        Some(Err(e)) => return Read::Quarantine(QuarantineReason::UnknownSchema, e.to_string()),
    };
    if !takes(format, schema.kind()) {
        return Read::Quarantine(
            QuarantineReason::Undecodable,
            format!(
                "schema {id} is {}; the destination reads value_format = \"{}\"",
                schema.kind().as_str(),
                format.as_str()
            ),
        );
    }
    let mut out = Vec::with_capacity(payload.len() * 2 + 16);
    match schema.decode_into(payload, &mut out) {
        Ok(()) => Read::Json(out),
        Err(e) => Read::Quarantine(QuarantineReason::Undecodable, format!("schema {id}: {e}")),
    }
}

/// What a destination routes for one record: the record itself (`None`), the record with its
/// value or key decoded, or a quarantine reason with its detail (a key's detail starts `key:`).
pub type View = Option<Result<Record, (QuarantineReason, String)>>;

/// Most values decoded ahead together ([`read_ahead`]), and most bytes of them: a window's
/// lines and arrow-avro's arrays take a few times its values' bytes, besides its records.
pub const AHEAD_VALUES: usize = 512;
/// See [`AHEAD_VALUES`].
pub const AHEAD_BYTES: usize = 256 << 10;

/// Decodes together, per schema id, the framed values whose schema at hand is an Avro schema
/// that reads column-wise ([`Parsed::decode_many`]); `lookup` answers from the schemas at hand.
/// Gives each value's JSON line, which is what [`read`] gives it under `avro` or `auto`, or
/// `None` for a value to read on its own (not framed, another kind of schema, not at hand, or
/// one that did not decode whole: [`read`] then finds why).
pub fn read_ahead(
    values: &[Option<&[u8]>],
    lookup: impl Fn(u32) -> Option<Result<Arc<Parsed>, Lookup>>,
) -> Vec<Option<Bytes>> {
    let mut lines = vec![None; values.len()];
    let mut groups: Vec<(u32, Option<Arc<Parsed>>, Vec<usize>)> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let Some(Ok((id, _))) = v.map(split_frame) else {
            continue;
        };
        match groups.iter_mut().find(|g| g.0 == id) {
            Some(g) => g.2.push(i),
            None => {
                let schema = lookup(id)
                    .and_then(Result::ok)
                    .filter(|p| p.kind() == SchemaKind::Avro);
                groups.push((id, schema, vec![i]));
            }
        }
    }
    for (id, schema, at) in groups {
        let Some(schema) = schema else { continue };
        let group: Vec<&[u8]> = at.iter().filter_map(|&i| values[i]).collect();
        if let Some(decoded) = schema.decode_many(id, &group) {
            for (i, line) in at.into_iter().zip(decoded) {
                lines[i] = line.map(Bytes::from);
            }
        }
    }
    lines
}

/// Reads `rec`'s value under `value_format`, then its key under `key_format`; `lookup` answers
/// from the schemas at hand; `ahead` is the value's line from [`read_ahead`], if it has one.
/// `Err(id)`: the schema of `id` must be fetched first (nothing is decided for the record).
pub fn view(
    value_format: ValueFormat,
    key_format: KeyFormat,
    rec: &Record,
    ahead: Option<&Bytes>,
    lookup: impl Fn(u32) -> Option<Result<Arc<Parsed>, Lookup>>,
) -> Result<View, u32> {
    let value =
        match ahead.filter(|_| matches!(value_format, ValueFormat::Avro | ValueFormat::Auto)) {
            Some(line) => Some(line.clone()),
            None => match read(value_format, rec.value.as_deref(), &lookup) {
                Read::AsIs => None,
                Read::Json(v) => Some(Bytes::from(v)),
                Read::Quarantine(reason, detail) => return Ok(Some(Err((reason, detail)))),
                Read::Missing(id) => return Err(id),
            },
        };
    let mut view: Option<Record> = value.map(|v| Record {
        value: Some(v),
        ..rec.clone()
    });
    if let Some(f) = key_format.decoded_as() {
        match read(f, rec.key.as_deref(), &lookup) {
            Read::AsIs => {}
            Read::Json(k) => {
                view.get_or_insert_with(|| rec.clone()).key = Some(Bytes::from(k));
            }
            Read::Quarantine(reason, detail) => {
                return Ok(Some(Err((reason, format!("key: {detail}")))))
            }
            Read::Missing(id) => return Err(id),
        }
    }
    Ok(view.map(Ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TopicPartition;
    use apache_avro::types::Value as Avro;

    const KEY: &str = r#"{"type":"record","name":"K","fields":[{"name":"id","type":"long"}]}"#;

    fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn key(id: i64) -> Vec<u8> {
        let schema = apache_avro::Schema::parse_str(KEY).unwrap();
        let datum = Avro::Record(vec![("id".into(), Avro::Long(id))]);
        framed(7, &apache_avro::to_avro_datum(&schema, datum).unwrap())
    }

    fn rec(key: Option<Vec<u8>>, value: Option<&[u8]>) -> Record {
        Record {
            tp: TopicPartition::new("t", 0),
            offset: 3,
            timestamp_ms: None,
            key: key.map(Bytes::from),
            value: value.map(Bytes::copy_from_slice),
            headers: None,
        }
    }

    /// Schema 7 is the Avro key, schema 8 is unknown, anything else is not at hand.
    fn lookup(id: u32) -> Option<Result<Arc<Parsed>, Lookup>> {
        match id {
            7 => Some(Ok(Arc::new(
                Parsed::parse(SchemaKind::Avro, KEY, &[]).unwrap(),
            ))),
            8 => Some(Err(Lookup::Unknown(8))),
            _ => None,
        }
    }

    #[test]
    fn json_values_and_raw_keys_are_routed_as_they_are() {
        let r = rec(Some(b"k".to_vec()), Some(br#"{"a":1}"#));
        assert!(matches!(
            view(ValueFormat::Json, KeyFormat::Raw, &r, None, lookup),
            Ok(None)
        ));
        assert!(matches!(
            view(ValueFormat::Auto, KeyFormat::Auto, &r, None, lookup),
            Ok(None)
        ));
    }

    #[test]
    fn a_decoded_key_replaces_the_key_and_keeps_the_value() {
        let r = rec(Some(key(42)), Some(br#"{"a":1}"#));
        let Ok(Some(Ok(v))) = view(ValueFormat::Auto, KeyFormat::Avro, &r, None, lookup) else {
            panic!("not decoded")
        };
        assert_eq!(v.key.as_deref(), Some(&br#"{"id":42}"#[..]));
        assert_eq!(v.value, r.value);
        assert_eq!((v.offset, v.tp), (r.offset, r.tp));
    }

    #[test]
    fn the_first_schema_not_at_hand_is_asked_for() {
        let r = rec(Some(key(1)), Some(&framed(99, b"x")));
        assert_eq!(
            view(ValueFormat::Avro, KeyFormat::Avro, &r, None, lookup).unwrap_err(),
            99
        );
        let r = rec(Some(framed(98, b"x")), Some(br#"{"a":1}"#));
        assert_eq!(
            view(ValueFormat::Auto, KeyFormat::Avro, &r, None, lookup).unwrap_err(),
            98
        );
    }

    #[test]
    fn quarantines_carry_their_reason_and_a_key_s_detail_says_key() {
        let r = rec(None, Some(br#"{"a":1}"#));
        let Ok(Some(Err((reason, _)))) = view(ValueFormat::Avro, KeyFormat::Raw, &r, None, lookup)
        else {
            panic!("not quarantined")
        };
        assert_eq!(reason, QuarantineReason::NotFramed);
        let r = rec(Some(framed(8, b"x")), Some(br#"{"a":1}"#));
        let Ok(Some(Err((reason, detail)))) =
            view(ValueFormat::Json, KeyFormat::Avro, &r, None, lookup)
        else {
            panic!("not quarantined")
        };
        assert_eq!(reason, QuarantineReason::UnknownSchema);
        assert!(detail.starts_with("key: "), "{detail}");
    }

    #[test]
    fn values_of_avro_schemas_at_hand_are_read_ahead_and_the_rest_alone() {
        let k = |id: i64| key(id);
        let (a, b) = (k(1), k(2));
        let broken = framed(7, &[0x80]);
        let (unknown, missing) = (framed(8, b"x"), framed(99, b"x"));
        let values: Vec<Option<&[u8]>> = vec![
            Some(&a),
            Some(br#"{"a":1}"#),
            None,
            Some(&unknown),
            Some(&missing),
            Some(&b),
        ];
        let lines = read_ahead(&values, lookup);
        let text = |i: usize| {
            lines[i]
                .as_deref()
                .map(|l| String::from_utf8_lossy(l).into_owned())
        };
        assert_eq!(text(0).as_deref(), Some(r#"{"id":1}"#));
        assert_eq!(text(5).as_deref(), Some(r#"{"id":2}"#));
        assert!((1..5).all(|i| lines[i].is_none()), "{lines:?}");
        // A datum that does not decode is left to be read alone, and the line decoded ahead
        // is what `view` routes under `avro` (not under `protobuf`).
        let with_broken = read_ahead(&[Some(&broken), Some(&a)], lookup);
        assert_eq!(
            with_broken,
            vec![None, Some(Bytes::from_static(br#"{"id":1}"#))]
        );
        let r = rec(None, Some(&a));
        let line = Bytes::from_static(br#"{"id":1}"#);
        let Ok(Some(Ok(v))) = view(ValueFormat::Avro, KeyFormat::Raw, &r, Some(&line), lookup)
        else {
            panic!("not decoded")
        };
        assert_eq!(v.value.as_deref(), Some(&line[..]));
        let Ok(Some(Err((reason, _)))) = view(
            ValueFormat::Protobuf,
            KeyFormat::Raw,
            &r,
            Some(&line),
            lookup,
        ) else {
            panic!("not quarantined")
        };
        assert_eq!(reason, QuarantineReason::Undecodable);
    }
}
