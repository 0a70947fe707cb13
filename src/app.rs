//! Assembly: builds the sinks, the Kafka source, the uploader and the pipeline from a validated
//! config, and runs them until the shutdown token is cancelled.
//!
//! Invariant: I/O enters only through the arguments (config, sinks, registry, shutdown token),
//! so tests and the demo run the same code as production.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DestinationConfig, Encryption};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError, RunStats};
use crate::sink::s3::S3Sink;
use crate::sink::{ObjectMeta, ObjectSink};
use crate::source::kafka::{self, SourceError, SourceOptions};
use crate::table::open::Tables;
use crate::upload::{Target, Uploader};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The consumer could not start.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The configuration is refused (a librdkafka property).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The worker stopped on an error.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The Kafka thread panicked or could not be joined.
    #[error("kafka thread: {0}")]
    Join(#[from] JoinError),
    /// A worker thread panicked or could not be started.
    #[error("worker thread: {0}")]
    Worker(String),
    /// An Iceberg destination's catalog or table could not be opened.
    #[error(transparent)]
    Table(#[from] crate::table::TableError),
    /// A setting the start-up checks refuse (no credentials, no such bucket, access denied,
    /// an unknown topic): the one-line fix.
    #[error("{0}")]
    Settings(#[from] crate::connect::SettingsError),
}

/// Why a thread or task of the run could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// It panicked.
    #[error("panicked")]
    Panicked,
    /// Its task was cancelled or panicked (tokio's answer).
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

impl RunError {
    /// The process's exit code for this error: 2 for a setting to change, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Settings(_) | Self::Config(_) | Self::Listen { .. } => 2,
            _ => 1,
        }
    }
}

/// Reads and validates a config file, with the start-up checks of [`crate::preflight`]
/// (librdkafka's verdict on the properties, key lengths): what `check-config`, `run` and
/// `verify` start from.
pub fn load(path: &std::path::Path) -> Result<Config, crate::config::ConfigError> {
    let config = crate::config::load(path)?;
    crate::preflight::check(&config).map_err(|e| {
        crate::config::ConfigError::new(
            config.secrets.scrub(&e.key),
            config.secrets.scrub(&e.message),
        )
    })?;
    Ok(config)
}

/// Object headers of a destination.
pub fn object_meta(d: &DestinationConfig) -> ObjectMeta {
    let (sse, kms_key_id, bucket_key, kms_context) = match &d.encryption {
        Encryption::None => (None, None, false, None),
        Encryption::Aes256 => (Some("AES256".to_string()), None, false, None),
        Encryption::Kms {
            key_id,
            bucket_key,
            context,
        } => (
            Some("aws:kms".to_string()),
            key_id.clone(),
            *bucket_key,
            context.clone(),
        ),
    };
    let encoding = match d.batch.compression {
        crate::config::Compression::None => None,
        crate::config::Compression::Gzip { .. } => Some("gzip"),
        crate::config::Compression::Zstd { .. } => Some("zstd"),
    };
    ObjectMeta {
        content_type: d.content_type.clone(),
        content_encoding: encoding
            .filter(|_| d.content_encoding_header)
            .map(str::to_string),
        sse,
        kms_key_id,
        bucket_key,
        kms_context,
        storage_class: d.storage_class.clone(),
        user: Default::default(),
    }
}

/// Pairs each destination with its sink and object headers.
pub fn targets(config: &Config, sinks: Vec<Arc<dyn ObjectSink>>) -> Arc<Vec<Target>> {
    Arc::new(
        config
            .destinations
            .iter()
            .zip(sinks)
            .map(|(d, sink)| Target {
                name: d.name.clone(),
                sink,
                meta: object_meta(d),
                conditional: d.conditional_writes,
                compression: d.batch.compression,
                max_stored_raw_bytes: d.batch.max_object_raw_bytes(),
            })
            .collect(),
    )
}

/// Builds one S3 client per destination.
pub async fn s3_sinks(config: &Config) -> Vec<Arc<dyn ObjectSink>> {
    let mut out: Vec<Arc<dyn ObjectSink>> = Vec::new();
    for d in &config.destinations {
        out.push(Arc::new(
            S3Sink::connect(d, config.upload.request_timeout).await,
        ));
    }
    out
}

