//! Parquet files: the declared columns of each record (typed by the router), its raw JSON if
//! asked for, and its Kafka metadata, encoded with the `parquet` crate's Arrow writer.
//!
//! Rows are appended to Arrow builders, handed to the writer in chunks of [`CHUNK_ROWS`], and a
//! row group is closed once its encoded size reaches `row_group_bytes`; the bytes of closed row
//! groups can be taken as multipart parts while the file fills (the writer keeps counting
//! offsets, so the footer stays right). The footer is written when the file is finished.
//!
//! Invariant: the bytes produced for a file, concatenated, are exactly one Parquet file of its
//! rows in append order; [`ParquetFile::memory_bytes`] covers the builders, the open row group,
//! the column writers' compression contexts and the bytes not taken yet.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::config::{ParquetCodec, ParquetConfig};
use crate::model::Cell;
use crate::model::Record;

/// Rows buffered in the builders before they go to the writer.
pub const CHUNK_ROWS: usize = 4096;

/// Builder bytes after which the rows go to the writer even before [`CHUNK_ROWS`]. Kept under
/// half of the allocator's mmap threshold (`crate::malloc::MMAP_THRESHOLD`): a builder's buffer
/// doubles as it fills and is given away with each chunk, and one of 1 MiB or more would be
/// mapped afresh for every chunk (page faults on every byte written).
const CHUNK_BYTES: usize = 448 << 10;

/// Fixed memory charged per open Parquet file besides what it measures (builders' and column
/// writers' bookkeeping).
const FILE_OVERHEAD_BYTES: usize = 64 * 1024;

/// The page the compression contexts are measured with: most columns' pages are small (a
/// dictionary's indices, numbers), and a context grows with the largest page it compressed.
const PAGE_BYTES: usize = 16 << 10;

/// Memory each column writer holds for its codec once the file's rows reached the writer, which
/// the writer's own `memory_size` leaves out: with zstd, a compression context (sized by the
/// level and the page) and a decompression context, measured once per level with zstd's own
/// `ZSTD_sizeof_CCtx`/`ZSTD_sizeof_DCtx` after compressing a page. A heap profile of a drain
/// into few large files found these contexts at 167 KiB per column on average, unaccounted
/// (BENCHMARKS.md, "Memory"); level 1 measures 306 KiB here. Snappy keeps no context.
fn codec_bytes_per_column(codec: ParquetCodec) -> usize {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static MEASURED: OnceLock<Mutex<HashMap<i32, usize>>> = OnceLock::new();
    let ParquetCodec::Zstd(level) = codec else {
        return 0;
    };
    let cache = MEASURED.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    *cache.entry(level).or_insert_with(|| {
        use zstd::zstd_safe::{CCtx, CParameter, DCtx};
        let mut c = CCtx::create();
        let _ = c.set_parameter(CParameter::CompressionLevel(level));
        // A page of varied bytes, so the context grows as it does for real pages.
        let src: Vec<u8> = (0..PAGE_BYTES).map(|i| (i * 31 % 251) as u8).collect();
        let mut dst = Vec::with_capacity(zstd::zstd_safe::compress_bound(PAGE_BYTES));
        let _ = c.compress2(&mut dst, &src);
        c.sizeof() + DCtx::create().sizeof()
    })
}

/// One column's builder.
enum Builder {
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Micros(TimestampMicrosecondBuilder),
    Millis(TimestampMillisecondBuilder),
    I32(Int32Builder),
    Bin(BinaryBuilder),
}

