//! The Parquet/Iceberg columns a schema gives a `columns = "from_schema"` destination: one
//! column per top-level field of the record (Avro), of the first message of the file
//! (Protobuf) or per top-level property (JSON Schema), typed by what the decoder writes for
//! that field (docs/schema-registry.md, "Columns from the schema").
//!
//! Invariants: every column is optional (a later version may leave the field out), reads the
//! top-level key of its own name, and has a plain identifier as its name (fields with other
//! names are left to the raw column); a field whose decoded JSON is not one scalar type (a
//! record, an array, a map, a union of several types) is a `json` column holding its text.

use std::collections::HashMap;

use apache_avro::schema::{Name, RecordSchema, Schema as AvroSchema};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use crate::config::{Column, ColumnType};

/// A `from_schema` column named `name` of type `kind`.
fn column(name: &str, kind: ColumnType) -> Column {
    Column {
        name: name.to_string(),
        path: vec![name.to_string()],
        kind,
        required: false,
        decoded: true,
    }
}

/// Keeps the columns whose names every engine takes, each name once (the first wins).
fn usable(columns: Vec<Column>) -> Vec<Column> {
    let mut out: Vec<Column> = Vec::with_capacity(columns.len());
    for c in columns {
        if crate::config::parquet::plain_identifier(&c.name)
            && !out.iter().any(|o| o.name.eq_ignore_ascii_case(&c.name))
        {
            out.push(c);
        }
    }
    out
}

