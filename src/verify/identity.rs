//! Identity of a record for `verify`: the hash both sides compute, so a Kafka record and its
//! copy in S3 (a data line or an error envelope) meet under the same key.
//!
//! Invariants: the Kafka side routes each record with the destination's own [`Router`] and
//! hashes exactly the line the pipeline writes (`L` + line) or, when it quarantines the record,
//! its raw value (`Q` + value; tombstones apart). An envelope is turned back into the record it
//! holds and identified by the same function, so both sides agree by construction. The
//! event-time window (`max_future_secs` / `max_past_secs`) is left out: it moves with the
//! clock, so a record written as a line yesterday may be out of range today; without it, a
//! record has one identity whether it landed as a line or as a `time_out_of_range` envelope.
//!
//! A destination that reads the Confluent wire format routes the record as the pipeline reads
//! it ([`Schemas::view`]): the decoded value (and key) make the line; a record the decoding
//! quarantines (`not_framed`, `unknown_schema`, `undecodable`) is identified by its raw value,
//! as every quarantined record is (the envelope holds the raw record).
//!
//! A Parquet row is identified by its Kafka offset (the `<kafka_metadata_field>_offset`
//! column; its topic and partition columns place it) and, when the destination writes a raw
//! column, by that text too, which is the line the pipeline would have written: `P` + offset
//! (+ raw line).

use base64::Engine;
use chrono::Utc;
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use std::sync::Arc;

use super::schemas::Schemas;
use super::VerifyError;
use crate::config::registry::{KeyFormat, ValueFormat};
use crate::config::DestinationConfig;
use crate::model::{Record, TopicPartition};
use crate::router::{Route, Router};

const SEED_LINE: u64 = u64::from_le_bytes(*b"L-line-1");
const SEED_QUARANTINE: u64 = u64::from_le_bytes(*b"Q-value1");
const SEED_TOMBSTONE: u64 = u64::from_le_bytes(*b"T-null-1");
const SEED_ROW: u64 = u64::from_le_bytes(*b"P-row--1");

/// Hash of a data line as written (without its newline).
pub fn line_hash(line: &[u8]) -> u64 {
    xxh3_64_with_seed(line, SEED_LINE)
}

/// Hash of a quarantined record's raw value (`None`: tombstone).
pub fn quarantine_hash(value: Option<&[u8]>) -> u64 {
    match value {
        Some(v) => xxh3_64_with_seed(v, SEED_QUARANTINE),
        None => xxh3_64_with_seed(&[], SEED_TOMBSTONE),
    }
}

/// Hash of a Parquet row: its offset, and its raw column's text when the destination writes
/// one (`None` otherwise).
pub fn row_hash(offset: i64, raw: Option<&[u8]>) -> u64 {
    let mut buf = Vec::with_capacity(8 + raw.map_or(0, <[u8]>::len));
    buf.extend_from_slice(&offset.to_le_bytes());
    if let Some(r) = raw {
        buf.extend_from_slice(r);
    }
    xxh3_64_with_seed(&buf, SEED_ROW)
}

/// What the connector does with a record, as far as `verify` cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Expected in S3 under this hash (as a line, or as an envelope when `quarantined`).
    Expected {
        /// Hash of the identity.
        hash: u64,
        /// Routed to the error folder.
        quarantined: bool,
    },
    /// Dropped by the destination's include/exclude filter: expected nowhere.
    Filtered,
}

/// An error envelope read back: where its record came from, and its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeId {
    /// Topic-partition named in the envelope.
    pub tp: TopicPartition,
    /// Offset named in the envelope.
    pub offset: i64,
    /// Identity hash of the record it holds.
    pub hash: u64,
}

/// Computes identities for one destination.
#[derive(Debug, Clone)]
pub struct Identifier {
    router: Router,
    /// The destination's `kafka_metadata_field`: its lines carry the record's coordinates.
    metadata_field: Option<String>,
    /// For a Parquet destination: whether its rows carry the line in a raw column.
    parquet_raw: Option<bool>,
    /// For a destination that reads the Schema Registry: the client and its formats.
    decoding: Option<(Arc<Schemas>, ValueFormat, KeyFormat)>,
}

#[derive(Deserialize)]
struct Envelope {
    topic: String,
    partition: i32,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    timestamp_ms: Option<i64>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_base64: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_base64: Option<String>,
}

fn bytes_of(text: Option<String>, b64: Option<String>) -> Result<Option<Vec<u8>>, ()> {
    match (text, b64) {
        (Some(s), _) => Ok(Some(s.into_bytes())),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Some)
            .map_err(|_| ()),
        (None, None) => Ok(None),
    }
}

