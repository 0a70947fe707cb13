//! The commit protocol against a real catalog: iceberg-catalog-sql on sqlite in a temp dir, the
//! warehouse either on the local file system (the crate's `LocalFsStorageFactory`) or in a
//! bucket of the in-process S3 server reached through the connector's own S3 sink
//! ([`super::storage::SinkStorage`]); data files written by the connector's own Parquet writer
//! and read back with the iceberg crate's scan.
//!
//! Each test is one crash window or race of docs/iceberg.md; every one ends by checking that
//! each offset is in the table exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::RecordBatch;
use futures::TryStreamExt;
use iceberg::io::{LocalFsStorageFactory, StorageFactory};
use iceberg::spec::{Literal, Struct};
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, TableIdent};
use iceberg_catalog_sql::{SqlCatalog, SqlCatalogBuilder};
use parquet::file::metadata::ParquetMetaDataReader;

use super::commit::{commit, ensure_table, CommitOutcome, CommitRequest};
use super::datafile::{data_file, data_file_name, time_partition, PartitionValue, WrittenFile};
use super::guard::PartitionRange;
use super::offsets::{committed_offsets, expiry_horizon};
use super::schema::{partition_spec, table_schema, writer_schema};
use crate::batch::parquet::ParquetFile;
use crate::config::iceberg::{partition_sources, CatalogConfig, IcebergConfig, TimeTransform};
use crate::config::{ParquetConfig, RawColumn, RawParquet};
use crate::model::{Record, TopicPartition};
use crate::router::Cell;
use crate::s3server::{LocalS3, LocalS3Options};
use crate::sink::s3::S3Sink;
use crate::sink::{ObjectMeta, ObjectSink, WriteCondition};

use super::storage::{SinkStorage, SinkStorageFactory};

pub(super) const GROUP: &str = "sink";
pub(super) const TOPIC: &str = "events";
/// 2024-03-05T07:00:00Z in microseconds.
pub(super) const T0: i64 = 1_709_622_000_000_000;

pub(super) struct Fixture {
    uri: String,
    warehouse: String,
    pub(super) ident: TableIdent,
    /// The destination's Parquet config with the table's writer schema.
    parquet: Arc<ParquetConfig>,
    /// The table's storage.
    factory: Arc<dyn StorageFactory>,
    /// The bucket's sink, when the warehouse is in S3 (data files are uploaded through it).
    sink: Option<Arc<dyn ObjectSink>>,
    _server: Option<LocalS3>,
    _dir: tempfile::TempDir,
}

pub(super) const BUCKET: &str = "bkt";

pub(super) async fn catalog(
    uri: &str,
    warehouse: &str,
    factory: Arc<dyn StorageFactory>,
) -> SqlCatalog {
    SqlCatalogBuilder::default()
        .with_storage_factory(factory)
        .load(
            "test",
            HashMap::from([
                ("uri".to_string(), uri.to_string()),
                ("warehouse".to_string(), warehouse.to_string()),
            ]),
        )
        .await
        .unwrap()
}

pub(super) fn destination_parquet() -> ParquetConfig {
    let col = |name: &str, path: &str, kind: &str, required: bool| RawColumn {
        name: name.into(),
        path: Some(path.into()),
        kind: kind.into(),
        required,
    };
    let raw = RawParquet {
        columns: crate::config::parquet::RawColumns::Declared(vec![
            col("event", "type", "string", true),
            col("ts", "timestamp", "timestamp", true),
            col("n", "n", "int64", false),
            col("ratio", "ratio", "double", false),
        ]),
        ..RawParquet::default()
    };
    crate::config::parquet::validate("d", &raw, Some("_kafka")).unwrap()
}