impl Builder {
    /// An empty builder that allocates nothing until its first value. (Arrow's `new()` sets
    /// 1,024 rows aside, about 5–8 KiB a column: a heap profile of a drain into many folders
    /// at a 32 MiB budget held 25 MB of such space in open files, none of it charged.)
    fn new(t: &DataType) -> Self {
        match t {
            DataType::Int64 => Self::I64(Int64Builder::with_capacity(0)),
            DataType::Float64 => Self::F64(Float64Builder::with_capacity(0)),
            DataType::Boolean => Self::Bool(BooleanBuilder::with_capacity(0)),
            DataType::Int32 => Self::I32(Int32Builder::with_capacity(0)),
            DataType::Binary => Self::Bin(BinaryBuilder::with_capacity(0, 0)),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => Self::Micros(
                TimestampMicrosecondBuilder::with_capacity(0).with_timezone_opt(tz.clone()),
            ),
            DataType::Timestamp(_, tz) => Self::Millis(
                TimestampMillisecondBuilder::with_capacity(0).with_timezone_opt(tz.clone()),
            ),
            _ => Self::Str(StringBuilder::with_capacity(0, 0)),
        }
    }

    /// Appends a declared column's cell (the router made it fit the column's type).
    fn cell(&mut self, c: &Cell<'_>) {
        match (self, c) {
            (Self::Str(b), Cell::Str(s)) => b.append_value(s),
            (Self::I64(b), Cell::Int(i)) => b.append_value(*i),
            (Self::F64(b), Cell::Float(f)) => b.append_value(*f),
            (Self::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            (Self::Micros(b), Cell::Micros(t)) => b.append_value(*t),
            (b, _) => b.null(),
        }
    }

    fn null(&mut self) {
        match self {
            Self::Str(b) => b.append_null(),
            Self::I64(b) => b.append_null(),
            Self::F64(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
            Self::Micros(b) => b.append_null(),
            Self::Millis(b) => b.append_null(),
            Self::I32(b) => b.append_null(),
            Self::Bin(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Str(b) => Arc::new(b.finish()),
            Self::I64(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Micros(b) => Arc::new(b.finish()),
            Self::Millis(b) => Arc::new(b.finish()),
            Self::I32(b) => Arc::new(b.finish()),
            Self::Bin(b) => Arc::new(b.finish()),
        }
    }
}

/// `bytes` as text: as they are when UTF-8 (nearly always: lines are checked by the router,
/// headers are written as JSON), else with each invalid sequence replaced.
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The writer settings of a destination's files.
fn properties(cfg: &ParquetConfig) -> WriterProperties {
    let compression = match cfg.codec {
        ParquetCodec::None => Compression::UNCOMPRESSED,
        ParquetCodec::Snappy => Compression::SNAPPY,
        ParquetCodec::Zstd(level) => {
            // Validated to 1–22 at start-up.
            Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default())
        }
    };
    let mut b = WriterProperties::builder();
    if let Some(raw) = &cfg.raw_column {
        // Every record's JSON is distinct: a dictionary would only be built to be dropped, and
        // min/max statistics of whole documents help no query.
        let path = ColumnPath::from(raw.as_str());
        b = b
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    if cfg.exact_statistics {
        b = b.set_statistics_truncate_length(None);
    }
    b.set_compression(compression)
        // Row groups close by size (`row_group_bytes`), not by a row count.
        .set_max_row_group_row_count(None)
        .set_created_by(concat!("kafka-s3-sink ", env!("CARGO_PKG_VERSION")).to_string())
        .build()
}

/// One Parquet file being filled.
pub struct ParquetFile {
    cfg: Arc<ParquetConfig>,
    builders: Vec<Builder>,
    /// Rows in the builders.
    rows: usize,
    /// What the column writers' codecs hold once rows reached the writer (see
    /// [`codec_bytes_per_column`]; the writer creates its column writers with its first rows).
    codec_bytes: usize,
    /// Whether rows reached the writer.
    encoded: bool,
    /// Their approximate size.
    row_bytes: usize,
    writer: ArrowWriter<Vec<u8>>,
}

impl ParquetFile {
    /// A file of `cfg`'s schema.
    pub fn new(cfg: Arc<ParquetConfig>) -> Self {
        let builders: Vec<Builder> = cfg
            .schema
            .fields()
            .iter()
            .map(|f| Builder::new(f.data_type()))
            .collect();
        let writer = ArrowWriter::try_new(Vec::new(), cfg.schema.clone(), Some(properties(&cfg)))
            .expect("invariant: the schema is built from supported types");
        let codec_bytes = codec_bytes_per_column(cfg.codec) * builders.len();
        Self {
            cfg,
            builders,
            rows: 0,
            codec_bytes,
            encoded: false,
            row_bytes: 0,
            writer,
        }
    }

    /// Appends one record's row: its declared cells (a missing one as null, so every column
    /// keeps the row count), its line as the raw column, its Kafka metadata.
    pub fn append(&mut self, rec: &Record, line: &[u8], row: &[Cell<'_>]) {
        let mut bytes = 8 * self.builders.len();
        let declared = self.cfg.columns.len();
        let (cells, rest) = self.builders.split_at_mut(declared);
        for (i, b) in cells.iter_mut().enumerate() {
            match row.get(i) {
                Some(c) => {
                    if let Cell::Str(s) = c {
                        bytes += s.len();
                    }
                    b.cell(c);
                }
                None => b.null(),
            }
        }
        let meta = match (&self.cfg.raw_column, rest) {
            (Some(_), [Builder::Str(raw), meta @ ..]) => {
                // Lines are checked UTF-8 by the router; checked again here, with SIMD (std's
                // check was 3 % of a Parquet drain).
                raw.append_value(text(line));
                bytes += line.len();
                meta
            }
            (_, meta) => meta,
        };
        if let [Builder::Str(topic), Builder::I32(partition), Builder::I64(offset), ts, Builder::Bin(key), Builder::Str(headers)] =
            meta
        {
            topic.append_value(&rec.tp.topic);
            partition.append_value(rec.tp.partition);
            offset.append_value(rec.offset);
            match ts {
                Builder::Millis(b) => b.append_option(rec.timestamp_ms),
                // An Iceberg table's writer schema (microseconds: Iceberg has no millisecond
                // timestamp).
                Builder::Micros(b) => {
                    b.append_option(rec.timestamp_ms.map(|ms| ms.saturating_mul(1000)))
                }
                other => other.null(),
            }
            key.append_option(rec.key.as_deref());
            match rec.headers.as_deref() {
                Some(h) => headers.append_value(text(h)),
                None => headers.append_null(),
            }
            bytes += rec.tp.topic.len()
                + rec.key.as_ref().map_or(0, |k| k.len())
                + rec.headers.as_ref().map_or(0, |h| h.len());
        }
        self.rows += 1;
        self.row_bytes += bytes;
        if self.rows >= CHUNK_ROWS || self.row_bytes >= CHUNK_BYTES {
            self.encode_rows();
        }
    }

    /// Hands the buffered rows to the writer, closing the row group once it is large enough.
    fn encode_rows(&mut self) {
        if self.rows == 0 {
            return;
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(self.cfg.schema.clone(), columns)
            .expect("invariant: one array per field, each of the field's type and length");
        self.writer
            .write(&batch)
            .expect("invariant: the batch has the writer's schema; writing to a Vec cannot fail");
        self.encoded = true;
        self.rows = 0;
        self.row_bytes = 0;
        if self.writer.in_progress_size() >= self.cfg.row_group_bytes {
            self.writer
                .flush()
                .expect("invariant: writing to a Vec cannot fail");
            self.writer
                .sync()
                .expect("invariant: writing to a Vec cannot fail");
        }
    }

    /// Finished bytes not taken yet.
    pub fn out(&self) -> &[u8] {
        self.writer.inner()
    }

    /// Takes the finished bytes (closed row groups) for a multipart part.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.writer.inner_mut())
    }

    /// The file's size so far, estimated: bytes written plus the open row group's encoded
    /// estimate plus the buffered rows.
    pub fn estimated_bytes(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size() + self.row_bytes) as u64
    }

    /// Memory held: builders, the open row group, the codecs' contexts, bytes not taken yet.
    pub fn memory_bytes(&self) -> usize {
        FILE_OVERHEAD_BYTES
            + if self.encoded { self.codec_bytes } else { 0 }
            + self.row_bytes * 2
            + self.writer.memory_size()
            + self.writer.inner().capacity()
    }

    /// Writes the last rows and the footer; returns the bytes not taken yet and the footer.
    pub fn finish(mut self) -> (Vec<u8>, ParquetMetaData) {
        self.encode_rows();
        let footer = self
            .writer
            .finish()
            .expect("invariant: writing to a Vec cannot fail");
        (std::mem::take(self.writer.inner_mut()), footer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawColumn, RawParquet};
    use crate::model::TopicPartition;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMicrosecondType};
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn config(row_group_bytes: u64, compression: &str) -> Arc<ParquetConfig> {
        let col = |name: &str, path: &str, kind: &str| RawColumn {
            name: name.into(),
            path: Some(path.into()),
            kind: kind.into(),
            required: false,
        };
        let raw = RawParquet {
            row_group_bytes,
            compression: compression.into(),
            raw_column: Some("raw".into()),
            columns: crate::config::parquet::RawColumns::Declared(vec![
                col("n", "n", "int64"),
                col("name", "user.name", "string"),
                col("ts", "ts", "timestamp"),
            ]),
            ..RawParquet::default()
        };
        Arc::new(crate::config::parquet::validate("d", &raw, Some("_kafka")).unwrap())
    }

    fn record(offset: i64) -> Record {
        Record {
            tp: TopicPartition::new("events", 3),
            offset,
            timestamp_ms: Some(1_700_000_000_000 + offset),
            key: (offset % 2 == 0).then(|| bytes::Bytes::from(format!("k{offset}"))),
            value: None,
            headers: None,
        }
    }

    #[test]
    fn text_is_borrowed_when_utf8_and_replaced_where_not() {
        assert!(matches!(
            text("é{}".as_bytes()),
            std::borrow::Cow::Borrowed("é{}")
        ));
        assert_eq!(text(b"a\xffb"), "a\u{FFFD}b");
    }

    /// The bytes `f`'s builders hold, measured by finishing them into arrays (whose buffers
    /// keep the builders' capacity).
    fn builders_hold(f: &mut ParquetFile) -> usize {
        f.builders
            .iter_mut()
            .map(|b| b.finish().get_buffer_memory_size())
            .sum()
    }

    #[test]
    fn builders_hold_what_their_rows_are_charged_and_nothing_before() {
        let mut f = ParquetFile::new(config(1 << 20, "zstd"));
        let fresh = builders_hold(&mut f);
        // At most one 64-byte block per column (a string column's first offset), far below the
        // bookkeeping charged per file: a file with no rows costs next to nothing.
        assert!(fresh <= 64 * f.builders.len(), "{fresh}");
        assert!(fresh < FILE_OVERHEAD_BYTES / 8, "{fresh}");
        for rows in [1, 3, 100, 1000] {
            let mut f = ParquetFile::new(config(1 << 20, "zstd"));
            for i in 0..rows {
                f.append(
                    &record(i),
                    br#"{"n":1,"s":"some text of a line"}"#,
                    &[Cell::Int(1)],
                );
            }
            let charged = f.memory_bytes();
            let held = builders_hold(&mut f);
            assert!(
                held <= charged,
                "{rows} rows: {held} held, {charged} charged"
            );
        }
    }

    #[test]
    fn zstd_contexts_are_charged_per_column() {
        let fast = codec_bytes_per_column(ParquetCodec::Zstd(1));
        assert!(fast > 64 * 1024, "{fast}");
        assert!(codec_bytes_per_column(ParquetCodec::Zstd(19)) > fast);
        assert_eq!(codec_bytes_per_column(ParquetCodec::Snappy), 0);
        let mut zstd = ParquetFile::new(config(1 << 20, "zstd"));
        let mut snappy = ParquetFile::new(config(1 << 20, "snappy"));
        // Charged once rows reach the writer, which then creates its column writers.
        assert_eq!(zstd.memory_bytes(), snappy.memory_bytes());
        for f in [&mut zstd, &mut snappy] {
            f.append(&record(1), b"{}", &[Cell::Int(1)]);
            f.encode_rows();
        }
        assert!(zstd.memory_bytes() >= snappy.memory_bytes() + fast * zstd.builders.len());
    }

    #[test]
    fn parts_and_footer_form_one_file_of_every_row() {
        for codec in ["zstd", "snappy", "none"] {
            one_file_of_every_row(codec);
        }
    }

    #[test]
    fn a_short_row_gets_nulls_and_keeps_every_column_aligned() {
        let mut f = ParquetFile::new(config(64 * 1024, "zstd"));
        f.append(&record(7), br#"{"n":7}"#, &[Cell::Int(7)]);
        f.append(&record(8), br#"{}"#, &[]);
        let bytes = bytes::Bytes::from(f.finish().0);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        let batch = reader.build().unwrap().next().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let n = batch
            .column_by_name("n")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!((n.value(0), n.is_null(1)), (7, true));
        assert!(batch.column_by_name("name").unwrap().is_null(1));
        let offset = batch
            .column_by_name("_kafka_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!((offset.value(0), offset.value(1)), (7, 8));
    }

    fn one_file_of_every_row(codec: &str) {
        let mut f = ParquetFile::new(config(64 * 1024, codec));
        let mut bytes = Vec::new();
        let mut parts = 0;
        const N: i64 = 30_000;
        for i in 0..N {
            let name = format!("user-{}-{}", i, "x".repeat((i % 50) as usize));
            let line = format!(r#"{{"n":{i},"user":{{"name":"{name}"}}}}"#);
            let row = [
                Cell::Int(i),
                Cell::Str(name.into()),
                if i % 3 == 0 {
                    Cell::Null
                } else {
                    Cell::Micros(i * 1000)
                },
            ];
            f.append(&record(i), line.as_bytes(), &row);
            if f.out().len() > 100_000 {
                bytes.extend(f.take());
                parts += 1;
            }
            assert!(
                f.memory_bytes() < (8 << 20) + f.codec_bytes,
                "{}",
                f.memory_bytes()
            );
        }
        let estimate = f.estimated_bytes();
        bytes.extend(f.finish().0);
        assert!(
            parts >= 2,
            "row groups were taken as parts while the file filled"
        );
        assert!(
            estimate as usize >= bytes.len() / 2,
            "{estimate} vs {}",
            bytes.len()
        );

        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        assert!(reader.metadata().num_row_groups() >= 2);
        let used = reader.metadata().row_group(0).column(0).compression();
        let want = codec.replace("none", "uncompressed");
        assert!(
            format!("{used:?}").to_lowercase().starts_with(&want),
            "{used:?}"
        );
        let mut rows = 0i64;
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let n = batch
                .column_by_name("n")
                .unwrap()
                .as_primitive::<Int64Type>();
            let ts = batch
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            let offset = batch
                .column_by_name("_kafka_offset")
                .unwrap()
                .as_primitive::<Int64Type>();
            let key = batch
                .column_by_name("_kafka_key")
                .unwrap()
                .as_binary::<i32>();
            let raw = batch.column_by_name("raw").unwrap().as_string::<i32>();
            for r in 0..batch.num_rows() {
                let i = rows;
                assert_eq!(n.value(r), i);
                assert_eq!(offset.value(r), i);
                assert_eq!(ts.is_null(r), i % 3 == 0);
                assert_eq!(key.is_null(r), i % 2 != 0);
                assert!(raw.value(r).starts_with(&format!(r#"{{"n":{i},"#)));
                rows += 1;
            }
        }
        assert_eq!(rows, N);
    }
}