impl Identifier {
    /// The identifier of destination `d` (its router without the event-time window). For a
    /// destination that reads the Schema Registry use [`Identifier::with_registry`].
    pub fn new(d: &DestinationConfig) -> Self {
        let mut d = d.clone();
        d.routing.max_future = None;
        d.routing.max_past = None;
        Self {
            router: Router::new(&d),
            metadata_field: d.kafka_metadata_field.clone(),
            parquet_raw: d.parquet.as_ref().map(|p| p.raw_column.is_some()),
            decoding: None,
        }
    }

    /// The identifier of destination `d`, reading records under its `value_format` and
    /// `key_format` through `schemas`.
    pub fn with_registry(d: &DestinationConfig, schemas: Arc<Schemas>) -> Self {
        Self {
            decoding: Some((schemas, d.value_format, d.key_format)),
            ..Self::new(d)
        }
    }

    /// Identity of a record. Fails only when the Schema Registry does not answer (blocks while
    /// it retries: call it from a blocking thread).
    pub fn of_record(&self, rec: &Record) -> Result<Identity, VerifyError> {
        let Some((schemas, value_format, key_format)) = &self.decoding else {
            return Ok(self.route(rec, rec));
        };
        Ok(match schemas.view(*value_format, *key_format, rec)? {
            None => self.route(rec, rec),
            Some(Ok(decoded)) => self.route(&decoded, rec),
            Some(Err(_)) => Identity::Expected {
                hash: quarantine_hash(rec.value.as_deref()),
                quarantined: true,
            },
        })
    }

    /// Identity of `raw` whose destination routes `view` (the record itself, or with its value
    /// or key decoded): the line written from `view`, or `raw`'s value when quarantined (the
    /// envelope holds the raw record).
    fn route(&self, view: &Record, raw: &Record) -> Identity {
        match self.router.route(view, Utc::now()) {
            Route::Write { line, .. } => Identity::Expected {
                hash: match (self.parquet_raw, &self.metadata_field) {
                    (Some(raw_column), _) => row_hash(view.offset, raw_column.then_some(&*line)),
                    (None, Some(field)) => {
                        line_hash(&crate::envelope::with_kafka_metadata(&line, view, field))
                    }
                    (None, None) => line_hash(&line),
                },
                quarantined: false,
            },
            Route::Quarantine(_) | Route::Mismatch(_) => Identity::Expected {
                hash: quarantine_hash(raw.value.as_deref()),
                quarantined: true,
            },
            Route::Filtered => Identity::Filtered,
        }
    }

    /// Identity of the record an error envelope holds; `Ok(None)` if the line is not an
    /// envelope. Fails as [`Identifier::of_record`] does.
    pub fn of_envelope(&self, line: &[u8]) -> Result<Option<EnvelopeId>, VerifyError> {
        let Ok(env) = serde_json::from_slice::<Envelope>(line) else {
            return Ok(None);
        };
        let (Ok(key), Ok(value)) = (
            bytes_of(env.key, env.key_base64),
            bytes_of(env.value, env.value_base64),
        ) else {
            return Ok(None);
        };
        let rec = Record {
            tp: TopicPartition::new(env.topic, env.partition),
            offset: env.offset,
            timestamp_ms: env.timestamp_ms,
            key: key.map(Into::into),
            value: value.map(Into::into),
            headers: None,
        };
        let hash = match self.of_record(&rec)? {
            Identity::Expected { hash, .. } => hash,
            // Not what this destination quarantines today: it matches no record.
            Identity::Filtered => quarantine_hash(rec.value.as_deref()),
        };
        Ok(Some(EnvelopeId {
            offset: rec.offset,
            tp: rec.tp,
            hash,
        }))
    }
}