/// The sink of [`BUCKET`] on `server`, as the uploader builds it from a destination.
async fn s3_sink(server: &LocalS3) -> Arc<dyn ObjectSink> {
    let toml = format!(
        "[kafka]\nbrokers = \"x:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\n\
         [[destinations]]\nname = \"d\"\nbucket = \"{BUCKET}\"\nendpoint = \"{}\"\n\
         force_path_style = true\n\
         [destinations.credentials]\naccess_key_id = \"local-access-key\"\n\
         secret_access_key = \"local-secret-key\"\n",
        server.endpoint(),
    );
    let d = crate::config::parse(&toml, &|_| None)
        .expect("valid test config")
        .destinations
        .remove(0);
    Arc::new(S3Sink::connect(&d, std::time::Duration::from_secs(30)).await)
}

impl Fixture {
    /// A table partitioned by `hour(ts)` and `identity(event)`, its warehouse on the local file
    /// system.
    pub(super) async fn new() -> (Self, SqlCatalog) {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = format!("{}/warehouse", dir.path().display());
        std::fs::create_dir_all(&warehouse).unwrap();
        Self::with_storage(dir, warehouse, Arc::new(LocalFsStorageFactory), None, None).await
    }

    /// The same table with its warehouse in a bucket of the in-process S3 server.
    pub(super) async fn on_s3() -> (Self, SqlCatalog) {
        let dir = tempfile::tempdir().unwrap();
        let server = LocalS3::start(LocalS3Options::new(dir.path().join("s3")))
            .await
            .unwrap();
        server.create_bucket_dir(BUCKET).unwrap();
        let sink = s3_sink(&server).await;
        let storage = SinkStorage::new(sink.clone(), ObjectMeta::default());
        let factory = Arc::new(SinkStorageFactory::new(storage));
        let warehouse = format!("s3://{BUCKET}/warehouse");
        Self::with_storage(dir, warehouse, factory, Some(sink), Some(server)).await
    }

    async fn with_storage(
        dir: tempfile::TempDir,
        warehouse: String,
        factory: Arc<dyn StorageFactory>,
        sink: Option<Arc<dyn ObjectSink>>,
        server: Option<LocalS3>,
    ) -> (Self, SqlCatalog) {
        let uri = format!("sqlite://{}/catalog.db?mode=rwc", dir.path().display());
        let cat = catalog(&uri, &warehouse, factory.clone()).await;
        let ident = TableIdent::from_strs(["analytics", "events"]).unwrap();
        let p = destination_parquet();
        let cfg = IcebergConfig {
            catalog: CatalogConfig::Sql {
                uri: serde_json::from_str(&format!("{uri:?}")).unwrap(),
                warehouse: warehouse.clone(),
            },
            namespace: vec!["analytics".into()],
            table: "events".into(),
            create_if_missing: true,
            commit_interval: std::time::Duration::from_secs(60),
            partition_time: Some(TimeTransform::Hour),
            partition_fields: vec![vec!["type".into()]],
            partition: Vec::new(),
        };
        let schema = table_schema(&p).unwrap();
        let sources = partition_sources("d", &cfg, &p, Some("ts")).unwrap();
        let spec = partition_spec(&schema, &sources).unwrap();
        let table = ensure_table(&cat, &ident, schema, spec, true)
            .await
            .unwrap();
        let ws = writer_schema(&p, table.metadata().current_schema()).unwrap();
        let parquet = Arc::new(ParquetConfig {
            schema: ws,
            exact_statistics: true,
            ..p
        });
        let f = Self {
            uri,
            warehouse,
            ident,
            parquet,
            factory,
            sink,
            _server: server,
            _dir: dir,
        };
        (f, cat)
    }

    pub(super) async fn second_catalog(&self) -> SqlCatalog {
        catalog(&self.uri, &self.warehouse, self.factory.clone()).await
    }

