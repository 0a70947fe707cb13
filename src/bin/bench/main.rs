//! `kafka-s3-sink-bench`: measures the connector's own work on one machine, printing one JSON
//! line per run (`bench/run.sh` runs every mode and renders the table of BENCHMARKS.md).
//!
//! Modes:
//! - `replay`: the NDJSON input loaded in memory as records of P partitions, fed to the real
//!   workers through the replay source (the same channels as Kafka), drained into a null or S3
//!   sink; wall time, process CPU, RSS, objects, compression ratio.
//! - `deflate`: the same input compressed alone in-process by the connector's deflate backend
//!   (flate2 + zlib-rs, `GzEncoder`) at the same level on one thread: the floor.
//! - `memory`: a synthesized backlog over partitions × hour-folders (24 open folders per
//!   partition), fed lazily; peak RSS against the memory budget, memory-pressure flushes.
//! - `latency`: one record, then silence; time until its object is complete in the sink.
//! - `s3-server`: the crate's in-process S3 server (s3s-fs) as a separate process on loopback.
//! - `registry-server`: the test-only Schema Registry (`schema_server`) as a separate process on
//!   loopback, for the e2e scripts whose real clients (confluent-kafka) register and produce.
//! - `put-baseline`: the files of a folder sent with a bare aws-sdk-s3 `PutObject` each; CPU
//!   per object (what an object costs without the connector).
//!
//! Timings never go into tests: this binary is run by hand or by `bench/run.sh` only.

mod baseline;
mod engine;
mod feed;
mod measure;
mod recording;
mod scan;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{ConnectorArgs, StartSource};
use kafka_s3_sink::s3server::{LocalS3, LocalS3Options};
use kafka_s3_sink::sink::ObjectSink;

