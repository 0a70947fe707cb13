//! What S3 must hold: every record produced (events by `messageId`, malformed records by
//! position), and a scan of the stored objects matched against it (missing, duplicated,
//! changed or unknown lines).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::{event_time, message_id, Kafka, Malformed, Msg, Produced, StoredObject};

/// An event produced to Kafka.
#[derive(Debug, Clone)]
pub struct ExpectedEvent {
    /// Where it landed.
    pub at: Produced,
    /// Its exact bytes.
    pub line: Vec<u8>,
    /// Its `timestamp`.
    pub time: Option<DateTime<Utc>>,
}

/// Everything produced to one topic: events by `messageId`, malformed records by position.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Events by `messageId`.
    pub events: HashMap<String, ExpectedEvent>,
    /// Malformed records by position.
    pub errors: BTreeMap<Produced, Malformed>,
}

impl Expected {
    /// Records an event (panics on a duplicate `messageId`).
    pub fn add_event(&mut self, line: &[u8], at: Produced) {
        let id = message_id(line).expect("event has a messageId");
        let prev = self.events.insert(
            id.clone(),
            ExpectedEvent {
                at,
                line: line.to_vec(),
                time: event_time(line),
            },
        );
        assert!(prev.is_none(), "duplicate messageId {id} in test data");
    }

    /// Records a malformed record.
    pub fn add_malformed(&mut self, m: &Malformed, at: Produced) {
        self.errors.insert(at, m.clone());
    }

    /// [`produce`](Self::produce) without the check that the mock kept every record: for
    /// tests that consume while producing more than a partition keeps.
    pub async fn produce_unchecked(
        &mut self,
        kafka: &Kafka,
        topic: &str,
        msgs: Vec<Msg>,
        malformed: &BTreeMap<usize, Malformed>,
    ) -> Vec<Produced> {
        let values: Vec<Option<Vec<u8>>> = msgs.iter().map(|m| m.value.clone()).collect();
        let produced = kafka.produce(topic, msgs).await;
        for (i, (v, at)) in values.iter().zip(&produced).enumerate() {
            match malformed.get(&i) {
                Some(m) => self.add_malformed(m, *at),
                None => self.add_event(v.as_deref().expect("event has a value"), *at),
            }
        }
        produced
    }

    /// Records produced (events and malformed).
    pub fn total(&self) -> usize {
        self.events.len() + self.errors.len()
    }

    /// Every position produced.
    pub fn positions(&self) -> BTreeSet<Produced> {
        self.events
            .values()
            .map(|e| e.at)
            .chain(self.errors.keys().copied())
            .collect()
    }

    /// Produces `msgs` (whose values are events or the given malformed records) and records
    /// where each landed. `malformed` lists the indexes in `msgs` that are malformed. Panics if
    /// the mock cluster deleted any record of the touched partitions (its 5 MiB limit).
    pub async fn produce(
        &mut self,
        kafka: &Kafka,
        topic: &str,
        msgs: Vec<Msg>,
        malformed: &BTreeMap<usize, Malformed>,
    ) -> Vec<Produced> {
        let produced = self.produce_unchecked(kafka, topic, msgs, malformed).await;
        let partitions = produced.iter().map(|p| p.partition + 1).max().unwrap_or(0);
        let starts = kafka.start_offsets(topic, partitions).await;
        assert!(
            starts.values().all(|lo| *lo == 0),
            "the mock cluster deleted old records (log start offsets {starts:?}): it keeps only \
             5 MiB of stored batches per partition; produce less or consume while producing"
        );
        produced
    }
}

/// What the objects of a bucket hold, matched against [`Expected`].
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Keys holding each expected record (more than one: duplicates).
    pub records: BTreeMap<Produced, Vec<String>>,
    /// Lines that match nothing expected, or differ from it (key, description).
    pub unexpected: Vec<(String, String)>,
    /// Objects read.
    pub objects: usize,
    /// Data lines read.
    pub data_lines: usize,
    /// Error-envelope lines read.
    pub error_lines: usize,
}

/// Reads `objects` and matches every line: data lines by `messageId` (bytes must be identical),
/// lines under `error_prefix` (e.g. `"_errors/"`) as envelopes whose `partition`/`offset` name a
/// malformed record, whose `value` is its original bytes and whose folder is its reason.
pub fn scan(objects: &[StoredObject], expected: &Expected, error_prefix: &str) -> Scan {
    let mut out = Scan {
        objects: objects.len(),
        ..Scan::default()
    };
    for obj in objects {
        for line in obj.lines() {
            if let Some(rest) = obj.key.strip_prefix(error_prefix) {
                out.error_lines += 1;
                let reason_dir = rest.split('/').next().unwrap_or_default();
                let v: serde_json::Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        out.unexpected
                            .push((obj.key.clone(), format!("envelope is not JSON: {e}")));
                        continue;
                    }
                };
                let at = Produced {
                    partition: v["partition"].as_i64().unwrap_or(-1) as i32,
                    offset: v["offset"].as_i64().unwrap_or(-1),
                };
                let Some(m) = expected.errors.get(&at) else {
                    out.unexpected.push((
                        obj.key.clone(),
                        format!("envelope of unknown record {at:?}"),
                    ));
                    continue;
                };
                let value = kafka_s3_sink::envelope::original_value(&line);
                if value.as_deref() != Some(m.value.as_slice()) {
                    out.unexpected.push((
                        obj.key.clone(),
                        format!("envelope {at:?}: value {value:?} is not the original"),
                    ));
                }
                if v["reason"].as_str() != Some(m.reason) || reason_dir != m.reason {
                    out.unexpected.push((
                        obj.key.clone(),
                        format!(
                            "envelope {at:?}: reason {} in folder {reason_dir}, expected {}",
                            v["reason"], m.reason
                        ),
                    ));
                }
                out.records.entry(at).or_default().push(obj.key.clone());
            } else {
                out.data_lines += 1;
                let Some(e) = message_id(&line).and_then(|id| expected.events.get(&id)) else {
                    out.unexpected.push((
                        obj.key.clone(),
                        format!("unknown line {}", String::from_utf8_lossy(&line)),
                    ));
                    continue;
                };
                if e.line != line {
                    out.unexpected
                        .push((obj.key.clone(), format!("line of {:?} changed", e.at)));
                }
                out.records.entry(e.at).or_default().push(obj.key.clone());
            }
        }
    }
    out
}

impl Scan {
    /// Expected records found nowhere.
    pub fn missing(&self, expected: &Expected) -> Vec<Produced> {
        expected
            .positions()
            .into_iter()
            .filter(|p| !self.records.contains_key(p))
            .collect()
    }

    /// Extra copies over all records (0 = exactly once).
    pub fn duplicates(&self) -> usize {
        self.records
            .values()
            .map(|k| k.len().saturating_sub(1))
            .sum()
    }

    /// The first offset of `partition`, counting from 0, not found in any object: every
    /// commit of that partition must be at most this.
    pub fn contiguous_end(&self, partition: i32) -> i64 {
        let mut next = 0;
        for p in self.records.keys().filter(|p| p.partition == partition) {
            if p.offset != next {
                break;
            }
            next += 1;
        }
        next
    }
}
