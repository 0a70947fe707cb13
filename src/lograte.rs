//! Rate limit for repeated log lines: a failure that repeats (a broker down, S3 answering 503)
//! is logged once per [`REPEAT_EVERY`] per distinct cause, with the number of repeats not shown.
//!
//! Invariant: bounded memory (at most [`MAX_CAUSES`] causes are remembered; past that the
//! table starts over, which at worst logs a line early).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often one repeated cause is logged.
pub const REPEAT_EVERY: Duration = Duration::from_secs(10);

/// Distinct causes remembered at most.
const MAX_CAUSES: usize = 64;

/// Causes already logged, with when and how many repeats were held back since.
#[derive(Debug, Default)]
pub struct RepeatLog {
    seen: HashMap<String, (Instant, u64)>,
}

impl RepeatLog {
    /// `Some(repeats not shown since it was last logged)` when `cause` is to be logged now.
    pub fn admit(&mut self, cause: &str) -> Option<u64> {
        self.admit_at(cause, Instant::now())
    }

    fn admit_at(&mut self, cause: &str, now: Instant) -> Option<u64> {
        if let Some((at, repeats)) = self.seen.get_mut(cause) {
            if now.duration_since(*at) < REPEAT_EVERY {
                *repeats += 1;
                return None;
            }
            let shown = *repeats;
            (*at, *repeats) = (now, 0);
            return Some(shown);
        }
        if self.seen.len() >= MAX_CAUSES {
            self.seen.clear();
        }
        self.seen.insert(cause.to_string(), (now, 0));
        Some(0)
    }
}

/// `text` with every run of digits replaced by `#`: librdkafka's repeats differ only in
/// numbers ("after 0ms", "after 1002ms", broker ids), which must not make them distinct.
pub fn without_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_causes_are_counted_not_logged() {
        let mut log = RepeatLog::default();
        let t0 = Instant::now();
        let (down, ssl) = ("AllBrokersDown", "SSL handshake failed");
        assert_eq!(log.admit_at(down, t0), Some(0));
        assert_eq!(log.admit_at(ssl, t0), Some(0));
        for _ in 0..99 {
            assert_eq!(log.admit_at(down, t0), None);
            assert_eq!(log.admit_at(ssl, t0), None);
        }
        // Past the interval the cause is logged again, with its count, which starts over.
        let later = t0 + REPEAT_EVERY;
        assert_eq!(log.admit_at(down, later), Some(99));
        assert_eq!(log.admit_at(down, later), None);
        assert_eq!(log.seen[down].1, 1);
    }

    #[test]
    fn numbers_do_not_make_causes_distinct() {
        assert_eq!(
            without_numbers("Connect to ipv4#127.0.0.1:9092 failed (after 1002ms)"),
            without_numbers("Connect to ipv4#127.0.0.1:9092 failed (after 0ms)")
        );
    }
}
