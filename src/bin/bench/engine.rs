//! Runs the real workers (`app::run_workers`) over a source until every record was taken in,
//! then drains them (the shutdown path: close every file, upload, commit) and measures the whole
//! run: wall time, process CPU, peak RSS, objects, flushes by reason, gauges' maxima.

use anyhow::{bail, Context};
use prometheus::Registry;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use kafka_s3_sink::config::{self, Config};
use kafka_s3_sink::metrics::Metrics;
use kafka_s3_sink::pipeline::RunStats;
use kafka_s3_sink::sink::null::NullSink;
use kafka_s3_sink::sink::ObjectSink;
use kafka_s3_sink::source::SourceIo;
use kafka_s3_sink::{app, model::Record};

use crate::measure;
use crate::recording::RecordingSink;

/// Where objects go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    /// Discard the bytes in-process (separates upload cost).
    Null,
    /// A real S3 client (aws-sdk-s3) against `--endpoint`.
    S3,
}

/// Connector settings shared by every mode.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectorArgs {
    /// Worker shards (`[pipeline] workers`, cores used for compression).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// gzip level (`compression_level`).
    #[arg(long, default_value_t = 6)]
    pub level: u32,
    /// `[pipeline] memory_budget_bytes`.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub budget: u64,
    /// `[destinations.batch] max_age_secs`.
    #[arg(long, default_value_t = 300)]
    pub max_age: u64,
    /// `[destinations.batch] idle_secs`.
    #[arg(long, default_value_t = 30)]
    pub idle: u64,
    /// Where objects go.
    #[arg(long, value_enum, default_value_t = SinkKind::Null)]
    pub sink: SinkKind,
    /// S3 endpoint for `--sink s3`, e.g. `http://127.0.0.1:9000`.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Bucket (must exist).
    #[arg(long, default_value = "bench")]
    pub bucket: String,
    /// Access key for `--sink s3`.
    #[arg(long, default_value = "local-access-key")]
    pub access_key: String,
    /// Secret key for `--sink s3`.
    #[arg(long, default_value = "local-secret-key")]
    pub secret_key: String,
    /// Records per chunk handed to a worker (the Kafka source uses 2000).
    #[arg(long, default_value_t = 2000)]
    pub chunk: usize,
    /// `payload_signing` of the `--sink s3` destination: auto (signed over the benchmark's
    /// http:// endpoints), signed or unsigned (what auto does over https://).
    #[arg(long, default_value = "auto")]
    pub payload_signing: String,
    /// TOML appended to the config after `[destinations.batch]` (e.g. `format = "parquet"` and
    /// a `[destinations.parquet]` table): `bench/identical.sh` replays Parquet this way.
    #[arg(long)]
    pub extra_toml: Option<PathBuf>,
}

impl ConnectorArgs {
    /// The connector config for these settings (Kafka settings unused: the source is in memory).
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut dest = format!(
            "[[destinations]]\nname = \"bench\"\nbucket = \"{}\"\nregion = \"us-east-1\"\n",
            self.bucket
        );
        if self.sink == SinkKind::S3 {
            let endpoint = self
                .endpoint
                .as_deref()
                .context("--sink s3 needs --endpoint")?;
            dest += &format!(
                "endpoint = \"{endpoint}\"\nforce_path_style = true\npayload_signing = \"{}\"\n\
                 [destinations.credentials]\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                // Validation refuses `unsigned` over http://; the benchmark measures it on its
                // loopback servers anyway, set on the typed config below.
                if self.payload_signing == "unsigned" {
                    "auto"
                } else {
                    &self.payload_signing
                },
                self.access_key,
                self.secret_key
            );
        }
        let text = format!(
            "[kafka]\nbrokers = \"unused:9092\"\ngroup_id = \"bench\"\ntopics = [\"{topic}\"]\n\
             [pipeline]\nworkers = {workers}\nmemory_budget_bytes = {budget}\n\
             [http]\nenabled = false\n\
             {dest}\
             [destinations.batch]\ncompression_level = {level}\nmax_age_secs = {max_age}\nidle_secs = {idle}\n",
            topic = crate::feed::TOPIC,
            workers = self.workers,
            budget = self.budget,
            level = self.level,
            max_age = self.max_age,
            idle = self.idle,
        );
        let text = match &self.extra_toml {
            Some(path) => {
                let extra = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --extra-toml {}", path.display()))?;
                format!("{text}{extra}\n")
            }
            None => text,
        };
        let mut cfg =
            config::parse(&text, &|_| None).map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
        if self.payload_signing == "unsigned" {
            for d in &mut cfg.destinations {
                d.payload_signing = config::PayloadSigning::Unsigned;
            }
        }
        Ok(cfg)
    }

    /// The sink for these settings, wrapped so object sizes are recorded.
    pub async fn sink(&self, cfg: &Config) -> Arc<RecordingSink> {
        let inner: Arc<dyn ObjectSink> = match self.sink {
            SinkKind::Null => Arc::new(NullSink::new()),
            SinkKind::S3 => app::s3_sinks(cfg)
                .await
                .into_iter()
                .next()
                .expect("invariant: the bench config has one destination"),
        };
        Arc::new(RecordingSink::new(inner))
    }
}

