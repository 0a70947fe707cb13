//! The real pipeline run in a task for the scenario tests: start, wait for its totals with a
//! deadline, stop cleanly or crash; a counter read back from a registry; and the binary's
//! `verify` on a config.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use kafka_s3_sink::app::{self, RunError};
use kafka_s3_sink::config::Config;
use kafka_s3_sink::metrics::Metrics;
use kafka_s3_sink::pipeline::RunStats;

use super::init_tracing;

/// A pipeline running in a task, with its shutdown token and progress channel.
pub struct Running {
    /// Cancelling it starts a clean shutdown.
    pub token: CancellationToken,
    /// The run's task.
    pub handle: JoinHandle<Result<RunStats, RunError>>,
    /// Totals after every upload and commit.
    pub progress: watch::Receiver<RunStats>,
}

/// Starts the real pipeline (S3 sinks from the config) in a task.
pub async fn start_pipeline(cfg: Config) -> Running {
    start_pipeline_with_metrics(cfg, Metrics::unregistered()).await
}

/// [`start_pipeline`] with the caller's metrics (e.g. `Metrics::new(&registry)`, read back with
/// [`counter_sum`]).
pub async fn start_pipeline_with_metrics(cfg: Config, metrics: Metrics) -> Running {
    init_tracing();
    let sinks = app::s3_sinks(&cfg).await;
    let token = CancellationToken::new();
    let (tx, progress) = watch::channel(RunStats::default());
    let handle = tokio::spawn(app::run_with_sinks(
        cfg,
        sinks,
        metrics,
        token.clone(),
        Some(tx),
    ));
    Running {
        token,
        handle,
        progress,
    }
}

impl Running {
    /// The latest totals.
    pub fn stats(&self) -> RunStats {
        self.progress.borrow().clone()
    }

    /// Waits until `done` holds for the published totals; panics with them after `within`, or if
    /// the run ended first.
    pub async fn wait_until(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&RunStats) -> bool,
    ) -> RunStats {
        let deadline = Instant::now() + within;
        loop {
            {
                let s = self.progress.borrow_and_update();
                if done(&s) {
                    return s.clone();
                }
            }
            assert!(
                !self.handle.is_finished(),
                "the pipeline stopped before {what}: {:?}",
                self.stats()
            );
            assert!(
                Instant::now() < deadline,
                "not {what} within {within:?}: {:?}",
                self.stats()
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), self.progress.changed()).await;
        }
    }

    /// Waits until the pipeline's own view of committed offsets (summed over partitions of
    /// every topic) reaches `total`.
    pub async fn wait_committed_total(&mut self, total: i64, within: Duration) -> RunStats {
        self.wait_until(within, &format!("{total} offsets committed"), |s| {
            s.committed.values().sum::<i64>() >= total
        })
        .await
    }

    /// Clean shutdown: cancels the token and waits (bounded) for the run's result.
    pub async fn stop(self) -> RunStats {
        self.token.cancel();
        match tokio::time::timeout(Duration::from_secs(60), self.handle).await {
            Ok(Ok(Ok(stats))) => stats,
            Ok(Ok(Err(e))) => panic!("pipeline failed: {e}"),
            Ok(Err(e)) => panic!("pipeline task: {e}"),
            Err(_) => panic!("pipeline did not stop within 60 s"),
        }
    }

    /// Simulated crash: aborts the run's task without cancelling the token, so nothing more is
    /// flushed or committed. Uploads already handed to the uploader may still finish (they run
    /// in their own tasks), like requests in flight when a process dies. The Kafka thread sees
    /// its channels closed and leaves the group without committing.
    pub fn crash(self) {
        self.handle.abort();
    }
}

/// Sum of counter `name` over the series whose labels include every pair of `labels`.
pub fn counter_sum(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut total = 0.0;
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let has = |(k, v): &(&str, &str)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            };
            if labels.iter().all(has) {
                total += m.get_counter().get_value();
            }
        }
    }
    total as u64
}

/// Runs the binary's `verify` on `config_text`; returns (exit code, stdout, stderr, elapsed).
pub async fn verify_binary(
    config_text: &str,
    args: &[&str],
) -> (Option<i32>, String, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.toml");
    std::fs::write(&path, config_text).unwrap();
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kafka-s3-sink"))
        .arg("verify")
        .arg("--config")
        .arg(&path)
        .args(args)
        .env("KAFKA_S3_SINK_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("verify binary finished within 120 s")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        started.elapsed(),
    )
}
