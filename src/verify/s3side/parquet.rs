//! Parquet data files for `verify`: each row's Kafka topic, partition and offset (and raw line,
//! if the destination writes one) read from its columns.
//!
//! Invariants: the body is copied to an anonymous temp file first (a Parquet file is read from
//! its footer, so it needs random access), and only the columns that place a row are decoded,
//! one batch at a time: memory stays bounded whatever the file's size. A file over the limit,
//! without those columns, or with a row lacking a coordinate is an error (the object is
//! reported unreadable), never guessed at.

use std::io::{self, Read, Seek};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

/// Rows decoded at once.
const BATCH_ROWS: usize = 4096;

/// The columns that place a row: `<prefix>_topic`, `<prefix>_partition`, `<prefix>_offset`
/// (the destination's `kafka_metadata_field` is the prefix) and the raw column, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowColumns {
    topic: String,
    partition: String,
    offset: String,
    raw: Option<String>,
}

impl RowColumns {
    /// The columns of a destination whose metadata prefix is `prefix`.
    pub fn new(prefix: &str, raw: Option<String>) -> Self {
        Self {
            topic: format!("{prefix}_topic"),
            partition: format!("{prefix}_partition"),
            offset: format!("{prefix}_offset"),
            raw,
        }
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        [&self.topic, &self.partition, &self.offset]
            .into_iter()
            .chain(self.raw.as_ref())
            .map(String::as_str)
    }
}

/// One row's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The raw column's text (`None` without a raw column, or when it is null).
    pub raw: Option<&'a [u8]>,
}

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> io::Result<&'b dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| bad(format!("no column `{name}`")))
}

/// Calls `f` for every row of the Parquet file `r` holds, failing past `max_bytes` of file.
pub fn read_rows(
    mut r: impl Read,
    max_bytes: u64,
    cols: &RowColumns,
    mut f: impl FnMut(Row<'_>),
) -> io::Result<()> {
    let mut file = crate::verify::spill::anonymous_file(&std::env::temp_dir())?;
    let copied = io::copy(&mut (&mut r).take(max_bytes.saturating_add(1)), &mut file)?;
    if copied > max_bytes {
        return Err(bad(format!(
            "more than {max_bytes} bytes: not a file of this destination"
        )));
    }
    file.rewind()?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(format!("not a Parquet file: {e}")))?;
    let mut roots = Vec::new();
    for name in cols.names() {
        let i = builder.schema().index_of(name).map_err(|_| {
            bad(format!(
                "no column `{name}`: not a file of this destination, or written before its kafka_metadata_field was set"
            ))
        })?;
        roots.push(i);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let typed = |name: &str, want: &str| bad(format!("column `{name}` is not {want}"));
        let topic = column(&batch, &cols.topic)?
            .as_string_opt::<i32>()
            .ok_or_else(|| typed(&cols.topic, "a string"))?;
        let partition = column(&batch, &cols.partition)?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| typed(&cols.partition, "int32"))?;
        let offset = column(&batch, &cols.offset)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| typed(&cols.offset, "int64"))?;
        let raw = match &cols.raw {
            Some(name) => Some(
                column(&batch, name)?
                    .as_string_opt::<i32>()
                    .ok_or_else(|| typed(name, "a string"))?,
            ),
            None => None,
        };
        for i in 0..batch.num_rows() {
            if topic.is_null(i) || partition.is_null(i) || offset.is_null(i) {
                return Err(bad(format!(
                    "a row without its topic, partition or offset ({}, {}, {})",
                    cols.topic, cols.partition, cols.offset
                )));
            }
            f(Row {
                topic: topic.value(i),
                partition: partition.value(i),
                offset: offset.value(i),
                raw: raw.filter(|r| !r.is_null(i)).map(|r| r.value(i).as_bytes()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{Int32Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;

    fn file(fields: Vec<(&str, Arc<dyn Array>)>) -> Vec<u8> {
        let schema = Arc::new(Schema::new(
            fields
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(schema.clone(), fields.into_iter().map(|f| f.1).collect())
            .unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.into_inner().unwrap()
    }

    /// (topic, partition, offset, raw) of each row.
    type Rows = Vec<(String, i32, i64, Option<String>)>;

    fn rows(data: &[u8], cols: &RowColumns) -> io::Result<Rows> {
        let mut out = Vec::new();
        read_rows(data, 1 << 20, cols, |r| {
            out.push((
                r.topic.to_string(),
                r.partition,
                r.offset,
                r.raw.map(|b| String::from_utf8(b.to_vec()).unwrap()),
            ))
        })?;
        Ok(out)
    }

    #[test]
    fn rows_are_placed_by_their_metadata_columns() {
        let data = file(vec![
            ("n", Arc::new(Int64Array::from(vec![1, 2]))),
            (
                "raw",
                Arc::new(StringArray::from(vec!["{\"n\":1}", "{\"n\":2}"])),
            ),
            ("_k_topic", Arc::new(StringArray::from(vec!["t", "u"]))),
            ("_k_partition", Arc::new(Int32Array::from(vec![3, 0]))),
            ("_k_offset", Arc::new(Int64Array::from(vec![40, 7]))),
        ]);
        let with_raw = RowColumns::new("_k", Some("raw".into()));
        assert_eq!(
            rows(&data, &with_raw).unwrap(),
            vec![
                ("t".into(), 3, 40, Some("{\"n\":1}".into())),
                ("u".into(), 0, 7, Some("{\"n\":2}".into())),
            ]
        );
        let bare = RowColumns::new("_k", None);
        assert_eq!(rows(&data, &bare).unwrap()[1], ("u".into(), 0, 7, None));

        // Without the columns, or with a null coordinate, or too large: an error.
        let e = rows(&data, &RowColumns::new("_kafka", None)).unwrap_err();
        assert!(e.to_string().contains("no column `_kafka_topic`"), "{e}");
        let holes = file(vec![
            (
                "_k_topic",
                Arc::new(StringArray::from(vec![Some("t"), None])),
            ),
            ("_k_partition", Arc::new(Int32Array::from(vec![0, 0]))),
            ("_k_offset", Arc::new(Int64Array::from(vec![1, 2]))),
        ]);
        assert!(rows(&holes, &bare).is_err());
        assert!(read_rows(&data[..], 100, &bare, |_| {}).is_err());
        assert!(rows(b"{\"not\":\"parquet\"}\n", &bare).is_err());
    }

    #[test]
    fn a_wrong_column_type_is_an_error() {
        let data = file(vec![
            ("_k_topic", Arc::new(StringArray::from(vec!["t"]))),
            ("_k_partition", Arc::new(Int64Array::from(vec![0]))),
            ("_k_offset", Arc::new(Int64Array::from(vec![1]))),
        ]);
        let e = rows(&data, &RowColumns::new("_k", None)).unwrap_err();
        assert!(e.to_string().contains("is not int32"), "{e}");
    }
}
