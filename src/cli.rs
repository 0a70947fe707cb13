//! Command line: `run`, `check-config`, `verify`, `ddl`, `demo`, `gen-events` and the hidden
//! `catalogue`. Environment enters only through clap's `env =` attributes here and `${VAR}` in the
//! config file.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// kafka-s3-sink: Kafka → S3 NDJSON connector (at-least-once).
#[derive(Debug, Parser)]
#[command(name = "kafka-s3-sink", version, about)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `kafka_s3_sink=debug`; overrides
    /// `[log] level` (default `info`).
    #[arg(long, global = true, env = "KAFKA_S3_SINK_LOG")]
    pub log: Option<String>,
    /// Log format; overrides `[log] format` (default plain).
    #[arg(long, global = true, env = "KAFKA_S3_SINK_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the connector until SIGTERM/SIGINT, then drain, upload, commit and exit 0 (1 on a
    /// fatal error, 2 on a setting to fix, 3 when the shutdown deadline left records
    /// uncommitted).
    Run {
        /// Config file (TOML).
        #[arg(long, env = "KAFKA_S3_SINK_CONFIG")]
        config: PathBuf,
        /// For backfills: stop (drain, upload, commit, exit 0) once every partition this
        /// process owns is committed to the high watermark librdkafka last reported for it.
        #[arg(long)]
        until_drained: bool,
        /// Seconds between the INFO `progress` lines (records in, objects uploaded, committed
        /// lag); 0 turns them off.
        #[arg(long, env = "KAFKA_S3_SINK_PROGRESS_SECS", default_value_t = crate::progress::DEFAULT_PROGRESS_SECS)]
        progress_secs: u64,
    },
    /// Validate a config file and print it resolved, with secrets redacted.
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, env = "KAFKA_S3_SINK_CONFIG")]
        config: PathBuf,
        /// Also connect: resolve credentials, list and probe-write each bucket (one empty
        /// object, `<prefix>_kafka-s3-sink-probe`), read the brokers' metadata of the topics;
        /// one line per check, ok or the fix. Exit 2 if one fails.
        #[arg(long)]
        connect: bool,
    },
    /// Audit a destination: compare the records of an offset range in Kafka with the objects under
    /// the destination's prefix; report missing, duplicated and out-of-range records. Exit 0 when
    /// nothing is missing, 1 when records are missing, 2 on a config/usage error, 3 when Kafka or
    /// S3 could not be read (or records the group committed are not in Kafka), 4 when the Schema
    /// Registry did not answer. Parquet destinations are audited by their Kafka metadata columns
    /// (`kafka_metadata_field`); destinations reading the Schema Registry by their decoded lines.
    Verify {
        /// Config file (TOML).
        #[arg(long, env = "KAFKA_S3_SINK_CONFIG")]
        config: PathBuf,
        /// Destination to verify (default: the first).
        #[arg(long)]
        destination: Option<String>,
        /// Topic to verify (repeatable; default: all of the destination's topics).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Start of each partition's range: `earliest` (log start) or an offset.
        #[arg(long, default_value = "earliest")]
        from: crate::verify::FromOffset,
        /// End of each partition's range (exclusive): `committed` (the config's group), `latest`
        /// (high watermark) or an offset.
        #[arg(long, default_value = "committed")]
        to: crate::verify::ToOffset,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Memory for sorting, in MiB (the rest spills to temp files); a tenth of it holds the
        /// parsed schemas of a destination that reads the Schema Registry.
        #[arg(long, default_value_t = 256)]
        max_memory_mb: u64,
    },
    /// Run the real pipeline on an in-process Kafka (librdkafka mock cluster) and an in-process
    /// S3 server that keeps its objects under a local folder.
    Demo {
        /// Folder for the local S3 server's objects (the bucket is a folder inside it).
        #[arg(long, default_value = "./demo-s3")]
        dir: PathBuf,
        /// Events to generate.
        #[arg(long, default_value_t = 20_000)]
        records: u64,
        /// Partitions of the demo topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Print every object key (default: a tree summary per folder).
        #[arg(long)]
        all_keys: bool,
        /// Compression of the objects: gzip, zstd or none.
        #[arg(long, default_value = "gzip")]
        compression: String,
        /// Folder template of the objects (e.g. `dt=%Y-%m-%d/hr=%H/` for Hive-style folders).
        #[arg(long, default_value = "%Y/%m/%d/%H/")]
        folder_template: String,
        /// Data file format: ndjson, parquet (with the columns and Kafka metadata of
        /// `examples/parquet.toml`), or iceberg (those Parquet files appended to an Apache
        /// Iceberg table partitioned by day, its sqlite catalog in `--dir`).
        #[arg(long, default_value = "ndjson")]
        format: String,
        /// Also log the pipeline at INFO (every file flushed and uploaded, every commit); by
        /// default only warnings, the progress line and the summary (`--log` overrides both).
        #[arg(long, short)]
        verbose: bool,
    },
    /// Print the Athena `CREATE EXTERNAL TABLE` of a destination's objects (NDJSON or
    /// Parquet), with partition projection from its folder template.
    Ddl {
        /// Config file (TOML).
        #[arg(long, env = "KAFKA_S3_SINK_CONFIG")]
        config: PathBuf,
        /// Destination (default: the first).
        #[arg(long)]
        destination: Option<String>,
        /// Table name (default: the destination's name).
        #[arg(long)]
        table: Option<String>,
        /// Data columns, `name type, name type` in Hive types (default: for NDJSON the
        /// event-time field as a string and the Kafka metadata member if the destination writes
        /// one; for Parquet the files' columns).
        #[arg(long)]
        columns: Option<String>,
        /// First day of date projections.
        #[arg(long, default_value = "2020-01-01")]
        since: chrono::NaiveDate,
    },
    /// Print deterministic Segment-like analytics events as NDJSON (the generator the tests,
    /// benchmarks and `demo` use), e.g. to load a topic of your own cluster.
    GenEvents {
        /// Events to generate.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Seed: the same seed and options give the same bytes.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Start of the time span, RFC 3339 (e.g. 2026-11-01T00:00:00Z).
        #[arg(long, default_value = "2026-11-01T00:00:00Z")]
        start: chrono::DateTime<chrono::Utc>,
        /// Length of the time span in days.
        #[arg(long, default_value_t = 3.0)]
        days: f64,
        /// Percent of events 1–12 h older than their place in the stream.
        #[arg(long, default_value_t = 2.0)]
        late_pct: f64,
        /// Distinct users.
        #[arg(long, default_value_t = 50_000)]
        users: u32,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the metrics the connector exports (name, type, labels, help) and the S3 calls it
    /// makes (with their IAM actions), for the deployment checks.
    #[command(hide = true)]
    Catalogue {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}