/// Runs the connector against S3 (sinks built from the config), serving `/metrics`,
/// `/healthz` and `/readyz` from `registry` on `http.listen` while it runs; `watch` sets its
/// progress line and whether it stops once drained ([`crate::progress`]).
pub async fn run(
    config: Config,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
    watch: crate::progress::RunWatch,
) -> Result<RunStats, RunError> {
    let metrics = Metrics::new(&registry)?;
    let http_stop = CancellationToken::new();
    if let Some(addr) = config.http.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Listen { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        let limits = crate::http::HttpLimits {
            max_connections: config.http.max_connections,
            header_read_timeout: config.http.header_read_timeout,
        };
        tokio::spawn(crate::http::serve(
            listener,
            registry,
            metrics.clone(),
            limits,
            http_stop.clone(),
        ));
    }
    let sinks = s3_sinks(&config).await;
    let (stats_tx, stats_rx) = tokio::sync::watch::channel(RunStats::default());
    let stop = shutdown.child_token();
    let watcher = crate::progress::watch(watch, metrics.clone(), stats_rx, stop.clone());
    let watcher = tokio::spawn(watcher);
    let result = run_with_sinks(config, sinks, metrics, stop, Some(stats_tx)).await;
    watcher.abort();
    http_stop.cancel();
    result
}

/// Runs the connector with the given sinks (one per destination, in config order).
/// `progress`, if given, receives the run's totals after every upload and commit.
pub async fn run_with_sinks(
    config: Config,
    sinks: Vec<Arc<dyn ObjectSink>>,
    metrics: Metrics,
    shutdown: CancellationToken,
    progress: Option<tokio::sync::watch::Sender<RunStats>>,
) -> Result<RunStats, RunError> {
    crate::preflight::check(&config)?;
    metrics
        .health()
        .set_unready_after(config.http.unready_after);
    metrics.set_memory_budget(config.pipeline.memory_budget_bytes);
    for d in &config.destinations {
        metrics.init_destination(&d.name);
    }
    // Every request counted, in the metrics and in readiness.
    let sinks: Vec<Arc<dyn ObjectSink>> = config
        .destinations
        .iter()
        .zip(sinks)
        .map(|(d, s)| {
            Arc::new(crate::upload::counted::Counted::new(
                s,
                &d.name,
                metrics.clone(),
            )) as Arc<dyn ObjectSink>
        })
        .collect();
    crate::connect::check_buckets(&config, &sinks).await?;
    crate::connect::check_topics(&config.kafka).await?;
    if let Some(registry) = crate::decode::registry::for_config(&config, &metrics)? {
        registry.check().await.map_err(|e| {
            crate::config::ConfigError::new(
                "kafka.schema_registry.url",
                format!("{e}; check the URL, the credentials and the network"),
            )
        })?;
    }
    if let Some(min_age) = config.upload.orphan_min_age {
        for (d, sink) in config.destinations.iter().zip(&sinks) {
            let cleanup = crate::upload::orphans::abort_orphans(d, &**sink, min_age, &metrics);
            match tokio::time::timeout(Duration::from_secs(60), cleanup).await {
                Ok(Ok(r)) => {
                    tracing::info!(destination = %d.name, in_progress = r.seen, aborted = r.aborted, "multipart uploads checked for orphans")
                }
                Ok(Err(e)) => {
                    tracing::warn!(destination = %d.name, error = %e, "could not list multipart uploads; orphan cleanup skipped (S3 lifecycle rules remain the backstop)")
                }
                Err(_) => {
                    tracing::warn!(destination = %d.name, "orphan cleanup timed out; skipped")
                }
            }
        }
    }
    // Each Iceberg destination's catalog and table, and the writer settings its files need.
    let metas: Vec<ObjectMeta> = config.destinations.iter().map(object_meta).collect();
    let (config, tables) = crate::table::open::open_tables(&config, &sinks, &metas).await?;
    // A table in another bucket (S3 Tables, a warehouse elsewhere) takes the data files; the
    // error folder stays in the destination's bucket.
    let sinks: Vec<Arc<dyn ObjectSink>> = config
        .destinations
        .iter()
        .zip(sinks)
        .map(|(d, s)| {
            let Some(data) = tables.get(&d.name).and_then(|t| t.data_sink.clone()) else {
                return s;
            };
            let data = Arc::new(crate::upload::counted::Counted::new(
                data,
                &d.name,
                metrics.clone(),
            ));
            let errors = format!("{}{}", d.prefix, d.error_prefix);
            match crate::sink::routed::Routed::new(&errors, s.clone(), data) {
                Some(r) => Arc::new(r) as Arc<dyn ObjectSink>,
                None => s,
            }
        })
        .collect();
    let probes = CancellationToken::new();
    let _stop_probes = probes.clone().drop_guard();
    tokio::spawn(probe_while_idle(sinks.clone(), metrics.clone(), probes));
    let targets = targets(&config, sinks);
    let plan = config.plan();
    let opts = SourceOptions {
        shards: config.pipeline.workers,
        channel_chunks: plan.channel_chunks,
        chunk_records: plan.chunk_records,
        revoke_wait: config.pipeline.drain_deadline + Duration::from_secs(5),
        headers: config
            .destinations
            .iter()
            .any(|d| d.kafka_metadata_field.is_some()),
    };
    let (ios, handle) = kafka::start(&config.kafka, opts, metrics.clone())?;
    let result = run_workers(&config, &tables, targets, ios, metrics, shutdown, progress).await;
    // The Kafka thread ends once every worker stopped; closing can take seconds.
    let joined = tokio::task::spawn_blocking(move || handle.join()).await;
    let stats = result?;
    match joined {
        Ok(Ok(())) => Ok(stats),
        Ok(Err(_)) => Err(JoinError::Panicked.into()),
        Err(e) => Err(JoinError::Task(e).into()),
    }
}

