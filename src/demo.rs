//! `demo`: the embedded default. Starts librdkafka's mock cluster and an in-process S3 server
//! over a local folder, fills a topic with generated analytics events (spread over three days,
//! some late, a few malformed), runs the real pipeline until every record is committed, and
//! prints a summary and the tree of keys.
//!
//! Nothing outside this process is needed; the objects stay under `--dir` for browsing.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config;
use crate::eventgen::{EventGen, GenOptions};
use crate::metrics::Metrics;
use crate::s3server::{LocalS3, LocalS3Options};

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Folder of the local S3 server.
    pub dir: PathBuf,
    /// Events to produce.
    pub records: u64,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Print every key.
    pub all_keys: bool,
    /// `batch.compression` of the demo destination: gzip, zstd or none.
    pub compression: String,
    /// `routing.folder_template` of the demo destination.
    pub folder_template: String,
    /// `batch.format`: ndjson, or parquet with the columns of `examples/parquet.toml`.
    pub format: String,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Kafka mock cluster or producer.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Local S3 server.
    #[error("local S3 server: {0}")]
    S3(#[from] crate::s3server::LocalS3Error),
    /// Built-in config.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Pipeline.
    #[error(transparent)]
    Run(#[from] app::RunError),
    /// Did not finish in time.
    #[error("the pipeline did not commit every record within {0:?}")]
    Timeout(Duration),
    /// Reading the output folder.
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

const TOPIC: &str = "events";
const BUCKET: &str = "demo-bucket";
/// `demo --folder-template`'s default (the only one `--format iceberg` takes).
const DEFAULT_FOLDERS: &str = "%Y/%m/%d/%H/";
/// The demo's events: the repository's generator (three days from 2026-11-01, about 6 % late),
/// and about 0.5 % of them replaced by malformed records (not JSON, no `timestamp`, an
/// unreadable `timestamp`), chosen by a seeded roll so the demo is the same every time. Yields
/// (key, value, Kafka timestamp in ms).
pub fn demo_events(records: u64) -> impl Iterator<Item = (String, Vec<u8>, i64)> {
    let mut opts = GenOptions::new(records);
    opts.late_pct = 6.0;
    let mut rng = StdRng::seed_from_u64(42);
    EventGen::new(&opts).enumerate().map(move |(i, e)| {
        let value = match rng.random_range(0..1000u32) {
            0..=1 => format!("not json #{i} {{").into_bytes(),
            2..=3 => rename_field(&e.value, "timestamp", "sentAt"),
            4 => set_field(&e.value, "timestamp", "yesterday-ish"),
            _ => e.value,
        };
        (e.user_id, value, e.arrival_ms)
    })
}

/// `value` with its top-level `from` field renamed to `to` (so it has no `from`).
fn rename_field(value: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(value).unwrap_or_default();
    if let Some(x) = v.remove(from) {
        v.insert(to.into(), x);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// `value` with its top-level `field` set to the string `to`.
fn set_field(value: &[u8], field: &str, to: &str) -> Vec<u8> {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(value).unwrap_or_default();
    v.insert(field.into(), to.into());
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The Parquet preset, whose columns and Kafka metadata the demo uses with `--format parquet`.
const PARQUET_PRESET: &str = include_str!("../examples/parquet.toml");

/// Namespace and table of `demo --format iceberg`.
const TABLE: (&str, &str) = ("demo", "events");

/// The demo's config; with `format = "parquet"` its destination takes the `[destinations.parquet]`
/// table and `kafka_metadata_field` of the Parquet preset; with `format = "iceberg"` those too,
/// and a `[destinations.iceberg]` table whose sqlite catalog is in `dir`.
fn demo_config(
    brokers: &str,
    endpoint: &str,
    compression: &str,
    folders: &str,
    format: &str,
    dir: &Path,
) -> Result<String, config::ConfigError> {
    let text = ndjson_demo_config(brokers, endpoint, compression, folders);
    if format == "ndjson" {
        return Ok(text);
    }
    let bad = |m: String| config::ConfigError::new("demo --format", m);
    let iceberg = format == "iceberg";
    if iceberg && folders != DEFAULT_FOLDERS {
        return Err(config::ConfigError::new(
            "demo --folder-template",
            "does not apply to --format iceberg (the table is partitioned by day); remove it",
        ));
    }
    let mut t: toml::Table = text.parse().map_err(|e| bad(format!("{e}")))?;
    let preset: toml::Table = PARQUET_PRESET.parse().map_err(|e| bad(format!("{e}")))?;
    let first = |t: &toml::Table| {
        t.get("destinations")
            .and_then(|d| d.as_array())
            .and_then(|a| a.first())
            .and_then(|d| d.as_table())
            .cloned()
    };
    let (Some(from), Some(mut to)) = (first(&preset), first(&t)) else {
        return Err(bad("the demo and preset configs have a destination".into()));
    };
    for k in ["parquet", "kafka_metadata_field"] {
        if let Some(v) = from.get(k) {
            to.insert(k.into(), v.clone());
        }
    }
    let file_format = if iceberg { "parquet" } else { format };
    if let Some(toml::Value::Table(b)) = to.get_mut("batch") {
        b.insert("format".into(), file_format.into());
    }
    if iceberg {
        if let Some(toml::Value::Table(r)) = to.get_mut("routing") {
            r.remove("folder_template");
        }
        let table = format!(
            "namespace = {ns:?}\ntable = {t:?}\npartition_time = \"day\"\ncommit_interval_secs = 2\n\
             [catalog]\nkind = \"sql\"\nuri = {uri:?}\nwarehouse = \"s3://{BUCKET}/warehouse\"\n",
            ns = TABLE.0,
            t = TABLE.1,
            uri = format!("sqlite://{}?mode=rwc", dir.join("catalog.db").display()),
        );
        let table: toml::Table = table.parse().map_err(|e| bad(format!("{e}")))?;
        to.insert("iceberg".into(), toml::Value::Table(table));
    }
    t.insert(
        "destinations".into(),
        toml::Value::Array(vec![toml::Value::Table(to)]),
    );
    toml::to_string(&t).map_err(|e| bad(format!("{e}")))
}

fn ndjson_demo_config(brokers: &str, endpoint: &str, compression: &str, folders: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "kafka-s3-sink-demo"
topics = ["{TOPIC}"]
session_timeout_ms = 6000

[pipeline]
drain_deadline_secs = 5
shutdown_deadline_secs = 30

[[destinations]]
name = "demo"
bucket = "{BUCKET}"
endpoint = "{endpoint}"
force_path_style = true

[destinations.credentials]
access_key_id = "local-access-key"
secret_access_key = "local-secret-key"

[destinations.routing]
time_source = "event_time"
time_field = "timestamp"
folder_template = {folders:?}

[destinations.batch]
compression = "{compression}"
max_records = 1000
max_age_secs = 10
idle_secs = 1
"#
    )
}

/// Runs the demo.
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    // The options are checked before anything starts: a folder template that could leave the
    // bucket's folder (`../../x/%Y/`) is refused like in any config.
    let dir = std::path::absolute(&opts.dir).unwrap_or(opts.dir.clone());
    config::parse(
        &demo_config(
            "127.0.0.1:9092",
            "http://127.0.0.1:9",
            &opts.compression,
            &opts.folder_template,
            &opts.format,
            &dir,
        )?,
        &|_| None,
    )?;
    let bucket_dir = dir.join(BUCKET);
    if bucket_dir.is_symlink() {
        return Err(DemoError::Io(
            bucket_dir,
            std::io::Error::other(
                "is a symbolic link; the demo writes only inside --dir: remove the link or pick another --dir",
            ),
        ));
    }
    if bucket_dir.exists() {
        std::fs::remove_dir_all(&bucket_dir).map_err(|e| DemoError::Io(bucket_dir.clone(), e))?;
    }
    // The table's catalog goes with the bucket it describes.
    let catalog_db = dir.join("catalog.db");
    if catalog_db.is_file() {
        std::fs::remove_file(&catalog_db).map_err(|e| DemoError::Io(catalog_db.clone(), e))?;
    }
    let s3 = LocalS3::start(LocalS3Options::new(&dir)).await?;
    s3.create_bucket_dir(BUCKET)?;
    println!(
        "local S3 server: {} (objects under {})",
        s3.endpoint(),
        bucket_dir.display()
    );

    let cluster = MockCluster::new(1)?;
    cluster.create_topic(TOPIC, opts.partitions, 1)?;
    let brokers = cluster.bootstrap_servers();
    println!(
        "in-process Kafka (librdkafka mock cluster): {brokers}, topic {TOPIC:?} with {} partitions",
        opts.partitions
    );

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()?;
    for (key, value, ts) in demo_events(opts.records) {
        let rec = BaseRecord::to(TOPIC)
            .key(&key)
            .timestamp(ts)
            .payload(&value);
        let mut rec = Some(rec);
        while let Some(r) = rec.take() {
            if let Err((e, r)) = producer.send(r) {
                if matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ) {
                    producer.poll(Duration::from_millis(10));
                    rec = Some(r);
                } else {
                    return Err(e.into());
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    println!(
        "produced {} events over 3 days (about 6 % late, 0.5 % malformed)",
        opts.records
    );

    let cfg = config::parse(
        &demo_config(
            &brokers,
            &s3.endpoint(),
            &opts.compression,
            &opts.folder_template,
            &opts.format,
            &dir,
        )?,
        &|_| None,
    )?;
    let codec = codec_used(&cfg);
    let table_cfg = cfg.clone();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry)
        .map_err(|e| DemoError::Io(PathBuf::from("metrics"), std::io::Error::other(e)))?;
    let sinks = app::s3_sinks(&cfg).await;
    let (tx, rx) = tokio::sync::watch::channel(Default::default());
    let stop = shutdown.child_token();
    let runner = tokio::spawn(app::run_with_sinks(
        cfg,
        sinks,
        metrics,
        stop.clone(),
        Some(tx),
    ));

    let limit = Duration::from_secs(120);
    let deadline = tokio::time::Instant::now() + limit;
    let total = opts.records as i64;
    let mut timed_out = false;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    // One progress line: rewritten in place on a terminal, else printed when it changes.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut shown = String::new();
    loop {
        every.tick().await;
        let committed: i64 = rx.borrow().committed.values().sum();
        let s = rx.borrow().clone();
        let line = format!(
            "progress: {} consumed, {} objects uploaded, {committed}/{total} offsets committed",
            s.records_in, s.objects
        );
        if line != shown {
            if tty {
                print!("\r{line}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            } else {
                println!("{line}");
            }
            shown = line;
        }
        if committed >= total || shutdown.is_cancelled() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            timed_out = true;
            break;
        }
    }
    if tty {
        println!();
    }
    stop.cancel();
    let stats = match runner.await {
        Ok(r) => r?,
        Err(e) => return Err(DemoError::Run(app::JoinError::Task(e).into())),
    };
    // The table, read while the S3 server still serves it.
    let table = match table_cfg
        .destinations
        .first()
        .and_then(|d| d.iceberg.as_ref())
    {
        Some(_) => Some(table_summary(&table_cfg, &bucket_dir).await?),
        None => None,
    };
    s3.shutdown().await;
    drop(cluster);
    if timed_out {
        return Err(DemoError::Timeout(limit));
    }

    let files = list_files(&bucket_dir)?;
    let mut folders: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (key, size) in &files {
        let folder = key.rsplit_once('/').map_or("", |(f, _)| f).to_string();
        let e = folders.entry(folder).or_default();
        e.0 += 1;
        e.1 += size;
    }
    println!("\n== summary ==");
    println!("records in:          {}", stats.records_in);
    println!("records written:     {}", stats.records_written);
    println!("records quarantined: {}", stats.records_quarantined);
    println!(
        "objects:             {} in {} folders",
        files.len(),
        folders.len()
    );
    println!("compression:         {codec}");
    println!("raw bytes:           {}", stats.raw_bytes);
    println!(
        "compressed bytes:    {} (ratio {:.1}x)",
        stats.stored_bytes,
        stats.raw_bytes as f64 / stats.stored_bytes.max(1) as f64
    );
    println!("committed offsets:");
    for (tp, off) in &stats.committed {
        println!("  {tp}: {off}");
    }
    println!("\n== s3://{BUCKET}/ (files per folder, bytes) ==");
    for (folder, (n, bytes)) in &folders {
        println!("  {folder}/  {n} files, {bytes} bytes");
    }
    if opts.all_keys {
        println!("\n== keys ==");
        for (key, size) in &files {
            println!("  {key}  {size}");
        }
    }
    if let Some(t) = table {
        println!("\n== Iceberg table {}.{} ==", TABLE.0, TABLE.1);
        println!("catalog:             sqlite {}", catalog_db.display());
        println!("snapshots:           {}", t.snapshots);
        println!("rows:                {}", t.rows);
        println!("data files:          {}", t.data_files);
        println!("table folder:        {}", t.folder.display());
        println!(
            "\nquery it with DuckDB and its iceberg extension, from the files on disk:\n  \
             SELECT count(*) FROM iceberg_scan('{}', allow_moved_paths = true, version = '{}');",
            t.folder.display(),
            t.version,
        );
    }
    println!(
        "\nbrowse the objects: find {} -type f | sort | head; zcat <file> | head -3 (zstdcat for .zst; DuckDB's read_parquet for .parquet)",
        bucket_dir.display()
    );
    Ok(())
}

/// What the demo's table holds.
struct TableSummary {
    snapshots: usize,
    rows: u64,
    data_files: u64,
    /// Its folder on disk (under the bucket's folder).
    folder: PathBuf,
    /// Its current metadata file's name without `.metadata.json`.
    version: String,
}

/// Reads the demo table's current state through the catalog (the S3 server still running).
async fn table_summary(cfg: &config::Config, bucket_dir: &Path) -> Result<TableSummary, DemoError> {
    let sinks = app::s3_sinks(cfg).await;
    let metas: Vec<_> = cfg.destinations.iter().map(app::object_meta).collect();
    let (_, tables) = crate::table::open::open_tables(cfg, &sinks, &metas)
        .await
        .map_err(|e| DemoError::Run(e.into()))?;
    let t = tables
        .values()
        .next()
        .ok_or_else(|| DemoError::Io(bucket_dir.into(), std::io::Error::other("no table")))?;
    let table = t.catalog.load_table(&t.ident).await.map_err(|e| {
        DemoError::Run(
            crate::table::TableError::Iceberg {
                table: t.ident.to_string(),
                source: Box::new(e),
            }
            .into(),
        )
    })?;
    let meta = table.metadata();
    let total = |k: &str| {
        meta.current_snapshot()
            .and_then(|s| s.summary().additional_properties.get(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let in_bucket = |s3: &str| {
        let key = s3.strip_prefix(&format!("s3://{BUCKET}/")).unwrap_or(s3);
        bucket_dir.join(key)
    };
    let version = table
        .metadata_location()
        .and_then(|l| l.rsplit('/').next())
        .and_then(|f| f.strip_suffix(".metadata.json"))
        .unwrap_or_default()
        .to_string();
    Ok(TableSummary {
        snapshots: meta.snapshots().count(),
        rows: total("total-records"),
        data_files: total("total-data-files"),
        folder: in_bucket(meta.location()),
        version,
    })
}

/// The demo destination's codec and level as the summary prints it: `zstd level 1`, or for
/// Parquet `Parquet, zstd level 1 columns (quarantine files: gzip level 6)`.
fn codec_used(cfg: &config::Config) -> String {
    let Some(d) = cfg.destinations.first() else {
        return "none".into();
    };
    match &d.parquet {
        Some(p) => format!(
            "Parquet, {} columns (quarantine files: {})",
            p.codec, d.batch.compression
        ),
        None => d.batch.compression.to_string(),
    }
}

/// Every file under `root`, as (key relative to root, size), sorted.
pub fn list_files(root: &Path) -> Result<Vec<(String, u64)>, DemoError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(DemoError::Io(d, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| DemoError::Io(d.clone(), e))?;
            let path = entry.path();
            let meta = entry
                .metadata()
                .map_err(|e| DemoError::Io(path.clone(), e))?;
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push((rel.to_string_lossy().into_owned(), meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}
