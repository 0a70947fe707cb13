//! Opening the tables of a configuration at start-up: for every Iceberg destination, its
//! catalog over the destination's own S3 client, the table (created when missing and allowed),
//! and the Parquet writer settings its data files need (the table's field ids, exact
//! statistics), so the workers write files the table can register.
//!
//! Invariant: a destination with `[destinations.iceberg]` has a [`TableTarget`] in the answer,
//! and its Parquet settings in the returned configuration carry the table's current field ids;
//! a table whose location is outside the destination's bucket is refused before any record is
//! read.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use iceberg::TableIdent;

use super::catalog::connect;
use super::commit::ensure_table;
use super::kind::TableTarget;
use super::schema::{partition_spec, table_schema, writer_schema, zoneless};
use super::storage::{BucketSinks, OtherBuckets, SinkStorage, SinkStorageFactory};
use super::TableError;
use crate::config::{Column, ColumnType, Config, DestinationConfig, ParquetConfig};
use crate::sink::{ObjectMeta, ObjectSink};

/// Another bucket's store, made like the destination's (its endpoint, region, credentials,
/// signing and request timeout).
struct SameAccount {
    destination: DestinationConfig,
    timeout: std::time::Duration,
}

#[async_trait::async_trait]
impl BucketSinks for SameAccount {
    async fn sink(&self, bucket: &str) -> Arc<dyn ObjectSink> {
        let d = DestinationConfig {
            bucket: bucket.to_string(),
            ..self.destination.clone()
        };
        Arc::new(crate::sink::s3::S3Sink::connect(&d, self.timeout).await)
    }
}

/// A destination's catalog, table name and the stores of other buckets.
struct Connected {
    catalog: Arc<dyn iceberg::Catalog>,
    ident: TableIdent,
    others: Arc<OtherBuckets>,
}

/// Connects the catalog of `d` (whose `[destinations.iceberg]` is `cfg`), its table files
/// written through `sink` (the destination's bucket) with `meta`, other buckets reached like
/// the destination's.
async fn connect_table(
    d: &DestinationConfig,
    cfg: &crate::config::iceberg::IcebergConfig,
    sink: Arc<dyn ObjectSink>,
    meta: ObjectMeta,
    timeout: std::time::Duration,
) -> Result<Connected, TableError> {
    let others = Arc::new(OtherBuckets::new(SameAccount {
        destination: d.clone(),
        timeout,
    }));
    let storage = SinkStorage::new(sink, meta).with_other_buckets(others.clone());
    let catalog = connect(
        &d.name,
        &cfg.catalog,
        Arc::new(SinkStorageFactory::new(storage)),
        &d.region,
    )
    .await?;
    let namespace = iceberg::NamespaceIdent::from_vec(cfg.namespace.clone()).map_err(|e| {
        TableError::Setup {
            table: cfg.table.clone(),
            message: e.to_string(),
        }
    })?;
    Ok(Connected {
        catalog,
        ident: TableIdent::new(namespace, cfg.table.clone()),
        others,
    })
}

