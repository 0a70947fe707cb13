//! `[destinations.parquet]`: the declared columns of a destination that writes Parquet
//! (`batch.format = "parquet"`), their column compression and row-group size, validated into a
//! [`ParquetConfig`] with its Arrow schema.
//!
//! Invariant: the schema's fields are, in order, the declared columns (with `columns =
//! "from_schema"`, the columns the schemas seen so far gave, none at start-up), the raw-JSON
//! column (if any) and the Kafka metadata columns (if `kafka_metadata_field` is set); every name is unique
//! and a plain identifier, so Athena, Trino, DuckDB and Spark take it unquoted.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[destinations.parquet]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawParquet {
    /// Column compression: zstd | snappy | none.
    pub compression: String,
    /// zstd level 1–22 (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// A row group is closed once its encoded size reaches this.
    pub row_group_bytes: u64,
    /// Name of a column holding each record's whole JSON text (none when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_column: Option<String>,
    /// The declared columns, in file order, or `"from_schema"`: the columns of each record's
    /// Schema Registry schema, added as schemas appear.
    pub columns: RawColumns,
}

/// `columns`: a list of declared columns, or a name (`"from_schema"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawColumns {
    /// `[[destinations.parquet.columns]]` entries.
    Declared(Vec<RawColumn>),
    /// `columns = "from_schema"` (any other word is refused by [`validate`]).
    Named(String),
}

impl Default for RawColumns {
    fn default() -> Self {
        RawColumns::Declared(Vec::new())
    }
}

/// The word of `columns = "from_schema"`.
pub const FROM_SCHEMA: &str = "from_schema";

impl Default for RawParquet {
    fn default() -> Self {
        Self {
            compression: "zstd".into(),
            compression_level: None,
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            raw_column: None,
            columns: RawColumns::default(),
        }
    }
}

/// One `[[destinations.parquet.columns]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawColumn {
    /// Column name.
    pub name: String,
    /// Dotted JSON path of its value (default: the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// string | int64 | double | bool | timestamp | json.
    #[serde(rename = "type")]
    pub kind: String,
    /// A record without a value for it is quarantined (`schema_mismatch`) instead of getting a
    /// null.
    #[serde(default)]
    pub required: bool,
}

/// Default `row_group_bytes`: 32 MiB encoded (Athena and Spark split files by row group; a
/// group this size reads well and keeps an open file's memory bounded).
pub const DEFAULT_ROW_GROUP_BYTES: u64 = 32 * 1024 * 1024;

/// Most declared columns (the router's scan finds at most 64 paths per record, a few of them
/// for the time, event type and folder fields).
pub const MAX_COLUMNS: usize = 48;

/// A declared column's type, and what JSON it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A JSON string; a number or boolean is taken as its JSON text.
    String,
    /// A JSON integer within 64 bits.
    Int64,
    /// Any JSON number.
    Double,
    /// `true` or `false`.
    Bool,
    /// An RFC 3339 string or epoch seconds / milliseconds (as `time_format = "auto"` reads
    /// them), stored as microseconds since the epoch, UTC.
    Timestamp,
    /// Any JSON value, stored as its JSON text.
    Json,
}

impl ColumnType {
    const ALL: [Self; 6] = [
        Self::String,
        Self::Int64,
        Self::Double,
        Self::Bool,
        Self::Timestamp,
        Self::Json,
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Its name in config files.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int64 => "int64",
            Self::Double => "double",
            Self::Bool => "bool",
            Self::Timestamp => "timestamp",
            Self::Json => "json",
        }
    }

    /// Its Arrow type.
    pub fn arrow(self) -> DataType {
        match self {
            Self::String | Self::Json => DataType::Utf8,
            Self::Int64 => DataType::Int64,
            Self::Double => DataType::Float64,
            Self::Bool => DataType::Boolean,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// A validated declared column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Name.
    pub name: String,
    /// JSON path, split at dots.
    pub path: Vec<String>,
    /// Type.
    pub kind: ColumnType,
    /// Missing or null values are a mismatch.
    pub required: bool,
    /// The value is a Schema Registry payload's decoded JSON (a `from_schema` column), so
    /// the decoder's spellings are taken: 64-bit integers as strings (Protobuf's JSON mapping)
    /// in an int64 column, `"NaN"` and `"±Infinity"` in a double column.
    pub decoded: bool,
}

/// Parquet column compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetCodec {
    /// Uncompressed pages.
    None,
    /// Snappy.
    Snappy,
    /// zstd at a level.
    Zstd(i32),
}

impl std::fmt::Display for ParquetCodec {
    /// `none`, `snappy`, `zstd level 1`: what a summary prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParquetCodec::None => f.write_str("none"),
            ParquetCodec::Snappy => f.write_str("snappy"),
            ParquetCodec::Zstd(level) => write!(f, "zstd level {level}"),
        }
    }
}

/// The Kafka metadata columns: name suffixes after `<kafka_metadata_field>_`, in file order.
const METADATA_COLUMNS: [&str; 6] = [
    "topic",
    "partition",
    "offset",
    "timestamp",
    "key",
    "headers",
];

