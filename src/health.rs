//! Readiness state: set by the Kafka thread (group joined) and the uploader (S3 answered, or has
//! been failing since when), read by `/readyz` and the `kafka_s3_sink_ready` gauge.
//!
//! Invariant: only atomics and a short-held mutex; safe to call from rdkafka callbacks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared readiness flags.
#[derive(Debug)]
pub struct Health {
    joined: AtomicBool,
    s3_ok: AtomicBool,
    failing_since: Mutex<Option<Instant>>,
    unready_after_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            joined: AtomicBool::new(false),
            s3_ok: AtomicBool::new(false),
            failing_since: Mutex::new(None),
            unready_after_ms: AtomicU64::new(120_000),
        }
    }
}

impl Health {
    /// How long uploads may keep failing before the worker reports not ready.
    pub fn set_unready_after(&self, d: Duration) {
        self.unready_after_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// The consumer joined its group (a rebalance assigned partitions, possibly none).
    pub fn group_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    /// An S3 request succeeded.
    pub fn s3_succeeded(&self) {
        self.s3_ok.store(true, Ordering::Relaxed);
        if let Ok(mut f) = self.failing_since.lock() {
            *f = None;
        }
    }

    /// An S3 request failed.
    pub fn s3_failed(&self) {
        if let Ok(mut f) = self.failing_since.lock() {
            f.get_or_insert_with(Instant::now);
        }
    }

    /// Why the worker is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if !self.joined.load(Ordering::Relaxed) {
            return Some("consumer has not joined its group yet".into());
        }
        let limit = Duration::from_millis(self.unready_after_ms.load(Ordering::Relaxed));
        if let Ok(f) = self.failing_since.lock() {
            if let Some(since) = *f {
                let failing = since.elapsed();
                if failing >= limit {
                    return Some(format!("S3 uploads failing for {}s", failing.as_secs()));
                }
            }
        }
        if !self.s3_ok.load(Ordering::Relaxed) {
            return Some("S3 has not answered yet".into());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_group_and_s3_and_no_long_failure() {
        let h = Health::default();
        assert!(h.not_ready_reason().unwrap().contains("group"));
        h.group_joined();
        assert!(h.not_ready_reason().unwrap().contains("S3"));
        h.s3_succeeded();
        assert_eq!(h.not_ready_reason(), None);
        h.set_unready_after(Duration::ZERO);
        h.s3_failed();
        assert!(h.not_ready_reason().unwrap().contains("failing"));
        h.s3_succeeded();
        assert_eq!(h.not_ready_reason(), None);
    }
}
