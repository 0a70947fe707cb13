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
    let expected = match format {
        ValueFormat::Avro => Some(SchemaKind::Avro),
        ValueFormat::Protobuf => Some(SchemaKind::Protobuf),
        ValueFormat::JsonSchema => Some(SchemaKind::Json),
        ValueFormat::Json | ValueFormat::Auto => None,
    };
    if expected.is_some_and(|k| k != schema.kind()) {
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

/// Reads `rec`'s value under `value_format`, then its key under `key_format`; `lookup` answers
/// from the schemas at hand. `Err(id)`: the schema of `id` must be fetched first (nothing is
/// decided for the record).
pub fn view(
    value_format: ValueFormat,
    key_format: KeyFormat,
    rec: &Record,
    lookup: impl Fn(u32) -> Option<Result<Arc<Parsed>, Lookup>>,
) -> Result<View, u32> {
    let mut view: Option<Record> = None;
    match read(value_format, rec.value.as_deref(), &lookup) {
        Read::AsIs => {}
        Read::Json(v) => {
            view = Some(Record {
                value: Some(Bytes::from(v)),
                ..rec.clone()
            })
        }
        Read::Quarantine(reason, detail) => return Ok(Some(Err((reason, detail)))),
        Read::Missing(id) => return Err(id),
    }
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
