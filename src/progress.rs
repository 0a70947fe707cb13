//! What `run` reports and decides about its own progress: a periodic INFO line `progress` with
//! the run's totals (records in, objects uploaded) and the committed lag of the partitions this
//! process owns, and, for backfills (`run --until-drained`), the stop once every owned
//! partition is committed to its end.
//!
//! Invariant: "its end" is the high watermark librdkafka last reported for the partition (its
//! statistics, every 5 s by default), checked every second. Records produced after that report
//! are left for the next run: only what is in S3 is ever committed, so nothing is skipped. A
//! process that owns no partition is never drained.

use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::pipeline::RunStats;

/// How often the drained condition is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Default interval of the progress line.
pub const DEFAULT_PROGRESS_SECS: u64 = 30;

/// What `run` watches about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunWatch {
    /// Interval of the progress line (`None`: no line).
    pub progress_every: Option<Duration>,
    /// Stop the run once every owned partition is committed to its end.
    pub until_drained: bool,
}

impl Default for RunWatch {
    fn default() -> Self {
        Self {
            progress_every: Some(Duration::from_secs(DEFAULT_PROGRESS_SECS)),
            until_drained: false,
        }
    }
}

impl RunWatch {
    /// Refuses `until_drained` with librdkafka's statistics turned off
    /// (`statistics.interval.ms = 0`): the high watermarks come from them, so the run would
    /// never stop.
    pub fn check(&self, config: &crate::config::Config) -> Result<(), crate::config::ConfigError> {
        let off = config
            .kafka
            .properties
            .get("statistics.interval.ms")
            .is_some_and(|v| v.trim() == "0");
        if self.until_drained && off {
            return Err(crate::config::ConfigError::new(
                "kafka.properties.\"statistics.interval.ms\"",
                "0 turns off librdkafka's statistics, which --until-drained reads the high watermarks from; remove it or set it above 0",
            ));
        }
        Ok(())
    }
}

/// Logs the progress line every `opts.progress_every` and, with `opts.until_drained`, cancels
/// `stop` once drained (the run then drains and exits as on SIGTERM). Returns when `stop` is
/// cancelled.
pub async fn watch(
    opts: RunWatch,
    metrics: Metrics,
    stats: watch::Receiver<RunStats>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The line comes every so many checks (whole seconds: no drift against the check's tick).
    let ticks_per_line = opts
        .progress_every
        .map(|every| (every.as_millis() / CHECK_EVERY.as_millis()).max(1));
    let mut ticks: u128 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let lag = metrics.lag_summary();
        let (records_in, objects) = {
            let s = stats.borrow();
            (s.records_in, s.objects)
        };
        ticks += 1;
        if ticks_per_line.is_some_and(|n| ticks.is_multiple_of(n)) {
            tracing::info!(
                records_in,
                objects,
                committed_lag = lag.committed_lag,
                partitions = lag.partitions,
                partitions_without_watermark = lag.partitions - lag.known,
                "progress"
            );
        }
        if opts.until_drained && lag.drained() {
            tracing::info!(
                records_in,
                objects,
                partitions = lag.partitions,
                "drained: every assigned partition is committed to its high watermark; stopping"
            );
            stop.cancel();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TopicPartition;

    #[test]
    fn until_drained_needs_the_statistics() {
        let config = |props: &str| {
            crate::config::parse(
                &format!("[kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n[kafka.properties]\n{props}\n[[destinations]]\nname = \"d\"\nbucket = \"x\"\n"),
                &|_| None,
            )
            .unwrap()
        };
        let drain = RunWatch {
            until_drained: true,
            ..RunWatch::default()
        };
        let off = config("\"statistics.interval.ms\" = \"0\"");
        let e = drain.check(&off).unwrap_err();
        assert!(e.key.contains("statistics.interval.ms"), "{e}");
        assert!(RunWatch::default().check(&off).is_ok());
        assert!(drain.check(&config("")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn until_drained_stops_the_run_once_every_partition_is_committed_to_its_end() {
        let m = Metrics::unregistered();
        let tp = TopicPartition::new("t", 0);
        m.rebalance(true, std::slice::from_ref(&tp));
        m.partition_stats(&tp, 50, -1, -1001, 0);
        let (_tx, rx) = watch::channel(RunStats::default());
        let stop = CancellationToken::new();
        let opts = RunWatch {
            progress_every: None,
            until_drained: true,
        };
        let task = tokio::spawn(watch(opts, m.clone(), rx, stop.clone()));
        m.committed(&[(tp.clone(), 49)]);
        // Not drained: the watcher keeps running through a few checks.
        tokio::time::sleep(CHECK_EVERY * 2).await;
        assert!(!stop.is_cancelled());
        m.committed(&[(tp, 50)]);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("stopped once drained")
            .unwrap();
        assert!(stop.is_cancelled());
    }
}
