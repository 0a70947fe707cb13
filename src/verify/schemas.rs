//! The Schema Registry as `verify` reads it: the connector's own client ([`Registry`]: one
//! fetch per schema id, its byte-bounded cache, its error types) asked from the blocking threads
//! that read Kafka and S3, and the connector's own reading of a record
//! ([`crate::decode::value::view`]), so a record decodes to the line the pipeline wrote, or to
//! the quarantine it chose.
//!
//! Invariants: only [`Lookup::Outage`] is retried (with backoff, at most `attempts` tries per
//! schema, one retrying lookup at a time, so an outage costs `attempts` requests whichever
//! threads ask); a 404 or a schema that does not parse is an answer, as it is for the pipeline (the
//! record is quarantined). Once the attempts are spent the verification fails with
//! [`VerifyError::Registry`] (exit 4) and every later lookup fails at once: an outage never
//! shows as a missing record. The cache holds at most the share of `--max-memory-mb` given to
//! it; a schema evicted meanwhile is fetched again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backon::BackoffBuilder;

use super::VerifyError;
use crate::config::registry::{KeyFormat, ValueFormat};
use crate::config::Config;
use crate::decode::registry::{self, Lookup, Registry};
use crate::decode::value::{read_ahead, view, View};
use crate::decode::Parsed;
use crate::metrics::Metrics;
use crate::model::{QuarantineReason, Record};

type Answer = Result<Arc<Parsed>, Lookup>;

/// First wait after a failed attempt; it doubles up to [`MAX_DELAY`].
const MIN_DELAY: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The registry client of one verification, shared by its Kafka and S3 sides.
#[derive(Debug)]
pub struct Schemas {
    registry: Arc<Registry>,
    /// The runtime whose timers the backoff sleeps on.
    rt: tokio::runtime::Handle,
    attempts: u32,
    /// The outage that ended the verification, once there is one.
    failed: OnceLock<String>,
    /// Held by the lookup that is fetching (and retrying); the others wait for its outcome.
    fetching: tokio::sync::Mutex<()>,
    /// The cache's limit, and whether a schema that did not stay in it was reported.
    cache_bytes: usize,
    too_large_said: AtomicBool,
}

impl Schemas {
    /// The client of `config`'s `[kafka.schema_registry]`, its cache bounded by `cache_bytes`
    /// (at most the config's own `cache_bytes`); each schema is tried `attempts` times. Call it
    /// on the runtime that has the I/O driver.
    pub fn new(config: &Config, cache_bytes: usize, attempts: u32) -> Result<Self, VerifyError> {
        let mut cfg = config.clone();
        let Some(r) = cfg.kafka.schema_registry.as_mut() else {
            return Err(VerifyError::Usage {
                key: "kafka.schema_registry".into(),
                message: "the destination reads the Confluent wire format (value_format / key_format); set [kafka.schema_registry] url".into(),
            });
        };
        r.cache_bytes = r.cache_bytes.min(cache_bytes);
        let cache_bytes = r.cache_bytes;
        let registry = registry::for_config(&cfg, &Metrics::unregistered())
            .map_err(|e| VerifyError::Usage {
                key: e.key,
                message: e.message,
            })?
            .ok_or_else(|| VerifyError::Task("no destination reads the registry".into()))?;
        Ok(Self {
            registry,
            rt: tokio::runtime::Handle::current(),
            attempts: attempts.max(1),
            failed: OnceLock::new(),
            fetching: tokio::sync::Mutex::new(()),
            cache_bytes,
            too_large_said: AtomicBool::new(false),
        })
    }

    /// Bytes the cached schemas hold.
    pub fn cached_bytes(&self) -> usize {
        self.registry.cached_bytes()
    }

    /// What a destination of these formats routes for `rec` (the pipeline's reading, see
    /// [`view`]), fetching the schemas it needs. Blocks: call it from a blocking thread.
    pub fn view(
        &self,
        value_format: ValueFormat,
        key_format: KeyFormat,
        rec: &Record,
    ) -> Result<View, VerifyError> {
        // The schemas fetched for this record: it reads with them even if the cache could not
        // keep them. Each round adds an id, and a record needs two at most.
        let mut at_hand: Vec<(u32, Answer)> = Vec::new();
        loop {
            let lookup = |id: u32| {
                at_hand
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, a)| a.clone())
                    .or_else(|| self.registry.cached(id))
            };
            let mut read = view(value_format, key_format, rec, None, lookup);
            // A datum the value tree refuses that the pipeline's window reader reads (a boolean
            // byte other than 0 or 1, a nullable union's branch out of range) was written as
            // the window reader read it.
            if let Ok(Some(Err((QuarantineReason::Undecodable, _)))) = read {
                if matches!(value_format, ValueFormat::Avro | ValueFormat::Auto) {
                    let ahead = read_ahead(&[rec.value.as_deref()], lookup);
                    if let Some(line) = ahead.first().and_then(Option::as_ref) {
                        read = view(value_format, key_format, rec, Some(line), lookup);
                    }
                }
            }
            match read {
                Ok(v) => return Ok(v),
                Err(id) => {
                    let answer = self.fetch(id)?;
                    at_hand.push((id, answer));
                }
            }
        }
    }

    /// Says once that schema `id` did not stay in the cache: each record needing it fetches it
    /// again, which is slow, not wrong.
    fn too_large(&self, id: u32) {
        if !self.too_large_said.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                schema_id = id,
                cache_bytes = self.cache_bytes,
                "a schema does not stay in verify's schema cache (a tenth of --max-memory-mb, at most kafka.schema_registry.cache_bytes): it is fetched again for every record that needs it; raise --max-memory-mb"
            );
        }
    }

    /// The schema of `id` (or the registry's answer that there is none), retrying an outage.
    /// Blocks: call it from a blocking thread.
    pub fn fetch(&self, id: u32) -> Result<Answer, VerifyError> {
        let outage = |message: &str| VerifyError::Registry {
            message: message.to_string(),
            attempts: self.attempts,
        };
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_jitter()
            .with_max_times(self.attempts as usize - 1)
            .build();
        self.rt.block_on(async {
            let _one = self.fetching.lock().await;
            let mut attempt = 1;
            loop {
                // The lookup this one waited for may have given up.
                if let Some(m) = self.failed.get() {
                    return Err(outage(m));
                }
                let e = match self.registry.schema(id).await {
                    Err(Lookup::Outage(e)) => e,
                    answer => {
                        if answer.is_ok() && self.registry.cached(id).is_none() {
                            self.too_large(id);
                        }
                        return Ok(answer);
                    }
                };
                let Some(wait) = backoff.next() else {
                    let m = self.failed.get_or_init(|| e);
                    return Err(outage(m));
                };
                tracing::info!(
                    error = %e,
                    schema_id = id,
                    attempt,
                    attempts = self.attempts,
                    retry_in_ms = wait.as_millis() as u64,
                    "the Schema Registry did not answer; retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        })
    }
}
