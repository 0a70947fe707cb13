//! The worker's side of the Schema Registry: before a chunk whose destinations read the
//! Confluent wire format is taken in, every schema id it holds must be at hand. A chunk with a
//! schema not cached waits (stalled) while the schemas are fetched; intake stops meanwhile, so
//! the Kafka thread pauses the partitions once the channel fills. An outage is retried with
//! backoff (the chunk keeps waiting; shutdown, revokes and uploads go on), never turned into a
//! quarantine.
//!
//! Invariants: a stalled chunk's records are not in the offset tracker, so nothing of them is
//! committed before they are written; the schemas fetched for a chunk stay at hand until it is
//! taken in, even if the cache evicts them meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::time::Instant;

use super::{Pipeline, PipelineError};
use crate::config::registry::{KeyFormat, ValueFormat};
use crate::decode::registry::{Lookup, Registry};
use crate::decode::value::{schema_id, view};
use crate::decode::Parsed;
use crate::model::Record;

type Answer = Result<Arc<Parsed>, Lookup>;

/// A chunk waiting for schemas, and the one task fetching them (started when the chunk stalls
/// and after each failed attempt, once; the loop awaits the same task across its turns, so a
/// slow registry never gets a second request for the same attempt).
struct Stalled {
    records: Vec<Record>,
    /// The ids not cached when the chunk stalled.
    missing: Vec<u32>,
    since: Instant,
    attempts: u32,
    backoff: backon::ExponentialBackoff,
    task: tokio::task::JoinHandle<Fetched>,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A worker's registry state.
pub(super) struct Decoding {
    registry: Arc<Registry>,
    stalled: Option<Stalled>,
    /// The schemas of the chunk being taken in (ids of its framed records).
    at_hand: HashMap<u32, Answer>,
}

/// What a destination routes for one record (see [`crate::decode::value::View`]).
pub(super) type View = crate::decode::value::View;

/// One record's views, per value and key format (destinations of the same formats decode once).
#[derive(Default)]
pub(super) struct Memo(Vec<((ValueFormat, KeyFormat), View)>);

/// What fetching a stalled chunk's schemas gave: each id's answer, or the outage.
pub(super) type Fetched = Result<Vec<(u32, Answer)>, String>;

impl Decoding {
    /// The state of a worker that decodes through `registry`.
    pub(super) fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            stalled: None,
            at_hand: HashMap::new(),
        }
    }

    /// Whether a chunk waits for schemas (intake stops meanwhile).
    pub(super) fn stalled(&self) -> bool {
        self.stalled.is_some()
    }

    /// The stalled chunk's fetch, if a chunk waits (a `select!` branch awaits it in place).
    pub(super) fn task(&mut self) -> Option<&mut tokio::task::JoinHandle<Fetched>> {
        self.stalled.as_mut().map(|s| &mut s.task)
    }

    /// Starts fetching `missing` once `not_before` has passed, on the worker's runtime (the
    /// requests themselves run on the registry client's).
    fn start(&self, missing: Vec<u32>, not_before: Instant) -> tokio::task::JoinHandle<Fetched> {
        let registry = self.registry.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(not_before).await;
            let mut got = Vec::with_capacity(missing.len());
            for id in missing {
                match registry.schema(id).await {
                    Err(Lookup::Outage(e)) => return Err(e),
                    answer => got.push((id, answer)),
                }
            }
            Ok(got)
        })
    }
}

/// Waits for the stalled chunk's fetch, or forever when no chunk waits (a `select!` branch that
/// is off).
pub(super) async fn fetched(task: Option<&mut tokio::task::JoinHandle<Fetched>>) -> Fetched {
    match task {
        Some(t) => t
            .await
            .unwrap_or_else(|e| Err(format!("the schema fetch stopped: {e}"))),
        None => std::future::pending().await,
    }
}