#[derive(Parser)]
#[command(
    name = "kafka-s3-sink-bench",
    about = "Benchmarks of kafka-s3-sink (JSON lines out)"
)]
struct Cli {
    /// Tokio worker threads (default: one per CPU, as the connector binary).
    #[arg(long, global = true)]
    runtime_threads: Option<usize>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Replay the input through the real workers into a sink.
    Replay {
        /// NDJSON input, one event per line.
        #[arg(long)]
        input: PathBuf,
        /// Partitions the lines are spread over.
        #[arg(long, default_value_t = 8)]
        partitions: usize,
        /// Consecutive lines per partition (line i → partition (i / R) mod P): 1 interleaves
        /// partitions record by record; a Kafka fetch hands over runs of hundreds.
        #[arg(long, default_value_t = 1)]
        run_length: usize,
        /// Read at most this many lines.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        connector: ConnectorArgs,
    },
    /// Compress the input alone with the connector's deflate backend, on one thread.
    Deflate {
        /// NDJSON input.
        #[arg(long)]
        input: PathBuf,
        /// gzip level.
        #[arg(long, default_value_t = 6)]
        level: u32,
        /// Also run the lines through the connector's own batches (staging, content hash,
        /// pooled encoders), this many files open at once, lines dealt round-robin: what the
        /// batch layer adds to deflate, without routing, Kafka or upload (0: skip).
        #[arg(long, default_value_t = 0)]
        batches: usize,
        /// Raw bytes after which a batch file is closed (with `--batches`).
        #[arg(long, default_value_t = 2_000_000)]
        file_bytes: u64,
        /// Runs of the whole-file reference; the fastest is reported (1: a single sample, for
        /// references taken next to each connector run).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Backlog over partitions × hour-folders: peak RSS against the memory budget.
    Memory {
        /// NDJSON lines to draw events from (read in a loop, timestamps rewritten).
        #[arg(long)]
        input: PathBuf,
        /// Partitions.
        #[arg(long, default_value_t = 1000)]
        partitions: usize,
        /// Hour-folders open per partition at once.
        #[arg(long, default_value_t = 24)]
        hours: usize,
        /// Records in the backlog (default: 10 per folder).
        #[arg(long)]
        records: Option<usize>,
        #[command(flatten)]
        connector: ConnectorArgs,
    },
    /// One record then silence: time until its object is in the sink.
    Latency {
        /// NDJSON input; its first line is the record.
        #[arg(long)]
        input: PathBuf,
        /// Runs (each a fresh pipeline).
        #[arg(long, default_value_t = 3)]
        samples: usize,
        #[command(flatten)]
        connector: ConnectorArgs,
    },
    /// The connector's JSON scan alone against serde_json's walk and the two prescans it
    /// replaced, on one thread.
    Scan {
        /// NDJSON input.
        #[arg(long)]
        input: PathBuf,
        /// Turns of each; the fastest is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Serve the in-process S3 server (s3s-fs) on 127.0.0.1 until SIGTERM/SIGINT; prints its
    /// endpoint as one JSON line.
    S3Server {
        /// Folder holding the buckets.
        #[arg(long)]
        root: PathBuf,
        /// Bucket to create.
        #[arg(long, default_value = "bench")]
        bucket: String,
    },
    /// Serve the test-only Schema Registry on 127.0.0.1 until SIGTERM/SIGINT; prints its URL as
    /// one JSON line.
    RegistryServer {
        /// Basic-auth user the registry requires (with `--password`).
        #[arg(long, requires = "password")]
        user: Option<String>,
        /// Basic-auth password.
        #[arg(long, requires = "user")]
        password: Option<String>,
    },
    /// Send every file of a folder with a bare aws-sdk-s3 PutObject; CPU per object.
    PutBaseline {
        #[command(flatten)]
        args: baseline::BaselineArgs,
    },
}

fn main() -> anyhow::Result<()> {
    kafka_s3_sink::malloc::limit_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.runtime_threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build()?;
    let out = rt.block_on(run(cli.mode))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")?;
    Ok(())
}

async fn run(mode: Mode) -> anyhow::Result<serde_json::Value> {
    match mode {
        Mode::Replay {
            input,
            partitions,
            run_length,
            limit,
            connector,
        } => replay(input, partitions, run_length, limit, connector).await,
        Mode::Deflate {
            input,
            level,
            batches,
            file_bytes,
            runs,
        } => {
            tokio::task::spawn_blocking(move || deflate(input, level, batches, file_bytes, runs))
                .await?
        }
        Mode::Memory {
            input,
            partitions,
            hours,
            records,
            connector,
        } => memory(input, partitions, hours, records, connector).await,
        Mode::Latency {
            input,
            samples,
            connector,
        } => latency(input, samples, connector).await,
        Mode::Scan { input, runs } => {
            tokio::task::spawn_blocking(move || scan::run(&input, runs)).await?
        }
        Mode::S3Server { root, bucket } => s3_server(root, bucket).await,
        Mode::RegistryServer { user, password } => registry_server(user.zip(password)).await,
        Mode::PutBaseline { args } => baseline::run(args).await,
    }
}

async fn replay(
    input: PathBuf,
    partitions: usize,
    run_length: usize,
    limit: Option<usize>,
    args: ConnectorArgs,
) -> anyhow::Result<serde_json::Value> {
    let cfg = args.config()?;
    let sink = args.sink(&cfg).await;
    let (records, bytes) = engine::load_records(&input, partitions, run_length, limit)?;
    let n = records.len() as u64;
    let chunk = args.chunk;
    let (tx, rx) = std::sync::mpsc::channel();
    let start: StartSource = Box::new(move |shards| {
        let (ios, handle) = kafka_s3_sink::source::replay::start(records, shards, chunk)?;
        let _ = tx.send(handle);
        Ok(ios)
    });
    let out = engine::drive(&cfg, sink.clone(), start, n, Duration::from_secs(1800)).await?;
    let handle = rx.recv().context("replay source did not start")?;
    let report = tokio::task::spawn_blocking(move || handle.join())
        .await?
        .map_err(|_| anyhow::anyhow!("replay thread panicked"))?;
    let committed: i64 = report.committed.values().sum();
    anyhow::ensure!(
        committed as u64 == n,
        "committed offsets sum to {committed}, expected {n} (every record committed)"
    );
    let mut v = engine::report("replay", &args, &out, bytes, n, &sink);
    v["partitions"] = partitions.into();
    v["run_length"] = run_length.into();
    Ok(v)
}

/// The lines of `data` through `files` of the connector's batches at once (line i into file
/// i mod `files`), each closed and replaced at `file_bytes` raw bytes. Returns the stored bytes,
/// thread CPU seconds and wall seconds.
fn through_batches(data: &[u8], level: u32, files: usize, file_bytes: u64) -> (u64, f64, f64) {
    use kafka_s3_sink::batch::{Batch, EncoderPool};
    use kafka_s3_sink::config::Compression;
    let tp = kafka_s3_sink::model::TopicPartition::new(feed::TOPIC, 0);
    let now = tokio::time::Instant::now();
    let open = |i: i64| Batch::new(tp.clone(), i, Compression::Gzip { level }, now);
    let (cpu0, t0) = (measure::thread_cpu_secs(), Instant::now());
    let mut pool = EncoderPool::default();
    let mut batches: Vec<Batch> = (0..files).map(|_| open(0)).collect();
    let mut stored = 0u64;
    let lines = data.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    for (i, line) in lines.enumerate() {
        let b = &mut batches[i % files];
        b.append(i as i64, line, now, &mut pool);
        if b.raw_bytes >= file_bytes {
            let full = std::mem::replace(b, open(i as i64 + 1));
            stored += full.finish(&mut pool).0.len() as u64;
        }
    }
    for b in batches {
        stored += b.finish(&mut pool).0.len() as u64;
    }
    let cpu = measure::thread_cpu_secs() - cpu0;
    (stored, cpu, t0.elapsed().as_secs_f64())
}

fn deflate(
    input: PathBuf,
    level: u32,
    batches: usize,
    file_bytes: u64,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    use flate2::write::GzEncoder;
    let data = std::fs::read(&input).with_context(|| format!("cannot read {}", input.display()))?;
    let mb = data.len() as f64 / 1e6;
    let level_c = flate2::Compression::new(level);
    // Whole file, 64 KiB writes: the floor. The fastest of `runs` (a reference slowed by a
    // noisy neighbour would flatter every ratio to it).
    let mut best: Option<(f64, f64, Vec<u8>)> = None;
    let mut cpu_runs = Vec::new();
    for _ in 0..runs.max(1) {
        let (cpu0, t0) = (measure::thread_cpu_secs(), Instant::now());
        let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4), level_c);
        for c in data.chunks(64 * 1024) {
            enc.write_all(c)?;
        }
        let out = enc.finish()?;
        let (wall, cpu) = (
            t0.elapsed().as_secs_f64(),
            measure::thread_cpu_secs() - cpu0,
        );
        cpu_runs.push(measure::round3(cpu));
        if best.as_ref().is_none_or(|(_, c, _)| cpu < *c) {
            best = Some((wall, cpu, out));
        }
    }
    let (wall, cpu, out) = best.expect("invariant: at least one run");
    let mut v = serde_json::json!({
        "mode": "deflate",
        "backend": "flate2 zlib-rs GzEncoder",
        "level": level,
        "input_bytes": data.len(),
        "output_bytes": out.len(),
        "compression_ratio": measure::round3(data.len() as f64 / out.len().max(1) as f64),
        "wall_secs": measure::round3(wall),
        "cpu_secs": measure::round3(cpu),
        "cpu_secs_runs": cpu_runs,
        "mb_per_sec": measure::round3(mb / wall),
        "mb_per_cpu_sec": measure::round3(mb / cpu.max(0.01)),
    });
    drop(out);
    if batches > 0 {
        let (out_bytes, cpu, wall) = through_batches(&data, level, batches, file_bytes);
        v["batches"] = batches.into();
        v["batch_file_bytes"] = file_bytes.into();
        v["batch_cpu_secs"] = measure::round3(cpu).into();
        v["batch_mb_per_sec"] = measure::round3(mb / wall).into();
        v["batch_mb_per_cpu_sec"] = measure::round3(mb / cpu.max(0.01)).into();
        v["batch_output_bytes"] = out_bytes.into();
    }
    Ok(v)
}

