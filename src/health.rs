//! Readiness state: set by the Kafka thread (group joined, or the client error that keeps it
//! out), by every S3 request (the start-up bucket check and the idle probes included) and by
//! the Schema Registry client, read by `/readyz` and the `kafka_s3_sink_ready` gauge.
//!
//! Ready means: the consumer joined its group (an assignment arrived, possibly empty: a replica
//! with nothing to own is ready) and an S3 request succeeded within `unready_after`. An idle
//! worker keeps the second true with a bucket check whenever S3 has been quiet for
//! [`Health::probe_every`]. A Schema Registry that has been failing for its own
//! `unready_after_secs` (consumption waits on it) also makes the worker not ready.
//!
//! Invariant: only atomics and short-held mutexes; safe to call from rdkafka callbacks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared readiness state.
#[derive(Debug)]
pub struct Health {
    joined: AtomicBool,
    /// The last S3 request that succeeded.
    s3_ok_at: Mutex<Option<Instant>>,
    /// The last S3 failure since then (one line), cleared by a success.
    s3_error: Mutex<Option<String>>,
    /// The last Kafka client error before the group was joined (one line).
    kafka_error: Mutex<Option<String>>,
    unready_after_ms: AtomicU64,
    /// Since when the Schema Registry has been failing, and its last error (one line).
    registry_failing: Mutex<Option<(Instant, String)>>,
    registry_unready_after_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            joined: AtomicBool::new(false),
            s3_ok_at: Mutex::new(None),
            s3_error: Mutex::new(None),
            kafka_error: Mutex::new(None),
            unready_after_ms: AtomicU64::new(120_000),
            registry_failing: Mutex::new(None),
            registry_unready_after_ms: AtomicU64::new(120_000),
        }
    }
}

/// The longest wait between two bucket checks of an idle worker.
const PROBE_EVERY_MAX: Duration = Duration::from_secs(30);

impl Health {
    /// How long S3 may go without a successful request before the worker reports not ready.
    pub fn set_unready_after(&self, d: Duration) {
        self.unready_after_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    fn unready_after(&self) -> Duration {
        Duration::from_millis(self.unready_after_ms.load(Ordering::Relaxed))
    }

    /// How often an idle worker checks its buckets: a quarter of `unready_after`, at most 30 s,
    /// so a few failed checks in a row are needed before it turns unready.
    pub fn probe_every(&self) -> Duration {
        (self.unready_after() / 4).clamp(Duration::from_millis(100), PROBE_EVERY_MAX)
    }

    /// Whether no S3 request succeeded within `quiet` (the idle probe is then due).
    pub fn s3_quiet_for(&self, quiet: Duration) -> bool {
        lock(&self.s3_ok_at).is_none_or(|at| at.elapsed() >= quiet)
    }

    /// The consumer joined its group (a rebalance assigned partitions, possibly none).
    pub fn group_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
        *lock(&self.kafka_error) = None;
    }

    /// A Kafka client error (broker unreachable, TLS or SASL refused): the reason given while
    /// the group is not joined.
    pub fn kafka_failed(&self, error: &str) {
        if !self.joined.load(Ordering::Relaxed) {
            *lock(&self.kafka_error) = Some(one_line(error));
        }
    }

    /// An S3 request succeeded (the store answered as it should).
    pub fn s3_succeeded(&self) {
        *lock(&self.s3_ok_at) = Some(Instant::now());
        *lock(&self.s3_error) = None;
    }

    /// An S3 request failed; `error` is its one-line description.
    pub fn s3_failed(&self, error: &str) {
        *lock(&self.s3_error) = Some(one_line(error));
    }

