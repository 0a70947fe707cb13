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
use bytes::Bytes;
use tokio::time::Instant;

use super::{Pipeline, PipelineError};
use crate::config::registry::{KeyFormat, ValueFormat};
use crate::decode::registry::{Lookup, Registry};
use crate::decode::value::{read_ahead, schema_id, view, AHEAD_BYTES, AHEAD_VALUES};
use crate::decode::Parsed;
use crate::destination::Evolved;
use crate::model::Record;

type Answer = Result<Arc<Parsed>, Lookup>;

/// A chunk waiting for schemas (or for the columns they bring to be known, see `grow.rs`),
/// and the one task doing it (started when the chunk stalls and after each failed attempt,
/// once; the loop awaits the same task across its turns, so a slow registry or catalog never
/// gets a second request for the same attempt).
struct Stalled {
    records: Vec<Record>,
    /// What it waits for.
    wait: Wait,
    since: Instant,
    attempts: u32,
    backoff: backon::ExponentialBackoff,
    task: tokio::task::JoinHandle<Fetched>,
}

/// What a stalled chunk waits for.
enum Wait {
    /// The schemas of these ids (not cached when the chunk stalled).
    Schemas(Vec<u32>),
    /// A destination's kind to make new columns known (a table's schema update).
    Columns(super::grow::Growth),
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

/// What a stalled chunk's task gave: each id's answer, or the new columns' answer; or the
/// outage.
pub(super) type Fetched = Result<Ready, String>;

/// A stalled chunk's task's answer.
pub(super) enum Ready {
    /// Each schema id's answer.
    Schemas(Vec<(u32, Answer)>),
    /// The destination's kind's answer to new columns.
    Columns(Evolved),
}

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
            Ok(Ready::Schemas(got))
        })
    }

    /// The schema of `id` as the chunk being taken in sees it, when it is a schema.
    pub(super) fn schema_at_hand(&self, id: u32) -> Option<&Arc<Parsed>> {
        self.at_hand.get(&id).and_then(|a| a.as_ref().ok())
    }

    /// Stalls `records` on `wait`, whose first attempt is `task`.
    fn stall(&mut self, records: Vec<Record>, wait: Wait, task: tokio::task::JoinHandle<Fetched>) {
        self.stalled = Some(Stalled {
            records,
            wait,
            since: Instant::now(),
            attempts: 0,
            backoff: backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(30))
                .with_jitter()
                .without_max_times()
                .build(),
            task,
        });
    }
}