impl Pipeline {
    /// Takes a chunk in, unless one of its framed records' schemas must be fetched first: then
    /// the chunk waits ([`Decoding::fetch`]).
    pub(super) fn take_chunk(&mut self, records: Vec<Record>) -> Result<(), PipelineError> {
        if self.decoding.is_none() {
            return self.ingest(records);
        }
        let mut missing = Vec::new();
        for rec in &records {
            let topic = rec.tp.topic.clone();
            let dests = self.topic_dests.get(&topic).cloned();
            let dests = match dests {
                Some(d) => d,
                None => self.resolve_topic(&topic),
            };
            let dec = self.decoding.as_mut().expect("invariant: checked above");
            for &d in dests.iter() {
                let cfg = &self.dests[d].cfg;
                let value = schema_id(cfg.value_format, rec.value.as_deref());
                let key = cfg
                    .key_format
                    .decoded_as()
                    .and_then(|f| schema_id(f, rec.key.as_deref()));
                for id in value.into_iter().chain(key) {
                    if dec.at_hand.contains_key(&id) || missing.contains(&id) {
                        continue;
                    }
                    match dec.registry.cached(id) {
                        Some(answer) => {
                            dec.at_hand.insert(id, answer);
                        }
                        None => missing.push(id),
                    }
                }
            }
        }
        let dec = self.decoding.as_mut().expect("invariant: checked above");
        if !missing.is_empty() {
            let now = Instant::now();
            let task = dec.start(missing.clone(), now);
            dec.stalled = Some(Stalled {
                records,
                missing,
                since: now,
                attempts: 0,
                backoff: backon::ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(30))
                    .with_jitter()
                    .without_max_times()
                    .build(),
                task,
            });
            return Ok(());
        }
        let result = self.ingest(records);
        if let Some(dec) = self.decoding.as_mut() {
            dec.at_hand.clear();
        }
        result
    }

    /// The stalled chunk's schemas arrived (take it in) or the registry failed (wait longer).
    pub(super) fn on_fetched(&mut self, fetched: Fetched) -> Result<(), PipelineError> {
        let Some(dec) = self.decoding.as_mut() else {
            return Ok(());
        };
        let Some(mut s) = dec.stalled.take() else {
            return Ok(());
        };
        match fetched {
            Ok(got) => {
                dec.at_hand.extend(got);
                if s.attempts > 0 {
                    tracing::info!(
                        waited_secs = s.since.elapsed().as_secs(),
                        "the Schema Registry answers again; consumption resumes"
                    );
                }
                // Every id the chunk needs is at hand now; taking it in looks them up there.
                let records = std::mem::take(&mut s.records);
                drop(s);
                self.take_chunk(records)?;
                self.enforce_budget();
                Ok(())
            }
            Err(e) => {
                s.attempts += 1;
                let wait = s.backoff.next().unwrap_or(Duration::from_secs(30));
                s.task = dec.start(s.missing.clone(), Instant::now() + wait);
                // Logged on the 1st, 2nd, 4th, 8th… failure: an outage does not flood the log.
                if s.attempts.is_power_of_two() {
                    tracing::warn!(
                        error = %e,
                        attempts = s.attempts,
                        waiting_secs = s.since.elapsed().as_secs(),
                        retry_in_ms = wait.as_millis() as u64,
                        "the Schema Registry does not answer; consumption waits, nothing is quarantined"
                    );
                }
                dec.stalled = Some(s);
                Ok(())
            }
        }
    }

    /// What destination `d` routes for `rec` (see [`View`]). `memo` keeps the views of this
    /// record per formats.
    pub(super) fn read_value(
        &self,
        d: usize,
        rec: &Record,
        memo: &mut Memo,
    ) -> Result<View, PipelineError> {
        let cfg = &self.dests[d].cfg;
        let formats = (cfg.value_format, cfg.key_format);
        let Some(dec) = self.decoding.as_ref().filter(|_| cfg.reads_registry()) else {
            return Ok(None);
        };
        if let Some((_, v)) = memo.0.iter().find(|(f, _)| *f == formats) {
            return Ok(v.clone());
        }
        let lookup = |id: u32| dec.at_hand.get(&id).cloned();
        let v = view(cfg.value_format, cfg.key_format, rec, lookup)
            .map_err(PipelineError::SchemaNotAtHand)?;
        memo.0.push((formats, v.clone()));
        Ok(v)
    }
}