/// A validated `[destinations.parquet]`.
#[derive(Debug, Clone)]
pub struct ParquetConfig {
    /// Declared columns; with `from_schema`, the columns of the schemas seen so far (none at
    /// start-up; the pipeline adds them, see [`ParquetConfig::with_columns`]).
    pub columns: Vec<Column>,
    /// `columns = "from_schema"`: columns come from the records' schemas.
    pub from_schema: bool,
    /// Raw-JSON column name.
    pub raw_column: Option<String>,
    /// Prefix of the Kafka metadata columns (`<prefix>_topic`, …), if they are written.
    pub metadata_prefix: Option<String>,
    /// Column compression.
    pub codec: ParquetCodec,
    /// Encoded size at which a row group closes.
    pub row_group_bytes: usize,
    /// The file schema (see the module invariant).
    pub schema: SchemaRef,
    /// Min/max statistics kept whole instead of cut to 64 bytes (an Iceberg table's files:
    /// their identity partition values are read back from them exactly).
    pub exact_statistics: bool,
}

/// Whether `name` is a plain identifier every engine (and every Iceberg catalog) takes unquoted.
pub(crate) fn plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// Validates `[destinations.parquet]` of the destination at `at`. `metadata` is its
/// `kafka_metadata_field` (the metadata columns' prefix).
pub(crate) fn validate(
    at: &str,
    p: &RawParquet,
    metadata: Option<&str>,
) -> Result<ParquetConfig, ConfigError> {
    let key = |k: &str| format!("{at}.parquet.{k}");
    let codec = match (p.compression.as_str(), p.compression_level) {
        ("zstd", level) => match level.unwrap_or(super::DEFAULT_ZSTD_LEVEL) {
            l @ 1..=22 => ParquetCodec::Zstd(l),
            _ => {
                return Err(ConfigError::new(
                    key("compression_level"),
                    "zstd level must be 1–22",
                ))
            }
        },
        ("snappy" | "none", Some(_)) => {
            return Err(ConfigError::new(
                key("compression_level"),
                "is only used with compression = \"zstd\"; remove it",
            ))
        }
        ("snappy", None) => ParquetCodec::Snappy,
        ("none", None) => ParquetCodec::None,
        (other, _) => {
            return Err(ConfigError::new(
                key("compression"),
                format!("unknown value {other:?}; use zstd, snappy or none"),
            ))
        }
    };
    if p.row_group_bytes < 64 * 1024 {
        return Err(ConfigError::new(
            key("row_group_bytes"),
            "must be at least 65536 (64 KiB)",
        ));
    }
    let (declared, from_schema) = match &p.columns {
        RawColumns::Declared(c) => (&c[..], false),
        RawColumns::Named(w) if w == FROM_SCHEMA => (&[][..], true),
        RawColumns::Named(w) => {
            return Err(ConfigError::new(
                key("columns"),
                format!("unknown value {w:?}; use \"from_schema\" or a list of [[destinations.parquet.columns]]"),
            ))
        }
    };
    if from_schema && metadata.is_none() {
        return Err(ConfigError::new(
            format!("{at}.kafka_metadata_field"),
            "columns = \"from_schema\" needs the Kafka metadata columns (the files' columns before a schema is seen, and what verify matches rows by): set kafka_metadata_field = \"_kafka\"",
        ));
    }
    if declared.len() > MAX_COLUMNS {
        return Err(ConfigError::new(
            key("columns"),
            format!("at most {MAX_COLUMNS} declared columns; keep the rest in raw_column"),
        ));
    }
    let mut names: Vec<String> = Vec::new();
    let mut fields = Vec::new();
    let mut add = |name: &str, k: String, field: Field| -> Result<(), ConfigError> {
        if !plain_identifier(name) {
            return Err(ConfigError::new(
                k,
                format!("{name:?} is not a column name: use letters, digits and _ (not first a digit), at most 128"),
            ));
        }
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(ConfigError::new(
                k,
                format!("column {name:?} is declared twice (names are case-insensitive in Athena); rename one"),
            ));
        }
        names.push(name.to_string());
        fields.push(field);
        Ok(())
    };
    let mut columns = Vec::new();
    for (i, c) in declared.iter().enumerate() {
        let ck = |k: &str| format!("{at}.parquet.columns[{i}].{k}");
        let kind = ColumnType::parse(&c.kind).ok_or_else(|| {
            ConfigError::new(
                ck("type"),
                format!(
                    "unknown type {:?}; use string, int64, double, bool, timestamp or json",
                    c.kind
                ),
            )
        })?;
        let path_text = c.path.as_deref().unwrap_or(&c.name);
        let path: Vec<String> = path_text.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                ck("path"),
                format!("{path_text:?} has an empty segment; write a dotted path such as \"context.ip\""),
            ));
        }
        add(
            &c.name,
            ck("name"),
            Field::new(&c.name, kind.arrow(), !c.required),
        )?;
        columns.push(Column {
            name: c.name.clone(),
            path,
            kind,
            required: c.required,
            decoded: false,
        });
    }
    if let Some(raw) = &p.raw_column {
        add(
            raw,
            key("raw_column"),
            Field::new(raw, DataType::Utf8, false),
        )?;
    }
    if let Some(prefix) = metadata {
        for suffix in METADATA_COLUMNS {
            let name = format!("{prefix}_{suffix}");
            let (kind, nullable) = match suffix {
                "topic" => (DataType::Utf8, false),
                "partition" => (DataType::Int32, false),
                "offset" => (DataType::Int64, false),
                "timestamp" => (
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    true,
                ),
                "key" => (DataType::Binary, true),
                _ => (DataType::Utf8, true),
            };
            add(
                &name,
                format!("{at}.kafka_metadata_field"),
                Field::new(&name, kind, nullable),
            )?;
        }
    }
    if fields.is_empty() {
        return Err(ConfigError::new(
            key("columns"),
            "format = \"parquet\" needs columns: add [[destinations.parquet.columns]] entries (name, path, type) or set raw_column",
        ));
    }
    Ok(ParquetConfig {
        columns,
        raw_column: p.raw_column.clone(),
        metadata_prefix: metadata.map(str::to_string),
        codec,
        row_group_bytes: usize::try_from(p.row_group_bytes).unwrap_or(usize::MAX),
        schema: Arc::new(Schema::new(fields)),
        exact_statistics: false,
        from_schema,
    })
}

