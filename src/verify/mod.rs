//! `verify`: audits a destination against Kafka. Reads the records of an offset range (default:
//! log start to the group's committed offsets) and every object under the destination's prefix
//! (error folder included; the rows of Parquet files are read by their Kafka metadata columns),
//! and reports records missing from S3, records present more than once, and lines or rows
//! matching no record of the range.
//!
//! How (bounded memory, any topic size): each side emits fixed-size entries (topic, partition,
//! identity hash, offset or object index, see [`identity`]) into an external sort
//! ([`extsort`]); the two sorted streams are merge-joined ([`join`]). The Kafka side
//! ([`kafkaside`], through [`crate::source::reader`]) and the S3 side ([`s3side`], through the
//! [`ObjectSink`] trait) run at the same time, each sorting in its share of `--max-memory-mb`.
//!
//! A destination that reads the Confluent wire format (`value_format` / `key_format`) is audited
//! on the decoded lines: both sides read records through the connector's own decoding and
//! registry client ([`schemas`]), whose cache takes a tenth of `--max-memory-mb`.
//!
//! Invariant: the outcome only depends on Kafka and the bucket (and the config, and the
//! registry's answers); exit codes are decided by [`VerifyError::exit_code`] and
//! [`report::VerifyReport::exit_code`].

pub mod extsort;
pub mod identity;
pub mod join;
pub mod kafkaside;
pub mod report;
pub mod s3side;
pub mod schemas;
mod select;
pub mod spill;
mod table;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::sink::s3::S3Sink;
use crate::sink::{ObjectSink, SinkError};
use crate::source::reader::{RangeReader, ReaderError, ReaderOptions};
use extsort::{ExternalSorter, SortOptions, SortStats};
use identity::Identifier;
pub use report::VerifyReport;
use s3side::{Collected, S3Options, TopicIndex};
pub use select::select;

/// Where each partition's range starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromOffset {
    /// The log start (oldest record Kafka still has).
    Earliest,
    /// This offset on every partition.
    Offset(i64),
}

/// Where each partition's range ends (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToOffset {
    /// The config's consumer group's committed offset (none: nothing expected).
    Committed,
    /// The high watermark.
    Latest,
    /// This offset on every partition.
    Offset(i64),
}

impl FromStr for FromOffset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(Self::Earliest),
            n => n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Self::Offset)
                .ok_or_else(|| format!("`{s}`: use earliest or an offset ≥ 0")),
        }
    }
}

impl FromStr for ToOffset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "committed" => Ok(Self::Committed),
            "latest" => Ok(Self::Latest),
            n => n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Self::Offset)
                .ok_or_else(|| format!("`{s}`: use committed, latest or an offset ≥ 0")),
        }
    }
}

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Destination name (default: the first).
    pub destination: Option<String>,
    /// Topics (default: all of the destination's).
    pub topics: Vec<String>,
    /// Range start.
    pub from: FromOffset,
    /// Range end.
    pub to: ToOffset,
    /// Memory for sorting, in MiB.
    pub max_memory_mb: u64,
    /// Longest wait for any Kafka request, and for progress while reading.
    pub kafka_timeout: Duration,
    /// Objects read at once (`None`: a quarter of `max_memory_mb`, between 4 and 32; each
    /// object in flight holds well under 1 MiB of buffers).
    pub s3_concurrency: Option<usize>,
    /// Examples of each kind in the report.
    pub examples: usize,
    /// Tries per schema while the Schema Registry does not answer (backoff from 200 ms
    /// doubling to 5 s between them) before the verification fails (exit 4).
    pub registry_attempts: u32,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            destination: None,
            topics: Vec::new(),
            from: FromOffset::Earliest,
            to: ToOffset::Committed,
            max_memory_mb: 256,
            kafka_timeout: Duration::from_secs(30),
            s3_concurrency: None,
            examples: 20,
            registry_attempts: 5,
        }
    }
}

