//! Where an Iceberg table's partition values come from: the event-time column a time transform
//! reads, and the declared column of each identity field, checked against the destination's
//! Parquet columns at start-up.
//!
//! Invariant: every partition field reads a column the data files hold, of a type its
//! transform takes (a timestamp for hour/day/month; string, int64 or bool for identity).

use crate::config::{ColumnType, ConfigError, ParquetConfig, TimeSource};

use super::{IcebergConfig, TimeTransform};

/// The column a destination's records are dated by, if the table has it: the declared
/// timestamp column whose path is the event-time field, or the Kafka timestamp metadata column.
pub fn event_time_column(parquet: &ParquetConfig, time: &TimeSource) -> Option<String> {
    match time {
        TimeSource::EventTime { path, .. } | TimeSource::EventTimeOrUploadTime { path, .. } => {
            parquet
                .columns
                .iter()
                .find(|c| c.kind == ColumnType::Timestamp && &c.path == path)
                .map(|c| c.name.clone())
        }
        TimeSource::KafkaTimestamp => parquet
            .metadata_prefix
            .as_ref()
            .map(|p| format!("{p}_timestamp")),
        TimeSource::UploadTime | TimeSource::None => None,
    }
}

/// Where a partition field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionSource {
    /// A time transform of the event-time column.
    Time {
        /// Source column.
        column: String,
        /// Transform.
        transform: TimeTransform,
    },
    /// The value of a declared column (`{field:path}`).
    Identity {
        /// Source column.
        column: String,
    },
}

/// The partition fields of a destination, in spec order: the time transform of `time_column`
/// (when `cfg.partition_time` is set), then `identity` of the declared column of each
/// `cfg.partition_fields` path. `at` is the destination's key (`destinations[0]`).
pub fn partition_sources(
    at: &str,
    cfg: &IcebergConfig,
    parquet: &ParquetConfig,
    time_column: Option<&str>,
) -> Result<Vec<PartitionSource>, ConfigError> {
    let mut out = Vec::new();
    if let Some(transform) = cfg.partition_time {
        let column = time_column.ok_or_else(|| {
            ConfigError::new(
                format!("{at}.iceberg.partition_time"),
                if parquet.from_schema {
                    "needs a timestamp column known at start-up, and columns = \"from_schema\" declares none: use time_source = \"kafka_timestamp\" (the _timestamp metadata column), or set partition_time = \"none\""
                } else {
                    "needs a timestamp column holding the event time: declare one whose path is routing.time_field (or use time_source = \"kafka_timestamp\" with kafka_metadata_field), or set partition_time = \"none\""
                },
            )
        })?;
        out.push(PartitionSource::Time {
            column: column.to_string(),
            transform,
        });
    }
    for (i, path) in cfg.partition_fields.iter().enumerate() {
        let key = format!("{at}.iceberg.partition_fields[{i}]");
        if parquet.from_schema {
            return Err(ConfigError::new(
                key,
                "partitions by value need a declared column, and columns = \"from_schema\" declares none; remove partition_fields or declare the columns",
            ));
        }
        let col = parquet.columns.iter().find(|c| &c.path == path).ok_or_else(|| {
            ConfigError::new(
                key.clone(),
                format!("no declared column has path {:?}; declare it in [[destinations.parquet.columns]]", path.join(".")),
            )
        })?;
        if !matches!(
            col.kind,
            ColumnType::String | ColumnType::Int64 | ColumnType::Bool
        ) {
            return Err(ConfigError::new(
                key,
                format!(
                    "column {:?} is {}; partition by a string, int64 or bool column",
                    col.name,
                    col.kind.name()
                ),
            ));
        }
        out.push(PartitionSource::Identity {
            column: col.name.clone(),
        });
    }
    Ok(out)
}