    /// Writes records `offsets` of partition `p` (event `kind`, all in hour 0 after [`T0`])
    /// as one data file of writer `writer`, with the connector's Parquet writer.
    pub(super) async fn write(
        &self,
        table: &Table,
        p: i32,
        offsets: std::ops::Range<i64>,
        writer: &str,
    ) -> WrittenFile {
        let kind = if p % 2 == 0 { "click" } else { "view" };
        let mut f = ParquetFile::new(self.parquet.clone());
        for o in offsets.clone() {
            let rec = Record {
                tp: TopicPartition::new(TOPIC, p),
                offset: o,
                timestamp_ms: Some(T0 / 1000 + o),
                key: None,
                value: None,
                headers: None,
            };
            let line = format!(r#"{{"type":"{kind}","n":{o}}}"#);
            let row = [
                Cell::Str(kind.into()),
                Cell::Micros(T0 + o * 1000),
                Cell::Int(o),
                Cell::Null,
            ];
            f.append(&rec, line.as_bytes(), &row);
        }
        let bytes = bytes::Bytes::from(f.finish().0);
        let name = data_file_name(TOPIC, p, offsets.start, writer);
        let location = format!("{}/data/{name}", table.metadata().location());
        match &self.sink {
            Some(sink) => {
                let key = location.strip_prefix(&format!("s3://{BUCKET}/")).unwrap();
                sink.put(
                    key,
                    bytes.clone(),
                    &ObjectMeta::default(),
                    &WriteCondition::IfAbsent,
                )
                .await
                .unwrap();
            }
            None => {
                std::fs::create_dir_all(format!("{}/data", table.metadata().location())).unwrap();
                std::fs::write(&location, &bytes).unwrap();
            }
        }
        let footer = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .unwrap();
        WrittenFile {
            location,
            size_bytes: bytes.len() as u64,
            footer: Arc::new(footer),
            partition: vec![
                PartitionValue::Time(time_partition(TimeTransform::Hour, T0)),
                PartitionValue::Str(kind.into()),
            ],
        }
    }

    pub(super) fn request(
        &self,
        files: Vec<WrittenFile>,
        ranges: &[(i32, i64, i64)],
    ) -> CommitRequest {
        CommitRequest {
            group: GROUP.into(),
            commit_id: uuid::Uuid::new_v4().to_string(),
            ranges: ranges
                .iter()
                .map(|&(p, start, next)| PartitionRange {
                    tp: TopicPartition::new(TOPIC, p),
                    start,
                    next,
                })
                .collect(),
            files,
        }
    }

    /// Uploads and commits records `start..next` of partition `p` as writer `writer`.
    pub(super) async fn commit_range(
        &self,
        cat: &dyn Catalog,
        p: i32,
        start: i64,
        next: i64,
        writer: &str,
    ) -> CommitOutcome {
        let table = cat.load_table(&self.ident).await.unwrap();
        let file = self.write(&table, p, start..next, writer).await;
        commit(
            cat,
            &self.ident,
            &self.request(vec![file], &[(p, start, next)]),
        )
        .await
        .unwrap()
    }

    /// (partition, offset) → times present, read through the table's current snapshot.
    pub(super) async fn scan(&self, cat: &dyn Catalog) -> BTreeMap<(i32, i64), usize> {
        let table = cat.load_table(&self.ident).await.unwrap();
        let batches: Vec<RecordBatch> = table
            .scan()
            .select_all()
            .build()
            .unwrap()
            .to_arrow()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let mut seen = BTreeMap::new();
        for b in batches {
            let part = b
                .column_by_name("_kafka_partition")
                .unwrap()
                .as_primitive::<Int32Type>();
            let off = b
                .column_by_name("_kafka_offset")
                .unwrap()
                .as_primitive::<Int64Type>();
            let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                assert_eq!(n.value(r), off.value(r), "columns map by field id");
                *seen.entry((part.value(r), off.value(r))).or_default() += 1;
            }
        }
        seen
    }

    pub(super) async fn offsets(
        &self,
        cat: &dyn Catalog,
        partitions: &[i32],
    ) -> BTreeMap<i32, i64> {
        let table = cat.load_table(&self.ident).await.unwrap();
        let tps: Vec<TopicPartition> = partitions
            .iter()
            .map(|&p| TopicPartition::new(TOPIC, p))
            .collect();
        committed_offsets(table.metadata(), GROUP, &tps)
            .into_iter()
            .map(|(tp, c)| (tp.partition, c.next))
            .collect()
    }
}

