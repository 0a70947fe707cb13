//! An uploaded Parquet file described as an Iceberg data file: its location, size, record
//! count, partition values and the column statistics of its footer (sizes, value and null
//! counts, lower and upper bounds), so engines prune by them; and the names data files get.
//!
//! Invariants: statistics come only from the footer the writer produced (nothing is re-read
//! from S3); a bound is recorded only when every row group of the column has one, so a bound
//! never excludes a row; a file's name is unique per (topic, partition, first offset, writer),
//! so a replay by another writer, or a later incarnation, never collides with a committed file.

use std::collections::HashMap;

use chrono::{Datelike, TimeZone, Utc};
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, Literal, PrimitiveType,
    Schema, Struct, Type,
};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

use super::TableError;
use crate::config::iceberg::TimeTransform;

/// One partition field's value of a data file, in partition-spec order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionValue {
    /// No value (a record without the field, or without a time).
    Null,
    /// A time transform's result: hours, days or months since 1970-01-01 UTC.
    Time(i32),
    /// A string column's value.
    Str(String),
    /// An int64 column's value.
    Long(i64),
    /// A bool column's value.
    Bool(bool),
}

impl PartitionValue {
    fn literal(&self) -> Option<Literal> {
        match self {
            Self::Null => None,
            Self::Time(v) => Some(Literal::int(*v)),
            Self::Str(s) => Some(Literal::string(s)),
            Self::Long(v) => Some(Literal::long(*v)),
            Self::Bool(v) => Some(Literal::bool(*v)),
        }
    }
}

/// The value of `transform` for a time in microseconds since the epoch (UTC), as Iceberg
/// computes it: floor division, so times before 1970 fall in the right bucket.
pub fn time_partition(transform: TimeTransform, micros: i64) -> i32 {
    const HOUR: i64 = 3_600_000_000;
    let clamp = |v: i64| i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX });
    match transform {
        TimeTransform::Hour => clamp(micros.div_euclid(HOUR)),
        TimeTransform::Day => clamp(micros.div_euclid(24 * HOUR)),
        TimeTransform::Month => {
            let secs = micros.div_euclid(1_000_000);
            match Utc.timestamp_opt(secs, 0).single() {
                Some(t) => (t.year() - 1970) * 12 + t.month0() as i32,
                None => clamp(micros.div_euclid(24 * HOUR) / 30),
            }
        }
    }
}

/// The object name of a data file: `<topic>-<partition>-<first offset, 20 digits>-<writer>.parquet`.
/// `writer` must be fresh for each incarnation of a partition's writer (e.g. a UUID drawn
/// when the partition is assigned), so a replay after a crash or a refused commit writes new
/// names instead of colliding with (or overwriting) a file the table may hold.
pub fn data_file_name(topic: &str, partition: i32, first_offset: i64, writer: &str) -> String {
    format!("{topic}-{partition}-{first_offset:020}-{writer}.parquet")
}

/// A Parquet file already in the table's storage, to be registered.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Full location (`s3://bucket/…/data/…parquet`, or a path for a local warehouse).
    pub location: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its footer, as the writer produced it.
    pub footer: std::sync::Arc<ParquetMetaData>,
    /// Partition values, in partition-spec order.
    pub partition: Vec<PartitionValue>,
}

/// Merged min/max of one column across row groups; `None` once a row group had no bound.
#[derive(Default)]
struct Bounds {
    lower: Option<Option<Datum>>,
    upper: Option<Option<Datum>>,
}

impl Bounds {
    fn merge(slot: &mut Option<Option<Datum>>, v: Option<Datum>, keep_lower: bool) {
        *slot = match (slot.take(), v) {
            // The first row group sets it; a missing bound anywhere drops it for good.
            (None, v) => Some(v),
            (Some(None), _) | (Some(Some(_)), None) => Some(None),
            (Some(Some(a)), Some(b)) => {
                let take_b = if keep_lower { b < a } else { b > a };
                Some(Some(if take_b { b } else { a }))
            }
        };
    }
}

/// The Iceberg value of a Parquet min or max of a column of type `t`.
fn datum(t: &PrimitiveType, s: &Statistics, max: bool) -> Option<Datum> {
    macro_rules! pick {
        ($v:expr) => {
            if max {
                $v.max_opt()
            } else {
                $v.min_opt()
            }
        };
    }
    Some(match (t, s) {
        (PrimitiveType::Boolean, Statistics::Boolean(v)) => Datum::bool(*pick!(v)?),
        (PrimitiveType::Int, Statistics::Int32(v)) => Datum::int(*pick!(v)?),
        (PrimitiveType::Long, Statistics::Int64(v)) => Datum::long(*pick!(v)?),
        (PrimitiveType::Timestamptz, Statistics::Int64(v)) => Datum::timestamptz_micros(*pick!(v)?),
        (PrimitiveType::Timestamp, Statistics::Int64(v)) => Datum::timestamp_micros(*pick!(v)?),
        (PrimitiveType::Double, Statistics::Double(v)) => {
            let x = *pick!(v)?;
            if x.is_nan() {
                return None;
            }
            Datum::double(x)
        }
        (PrimitiveType::String, Statistics::ByteArray(v)) => {
            Datum::string(std::str::from_utf8(pick!(v)?.data()).ok()?)
        }
        (PrimitiveType::Binary, Statistics::ByteArray(v)) => {
            Datum::binary(pick!(v)?.data().to_vec())
        }
        _ => return None,
    })
}