/// Runs a destination kind's work on new columns once `not_before` has passed.
fn start_columns(
    work: futures::future::BoxFuture<'static, Result<Evolved, String>>,
    not_before: Instant,
) -> tokio::task::JoinHandle<Fetched> {
    tokio::spawn(async move {
        tokio::time::sleep_until(not_before).await;
        work.await.map(Ready::Columns)
    })
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
            let task = dec.start(missing.clone(), Instant::now());
            dec.stall(records, Wait::Schemas(missing), task);
            return Ok(());
        }
        if let Some(mut growth) = self.grow_columns(&records) {
            let work = growth
                .work
                .take()
                .expect("invariant: a growth to wait for has work");
            let task = start_columns(work, Instant::now());
            let dec = self.decoding.as_mut().expect("invariant: checked above");
            dec.stall(records, Wait::Columns(growth), task);
            return Ok(());
        }
        let result = self.ingest(records);
        if let Some(dec) = self.decoding.as_mut() {
            dec.at_hand.clear();
        }
        result
    }

    /// The stalled chunk's task answered (take the chunk in) or failed (wait longer).
    pub(super) fn on_fetched(&mut self, fetched: Fetched) -> Result<(), PipelineError> {
        let Some(dec) = self.decoding.as_mut() else {
            return Ok(());
        };
        let Some(mut s) = dec.stalled.take() else {
            return Ok(());
        };
        let what = match &s.wait {
            Wait::Schemas(_) => "the Schema Registry",
            Wait::Columns(_) => "the table's catalog (adding a new schema's columns)",
        };
        match fetched {
            Ok(ready) => {
                if s.attempts > 0 {
                    tracing::info!(
                        waited_secs = s.since.elapsed().as_secs(),
                        "{what} answers again; consumption resumes"
                    );
                }
                let records = std::mem::take(&mut s.records);
                match (
                    ready,
                    std::mem::replace(&mut s.wait, Wait::Schemas(Vec::new())),
                ) {
                    (Ready::Schemas(got), _) => dec.at_hand.extend(got),
                    (Ready::Columns(answer), Wait::Columns(growth)) => {
                        drop(s);
                        self.evolved(growth, answer);
                    }
                    (Ready::Columns(_), Wait::Schemas(_)) => {}
                }
                // Every id the chunk needs is at hand now (taking it in looks them up there),
                // and the columns they brought are in force.
                self.take_chunk(records)?;
                self.enforce_budget();
                Ok(())
            }
            Err(e) => {
                s.attempts += 1;
                let wait = s.backoff.next().unwrap_or(Duration::from_secs(30));
                let at = Instant::now() + wait;
                s.task = match &s.wait {
                    Wait::Schemas(missing) => dec.start(missing.clone(), at),
                    Wait::Columns(g) => {
                        let work = self.dests[g.dest].kind.evolve(&g.parquet).expect(
                            "invariant: a kind that had work for these columns has it again",
                        );
                        start_columns(work, at)
                    }
                };
                // Logged on the 1st, 2nd, 4th, 8th… failure: an outage does not flood the log.
                if s.attempts.is_power_of_two() {
                    tracing::warn!(
                        error = %e,
                        attempts = s.attempts,
                        waiting_secs = s.since.elapsed().as_secs(),
                        retry_in_ms = wait.as_millis() as u64,
                        "{what} does not answer; consumption waits, nothing is quarantined"
                    );
                }
                let dec = self.decoding.as_mut().expect("invariant: checked above");
                dec.stalled = Some(s);
                Ok(())
            }
        }
    }

    /// The records at the head of `records` whose values are decoded ahead together (at most
    /// [`AHEAD_VALUES`] of them, [`AHEAD_BYTES`] of values), with each one's line when it has
    /// one ([`read_ahead`]): the values of records that a destination reads under `avro` or
    /// `auto`. Empty when the worker does not decode.
    pub(super) fn decode_ahead(&mut self, records: &[Record]) -> Vec<Option<Bytes>> {
        if self.decoding.is_none() {
            return Vec::new();
        }
        let (mut values, mut bytes) = (Vec::new(), 0);
        for rec in records {
            if values.len() == AHEAD_VALUES || bytes >= AHEAD_BYTES {
                break;
            }
            bytes += rec.value_len();
            let dests = self.resolve_topic(&rec.tp.topic);
            let read = dests.iter().any(|&d| {
                let cfg = &self.dests[d].cfg;
                cfg.reads_registry()
                    && matches!(cfg.value_format, ValueFormat::Avro | ValueFormat::Auto)
            });
            values.push(rec.value.as_deref().filter(|_| read));
        }
        let dec = self.decoding.as_ref().expect("invariant: checked above");
        read_ahead(&values, |id| dec.at_hand.get(&id).cloned())
    }

    /// What destination `d` routes for `rec` (see [`View`]), given its value's line decoded
    /// ahead, if it has one. `memo` keeps the views of this record per formats.
    pub(super) fn read_value(
        &self,
        d: usize,
        rec: &Record,
        ahead: Option<&Bytes>,
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
        let v = view(cfg.value_format, cfg.key_format, rec, ahead, lookup)
            .map_err(PipelineError::SchemaNotAtHand)?;
        memo.0.push((formats, v.clone()));
        Ok(v)
    }
}
