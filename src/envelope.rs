//! The line written to an error folder for a quarantined record: a JSON object with the reason,
//! the record's coordinates and its exact bytes, so it can be inspected and replayed.
//!
//! Invariant: the original value is recoverable byte for byte: `value` holds it as a JSON string
//! when it is valid UTF-8 and escaping does not make it longer than base64, `value_base64`
//! otherwise (binary data, or text full of control characters, which JSON escapes 6-fold);
//! `value` is null for a tombstone. The key follows the same rule (`key` / `key_base64`). A line
//! is therefore at most about 4/3 of the record's size plus its coordinates.

use base64::Engine;
use serde_json::Value;

use crate::model::json::{put_bytes, write_str};
use crate::model::{QuarantineReason, Record};

/// `"topic":…,"partition":…,"offset":…,"<timestamp>":<ms or null>` of a record.
fn write_coordinates(out: &mut Vec<u8>, rec: &Record, timestamp: &str) {
    out.extend_from_slice(b"\"topic\":");
    write_str(out, &rec.tp.topic);
    let ts = rec
        .timestamp_ms
        .map_or_else(|| "null".to_string(), |t| t.to_string());
    out.extend_from_slice(
        format!(
            ",\"partition\":{},\"offset\":{},\"{timestamp}\":{ts}",
            rec.tp.partition, rec.offset
        )
        .as_bytes(),
    );
}

/// Serializes a quarantined record as one NDJSON line (without newline): `reason`, `topic`,
/// `partition`, `offset`, `timestamp_ms`, then `key` and `value` (or `key_base64` /
/// `value_base64`). At most about 4/3 of the record's size plus a hundred bytes.
pub fn error_line(rec: &Record, reason: QuarantineReason) -> Vec<u8> {
    error_line_with_detail(rec, reason, None)
}

/// [`error_line`] with a `detail` member after the reason (e.g. which Parquet column a value
/// did not fit).
pub fn error_line_with_detail(
    rec: &Record,
    reason: QuarantineReason,
    detail: Option<&str>,
) -> Vec<u8> {
    let key = rec.key.as_deref();
    let value = rec.value.as_deref();
    let payload = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(payload.div_ceil(3) * 4 + rec.tp.topic.len() + 128);
    out.extend_from_slice(b"{\"reason\":");
    write_str(&mut out, reason.as_str());
    if let Some(d) = detail {
        out.extend_from_slice(b",\"detail\":");
        write_str(&mut out, d);
    }
    out.push(b',');
    write_coordinates(&mut out, rec, "timestamp_ms");
    put_bytes(&mut out, "key", key);
    put_bytes(&mut out, "value", value);
    out.push(b'}');
    out
}

/// `line` (a JSON object) with the record's Kafka coordinates added as one more member,
/// `"<field>":{"topic":…,"partition":…,"offset":…,"timestamp":…,"key":…,"headers":[…]}`, just
/// before its closing brace: the rest of the line is copied byte for byte, never re-serialised.
/// `timestamp` is the Kafka timestamp in epoch milliseconds (or null); `key` follows the value
/// rule of [`error_line`] (`key_base64` for binary keys); `headers` is present when the source
/// collected them ([`Record::headers`]).
pub fn with_kafka_metadata(line: &[u8], rec: &Record, field: &str) -> Vec<u8> {
    let end = line.iter().rposition(|&b| b == b'}').unwrap_or(line.len());
    let body = &line[..end];
    let empty = body
        .iter()
        .rposition(|&b| !b.is_ascii_whitespace())
        .is_some_and(|i| body[i] == b'{');
    let mut out = Vec::with_capacity(line.len() + 160 + rec.tp.topic.len());
    out.extend_from_slice(body);
    if !empty {
        out.push(b',');
    }
    write_str(&mut out, field);
    out.extend_from_slice(b":{");
    write_coordinates(&mut out, rec, "timestamp");
    put_bytes(&mut out, "key", rec.key.as_deref());
    if let Some(h) = &rec.headers {
        out.extend_from_slice(b",\"headers\":");
        out.extend_from_slice(h);
    }
    out.push(b'}');
    out.extend_from_slice(&line[end..]);
    out
}

