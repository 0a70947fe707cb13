//! The line written to an error folder for a quarantined record: a JSON object with the reason,
//! the record's coordinates and its exact bytes, so it can be inspected and replayed.
//!
//! Invariant: the original value is recoverable byte for byte: `value` holds it as a JSON string
//! when it is valid UTF-8, `value_base64` otherwise; `value` is null for a tombstone. The key
//! follows the same rule (`key` / `key_base64`).

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::model::Record;
use crate::router::QuarantineReason;

fn put_bytes(obj: &mut Map<String, Value>, name: &str, bytes: Option<&[u8]>) {
    match bytes {
        None => {
            obj.insert(name.into(), Value::Null);
        }
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                obj.insert(name.into(), Value::String(s.to_string()));
            }
            Err(_) => {
                obj.insert(
                    format!("{name}_base64"),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
                );
            }
        },
    }
}

/// Serializes a quarantined record as one NDJSON line (without newline).
pub fn error_line(rec: &Record, reason: QuarantineReason) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("reason".into(), json!(reason.as_str()));
    obj.insert("topic".into(), json!(rec.tp.topic.as_ref()));
    obj.insert("partition".into(), json!(rec.tp.partition));
    obj.insert("offset".into(), json!(rec.offset));
    obj.insert("timestamp_ms".into(), json!(rec.timestamp_ms));
    put_bytes(&mut obj, "key", rec.key.as_deref());
    put_bytes(&mut obj, "value", rec.value.as_deref());
    // Serializing a map of strings and numbers cannot fail.
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
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

    #[test]
    fn tombstones_have_null_value() {
        let line = error_line(&rec(None), QuarantineReason::Tombstone);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["value"], Value::Null);
        assert_eq!(original_value(&line), None);
    }
}