/// Why a verification could not run or complete.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Bad options for this config (exit 2).
    #[error("config error at `{key}`: {message}")]
    Usage {
        /// Option or key concerned.
        key: String,
        /// What is wrong and the fix.
        message: String,
    },
    /// Kafka could not be read (exit 3; a client configuration error exits 2).
    #[error(transparent)]
    Kafka(#[from] ReaderError),
    /// An S3 request failed after its attempts (exit 3).
    #[error(transparent)]
    S3(#[from] SinkError),
    /// An S3 request got no answer in time (exit 3).
    #[error("{op} s3 key `{key}`: no answer within {secs} s")]
    S3Timeout {
        /// Operation.
        op: &'static str,
        /// Key or prefix.
        key: String,
        /// Timeout.
        secs: u64,
    },
    /// An object's body failed or stalled while being read (exit 3).
    #[error("reading s3 object `{key}`: {message}")]
    S3Body {
        /// Key.
        key: String,
        /// Cause.
        message: String,
    },
    /// The group committed past the high watermark of some partitions and the records up to
    /// the commit did not come (a truncated log, or a broker that lost records): the audit
    /// cannot cover them (exit 3).
    #[error("cannot verify up to the committed offsets: {partitions}; those records are no longer in Kafka (a truncated log or a broker that lost data), so nothing can show they reached S3. Check the brokers, or audit what Kafka still has with --to latest")]
    PastEnd {
        /// Each partition concerned, with its commit and high watermark.
        partitions: String,
    },
    /// The spill files could not be written or read (exit 3).
    #[error("sort spill files: {0}")]
    Spill(#[source] io::Error),
    /// A worker task failed (exit 3).
    #[error("verify task: {0}")]
    Task(String),
    /// The Schema Registry did not answer for a schema the records need (exit 4): without it
    /// a record's line cannot be computed, so nothing could be told missing.
    #[error("the Schema Registry did not answer after {attempts} attempts ({message}); verify needs the schemas to compute the lines the connector wrote, so it stops without a verdict: check [kafka.schema_registry] and the registry, then run verify again")]
    Registry {
        /// The last failure.
        message: String,
        /// Attempts made for the schema.
        attempts: u32,
    },
}

impl VerifyError {
    /// Process exit code: 2 for config/usage errors, 4 when the Schema Registry did not answer,
    /// 3 when the check could not complete otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage { .. } | Self::Kafka(ReaderError::Config(_)) => 2,
            Self::Registry { .. } => 4,
            _ => 3,
        }
    }

    fn usage(key: &str, message: impl Into<String>) -> Self {
        Self::Usage {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Replaces `^patterns` among `topics` by the cluster's topics they match (names stay).
async fn expand_patterns(
    config: &Config,
    topics: Vec<String>,
    timeout: Duration,
) -> Result<Vec<String>, VerifyError> {
    if !topics.iter().any(|t| t.starts_with('^')) {
        return Ok(topics);
    }
    let set = crate::config::TopicSet::parse("topics", &topics)
        .map_err(|e| VerifyError::usage("--topic", e.message))?;
    let cfg = config.kafka.clone();
    let names = tokio::task::spawn_blocking(move || {
        let ropts = ReaderOptions {
            timeout,
            queue_kbytes: 1024,
        };
        RangeReader::connect(&cfg, &ropts)?.topic_names()
    })
    .await
    .map_err(|e| VerifyError::Task(format!("listing topics: {e}")))??;
    let mut out: Vec<String> = topics
        .iter()
        .filter(|t| !t.starts_with('^'))
        .cloned()
        .collect();
    out.extend(names.into_iter().filter(|n| set.matches(n)));
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Verifies a destination of `config` against its S3 bucket (client built from the config).
pub async fn run(config: &Config, opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let (d, _) = select(config, opts)?;
    let sink = S3Sink::connect(d, config.upload.request_timeout).await;
    run_with_sink(config, Arc::new(sink), opts).await
}

/// Verifies with the given sink for the selected destination.
pub async fn run_with_sink(
    config: &Config,
    mut sink: Arc<dyn ObjectSink>,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let (d, topics) = select(config, opts)?;
    let topics = expand_patterns(config, topics, opts.kafka_timeout).await?;
    let budget = usize::try_from(opts.max_memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    // Two sorts run at once, each in 2/5 of the budget; librdkafka's queue gets 1/10, and so
    // do the parsed schemas of a destination that reads the Schema Registry.
    let sort_opts = SortOptions::for_memory(budget / 5 * 2);
    let ident = if d.reads_registry() {
        let schemas = schemas::Schemas::new(config, budget / 10, opts.registry_attempts)?;
        Arc::new(Identifier::with_registry(d, Arc::new(schemas)))
    } else {
        Arc::new(Identifier::new(d))
    };
    let spill = spill::SpillDir::new().map_err(VerifyError::Spill)?;
    let dir: PathBuf = spill.path().to_path_buf();
    let index = Arc::new(TopicIndex::new(&topics));

    let cancel = Arc::new(AtomicBool::new(false));
    let kafka = {
        let cancel = cancel.clone();
        let (cfg, ident, index, dir) = (
            config.kafka.clone(),
            ident.clone(),
            index.clone(),
            dir.clone(),
        );
        let ropts = ReaderOptions {
            timeout: opts.kafka_timeout,
            queue_kbytes: (budget / 10 / 1024).clamp(1024, 16 * 1024),
        };
        let (from, to) = (opts.from, opts.to);
        async move {
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let reader = RangeReader::connect(&cfg, &ropts)?;
                let plans = kafkaside::plan(&reader, &index, from, to)?;
                let mut sorter = ExternalSorter::new(&dir, sort_opts);
                let counts =
                    kafkaside::read(&reader, &plans, &ident, &index, &mut sorter, &cancel)?;
                drop(reader);
                tracing::info!(
                    partitions = plans.len(),
                    records = counts.values().map(|c| c.records).sum::<u64>(),
                    secs = started.elapsed().as_secs_f64(),
                    "kafka side read"
                );
                Ok::<_, VerifyError>((plans, counts, sorter))
            })
            .await
            .map_err(|e| VerifyError::Task(format!("kafka side: {e}")))?
        }
    };
    let (tx, rx) = mpsc::channel(16);
    let collector = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || collect(rx, &dir, sort_opts))
    };
    // A table's rows are those of its current snapshot's data files (`table.rs`).
    let data_keys = match &d.iceberg {
        None => None,
        Some(_) => {
            let (keys, routed) = table::data_files(config, d, sink.clone()).await?;
            sink = routed;
            Some(keys)
        }
    };
    let s3opts = S3Options {
        data_keys,
        prefix: d.prefix.clone(),
        error_prefix: format!("{}{}", d.prefix, d.error_prefix),
        concurrency: opts
            .s3_concurrency
            .unwrap_or((opts.max_memory_mb / 4).clamp(4, 32) as usize),
        request_timeout: config.upload.request_timeout,
        attempts: 3,
        limits: s3side::ReadLimits {
            max_line: d.batch.max_line_bytes(),
            max_total: d.batch.max_object_raw_bytes(),
        },
        parquet: d.parquet.as_ref().and_then(|p| {
            Some(s3side::RowColumns::new(
                p.metadata_prefix.as_deref()?,
                p.raw_column.clone(),
            ))
        }),
    };
    let s3 = async {
        let started = std::time::Instant::now();
        let tally = s3side::scan(sink, s3opts, ident.clone(), index.clone(), tx).await?;
        tracing::info!(
            objects = tally.objects,
            lines = tally.lines + tally.envelopes,
            secs = started.elapsed().as_secs_f64(),
            "s3 side read"
        );
        let collected = collector
            .await
            .map_err(|e| VerifyError::Task(format!("s3 collector: {e}")))?
            .map_err(VerifyError::Spill)?;
        Ok::<_, VerifyError>((tally, collected))
    };
    let sides = tokio::try_join!(kafka, s3);
    if sides.is_err() {
        // The blocking Kafka reader outlives the dropped future: tell it to stop.
        cancel.store(true, Ordering::Relaxed);
    }
    let ((plans, kcounts, ksorter), (s3tally, (ssorter, keys))) = sides?;

    let limit = opts.examples;
    let started = std::time::Instant::now();
    let joined = tokio::task::spawn_blocking(move || {
        let (ks, kstats) = ksorter.finish()?;
        let (ss, sstats) = ssorter.finish()?;
        let tally = join::join(ks, ss, limit)?;
        let mut wanted: BTreeSet<u64> = tally.outside_objects.clone();
        for dup in &tally.duplicate_examples {
            wanted.extend(dup.objects.iter().copied());
        }
        let names = resolve_keys(keys, &wanted)?;
        Ok::<_, io::Error>((tally, names, kstats, sstats))
    })
    .await
    .map_err(|e| VerifyError::Task(format!("join: {e}")))?
    .map_err(VerifyError::Spill)?;
    let (tally, names, kstats, sstats) = joined;
    tracing::info!(secs = started.elapsed().as_secs_f64(), "merge-join done");
    drop(spill);
    Ok(report::build(report::Parts {
        destination: d,
        group: &config.kafka.group_id,
        topics: &index,
        plans: &plans,
        kafka: &kcounts,
        s3: &s3tally,
        tally: &tally,
        keys: &names,
        spill: add_stats(kstats, sstats),
        max_memory_mb: opts.max_memory_mb,
    }))
}

fn add_stats(a: SortStats, b: SortStats) -> SortStats {
    SortStats {
        entries: a.entries + b.entries,
        runs_spilled: a.runs_spilled + b.runs_spilled,
        bytes_spilled: a.bytes_spilled + b.bytes_spilled,
    }
}

/// The S3 side's collector: writes object keys (in index order) to a spill file and sorts the
/// entries.
fn collect(
    mut rx: mpsc::Receiver<Collected>,
    dir: &std::path::Path,
    opts: SortOptions,
) -> io::Result<(ExternalSorter, File)> {
    let mut sorter = ExternalSorter::new(dir, opts);
    let mut keys = BufWriter::new(spill::anonymous_file(dir)?);
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Collected::Key(k) => {
                let len = u32::try_from(k.len()).map_err(io::Error::other)?;
                keys.write_all(&len.to_le_bytes())?;
                keys.write_all(k.as_bytes())?;
            }
            Collected::Entries(v) => {
                for e in v {
                    sorter.push(e)?;
                }
            }
        }
    }
    let mut file = keys.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.seek(SeekFrom::Start(0))?;
    Ok((sorter, file))
}

