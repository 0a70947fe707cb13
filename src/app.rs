//! Assembly: builds the sinks, the Kafka source, the uploader and the pipeline from a validated
//! config, and runs them until the shutdown token is cancelled.
//!
//! Invariant: I/O enters only through the arguments (config, sinks, registry, shutdown token),
//! so tests and the demo run the same code as production.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DestinationConfig, Encryption};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError, RunStats};
use crate::sink::s3::S3Sink;
use crate::sink::{ObjectMeta, ObjectSink};
use crate::source::kafka::{self, SourceError, SourceOptions};
use crate::upload::{Target, Uploader};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The consumer could not start.
    #[error(transparent)]
    Source(#[from] SourceError),
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
    Join(String),
}

/// Object headers of a destination.
pub fn object_meta(d: &DestinationConfig) -> ObjectMeta {
    let (sse, kms_key_id) = match &d.encryption {
        Encryption::None => (None, None),
        Encryption::Aes256 => (Some("AES256".to_string()), None),
        Encryption::Kms { key_id } => (Some("aws:kms".to_string()), key_id.clone()),
    };
    let gzip = matches!(d.batch.compression, crate::config::Compression::Gzip { .. });
    ObjectMeta {
        content_type: d.content_type.clone(),
        content_encoding: (gzip && d.content_encoding_header).then(|| "gzip".to_string()),
        sse,
        kms_key_id,
        storage_class: d.storage_class.clone(),
    }
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
/// `/healthz` and `/readyz` from `registry` on `http.listen` while it runs.
pub async fn run(
    config: Config,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
) -> Result<RunStats, RunError> {
    let metrics = Metrics::new(&registry)?;
    let http_stop = CancellationToken::new();
    if let Some(addr) = config.http.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Listen { addr, source })?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(crate::http::serve(
            listener,
            registry,
            metrics.health(),
            http_stop.clone(),
        ));
    }
    let sinks = s3_sinks(&config).await;
    let result = run_with_sinks(config, sinks, metrics, shutdown, None).await;
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
    metrics
        .health()
        .set_unready_after(config.http.unready_after);
    for d in &config.destinations {
        metrics.init_destination(&d.name);
    }
    for (d, sink) in config.destinations.iter().zip(&sinks) {
        match tokio::time::timeout(Duration::from_secs(10), sink.check()).await {
            Ok(Ok(())) => {
                tracing::info!(destination = %d.name, bucket = %d.bucket, "bucket reachable")
            }
            Ok(Err(e)) => {
                tracing::warn!(destination = %d.name, error = %e, "bucket check failed; uploads will retry")
            }
            Err(_) => {
                tracing::warn!(destination = %d.name, "bucket check timed out; uploads will retry")
            }
        }
    }
    let targets = config
        .destinations
        .iter()
        .zip(sinks)
        .map(|(d, sink)| Target {
            name: d.name.clone(),
            sink,
            meta: object_meta(d),
        })
        .collect();
    let (uploader, done) = Uploader::new(
        targets,
        config.upload.concurrency.get(),
        config.upload.retry,
        config.upload.part_size_bytes,
        metrics.clone(),
    );
    let opts = SourceOptions {
        channel_chunks: 16,
        chunk_records: 1000,
        revoke_wait: config.pipeline.drain_deadline + Duration::from_secs(5),
    };
    let (io, handle) = kafka::start(&config.kafka, opts, metrics.clone())?;
    let mut pipeline = Pipeline::new(&config, uploader, done, io, metrics);
    if let Some(p) = progress {
        pipeline = pipeline.with_progress(p);
    }
    let result = pipeline.run(shutdown).await;
    // The Kafka thread ends once the pipeline dropped its channels; closing can take seconds.
    let joined = tokio::task::spawn_blocking(move || handle.join()).await;
    let stats = result?;
    match joined {
        Ok(Ok(())) => Ok(stats),
        Ok(Err(_)) => Err(RunError::Join("panicked".into())),
        Err(e) => Err(RunError::Join(e.to_string())),
    }
}