/// Topic and partition from a key whose file name was made by the default template
/// `{topic}+{partition}+{start_offset}` (offset zero-padded to 20 digits), with any extension.
pub fn parse_default_key(key: &str) -> Option<(String, i32)> {
    let name = key.rsplit('/').next()?;
    let mut parts = name.splitn(3, '+');
    let topic = parts.next()?;
    let partition = parts.next()?;
    let rest = parts.next()?;
    let valid_topic = !topic.is_empty()
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid_topic || partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let offset = rest.get(..20)?;
    if !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !(rest.len() == 20 || rest[20..].starts_with('.')) {
        return None;
    }
    Some((topic.to_string(), partition.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::error_line;
    use crate::router::QuarantineReason;

    fn dest(extra: &str) -> DestinationConfig {
        let text = format!(
            r#"
[kafka]
brokers = "b:9092"
group_id = "g"
topics = ["t"]

[[destinations]]
name = "d"
bucket = "b"
{extra}
"#
        );
        crate::config::parse(&text, &|_| None)
            .unwrap()
            .destinations
            .remove(0)
    }

    fn rec(value: Option<&[u8]>) -> Record {
        Record {
            tp: TopicPartition::new("t", 1),
            offset: 5,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(bytes::Bytes::from_static(&[0xff, 1])),
            value: value.map(bytes::Bytes::copy_from_slice),
            headers: None,
        }
    }

    #[test]
    fn written_records_hash_their_line_and_quarantined_ones_their_value() {
        let id = Identifier::new(&dest(""));
        let good = rec(Some(br#"{"timestamp":"2026-01-01T00:00:00Z"}"#));
        assert_eq!(
            id.of_record(&good).unwrap(),
            Identity::Expected {
                hash: line_hash(br#"{"timestamp":"2026-01-01T00:00:00Z"}"#),
                quarantined: false
            }
        );
        let bad = rec(Some(b"not json"));
        let Identity::Expected { hash, quarantined } = id.of_record(&bad).unwrap() else {
            panic!("not expected")
        };
        assert!(quarantined);
        assert_ne!(hash, line_hash(b"not json"), "line and value hashes differ");
        assert_ne!(quarantine_hash(None), quarantine_hash(Some(b"")));
    }

    #[test]
    fn envelopes_identify_as_the_record_they_hold() {
        let id = Identifier::new(&dest(""));
        for value in [
            Some(&b"not json {"[..]),
            Some(&[0xff, 0xfe, 0][..]),
            Some(&b""[..]),
            None,
        ] {
            let r = rec(value);
            let env = error_line(&r, QuarantineReason::NotJson);
            let got = id.of_envelope(&env).unwrap().unwrap();
            assert_eq!(got.tp, r.tp);
            assert_eq!(got.offset, 5);
            let Identity::Expected { hash, .. } = id.of_record(&r).unwrap() else {
                panic!()
            };
            assert_eq!(got.hash, hash, "{value:?}");
        }
        assert_eq!(id.of_envelope(b"{\"x\":1}").unwrap(), None);
    }

    #[test]
    fn drop_fields_change_the_line_and_the_time_window_is_ignored() {
        let id = Identifier::new(&dest(
            "[destinations.filter]\ndrop_fields = [\"secret\"]\n[destinations.routing]\ntime_source = \"event_time\"\ntime_field = \"ts\"\nmax_past_secs = 60",
        ));
        // An old event: quarantined as time_out_of_range by the pipeline today, but its
        // identity is its line either way.
        let r = rec(Some(br#"{"ts":"2001-01-01T00:00:00Z","secret":1,"b":2}"#));
        assert_eq!(
            id.of_record(&r).unwrap(),
            Identity::Expected {
                hash: line_hash(br#"{"ts":"2001-01-01T00:00:00Z","b":2}"#),
                quarantined: false
            }
        );
        let env = error_line(&r, QuarantineReason::TimeOutOfRange);
        assert_eq!(
            id.of_envelope(&env).unwrap().unwrap().hash,
            line_hash(br#"{"ts":"2001-01-01T00:00:00Z","b":2}"#)
        );
    }

    #[test]
    fn filtered_records_are_expected_nowhere() {
        let id = Identifier::new(&dest(
            "[destinations.filter]\nfield = \"type\"\nexclude = [\"identify\"]",
        ));
        assert_eq!(
            id.of_record(&rec(Some(br#"{"type":"identify"}"#))).unwrap(),
            Identity::Filtered
        );
    }

    #[test]
    fn default_template_keys_parse() {
        assert_eq!(
            parse_default_key("p/2026/01/02/03/events+3+00000000000000000012.ndjson.gz"),
            Some(("events".into(), 3))
        );
        assert_eq!(
            parse_default_key("my.topic-1+0+00000000000000000000"),
            Some(("my.topic-1".into(), 0))
        );
        for bad in [
            "x/events+3+12.ndjson",
            "events+a+00000000000000000012.json",
            "events+3",
            "App_20260101_12345.txt",
            "ev ents+3+00000000000000000012.json",
            "events+3+00000000000000000012x",
        ] {
            assert_eq!(parse_default_key(bad), None, "{bad}");
        }
    }
}
