//! The Iceberg schema and partition spec of a destination, derived from the Arrow schema its
//! Parquet writer uses (`[destinations.parquet]` columns, raw column, `_kafka_*` metadata), and
//! the writer schema that carries the table's field ids into every data file.
//!
//! Invariants: the table's columns are the writer's columns in the same order and with the same
//! nullability (a `from_schema` table's schema columns are appended as schemas bring them, see
//! [`super::evolve`]); every Parquet column written for a table carries its Iceberg field id
//! (`PARQUET:field_id`), looked up by name in the table's current schema, so engines never map
//! columns by position; timestamps are microseconds (Iceberg has no millisecond timestamp).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;

use crate::config::iceberg::{PartitionSource, TimeTransform};
use crate::config::{ConfigError, ParquetConfig};

/// The Iceberg type of a writer column, or None for a type the writer never produces.
pub(super) fn iceberg_type(t: &DataType) -> Option<PrimitiveType> {
    Some(match t {
        DataType::Utf8 => PrimitiveType::String,
        DataType::Int64 => PrimitiveType::Long,
        DataType::Int32 => PrimitiveType::Int,
        DataType::Float64 => PrimitiveType::Double,
        DataType::Boolean => PrimitiveType::Boolean,
        DataType::Binary => PrimitiveType::Binary,
        DataType::Timestamp(_, Some(_)) => PrimitiveType::Timestamptz,
        DataType::Timestamp(_, None) => PrimitiveType::Timestamp,
        _ => return None,
    })
}

/// The table schema of a destination's Parquet columns: field ids 1, 2, … in column order.
pub fn table_schema(parquet: &ParquetConfig) -> Result<Schema, ConfigError> {
    let mut fields = Vec::new();
    for (i, f) in parquet.schema.fields().iter().enumerate() {
        let t = iceberg_type(f.data_type()).ok_or_else(|| {
            ConfigError::new(
                "parquet.columns",
                format!(
                    "column {:?} has a type Iceberg tables do not take",
                    f.name()
                ),
            )
        })?;
        let id = i32::try_from(i + 1).expect("invariant: at most a few dozen columns");
        fields.push(Arc::new(NestedField::new(
            id,
            f.name(),
            Type::Primitive(t),
            !f.is_nullable(),
        )));
    }
    Schema::builder().with_fields(fields).build().map_err(|e| {
        ConfigError::new(
            "parquet.columns",
            format!("not a valid Iceberg schema: {e}"),
        )
    })
}

/// `schema` with every `timestamptz` column made a zoneless `timestamp` (for a Glue table:
/// iceberg-catalog-glue 0.10.1 refuses `timestamptz` when it converts the schema to Glue
/// columns, as Athena's Iceberg DDL does; the writer puts UTC microseconds there as they are).
pub fn zoneless(schema: Schema) -> Result<Schema, ConfigError> {
    let fields: Vec<_> = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            let mut f = (**f).clone();
            if *f.field_type == Type::Primitive(PrimitiveType::Timestamptz) {
                f.field_type = Box::new(Type::Primitive(PrimitiveType::Timestamp));
            }
            Arc::new(f)
        })
        .collect();
    Schema::builder()
        .with_schema_id(schema.schema_id())
        .with_fields(fields)
        .build()
        .map_err(|e| ConfigError::new("iceberg", format!("table schema: {e}")))
}