/// Sums the samples of metric `name` whose labels contain `label` (e.g. `reason="memory"`).
pub fn metric_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| label.is_none_or(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The registry in Prometheus text format.
pub fn scrape(registry: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_default()
}

/// Flushes by reason (only reasons that happened).
pub fn flushes(text: &str) -> BTreeMap<String, u64> {
    [
        "size", "records", "age", "idle", "memory", "revoke", "shutdown",
    ]
    .iter()
    .map(|r| {
        let n = metric_sum(
            text,
            "kafka_s3_sink_flushes_total",
            Some(&format!("reason=\"{r}\"")),
        );
        (r.to_string(), n as u64)
    })
    .filter(|(_, n)| *n > 0)
    .collect()
}

/// What one drained run measured.
pub struct Outcome {
    /// Totals of the workers.
    pub stats: RunStats,
    /// Start of the source to the end of the drain.
    pub wall: Duration,
    /// Start to the moment every record was taken in (the drain follows).
    pub ingested: Duration,
    /// Process CPU seconds over the run.
    pub cpu_secs: f64,
    /// CPU seconds per thread name from the start until every record was taken in.
    pub threads: BTreeMap<String, f64>,
    /// RSS when the run started (input already loaded).
    pub rss_before: u64,
    /// Peak RSS during the run (reset at its start when the kernel allows).
    pub peak_rss: u64,
    /// Whether the peak was reset at the start (otherwise it includes loading the input).
    pub peak_reset: bool,
    /// Highest `kafka_s3_sink_buffered_bytes` seen while polling.
    pub max_buffered: u64,
    /// Highest `kafka_s3_sink_open_files` seen while polling.
    pub max_open_files: u64,
    /// The metrics at the end.
    pub scrape: String,
}

/// A source ready to start: it is started inside [`drive`], after the clocks.
pub type StartSource = Box<dyn FnOnce(usize) -> std::io::Result<Vec<SourceIo>>>;

/// Starts the source, runs the workers until `expect` records were taken in (or `limit`
/// passed), then cancels and waits for the drain.
pub async fn drive(
    cfg: &Config,
    sink: Arc<RecordingSink>,
    start: StartSource,
    expect: u64,
    limit: Duration,
) -> anyhow::Result<Outcome> {
    let registry = Registry::new();
    let metrics = Metrics::new(&registry)?;
    let targets = app::targets(cfg, vec![sink as Arc<dyn ObjectSink>]);
    let rss_before = measure::rss_bytes();
    let peak_reset = measure::reset_peak_rss();
    let threads0 = measure::threads_cpu();
    let cpu0 = measure::process_cpu_secs();
    let t0 = Instant::now();
    let ios = start(cfg.pipeline.workers)?;
    let token = CancellationToken::new();
    let run = tokio::spawn({
        let cfg = cfg.clone();
        let token = token.clone();
        async move {
            app::run_workers(
                &cfg,
                &Default::default(),
                targets,
                ios,
                metrics,
                token,
                None,
            )
            .await
        }
    });
    let (mut max_buffered, mut max_open_files) = (0u64, 0u64);
    loop {
        let text = scrape(&registry);
        max_buffered =
            max_buffered.max(metric_sum(&text, "kafka_s3_sink_buffered_bytes", None) as u64);
        max_open_files =
            max_open_files.max(metric_sum(&text, "kafka_s3_sink_open_files", None) as u64);
        let consumed = metric_sum(&text, "kafka_s3_sink_records_consumed_total", None) as u64;
        if consumed >= expect {
            break;
        }
        if run.is_finished() || t0.elapsed() > limit {
            token.cancel();
            let r = run.await?;
            bail!("run stopped after {consumed} of {expect} records: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let ingested = t0.elapsed();
    // Sampled before the drain: the workers' threads end with the run, and an ended thread's
    // CPU is no longer listed per thread (the process total below still counts it).
    let threads = measure::threads_delta(&threads0, &measure::threads_cpu());
    token.cancel();
    let stats = run.await??;
    let wall = t0.elapsed();
    let cpu_secs = measure::process_cpu_secs() - cpu0;
    Ok(Outcome {
        stats,
        wall,
        ingested,
        cpu_secs,
        threads,
        rss_before,
        peak_rss: measure::peak_rss_bytes(),
        peak_reset,
        max_buffered,
        max_open_files,
        scrape: scrape(&registry),
    })
}

/// The figures every run reports, as JSON.
pub fn report(
    mode: &str,
    args: &ConnectorArgs,
    out: &Outcome,
    input_bytes: u64,
    records: u64,
    sink: &RecordingSink,
) -> serde_json::Value {
    let secs = out.wall.as_secs_f64();
    let mb = input_bytes as f64 / 1e6;
    let gb = input_bytes as f64 / 1e9;
    let s = &out.stats;
    serde_json::json!({
        "mode": mode,
        "sink": format!("{:?}", args.sink).to_lowercase(),
        "payload_signing": (args.sink == SinkKind::S3).then_some(&args.payload_signing),
        "workers": args.workers,
        "level": args.level,
        "budget_bytes": args.budget,
        "records": records,
        "input_bytes": input_bytes,
        "wall_secs": measure::round3(secs),
        "ingest_secs": measure::round3(out.ingested.as_secs_f64()),
        "drain_secs": measure::round3(secs - out.ingested.as_secs_f64()),
        "mb_per_sec": measure::round3(mb / secs),
        "events_per_sec": (records as f64 / secs).round(),
        "cpu_secs": measure::round3(out.cpu_secs),
        "cores_used": measure::round3(out.cpu_secs / secs),
        "mb_per_cpu_sec": measure::round3(mb / out.cpu_secs.max(0.01)),
        "cpu_secs_per_gb": measure::round3(out.cpu_secs / gb),
        "threads_cpu_secs_until_all_taken_in": out.threads,
        "rss_before_mib": measure::mib(out.rss_before),
        "peak_rss_mib": measure::mib(out.peak_rss),
        "peak_minus_before_mib": measure::mib(out.peak_rss.saturating_sub(out.rss_before)),
        "peak_reset": out.peak_reset,
        "max_buffered_mib": measure::mib(out.max_buffered),
        "max_open_files": out.max_open_files,
        "records_in": s.records_in,
        "records_written": s.records_written,
        "records_quarantined": s.records_quarantined,
        "raw_bytes": s.raw_bytes,
        "stored_bytes": s.stored_bytes,
        "compression_ratio": measure::round3(s.raw_bytes as f64 / (s.stored_bytes.max(1)) as f64),
        "objects": measure::size_summary(&sink.sizes()),
        "flushes": flushes(&out.scrape),
        "committed_sum": s.committed.values().sum::<i64>(),
    })
}

/// Loads the input file as records (before any clock starts).
pub fn load_records(
    path: &std::path::Path,
    partitions: usize,
    run_length: usize,
    limit: Option<usize>,
) -> anyhow::Result<(Vec<Record>, u64)> {
    crate::feed::load(path, partitions, run_length, limit)
        .with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_matches_name_and_label() {
        let text = "# HELP x\nkafka_s3_sink_flushes_total{destination=\"b\",reason=\"memory\"} 3\n\
                    kafka_s3_sink_flushes_total{destination=\"b\",reason=\"size\"} 2\n\
                    kafka_s3_sink_flushes_total_other 9\nkafka_s3_sink_open_files 4\n";
        assert_eq!(metric_sum(text, "kafka_s3_sink_flushes_total", None), 5.0);
        assert_eq!(
            metric_sum(
                text,
                "kafka_s3_sink_flushes_total",
                Some("reason=\"memory\"")
            ),
            3.0
        );
        assert_eq!(metric_sum(text, "kafka_s3_sink_open_files", None), 4.0);
        assert_eq!(flushes(text).get("memory"), Some(&3));
    }
}