    /// How long the Schema Registry may fail before the worker reports not ready.
    pub fn set_registry_unready_after(&self, d: Duration) {
        self.registry_unready_after_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// A Schema Registry request failed as an outage (unreachable, 5xx, refused credentials).
    pub fn registry_failed(&self, error: &str) {
        let mut g = lock(&self.registry_failing);
        let since = g.as_ref().map_or_else(Instant::now, |(at, _)| *at);
        *g = Some((since, one_line(error)));
    }

    /// A Schema Registry request was answered (a schema, or a 404).
    pub fn registry_answered(&self) {
        *lock(&self.registry_failing) = None;
    }

    /// Since when the Schema Registry has been failing, if it is.
    pub fn registry_failing_for(&self) -> Option<Duration> {
        lock(&self.registry_failing)
            .as_ref()
            .map(|(at, _)| at.elapsed())
    }

    /// Why the worker is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if let Some((at, e)) = lock(&self.registry_failing).clone() {
            let limit =
                Duration::from_millis(self.registry_unready_after_ms.load(Ordering::Relaxed));
            if at.elapsed() >= limit {
                return Some(format!(
                    "the Schema Registry has been failing for {}s (consumption waits on it): {e}",
                    at.elapsed().as_secs()
                ));
            }
        }
        if !self.joined.load(Ordering::Relaxed) {
            return Some(match lock(&self.kafka_error).as_deref() {
                Some(e) => format!("consumer has not joined its group: {e}"),
                None => "consumer has not joined its group yet".into(),
            });
        }
        let error = lock(&self.s3_error).clone();
        let since = *lock(&self.s3_ok_at);
        let limit = self.unready_after();
        match (since, error) {
            (None, None) => Some("S3 has not answered yet".into()),
            (None, Some(e)) => Some(format!("no S3 request has succeeded yet: {e}")),
            (Some(at), e) if at.elapsed() >= limit => {
                let mut why = format!(
                    "no S3 request has succeeded for {}s",
                    at.elapsed().as_secs()
                );
                if let Some(e) = e {
                    why.push_str(": ");
                    why.push_str(&e);
                }
                Some(why)
            }
            _ => None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `s` on one line, at most 300 characters.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_group_and_a_recent_s3_success() {
        let h = Health::default();
        assert!(h.not_ready_reason().unwrap().contains("group"));
        h.kafka_failed("127.0.0.1:9092/bootstrap: Connect failed: Connection refused");
        assert_eq!(
            h.not_ready_reason().unwrap(),
            "consumer has not joined its group: 127.0.0.1:9092/bootstrap: Connect failed: Connection refused"
        );
        h.group_joined();
        assert!(h
            .not_ready_reason()
            .unwrap()
            .contains("S3 has not answered"));
        h.s3_failed("ListObjectsV2 s3://b/ failed: HTTP 503 SlowDown");
        assert!(h.not_ready_reason().unwrap().contains("HTTP 503"));
        h.s3_succeeded();
        assert_eq!(h.not_ready_reason(), None);
        // A failure after a recent success does not turn it unready...
        h.s3_failed("PutObject s3://b/k failed: HTTP 500");
        assert_eq!(h.not_ready_reason(), None);
        // ...a success older than the limit does, with the last failure.
        h.set_unready_after(Duration::ZERO);
        let why = h.not_ready_reason().unwrap();
        assert!(why.contains("no S3 request has succeeded for"), "{why}");
        assert!(why.contains("HTTP 500"), "{why}");
    }

    #[test]
    fn a_registry_failing_past_its_limit_is_the_reason() {
        let h = Health::default();
        h.group_joined();
        h.s3_succeeded();
        h.registry_failed("GET /schemas/ids/7: connection refused");
        assert_eq!(h.not_ready_reason(), None);
        assert!(h.registry_failing_for().is_some());
        h.set_registry_unready_after(Duration::ZERO);
        let why = h.not_ready_reason().unwrap();
        assert!(
            why.contains("Schema Registry") && why.contains("refused"),
            "{why}"
        );
        h.registry_answered();
        assert_eq!(h.not_ready_reason(), None);
        assert_eq!(h.registry_failing_for(), None);
    }

    #[test]
    fn kafka_errors_after_joining_are_not_the_reason() {
        let h = Health::default();
        h.group_joined();
        h.kafka_failed("broker down");
        h.s3_succeeded();
        assert_eq!(h.not_ready_reason(), None);
    }

    #[test]
    fn idle_probe_interval_and_quiet() {
        let h = Health::default();
        assert_eq!(h.probe_every(), Duration::from_secs(30));
        h.set_unready_after(Duration::from_secs(20));
        assert_eq!(h.probe_every(), Duration::from_secs(5));
        assert!(h.s3_quiet_for(Duration::from_secs(5)));
        h.s3_succeeded();
        assert!(!h.s3_quiet_for(Duration::from_secs(5)));
        assert!(h.s3_quiet_for(Duration::ZERO));
    }

    #[test]
    fn reasons_stay_on_one_line() {
        let h = Health::default();
        h.kafka_failed(&format!("a\nb{}", "x".repeat(1000)));
        let why = h.not_ready_reason().unwrap();
        assert!(!why.contains('\n'));
        assert!(why.len() < 400);
    }
}