/// Every offset of `want` (partition → next) present exactly once, and nothing else.
pub(super) fn assert_exactly_once(seen: &BTreeMap<(i32, i64), usize>, want: &[(i32, i64)]) {
    let expected: BTreeMap<(i32, i64), usize> = want
        .iter()
        .flat_map(|&(p, next)| (0..next).map(move |o| ((p, o), 1)))
        .collect();
    let dups: Vec<_> = seen.iter().filter(|(_, &c)| c > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicated: {dups:?}");
    assert_eq!(seen.len(), expected.len(), "missing or extra rows");
    assert_eq!(seen, &expected);
}

pub(super) fn committed(o: &CommitOutcome) -> bool {
    matches!(o, CommitOutcome::Committed { .. })
}

#[tokio::test]
async fn a_commit_is_read_back_with_its_offsets_and_statistics() {
    let (f, cat) = Fixture::new().await;
    read_back(f, cat).await;
}

/// The same through S3: metadata, manifests and data files in a bucket of the in-process S3
/// server, through the connector's S3 sink.
#[tokio::test]
async fn a_commit_in_s3_is_read_back_with_its_offsets_and_statistics() {
    let (f, cat) = Fixture::on_s3().await;
    let location = cat
        .load_table(&f.ident)
        .await
        .unwrap()
        .metadata()
        .location()
        .to_string();
    assert!(location.starts_with("s3://bkt/warehouse/"), "{location}");
    read_back(f, cat).await;
}

async fn read_back(f: Fixture, cat: SqlCatalog) {
    assert!(committed(&f.commit_range(&cat, 0, 0, 100, "w1").await));
    assert!(committed(&f.commit_range(&cat, 1, 0, 50, "w1").await));
    assert!(committed(&f.commit_range(&cat, 0, 100, 250, "w1").await));
    assert_exactly_once(&f.scan(&cat).await, &[(0, 250), (1, 50)]);
    assert_eq!(
        f.offsets(&cat, &[0, 1, 2]).await,
        BTreeMap::from([(0, 250), (1, 50)])
    );

    // Each snapshot carries only its own partitions; the history holds the rest.
    let table = cat.load_table(&f.ident).await.unwrap();
    let current = table.metadata().current_snapshot().unwrap();
    let props = &current.summary().additional_properties;
    assert_eq!(props["kafka-s3-sink.offset.sink.events.0"], "250");
    assert!(!props.contains_key("kafka-s3-sink.offset.sink.events.1"));
    // Expiry must keep the snapshot of partition 1's offset (the second one) and newer.
    let second = table
        .metadata()
        .snapshot_by_id(current.parent_snapshot_id().unwrap())
        .unwrap();
    assert_eq!(
        expiry_horizon(table.metadata(), GROUP).map(|h| h.0),
        Some(second.snapshot_id())
    );
    assert_eq!(expiry_horizon(table.metadata(), "other"), None);
}

#[tokio::test]
async fn a_data_file_carries_partition_values_and_footer_statistics() {
    let (f, cat) = Fixture::new().await;
    let table = cat.load_table(&f.ident).await.unwrap();
    let written = f.write(&table, 2, 10..20, "w1").await;
    let schema = table.metadata().current_schema();
    let df = data_file(
        schema,
        table.metadata().default_partition_spec_id(),
        &written,
    )
    .unwrap();
    assert_eq!(df.record_count(), 10);
    assert_eq!(df.file_size_in_bytes(), written.size_bytes);
    let id = |name: &str| schema.field_by_name(name).unwrap().id;
    let offset = id("_kafka_offset");
    assert_eq!(df.lower_bounds()[&offset], iceberg::spec::Datum::long(10));
    assert_eq!(df.upper_bounds()[&offset], iceberg::spec::Datum::long(19));
    assert_eq!(
        df.lower_bounds()[&id("ts")],
        iceberg::spec::Datum::timestamptz_micros(T0 + 10_000)
    );
    assert_eq!(
        df.lower_bounds()[&id("event")],
        iceberg::spec::Datum::string("click")
    );
    assert_eq!(df.null_value_counts()[&id("ratio")], 10);
    assert!(
        !df.lower_bounds().contains_key(&id("ratio")),
        "no bound of an all-null column"
    );
    assert_eq!(df.value_counts()[&offset], 10);
    let want: Struct = [
        Some(Literal::int(time_partition(TimeTransform::Hour, T0))),
        Some(Literal::string("click")),
    ]
    .into_iter()
    .collect();
    assert_eq!(df.partition(), &want);
}

/// Crash after the upload, before the table commit: the files are orphans, the table and Kafka
/// still say 100, the replay (a new writer id, so new names) commits them once.
#[tokio::test]
async fn a_crash_between_upload_and_table_commit_loses_and_duplicates_nothing() {
    let (f, cat) = Fixture::new().await;
    assert!(committed(&f.commit_range(&cat, 0, 0, 100, "w1").await));
    let table = cat.load_table(&f.ident).await.unwrap();
    let orphan = f.write(&table, 0, 100..180, "w1").await;
    // ...crash. The restarted worker starts from the table's offset.
    assert_eq!(f.offsets(&cat, &[0]).await[&0], 100);
    assert!(committed(&f.commit_range(&cat, 0, 100, 180, "w2").await));
    assert_exactly_once(&f.scan(&cat).await, &[(0, 180)]);
    assert!(
        std::path::Path::new(&orphan.location).exists(),
        "left as an orphan for the table's maintenance"
    );
}

/// Crash after the table commit, before the Kafka commit: the table's offset (ahead of Kafka's)
/// is where the worker resumes; a retry of the same commit is recognised, not re-added.
#[tokio::test]
async fn a_crash_between_table_commit_and_kafka_commit_loses_and_duplicates_nothing() {
    let (f, cat) = Fixture::new().await;
    let table = cat.load_table(&f.ident).await.unwrap();
    let req = f.request(vec![f.write(&table, 0, 0..100, "w1").await], &[(0, 0, 100)]);
    let first = commit(&cat, &f.ident, &req).await.unwrap();
    let CommitOutcome::Committed { snapshot_id, .. } = first else {
        panic!("{first:?}");
    };
    // The same commit again (its answer was lost, or the worker retried): not re-added.
    let again = commit(&cat, &f.ident, &req).await.unwrap();
    assert_eq!(again, CommitOutcome::AlreadyCommitted { snapshot_id });
    // Kafka still says 0; the restarted worker takes the larger of Kafka's and the table's.
    let kafka = 0;
    let resume = f.offsets(&cat, &[0]).await[&0].max(kafka);
    assert_eq!(resume, 100);
    assert!(committed(&f.commit_range(&cat, 0, resume, 150, "w2").await));
    assert_exactly_once(&f.scan(&cat).await, &[(0, 150)]);
}

#[tokio::test]
async fn a_missing_table_is_created_once_or_refused() {
    let (f, cat) = Fixture::new().await;
    let schema = table_schema(&destination_parquet()).unwrap();
    let spec = iceberg::spec::UnboundPartitionSpec::builder().build();
    let other = TableIdent::from_strs(["analytics", "other"]).unwrap();
    let e = ensure_table(&cat, &other, schema.clone(), spec.clone(), false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("create_if_missing"), "{e}");
    let t1 = ensure_table(&cat, &other, schema.clone(), spec.clone(), true)
        .await
        .unwrap();
    let t2 = ensure_table(&cat, &other, schema, spec, true)
        .await
        .unwrap();
    assert_eq!(t1.metadata().uuid(), t2.metadata().uuid());
    // The table's field ids are the derived ones, so written files carry the table's ids.
    let table = cat.load_table(&f.ident).await.unwrap();
    let ids: Vec<i32> = table
        .metadata()
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
}
