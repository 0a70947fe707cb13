//! Test data: the repository's deterministic events, malformed records with the quarantine
//! reason each must get, and readers of an event line's fields.

use chrono::{DateTime, Utc};

use super::Msg;

pub use kafka_s3_sink::eventgen::GenOptions;

/// Deterministic Segment-like events (one JSON object per element, no newline), each with a
/// unique `messageId` and an RFC 3339 `timestamp`: the repository's generator
/// (`kafka_s3_sink::eventgen`, the one `gen-events`, `demo` and the benchmarks use).
pub fn gen_events(opts: &GenOptions) -> Vec<Vec<u8>> {
    kafka_s3_sink::eventgen::generate(opts)
}

/// A malformed record and the quarantine reason (folder name under `_errors/`) it must get.
#[derive(Debug, Clone)]
pub struct Malformed {
    /// The value.
    pub value: Vec<u8>,
    /// `QuarantineReason::as_str` of the expected reason.
    pub reason: &'static str,
}

/// `n` malformed records cycling through: not JSON, JSON without `timestamp`, an unreadable
/// `timestamp`, a JSON array. Each is unique (numbered with `tag`).
pub fn malformed(n: usize, tag: &str) -> Vec<Malformed> {
    (0..n)
        .map(|i| match i % 4 {
            0 => Malformed {
                value: format!("not json {tag}-{i} {{").into_bytes(),
                reason: "not_json",
            },
            1 => Malformed {
                value: format!(r#"{{"type":"track","messageId":"bad-{tag}-{i}"}}"#).into_bytes(),
                reason: "missing_time",
            },
            2 => Malformed {
                value: format!(
                    r#"{{"type":"track","messageId":"bad-{tag}-{i}","timestamp":"yesterday-ish"}}"#
                )
                .into_bytes(),
                reason: "bad_time",
            },
            _ => Malformed {
                value: format!(r#"["{tag}",{i}]"#).into_bytes(),
                reason: "not_object",
            },
        })
        .collect()
}

/// A JSON string field of an event (`messageId`, `timestamp`, …).
pub fn json_str(line: &[u8], field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v.get(field)?.as_str().map(str::to_owned)
}

/// The `messageId` of an event line.
pub fn message_id(line: &[u8]) -> Option<String> {
    json_str(line, "messageId")
}

/// The RFC 3339 `timestamp` of an event line.
pub fn event_time(line: &[u8]) -> Option<DateTime<Utc>> {
    let s = json_str(line, "timestamp")?;
    DateTime::parse_from_rfc3339(&s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The `%Y/%m/%d/%H/` folder of a time (UTC).
pub fn hour_folder(t: DateTime<Utc>) -> String {
    t.format("%Y/%m/%d/%H/").to_string()
}

/// Spreads `values` round-robin over `partitions` partitions, key-less.
pub fn round_robin(values: impl IntoIterator<Item = Vec<u8>>, partitions: i32) -> Vec<Msg> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Msg::new((i as i64 % i64::from(partitions)) as i32, v))
        .collect()
}