/// Recovers the original value bytes from an error line (`None` for a tombstone).
pub fn original_value(line: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(line).ok()?;
    if let Some(s) = v.get("value").and_then(Value::as_str) {
        return Some(s.as_bytes().to_vec());
    }
    let b = v.get("value_base64")?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TopicPartition;
    use bytes::Bytes;

    fn rec(value: Option<&[u8]>) -> Record {
        Record {
            tp: TopicPartition::new("t", 2),
            offset: 9,
            timestamp_ms: Some(1),
            key: Some(Bytes::from_static(b"k")),
            value: value.map(Bytes::copy_from_slice),
            headers: None,
        }
    }

    #[test]
    fn utf8_values_round_trip() {
        let raw = b"not json {\n\"x\"";
        let line = error_line(&rec(Some(raw)), QuarantineReason::NotJson);
        assert!(!line.contains(&b'\n'), "one line");
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["reason"], "not_json");
        assert_eq!(v["offset"], 9);
        assert_eq!(v["key"], "k");
        assert_eq!(original_value(&line).unwrap(), raw);
    }

    #[test]
    fn binary_values_round_trip_as_base64() {
        let raw = [0xff, 0xfe, b'{', 0];
        let line = error_line(&rec(Some(&raw)), QuarantineReason::InvalidUtf8);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert!(v.get("value").is_none());
        assert_eq!(original_value(&line).unwrap(), raw);
    }

    /// A large value of control characters (valid UTF-8, which JSON escapes as `\u0001`, 6 bytes
    /// each) is stored as base64: at most ~1.4 × its size, byte for byte recoverable.
    #[test]
    fn escape_heavy_values_stay_within_base64_size() {
        for raw in [
            vec![1u8; 1 << 20],
            b"\"\\".repeat(1 << 19),
            vec![b'a'; 1 << 20],
        ] {
            let line = error_line(&rec(Some(&raw)), QuarantineReason::TooLarge);
            assert!(
                line.len() as f64 <= raw.len() as f64 * 1.4,
                "{} bytes for {}",
                line.len(),
                raw.len()
            );
            assert_eq!(original_value(&line).unwrap(), raw);
            let v: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["reason"], "too_large");
            assert_eq!(v["key"], "k");
        }
        // Ordinary text stays readable.
        let line = error_line(&rec(Some(b"not json {")), QuarantineReason::NotJson);
        assert!(String::from_utf8(line)
            .unwrap()
            .contains(r#""value":"not json {""#));
    }

    /// The metadata member goes in before the closing brace, the rest of the line untouched;
    /// an empty object gets no leading comma; binary keys and header values are base64.
    #[test]
    fn kafka_metadata_is_one_more_member() {
        let mut r = rec(None);
        r.headers = Some(bytes::Bytes::from(crate::source::headers_json([
            ("trace", Some(&b"abc"[..])),
            ("bin", Some(&[0xff, 0x00][..])),
            ("none", None),
        ])));
        let line = br#"{"a": 1,  "b":{"c":[1,2]} }"#;
        let out = with_kafka_metadata(line, &r, "_kafka");
        assert!(out.starts_with(br#"{"a": 1,  "b":{"c":[1,2]} ,"_kafka":{"#));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["a"], 1);
        let m = &v["_kafka"];
        assert_eq!(
            (m["topic"].as_str(), m["partition"].as_i64()),
            (Some("t"), Some(2))
        );
        assert_eq!(
            (m["offset"].as_i64(), m["timestamp"].as_i64()),
            (Some(9), Some(1))
        );
        assert_eq!(m["key"], "k");
        assert_eq!(m["headers"][0]["key"], "trace");
        assert_eq!(m["headers"][0]["value"], "abc");
        assert_eq!(m["headers"][1]["value_base64"], "/wA=");
        assert_eq!(m["headers"][2]["value"], Value::Null);
        let empty = with_kafka_metadata(b"{ }", &rec(None), "m");
        let v: Value = serde_json::from_slice(&empty).unwrap();
        assert_eq!(v["m"]["offset"], 9);
        assert!(v["m"].get("headers").is_none());
    }

    #[test]
    fn tombstones_have_null_value() {
        let line = error_line(&rec(None), QuarantineReason::Tombstone);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["value"], Value::Null);
        assert_eq!(original_value(&line), None);
    }
}