impl ParquetConfig {
    /// This configuration with `columns` in place of its columns (a `from_schema`
    /// destination's columns as schemas add them): the file schema is rebuilt with them first
    /// and the raw and metadata columns after, as they were.
    pub fn with_columns(&self, columns: Vec<Column>) -> ParquetConfig {
        let fixed = self
            .schema
            .fields()
            .iter()
            .skip(self.columns.len())
            .cloned();
        let fields: Vec<_> = columns
            .iter()
            .map(|c| Arc::new(Field::new(&c.name, c.kind.arrow(), !c.required)))
            .chain(fixed)
            .collect();
        ParquetConfig {
            columns,
            schema: Arc::new(Schema::new(fields)),
            ..self.clone()
        }
    }

    /// The names of the columns every file has whatever its schema: the raw-JSON column and
    /// the Kafka metadata columns.
    pub fn fixed_names(&self) -> impl Iterator<Item = &str> {
        self.schema
            .fields()
            .iter()
            .skip(self.columns.len())
            .map(|f| f.name().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(columns: &[(&str, Option<&str>, &str)]) -> RawParquet {
        RawParquet {
            columns: RawColumns::Declared(
                columns
                    .iter()
                    .map(|(n, p, t)| RawColumn {
                        name: n.to_string(),
                        path: p.map(str::to_string),
                        kind: t.to_string(),
                        required: false,
                    })
                    .collect(),
            ),
            ..RawParquet::default()
        }
    }

    #[test]
    fn builds_the_schema_in_file_order() {
        let mut p = raw(&[
            ("event", Some("type"), "string"),
            ("ip", Some("context.ip"), "string"),
            ("ts", Some("timestamp"), "timestamp"),
        ]);
        p.raw_column = Some("raw".into());
        let c = validate("d", &p, Some("_kafka")).unwrap();
        let names: Vec<&str> = c
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "event",
                "ip",
                "ts",
                "raw",
                "_kafka_topic",
                "_kafka_partition",
                "_kafka_offset",
                "_kafka_timestamp",
                "_kafka_key",
                "_kafka_headers"
            ]
        );
        assert_eq!(c.columns[1].path, ["context", "ip"]);
        assert_eq!(c.codec, ParquetCodec::Zstd(1), "zstd level 1 by default");
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases: Vec<(RawParquet, &str)> = vec![
            (raw(&[]), "d.parquet.columns"),
            (raw(&[("a", None, "text")]), "d.parquet.columns[0].type"),
            (raw(&[("a-b", None, "string")]), "d.parquet.columns[0].name"),
            (
                raw(&[("a", None, "string"), ("A", None, "int64")]),
                "d.parquet.columns[1].name",
            ),
            (
                raw(&[("a", Some("x..y"), "string")]),
                "d.parquet.columns[0].path",
            ),
            (
                RawParquet {
                    compression: "lz4".into(),
                    ..raw(&[("a", None, "string")])
                },
                "d.parquet.compression",
            ),
            (
                RawParquet {
                    compression: "snappy".into(),
                    compression_level: Some(3),
                    ..raw(&[("a", None, "string")])
                },
                "d.parquet.compression_level",
            ),
            (
                RawParquet {
                    row_group_bytes: 10,
                    ..raw(&[("a", None, "string")])
                },
                "d.parquet.row_group_bytes",
            ),
        ];
        for (p, want) in cases {
            let e = validate("d", &p, None).unwrap_err();
            assert_eq!(e.key, want, "{e}");
        }
        let e = validate(
            "d",
            &raw(&[("_kafka_offset", None, "int64")]),
            Some("_kafka"),
        )
        .unwrap_err();
        assert_eq!(e.key, "d.kafka_metadata_field");
    }
}