/// `file` as a data file of `schema` (the table's current schema) under partition spec
/// `spec_id`, with the statistics of its footer.
pub fn data_file(
    schema: &Schema,
    spec_id: i32,
    file: &WrittenFile,
) -> Result<DataFile, TableError> {
    let err = |message: String| TableError::DataFile {
        path: file.location.clone(),
        message,
    };
    let meta = &file.footer;
    let mut sizes: HashMap<i32, u64> = HashMap::new();
    let mut values: HashMap<i32, u64> = HashMap::new();
    let mut nulls: HashMap<i32, Option<u64>> = HashMap::new();
    let mut bounds: HashMap<i32, Bounds> = HashMap::new();
    for rg in meta.row_groups() {
        for col in rg.columns() {
            let name = col.column_descr().path().string();
            let Some(field) = schema.field_by_name(&name) else {
                return Err(err(format!("column {name:?} is not in the table schema")));
            };
            let Type::Primitive(t) = field.field_type.as_ref() else {
                return Err(err(format!("column {name:?} is not a primitive column")));
            };
            let id = field.id;
            *sizes.entry(id).or_default() += u64::try_from(col.compressed_size()).unwrap_or(0);
            *values.entry(id).or_default() += u64::try_from(col.num_values()).unwrap_or(0);
            let stats = col.statistics();
            let n = nulls.entry(id).or_insert(Some(0));
            *n = match (*n, stats.and_then(Statistics::null_count_opt)) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            let b = bounds.entry(id).or_default();
            Bounds::merge(&mut b.lower, stats.and_then(|s| datum(t, s, false)), true);
            Bounds::merge(&mut b.upper, stats.and_then(|s| datum(t, s, true)), false);
        }
    }
    let mut lower = HashMap::new();
    let mut upper = HashMap::new();
    for (id, b) in bounds {
        if let Some(Some(v)) = b.lower {
            lower.insert(id, v);
        }
        if let Some(Some(v)) = b.upper {
            upper.insert(id, v);
        }
    }
    let records = u64::try_from(meta.file_metadata().num_rows())
        .map_err(|_| err("negative row count in the footer".into()))?;
    let partition: Struct = file.partition.iter().map(PartitionValue::literal).collect();
    let mut b = DataFileBuilder::default();
    b.content(DataContentType::Data)
        .file_path(file.location.clone())
        .file_format(DataFileFormat::Parquet)
        .partition(partition)
        .partition_spec_id(spec_id)
        .record_count(records)
        .file_size_in_bytes(file.size_bytes)
        .column_sizes(sizes)
        .value_counts(values)
        .null_value_counts(
            nulls
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
        )
        .lower_bounds(lower)
        .upper_bounds(upper)
        .split_offsets(Some(
            meta.row_groups()
                .iter()
                .filter_map(|rg| rg.file_offset())
                .collect(),
        ));
    b.build().map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_partitions_floor_like_iceberg() {
        // 2024-03-05T07:30:00Z
        let t = 1_709_623_800_000_000i64;
        assert_eq!(time_partition(TimeTransform::Hour, t), 474_895);
        assert_eq!(time_partition(TimeTransform::Day, t), 19_787);
        assert_eq!(
            time_partition(TimeTransform::Month, t),
            (2024 - 1970) * 12 + 2
        );
        assert_eq!(
            time_partition(TimeTransform::Hour, -1),
            -1,
            "before 1970 floors"
        );
        assert_eq!(time_partition(TimeTransform::Day, -1), -1);
        assert_eq!(time_partition(TimeTransform::Month, -1), -1);
        assert_eq!(time_partition(TimeTransform::Hour, 0), 0);
    }

    #[test]
    fn names_are_unique_per_topic_partition_offset_and_writer() {
        let a = data_file_name("events", 3, 42, "w1");
        assert_eq!(a, "events-3-00000000000000000042-w1.parquet");
        assert_ne!(a, data_file_name("events", 3, 42, "w2"));
        assert_ne!(a, data_file_name("events", 3, 43, "w1"));
        assert_ne!(a, data_file_name("events", 4, 42, "w1"));
        // Zero-padded: names sort by offset within a partition and writer.
        assert!(data_file_name("t", 0, 9, "w") < data_file_name("t", 0, 10, "w"));
    }
}