async fn memory(
    input: PathBuf,
    partitions: usize,
    hours: usize,
    records: Option<usize>,
    args: ConnectorArgs,
) -> anyhow::Result<serde_json::Value> {
    let cfg = args.config()?;
    let sink = args.sink(&cfg).await;
    let total = records.unwrap_or(partitions * hours * 10);
    let backlog = feed::Backlog::new(&input, partitions, hours, total)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let chunk = args.chunk;
    let (tx, rx) = std::sync::mpsc::channel();
    let start: StartSource = Box::new(move |shards| {
        let (ios, handle) = feed::start(backlog, shards, chunk)?;
        let _ = tx.send(handle);
        Ok(ios)
    });
    let out = engine::drive(
        &cfg,
        sink.clone(),
        start,
        total as u64,
        Duration::from_secs(1800),
    )
    .await?;
    let handle = rx.recv().context("backlog source did not start")?;
    let report = tokio::task::spawn_blocking(move || handle.join())
        .await?
        .map_err(|_| anyhow::anyhow!("backlog thread panicked"))?;
    if let Some(e) = report.error {
        anyhow::bail!("backlog input: {e}");
    }
    anyhow::ensure!(
        report.committed as u64 == total as u64,
        "committed offsets sum to {}, expected {total}",
        report.committed
    );
    let mut v = engine::report("memory", &args, &out, report.bytes, total as u64, &sink);
    let limit = args.budget + 48 * 1024 * 1024;
    v["partitions"] = partitions.into();
    v["hours"] = hours.into();
    v["folders"] = (partitions * hours).into();
    v["budget_mib"] = measure::mib(args.budget).into();
    v["limit_mib"] = measure::mib(limit).into();
    v["memory_flushes"] = engine::metric_sum(
        &out.scrape,
        "kafka_s3_sink_flushes_total",
        Some("reason=\"memory\""),
    )
    .into();
    v["peak_within_limit"] = (out.peak_rss <= limit).into();
    Ok(v)
}

