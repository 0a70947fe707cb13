//! What a destination reads from one record's value under its `value_format`: the value as it
//! is (JSON text), its decoded JSON, a quarantine reason with the decoder's message, or the id
//! of a schema that must be fetched first.
//!
//! Invariant: only an outage-free answer decides a quarantine: a schema that is not cached is
//! [`Read::Missing`], never a reason.

use std::sync::Arc;

use super::registry::Lookup;
use super::{split_frame, Parsed, SchemaKind};
use crate::config::registry::ValueFormat;
use crate::model::QuarantineReason;

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