/// The Arrow schema Parquet data files of a table are written with: the destination's writer
/// schema with each column's field id from `table` (matched by name, type checked) and
/// timestamps in microseconds. Fails, naming the column, when the table does not have it with
/// a compatible type (a table created elsewhere, or columns changed since).
pub fn writer_schema(parquet: &ParquetConfig, table: &Schema) -> Result<SchemaRef, ConfigError> {
    let mut fields = Vec::new();
    for f in parquet.schema.fields() {
        let want = iceberg_type(f.data_type());
        let Some(tf) = table.field_by_name(f.name()) else {
            return Err(ConfigError::new(
                "parquet.columns",
                format!("the table has no column {:?}; add it to the table or remove it from the destination", f.name()),
            ));
        };
        // A table created with `timestamp` (Athena's Iceberg DDL has no other) takes the
        // writer's UTC timestamps as they are, without a zone.
        let zoneless = want == Some(PrimitiveType::Timestamptz)
            && *tf.field_type == Type::Primitive(PrimitiveType::Timestamp);
        if !zoneless
            && want.as_ref().map(|t| Type::Primitive(t.clone())) != Some((*tf.field_type).clone())
        {
            return Err(ConfigError::new(
                "parquet.columns",
                format!(
                    "column {:?} is {} in the table but {} here; make the types agree",
                    f.name(),
                    tf.field_type,
                    want.map_or_else(|| f.data_type().to_string(), |t| t.to_string()),
                ),
            ));
        }
        if tf.required && f.is_nullable() {
            return Err(ConfigError::new(
                "parquet.columns",
                format!("column {:?} is required in the table but may be null here; set required = true", f.name()),
            ));
        }
        let data_type = match f.data_type() {
            DataType::Timestamp(..) if zoneless => DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            t => t.clone(),
        };
        let metadata = HashMap::from([(PARQUET_FIELD_ID_META_KEY.to_string(), tf.id.to_string())]);
        fields.push(Field::new(f.name(), data_type, f.is_nullable()).with_metadata(metadata));
    }
    Ok(Arc::new(ArrowSchema::new(fields)))
}