/// The columns of an Avro schema: the fields of its record, or of each record of a top-level
/// union (a field in several with different types becomes `json`). `names` resolves
/// references.
pub(super) fn avro(main: &AvroSchema, names: &HashMap<Name, AvroSchema>) -> Vec<Column> {
    let resolve = |s: &AvroSchema| -> AvroSchema {
        match s {
            AvroSchema::Ref { name } => names.get(name).cloned().unwrap_or_else(|| s.clone()),
            other => other.clone(),
        }
    };
    let records: Vec<RecordSchema> = match resolve(main) {
        AvroSchema::Record(r) => vec![r],
        AvroSchema::Union(u) => u
            .variants()
            .iter()
            .filter_map(|v| match resolve(v) {
                AvroSchema::Record(r) => Some(r),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut columns: Vec<Column> = Vec::new();
    for r in &records {
        for f in &r.fields {
            let kind = avro_kind(&f.schema, names);
            match columns.iter_mut().find(|c| c.name == f.name) {
                Some(c) if c.kind != kind => c.kind = ColumnType::Json,
                Some(_) => {}
                None => columns.push(column(&f.name, kind)),
            }
        }
    }
    usable(columns)
}

/// The column type of an Avro field's decoded JSON.
fn avro_kind(schema: &AvroSchema, names: &HashMap<Name, AvroSchema>) -> ColumnType {
    use AvroSchema as S;
    match schema {
        S::Ref { name } => names
            .get(name)
            .map_or(ColumnType::Json, |s| avro_kind(s, names)),
        S::Boolean => ColumnType::Bool,
        S::Int | S::Long => ColumnType::Int64,
        S::Float | S::Double => ColumnType::Double,
        S::String | S::Enum(_) | S::Uuid | S::Bytes | S::Fixed(_) => ColumnType::String,
        S::Decimal(_) | S::BigDecimal | S::Date | S::TimeMillis | S::TimeMicros => {
            ColumnType::String
        }
        S::TimestampMillis | S::TimestampMicros | S::TimestampNanos => ColumnType::Timestamp,
        // Without a zone: text, not an instant.
        S::LocalTimestampMillis | S::LocalTimestampMicros | S::LocalTimestampNanos => {
            ColumnType::String
        }
        S::Union(u) => {
            let mut branches = u.variants().iter().filter(|v| !matches!(v, S::Null));
            match (branches.next(), branches.next()) {
                (Some(only), None) => avro_kind(only, names),
                _ => ColumnType::Json,
            }
        }
        _ => ColumnType::Json,
    }
}

/// The columns of a Protobuf message: its fields in field-number order (the decoder's order),
/// `oneof` members included.
pub(super) fn protobuf(message: &MessageDescriptor) -> Vec<Column> {
    let mut fields: Vec<FieldDescriptor> = message.fields().collect();
    fields.sort_by_key(FieldDescriptor::number);
    usable(
        fields
            .iter()
            .map(|f| column(f.name(), protobuf_kind(f)))
            .collect(),
    )
}

/// The column type of a Protobuf field's JSON (the proto3 mapping).
fn protobuf_kind(f: &FieldDescriptor) -> ColumnType {
    if f.is_list() || f.is_map() {
        return ColumnType::Json;
    }
    scalar_kind(&f.kind())
}

fn scalar_kind(kind: &Kind) -> ColumnType {
    match kind {
        Kind::Bool => ColumnType::Bool,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => {
            ColumnType::Int64
        }
        // Written as strings; the column reads them back as integers.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => ColumnType::Int64,
        // Above i64's range: kept as the decimal text.
        Kind::Uint64 | Kind::Fixed64 => ColumnType::String,
        Kind::Float | Kind::Double => ColumnType::Double,
        Kind::String | Kind::Bytes | Kind::Enum(_) => ColumnType::String,
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => ColumnType::Timestamp,
            "google.protobuf.Duration" | "google.protobuf.FieldMask" => ColumnType::String,
            "google.protobuf.StringValue" | "google.protobuf.BytesValue" => ColumnType::String,
            "google.protobuf.BoolValue" => ColumnType::Bool,
            "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.Int64Value" => ColumnType::Int64,
            "google.protobuf.UInt64Value" => ColumnType::String,
            "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => ColumnType::Double,
            _ => ColumnType::Json,
        },
    }
}

/// The columns of a JSON Schema: its top-level `properties`, typed by `type` (`integer`,
/// `number`, `boolean`, `string`, with `format: date-time` a timestamp; a type list of one
/// type and `null` is that type); anything else is `json`. A schema that does not parse gives
/// none.
pub(super) fn json_schema(text: &str) -> Vec<Column> {
    let Ok(schema) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
        return Vec::new();
    };
    usable(
        props
            .iter()
            .map(|(name, p)| column(name, json_kind(p)))
            .collect(),
    )
}

fn json_kind(p: &serde_json::Value) -> ColumnType {
    use serde_json::Value;
    let types: Vec<&str> = match p.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    match types[..] {
        ["integer"] => ColumnType::Int64,
        ["number"] => ColumnType::Double,
        ["boolean"] => ColumnType::Bool,
        ["string"] if p.get("format").and_then(Value::as_str) == Some("date-time") => {
            ColumnType::Timestamp
        }
        ["string"] => ColumnType::String,
        _ => ColumnType::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(columns: &[Column]) -> Vec<(&str, &str)> {
        columns
            .iter()
            .map(|c| (c.name.as_str(), c.kind.name()))
            .collect()
    }

    #[test]
    fn avro_fields_become_typed_optional_columns() {
        let s = AvroSchema::parse_str(
            r#"{"type":"record","name":"E","fields":[
                {"name":"id","type":"long"},
                {"name":"name","type":["null","string"]},
                {"name":"score","type":"double"},
                {"name":"ok","type":"boolean"},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"local","type":{"type":"long","logicalType":"local-timestamp-millis"}},
                {"name":"day","type":{"type":"int","logicalType":"date"}},
                {"name":"tier","type":{"type":"enum","name":"T","symbols":["A","B"]}},
                {"name":"addr","type":{"type":"record","name":"A","fields":[{"name":"c","type":"string"}]}},
                {"name":"home","type":["null","A"]},
                {"name":"tags","type":{"type":"array","items":"string"}},
                {"name":"either","type":["int","string"]}
            ]}"#,
        )
        .unwrap();
        let mut names = HashMap::new();
        if let AvroSchema::Record(r) = &s {
            if let AvroSchema::Record(a) = &r.fields[8].schema {
                names.insert(a.name.clone(), r.fields[8].schema.clone());
            }
        }
        let c = avro(&s, &names);
        assert_eq!(
            kinds(&c),
            [
                ("id", "int64"),
                ("name", "string"),
                ("score", "double"),
                ("ok", "bool"),
                ("at", "timestamp"),
                ("local", "string"),
                ("day", "string"),
                ("tier", "string"),
                ("addr", "json"),
                ("home", "json"),
                ("tags", "json"),
                ("either", "json"),
            ]
        );
        assert!(c
            .iter()
            .all(|c| !c.required && c.decoded && c.path == [c.name.clone()]));
    }

    #[test]
    fn a_union_of_records_merges_their_fields() {
        let s = AvroSchema::parse_str(
            r#"[{"type":"record","name":"A","fields":[{"name":"id","type":"long"},{"name":"x","type":"string"}]},
                {"type":"record","name":"B","fields":[{"name":"id","type":"long"},{"name":"x","type":"int"},{"name":"y","type":"int"}]}]"#,
        )
        .unwrap();
        assert_eq!(
            kinds(&avro(&s, &HashMap::new())),
            [("id", "int64"), ("x", "json"), ("y", "int64")]
        );
        assert!(avro(&AvroSchema::String, &HashMap::new()).is_empty());
    }

    #[test]
    fn json_schema_properties_become_columns() {
        let c = json_schema(
            r#"{"type":"object","properties":{
                "id":{"type":"integer"},"n":{"type":["null","number"]},"ok":{"type":"boolean"},
                "at":{"type":"string","format":"date-time"},"s":{"type":"string"},
                "o":{"type":"object"},"any":{},"bad-name":{"type":"string"},"ID":{"type":"string"}}}"#,
        );
        assert_eq!(
            kinds(&c),
            [
                ("id", "int64"),
                ("n", "double"),
                ("ok", "bool"),
                ("at", "timestamp"),
                ("s", "string"),
                ("o", "json"),
                ("any", "json"),
            ]
        );
        assert!(json_schema("not json").is_empty());
        assert!(json_schema(r#"{"type":"string"}"#).is_empty());
    }
}
