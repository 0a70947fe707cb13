//! The Athena statement of an Iceberg destination's table: `CREATE TABLE … PARTITIONED BY
//! (hour(ts), …) LOCATION … TBLPROPERTIES ('table_type' = 'ICEBERG')`, for creating the table
//! in the Glue catalog with Athena before the connector appends to it (or to see what the
//! connector creates itself with `create_if_missing`).
//!
//! Invariant: the columns are the table's as the connector derives them (the declared Parquet
//! columns, the raw column, the Kafka metadata columns, in file order), the partitioning its
//! partition spec; timestamps are Athena's `timestamp` (Athena's Iceberg DDL takes no other),
//! which the connector writes as UTC microseconds.

use iceberg::spec::{PrimitiveType, Type};

use super::DdlError;
use crate::config::iceberg::{PartitionSource, TimeTransform};
use crate::config::DestinationConfig;
use crate::table::schema::table_schema;

/// The Athena type of a table column.
fn athena_type(t: &Type) -> Option<&'static str> {
    Some(match t {
        Type::Primitive(PrimitiveType::String) => "string",
        Type::Primitive(PrimitiveType::Long) => "bigint",
        Type::Primitive(PrimitiveType::Int) => "int",
        Type::Primitive(PrimitiveType::Double) => "double",
        Type::Primitive(PrimitiveType::Boolean) => "boolean",
        Type::Primitive(PrimitiveType::Binary) => "binary",
        Type::Primitive(PrimitiveType::Timestamptz | PrimitiveType::Timestamp) => "timestamp",
        _ => return None,
    })
}

/// The statement for destination `d` (which has `[destinations.iceberg]`).
pub fn create_table(d: &DestinationConfig) -> Result<String, DdlError> {
    let (Some(cfg), Some(parquet)) = (&d.iceberg, &d.parquet) else {
        return Err(DdlError(format!(
            "destination `{}` is not an Iceberg table",
            d.name
        )));
    };
    let schema = table_schema(parquet).map_err(|e| DdlError(e.to_string()))?;
    let mut columns = Vec::new();
    for f in schema.as_struct().fields() {
        let t = athena_type(&f.field_type).ok_or_else(|| {
            DdlError(format!(
                "column {:?} has a type Athena cannot create: {}",
                f.name, f.field_type
            ))
        })?;
        columns.push(format!("  `{}` {t}", f.name));
    }
    let partitions: Vec<String> = cfg
        .partition
        .iter()
        .map(|p| match p {
            PartitionSource::Time { column, transform } => {
                let f = match transform {
                    TimeTransform::Hour => "hour",
                    TimeTransform::Day => "day",
                    TimeTransform::Month => "month",
                };
                format!("{f}(`{column}`)")
            }
            PartitionSource::Identity { column } => format!("`{column}`"),
        })
        .collect();
    let warehouse = match &cfg.catalog {
        crate::config::iceberg::CatalogConfig::Sql { warehouse, .. }
        | crate::config::iceberg::CatalogConfig::Glue { warehouse, .. } => warehouse.clone(),
        crate::config::iceberg::CatalogConfig::Rest { warehouse, .. } => {
            warehouse.clone().unwrap_or_default()
        }
        crate::config::iceberg::CatalogConfig::S3Tables { .. } => String::new(),
    };
    let location = if warehouse.starts_with("s3://") {
        format!(
            "{}/{}/{}",
            warehouse.trim_end_matches('/'),
            cfg.namespace.join("/"),
            cfg.table
        )
    } else {
        format!(
            "s3://{}/{}/{}",
            d.bucket,
            cfg.namespace.join("/"),
            cfg.table
        )
    };
    let mut out = format!(
        "CREATE TABLE `{}`.`{}` (\n{}\n)\n",
        cfg.namespace.join("."),
        cfg.table,
        columns.join(",\n")
    );
    if !partitions.is_empty() {
        out.push_str(&format!("PARTITIONED BY ({})\n", partitions.join(", ")));
    }
    out.push_str(&format!(
        "LOCATION '{location}'\nTBLPROPERTIES ('table_type' = 'ICEBERG', 'format' = 'parquet');\n"
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_has_the_columns_partitions_and_location_of_the_table() {
        let d = crate::config::test_destination(
            "kafka_metadata_field = \"_kafka\"\n\
             [destinations.routing]\ntime_field = \"ts\"\n\
             [destinations.batch]\nformat = \"parquet\"\n\
             [[destinations.parquet.columns]]\nname = \"event\"\npath = \"type\"\ntype = \"string\"\n\
             [[destinations.parquet.columns]]\nname = \"ts\"\npath = \"ts\"\ntype = \"timestamp\"\n\
             [[destinations.parquet.columns]]\nname = \"n\"\npath = \"n\"\ntype = \"int64\"\n\
             [destinations.iceberg]\nnamespace = \"analytics\"\ntable = \"events\"\n\
             partition_time = \"hour\"\npartition_fields = [\"type\"]\n\
             [destinations.iceberg.catalog]\nkind = \"glue\"\nwarehouse = \"s3://b/lake/\"\n",
        );
        let s = create_table(&d).unwrap();
        assert!(s.starts_with("CREATE TABLE `analytics`.`events` (\n  `event` string,\n  `ts` timestamp,\n  `n` bigint,\n"), "{s}");
        assert!(s.contains("  `_kafka_partition` int,\n"), "{s}");
        assert!(s.contains("  `_kafka_key` binary,\n"), "{s}");
        assert!(s.contains("PARTITIONED BY (hour(`ts`), `event`)\n"), "{s}");
        assert!(
            s.contains("LOCATION 's3://b/lake/analytics/events'\n"),
            "{s}"
        );
        assert!(
            s.ends_with("TBLPROPERTIES ('table_type' = 'ICEBERG', 'format' = 'parquet');\n"),
            "{s}"
        );
    }
}