/// Runs one worker per source channel set (`ios`, from [`crate::source::kafka::start`] or
/// [`crate::source::replay::start`]) until `shutdown`, and returns their summed totals.
pub async fn run_workers(
    config: &Config,
    tables: &Tables,
    targets: Arc<Vec<Target>>,
    ios: Vec<crate::source::SourceIo>,
    metrics: Metrics,
    shutdown: CancellationToken,
    progress: Option<watch::Sender<RunStats>>,
) -> Result<RunStats, RunError> {
    if !crate::pipeline::tables_opened(config, tables) {
        return Err(RunError::Config(crate::config::ConfigError::new(
            "destinations",
            "an Iceberg destination's table is not open: run it with `run`, which opens its catalog first",
        )));
    }
    let workers = ios.len().max(1);
    // One schema cache for every worker.
    let registry = crate::decode::registry::for_config(config, &metrics)?;
    let permits = Arc::new(Semaphore::new(config.upload.concurrency.get()));
    // The files' share of the budget (the Kafka fetch path has the rest: `budget.rs`).
    let budget = config.plan().per_worker_files(workers);
    // One token for all workers: a worker that fails cancels it, so the others drain.
    let stop_all = shutdown.child_token();
    // A JoinSet aborts the workers if this future is dropped (the caller's task aborted), so
    // an aborted run behaves like a crashed process instead of leaving workers behind.
    let mut tasks = tokio::task::JoinSet::new();
    // The worker threads drop their pipelines when this future is dropped, as the JoinSet
    // aborts its tasks (see `on_own_thread`).
    let kill = KillOnDrop(CancellationToken::new());
    let io_runtime = tokio::runtime::Handle::current();
    let mut watchers = Vec::new();
    for (shard, io) in ios.into_iter().enumerate() {
        let (uploader, done) = Uploader::shared(
            targets.clone(),
            permits.clone(),
            config.upload.retry,
            config.upload.part_size_bytes,
            metrics.clone(),
        );
        let uploader = uploader.on_runtime(io_runtime.clone());
        let mut p = Pipeline::new(config, tables, uploader, done, io, metrics.clone())
            .with_shard(shard, budget);
        if let Some(r) = &registry {
            p = p.with_registry(r.clone());
        }
        if progress.is_some() {
            let (tx, rx) = watch::channel(RunStats::default());
            p = p.with_progress(tx);
            watchers.push(rx);
        }
        tasks.spawn(on_own_thread(
            shard,
            p.run(stop_all.clone()),
            kill.0.clone(),
        ));
    }
    if let Some(out) = progress {
        tokio::spawn(merge_progress(watchers, out));
    }
    let mut stats = RunStats::default();
    let mut first_error = None;
    while let Some(t) = tasks.join_next().await {
        match t {
            Ok(Ok(Ok(s))) => stats.merge(&s),
            Ok(Ok(Err(e))) => {
                first_error.get_or_insert(RunError::Pipeline(e));
            }
            Ok(Err(e)) => {
                stop_all.cancel();
                first_error.get_or_insert(RunError::Worker(e));
            }
            Err(e) => {
                stop_all.cancel();
                first_error.get_or_insert(RunError::Worker(e.to_string()));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// Checks every bucket whenever no S3 request succeeded for [`Health::probe_every`], so an
/// idle worker stays ready while S3 answers, and turns unready when it stops answering.
///
/// [`Health::probe_every`]: crate::health::Health::probe_every
async fn probe_while_idle(
    sinks: Vec<Arc<dyn ObjectSink>>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let health = metrics.health();
    loop {
        let every = health.probe_every();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !health.s3_quiet_for(every) {
            continue;
        }
        for sink in &sinks {
            // Counted by the sink; failures are in readiness's reason, and logged (rate-limited).
            if let Ok(Err(e)) = tokio::time::timeout(every, sink.check()).await {
                if let Some(repeats) = metrics.s3_error_to_log(&e.cause()) {
                    tracing::warn!(error = %e, repeats_not_shown = repeats, "idle bucket check failed");
                }
            }
        }
    }
}

/// Publishes the sum of every worker's totals whenever one of them changes.
async fn merge_progress(
    mut watchers: Vec<watch::Receiver<RunStats>>,
    out: watch::Sender<RunStats>,
) {
    // Totals of workers that already stopped (their last published values).
    let mut finished = RunStats::default();
    loop {
        let mut merged = finished.clone();
        for w in &watchers {
            merged.merge(&w.borrow());
        }
        out.send_replace(merged);
        if watchers.is_empty() {
            return;
        }
        let changes = watchers.iter_mut().map(|w| Box::pin(w.changed()));
        let (r, i, _) = futures::future::select_all(changes).await;
        if r.is_err() {
            let w = watchers.remove(i);
            finished.merge(&w.borrow());
        }
    }
}

/// Cancels its token when dropped.
struct KillOnDrop(CancellationToken);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs one worker on a thread of its own and gives its result back here.
///
/// A worker scans and compresses inline and, under load, runs through chunk after chunk before
/// it yields. On the shared runtime it would hold one of the threads that serve uploads,
/// `/metrics`, the health probes and the signal handler, and `/healthz` would answer late during
/// a full-speed drain (BENCHMARKS.md, "Measured and kept"). On its own thread a worker only
/// competes for a core, which the OS shares out. The thread runs a current-thread runtime for the
/// worker's timers; its uploads are spawned on the shared runtime ([`Uploader::on_runtime`]).
///
/// `kill` drops the worker's future at its next await, as aborting a task does: that is how a
/// dropped run (an aborted caller, a crash test) stops its workers without a flush or a commit.
async fn on_own_thread(
    shard: usize,
    work: impl std::future::Future<Output = Result<RunStats, PipelineError>> + Send + 'static,
    kill: CancellationToken,
) -> Result<Result<RunStats, PipelineError>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("kss-worker-{shard}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot build its runtime: {e}")));
                    return;
                }
            };
            let out = rt.block_on(async {
                tokio::select! {
                    biased;
                    _ = kill.cancelled() => None,
                    r = work => Some(r),
                }
            });
            if let Some(r) = out {
                let _ = tx.send(Ok(r));
            }
        })
        .map_err(|e| format!("cannot start: {e}"))?;
    rx.await
        .map_err(|_| "ended without a result (panicked, or the run was dropped)".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Sets its flag when dropped.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    // A current-thread test runtime: had the worker run on it, the worker's blocking wait
    // below would hold its only thread, and the answer it waits for would never be sent.
    #[tokio::test]
    async fn a_worker_blocking_its_thread_does_not_hold_the_runtime() {
        let (ask_tx, ask_rx) = std::sync::mpsc::channel::<()>();
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<String>();
        let work = async move {
            // Blocks this thread, as a compression does, until the runtime's task answers.
            ask_rx
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| PipelineError::Source(crate::source::ConsumerError::Stopped))?;
            let name = std::thread::current().name().unwrap_or("").to_string();
            let _ = answer_tx.send(name);
            Ok(RunStats::default())
        };
        let worker = tokio::spawn(on_own_thread(3, work, CancellationToken::new()));
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = ask_tx.send(());
        });
        let name = answer_rx.await.expect("the worker answered");
        assert_eq!(name, "kss-worker-3");
        let out = worker.await.expect("joined").expect("result");
        assert!(out.is_ok());
    }

    #[tokio::test]
    async fn a_killed_worker_drops_its_future_without_a_result() {
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let kill = CancellationToken::new();
        let work = async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(RunStats::default())
        };
        let worker = tokio::spawn(on_own_thread(0, work, kill.clone()));
        kill.cancel();
        let out = worker.await.expect("joined");
        assert!(out.is_err(), "no result after a kill");
        assert!(dropped.load(Ordering::SeqCst), "the future was dropped");
    }

    #[tokio::test]
    async fn a_panicking_worker_is_an_error_not_a_hang() {
        let work = async move {
            if std::hint::black_box(true) {
                panic!("worker bug");
            }
            Ok(RunStats::default())
        };
        let out = on_own_thread(1, work, CancellationToken::new()).await;
        assert!(out.unwrap_err().contains("panicked"));
    }
}