/// Keys of the object indexes in `wanted`, read back from the keys file.
fn resolve_keys(file: File, wanted: &BTreeSet<u64>) -> io::Result<HashMap<u64, String>> {
    let mut out = HashMap::new();
    let Some(&last) = wanted.last() else {
        return Ok(out);
    };
    let mut r = BufReader::new(file);
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    for i in 0..=last {
        r.read_exact(&mut len)?;
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        r.read_exact(&mut buf)?;
        if wanted.contains(&i) {
            out.insert(i, String::from_utf8_lossy(&buf).into_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse() {
        assert_eq!("earliest".parse(), Ok(FromOffset::Earliest));
        assert_eq!("12".parse(), Ok(FromOffset::Offset(12)));
        assert!("-1".parse::<FromOffset>().is_err());
        assert!("latest".parse::<FromOffset>().is_err());
        assert_eq!("committed".parse(), Ok(ToOffset::Committed));
        assert_eq!("latest".parse(), Ok(ToOffset::Latest));
        assert_eq!("0".parse(), Ok(ToOffset::Offset(0)));
        assert!("soon".parse::<ToOffset>().is_err());
    }

    fn config() -> Config {
        crate::config::parse(
            r#"
[kafka]
brokers = "b:9092"
group_id = "g"
topics = ["a", "b"]

[[destinations]]
name = "one"
bucket = "x"

[[destinations]]
name = "two"
bucket = "y"
topics = ["b"]
"#,
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn selection_defaults_and_usage_errors() {
        let c = config();
        let opts = VerifyOptions::default();
        let (d, topics) = select(&c, &opts).unwrap();
        assert_eq!(
            (d.name.as_str(), topics),
            ("one", vec!["a".into(), "b".into()])
        );
        let opts = VerifyOptions {
            destination: Some("two".into()),
            ..VerifyOptions::default()
        };
        assert_eq!(select(&c, &opts).unwrap().1, vec!["b".to_string()]);
        let bad = [
            VerifyOptions {
                destination: Some("three".into()),
                ..VerifyOptions::default()
            },
            VerifyOptions {
                destination: Some("two".into()),
                topics: vec!["a".into()],
                ..VerifyOptions::default()
            },
            VerifyOptions {
                max_memory_mb: 0,
                ..VerifyOptions::default()
            },
            VerifyOptions {
                from: FromOffset::Offset(9),
                to: ToOffset::Offset(3),
                ..VerifyOptions::default()
            },
        ];
        for o in bad {
            let e = select(&c, &o).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn keys_resolve_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        for k in ["a/1", "b/22", "c/333"] {
            tx.try_send(Collected::Key(k.into())).unwrap();
        }
        drop(tx);
        let (_, file) = collect(rx, dir.path(), SortOptions::for_memory(1 << 20)).unwrap();
        let got = resolve_keys(file, &[0, 2].into_iter().collect()).unwrap();
        assert_eq!(got[&0], "a/1");
        assert_eq!(got[&2], "c/333");
        assert!(!got.contains_key(&1));
    }
}