/// The bucket of `d`'s table and the keys there of the data files of its current snapshot
/// (none before the first commit); the table is loaded, never created. For `verify`.
pub async fn current_data_keys(
    d: &DestinationConfig,
    sink: Arc<dyn ObjectSink>,
    meta: ObjectMeta,
    timeout: std::time::Duration,
) -> Result<(String, Vec<String>), TableError> {
    let cfg = d.iceberg.as_ref().ok_or_else(|| TableError::Setup {
        table: d.name.clone(),
        message: "the destination is not an Iceberg table".into(),
    })?;
    let name = format!("{}.{}", cfg.namespace.join("."), cfg.table);
    let err = |source| TableError::Iceberg {
        table: name.clone(),
        source: Box::new(source),
    };
    let c = connect_table(d, cfg, sink, meta, timeout).await?;
    let table = c.catalog.load_table(&c.ident).await.map_err(&err)?;
    let (bucket, _) =
        TableTarget::data_location(table.metadata().location()).map_err(|m| TableError::Setup {
            table: name.clone(),
            message: m,
        })?;
    if table.metadata().current_snapshot().is_none() {
        return Ok((bucket, Vec::new()));
    }
    let tasks: Vec<_> = table
        .scan()
        .build()
        .map_err(&err)?
        .plan_files()
        .await
        .map_err(&err)?
        .try_collect()
        .await
        .map_err(&err)?;
    let prefix = format!("s3://{bucket}/");
    let keys = tasks
        .iter()
        .map(|t| {
            t.data_file_path
                .strip_prefix(&prefix)
                .map(str::to_string)
                .ok_or_else(|| TableError::Setup {
                    table: name.clone(),
                    message: format!(
                        "data file {} is not in the table's bucket {bucket}",
                        t.data_file_path
                    ),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((bucket, keys))
}

/// The table of each Iceberg destination, by destination name.
pub type Tables = HashMap<String, Arc<TableTarget>>;

/// Opens every Iceberg destination's table of `config`. `sinks` and `metas` are each
/// destination's S3 client and object headers, in order; the table's own files are written
/// through the client with the headers' encryption and storage class. Returns the
/// configuration the workers run with (each table's writer schema in place) and the tables.
pub async fn open_tables(
    config: &Config,
    sinks: &[Arc<dyn ObjectSink>],
    metas: &[ObjectMeta],
) -> Result<(Config, Tables), TableError> {
    let mut config = config.clone();
    let mut tables = Tables::new();
    let group = config.kafka.group_id.clone();
    let request_timeout = config.upload.request_timeout;
    for (i, d) in config.destinations.iter_mut().enumerate() {
        let Some(cfg) = d.iceberg.clone() else {
            continue;
        };
        let name = format!("{}.{}", cfg.namespace.join("."), cfg.table);
        let setup = |message: String| TableError::Setup {
            table: name.clone(),
            message,
        };
        let parquet = d
            .parquet
            .clone()
            .ok_or_else(|| setup("the destination has no Parquet columns".into()))?;
        // The table's metadata, manifests and manifest lists: the destination's encryption
        // and storage class, not its data files' content type.
        let mut meta = metas[i].clone();
        meta.content_type = "application/octet-stream".into();
        meta.content_encoding = None;
        let Connected {
            catalog,
            ident,
            others,
        } = connect_table(d, &cfg, sinks[i].clone(), meta, request_timeout).await?;
        let mut schema = table_schema(&parquet).map_err(|e| setup(e.to_string()))?;
        if matches!(
            cfg.catalog,
            crate::config::iceberg::CatalogConfig::Glue { .. }
        ) {
            schema = zoneless(schema).map_err(|e| setup(e.to_string()))?;
        }
        let spec = partition_spec(&schema, &cfg.partition).map_err(|e| setup(e.to_string()))?;
        let table = ensure_table(&*catalog, &ident, schema, spec, cfg.create_if_missing).await?;
        // A `from_schema` table's columns so far are where its files start.
        let parquet = if parquet.from_schema {
            Arc::new(
                parquet.with_columns(schema_columns(&parquet, table.metadata().current_schema())),
            )
        } else {
            parquet
        };
        let ws = writer_schema(&parquet, table.metadata().current_schema())
            .map_err(|e| setup(e.to_string()))?;
        d.parquet = Some(Arc::new(ParquetConfig {
            schema: ws,
            exact_statistics: true,
            ..(*parquet).clone()
        }));
        let (bucket, data_prefix) =
            TableTarget::data_location(table.metadata().location()).map_err(setup)?;
        let data_sink = if bucket == d.bucket {
            None
        } else {
            if d.prefix.len() + d.error_prefix.len() == 0 {
                return Err(setup(
                    "its location is in another bucket and the destination's error folder is the bucket's root; set error_prefix".into(),
                ));
            }
            Some(others.get(&bucket).await)
        };
        tables.insert(
            d.name.clone(),
            Arc::new(TableTarget {
                destination: d.name.clone(),
                catalog,
                ident,
                group: group.clone(),
                bucket,
                data_prefix,
                data_sink,
                partition: cfg.partition.clone(),
                interval: cfg.commit_interval,
                runtime: tokio::runtime::Handle::current(),
            }),
        );
    }
    Ok((config, tables))
}

/// The columns a `from_schema` table already has besides the connector's own (raw, metadata),
/// as the connector writes them: optional, read from the top-level key of their name, of the
/// column type of their Iceberg type (a column of a type the connector does not write is left
/// to other writers).
fn schema_columns(parquet: &ParquetConfig, table: &iceberg::spec::Schema) -> Vec<Column> {
    use iceberg::spec::{PrimitiveType as P, Type};
    table
        .as_struct()
        .fields()
        .iter()
        .filter(|f| !parquet.fixed_names().any(|n| n == f.name))
        .filter_map(|f| {
            let kind = match &*f.field_type {
                Type::Primitive(P::String) => ColumnType::String,
                Type::Primitive(P::Long) => ColumnType::Int64,
                Type::Primitive(P::Double) => ColumnType::Double,
                Type::Primitive(P::Boolean) => ColumnType::Bool,
                Type::Primitive(P::Timestamptz | P::Timestamp) => ColumnType::Timestamp,
                _ => return None,
            };
            Some(Column {
                name: f.name.clone(),
                path: vec![f.name.clone()],
                kind,
                required: false,
                decoded: true,
            })
        })
        .collect()
}