/// The partition spec of `sources` over `schema`: `<col>_<hour|day|month>` for the time
/// field, the column's own name for an identity field.
pub fn partition_spec(
    schema: &Schema,
    sources: &[PartitionSource],
) -> Result<UnboundPartitionSpec, ConfigError> {
    let mut b = UnboundPartitionSpec::builder().with_spec_id(0);
    for s in sources {
        let (column, name, transform) = match s {
            PartitionSource::Time { column, transform } => (
                column,
                format!("{column}_{}", transform.name()),
                match transform {
                    TimeTransform::Hour => Transform::Hour,
                    TimeTransform::Day => Transform::Day,
                    TimeTransform::Month => Transform::Month,
                },
            ),
            PartitionSource::Identity { column } => (column, column.clone(), Transform::Identity),
        };
        let id = schema
            .field_by_name(column)
            .ok_or_else(|| {
                ConfigError::new(
                    "iceberg",
                    format!("the table has no column {column:?} to partition by"),
                )
            })?
            .id;
        b = b
            .add_partition_field(id, name, transform)
            .map_err(|e| ConfigError::new("iceberg", format!("partition spec: {e}")))?;
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::iceberg::{
        event_time_column, partition_sources, CatalogConfig, IcebergConfig,
    };
    use crate::config::TimeSource;
    use crate::config::{RawColumn, RawParquet, TimeFormat};

    pub(crate) fn parquet() -> ParquetConfig {
        let col = |name: &str, path: &str, kind: &str, required: bool| RawColumn {
            name: name.into(),
            path: Some(path.into()),
            kind: kind.into(),
            required,
        };
        let raw = RawParquet {
            raw_column: Some("raw".into()),
            columns: crate::config::parquet::RawColumns::Declared(vec![
                col("event", "type", "string", true),
                col("ts", "timestamp", "timestamp", false),
                col("n", "n", "int64", false),
                col("ratio", "ratio", "double", false),
            ]),
            ..RawParquet::default()
        };
        crate::config::parquet::validate("d", &raw, Some("_kafka")).unwrap()
    }

    fn cfg(time: Option<TimeTransform>, fields: &[&str]) -> IcebergConfig {
        IcebergConfig {
            catalog: CatalogConfig::Sql {
                uri: serde_json::from_str("\"sqlite::memory:\"").unwrap(),
                warehouse: "/tmp".into(),
            },
            namespace: vec!["n".into()],
            table: "t".into(),
            create_if_missing: true,
            commit_interval: std::time::Duration::from_secs(60),
            partition_time: time,
            partition_fields: fields
                .iter()
                .map(|f| f.split('.').map(str::to_string).collect())
                .collect(),
            partition: Vec::new(),
        }
    }

    #[test]
    fn the_schema_is_the_writer_columns_with_ids_in_order() {
        let p = parquet();
        let s = table_schema(&p).unwrap();
        let got: Vec<(i32, String, String, bool)> = s
            .as_struct()
            .fields()
            .iter()
            .map(|f| (f.id, f.name.clone(), f.field_type.to_string(), f.required))
            .collect();
        let want = [
            (1, "event", "string", true),
            (2, "ts", "timestamptz", false),
            (3, "n", "long", false),
            (4, "ratio", "double", false),
            (5, "raw", "string", true),
            (6, "_kafka_topic", "string", true),
            (7, "_kafka_partition", "int", true),
            (8, "_kafka_offset", "long", true),
            (9, "_kafka_timestamp", "timestamptz", false),
            (10, "_kafka_key", "binary", false),
            (11, "_kafka_headers", "string", false),
        ];
        let want: Vec<(i32, String, String, bool)> = want
            .iter()
            .map(|(i, n, t, r)| (*i, n.to_string(), t.to_string(), *r))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_writer_schema_carries_field_ids_and_microseconds() {
        let p = parquet();
        let s = table_schema(&p).unwrap();
        let w = writer_schema(&p, &s).unwrap();
        assert_eq!(w.fields().len(), p.schema.fields().len());
        for (i, f) in w.fields().iter().enumerate() {
            assert_eq!(f.metadata()[PARQUET_FIELD_ID_META_KEY], (i + 1).to_string());
            if let DataType::Timestamp(unit, tz) = f.data_type() {
                assert_eq!((*unit, tz.as_deref()), (TimeUnit::Microsecond, Some("UTC")));
            }
        }
        // A table whose column has another type is refused, naming the column.
        let other = Schema::builder()
            .with_fields(vec![Arc::new(NestedField::required(
                1,
                "event",
                Type::Primitive(PrimitiveType::Long),
            ))])
            .build()
            .unwrap();
        let e = writer_schema(&p, &other).unwrap_err();
        assert!(e.message.contains("\"event\""), "{e}");
    }

    /// A table created by Athena has `timestamp` columns (its Iceberg DDL has no
    /// `timestamptz`): the writer's UTC timestamps go there without a zone.
    #[test]
    fn a_zoneless_timestamp_column_takes_utc_timestamps() {
        let p = parquet();
        let s = table_schema(&p).unwrap();
        let fields: Vec<_> = s
            .as_struct()
            .fields()
            .iter()
            .map(|f| {
                let mut f = (**f).clone();
                if *f.field_type == Type::Primitive(PrimitiveType::Timestamptz) {
                    f.field_type = Box::new(Type::Primitive(PrimitiveType::Timestamp));
                }
                Arc::new(f)
            })
            .collect();
        let athena = Schema::builder().with_fields(fields).build().unwrap();
        assert_eq!(zoneless(s.clone()).unwrap().as_struct(), athena.as_struct());
        let w = writer_schema(&p, &athena).unwrap();
        let ts = w.field_with_name("ts").unwrap();
        assert_eq!(
            ts.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
    }

    #[test]
    fn the_partition_spec_follows_the_event_time_and_field_folders() {
        let p = parquet();
        let s = table_schema(&p).unwrap();
        let time = TimeSource::EventTime {
            path: vec!["timestamp".into()],
            format: TimeFormat::Auto,
        };
        let col = event_time_column(&p, &time);
        assert_eq!(col.as_deref(), Some("ts"));
        assert_eq!(
            event_time_column(&p, &TimeSource::KafkaTimestamp).as_deref(),
            Some("_kafka_timestamp")
        );
        let sources = partition_sources(
            "d",
            &cfg(Some(TimeTransform::Hour), &["type"]),
            &p,
            col.as_deref(),
        )
        .unwrap();
        let spec = partition_spec(&s, &sources).unwrap();
        let fields: Vec<(i32, String, Transform)> = spec
            .fields()
            .iter()
            .map(|f| (f.source_id, f.name.clone(), f.transform))
            .collect();
        assert_eq!(
            fields,
            [
                (2, "ts_hour".to_string(), Transform::Hour),
                (1, "event".to_string(), Transform::Identity)
            ]
        );
        spec.bind(Arc::new(s)).unwrap();

        let e = partition_sources("d", &cfg(Some(TimeTransform::Day), &[]), &p, None).unwrap_err();
        assert_eq!(e.key, "d.iceberg.partition_time");
        let e = partition_sources("d", &cfg(None, &["nope"]), &p, None).unwrap_err();
        assert_eq!(e.key, "d.iceberg.partition_fields[0]");
        let e = partition_sources("d", &cfg(None, &["ratio"]), &p, None).unwrap_err();
        assert_eq!(e.key, "d.iceberg.partition_fields[0]");
        assert!(partition_sources("d", &cfg(None, &[]), &p, None)
            .unwrap()
            .is_empty());
    }
}