async fn latency(
    input: PathBuf,
    samples: usize,
    args: ConnectorArgs,
) -> anyhow::Result<serde_json::Value> {
    let cfg = args.config()?;
    let (records, _) = engine::load_records(&input, 1, 1, Some(1))?;
    anyhow::ensure!(!records.is_empty(), "{} is empty", input.display());
    let bound = args.max_age.min(args.idle) as f64;
    let mut delays = Vec::new();
    for _ in 0..samples.max(1) {
        let sink = args.sink(&cfg).await;
        let targets = kafka_s3_sink::app::targets(&cfg, vec![sink.clone() as Arc<dyn ObjectSink>]);
        let metrics = kafka_s3_sink::metrics::Metrics::unregistered();
        let token = tokio_util::sync::CancellationToken::new();
        let t0 = Instant::now();
        let (ios, handle) = kafka_s3_sink::source::replay::start(records.clone(), 1, 1)?;
        let run = tokio::spawn({
            let (cfg, token) = (cfg.clone(), token.clone());
            async move {
                kafka_s3_sink::app::run_workers(
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
        let deadline = t0 + Duration::from_secs(args.max_age.min(args.idle) + 60);
        let done = loop {
            if let Some(t) = sink.first_completed() {
                break Some(t);
            }
            if Instant::now() > deadline || run.is_finished() {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        token.cancel();
        run.await??;
        let _ = tokio::task::spawn_blocking(move || handle.join()).await?;
        let t = done.context("the record never reached the sink")?;
        delays.push(t.duration_since(t0).as_secs_f64());
    }
    let max = delays.iter().copied().fold(0.0, f64::max);
    Ok(serde_json::json!({
        "mode": "latency",
        "sink": format!("{:?}", args.sink).to_lowercase(),
        "max_age_secs": args.max_age,
        "idle_secs": args.idle,
        "delays_secs": delays.iter().map(|d| measure::round3(*d)).collect::<Vec<_>>(),
        "max_delay_secs": measure::round3(max),
        "max_delay_minus_max_age_secs": measure::round3(max - args.max_age as f64),
        "max_delay_minus_first_deadline_secs": measure::round3(max - bound),
        "within_max_age_plus_2s": max <= args.max_age as f64 + 2.0,
    }))
}

async fn s3_server(root: PathBuf, bucket: String) -> anyhow::Result<serde_json::Value> {
    let server = LocalS3::start(LocalS3Options::new(&root)).await?;
    server.create_bucket_dir(&bucket)?;
    let opts = LocalS3Options::new(&root);
    let hello = serde_json::json!({
        "endpoint": server.endpoint(),
        "bucket": bucket,
        "access_key": opts.access_key,
        "secret_key": opts.secret_key,
        "pid": std::process::id(),
    });
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{hello}")?;
        stdout.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.shutdown().await;
    Ok(serde_json::json!({"mode": "s3-server", "stopped": true}))
}

async fn registry_server(auth: Option<(String, String)>) -> anyhow::Result<serde_json::Value> {
    let addr = "127.0.0.1:0".parse().expect("invariant: a valid address");
    let server = kafka_s3_sink::schema_server::SchemaServer::start(addr, auth).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "{}",
            serde_json::json!({"url": server.url(), "pid": std::process::id()})
        )?;
        stdout.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(serde_json::json!({"mode": "registry-server", "requests": server.requests()}))
}
