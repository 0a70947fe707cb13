//! Single-pass JSON scan: validates a whole document and picks out the values at a few dotted
//! paths without building a JSON tree (no allocation for fields that are not asked for).
//!
//! Invariant: a document that `serde_json` would reject is reported as [`ScanError::Json`]
//! (including nesting deeper than serde_json's recursion limit, 128).

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A scalar found at a path. Objects, arrays, booleans and null are [`Scalar::Other`].
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// A string: borrowed from the document unless it holds escapes.
    Str(Cow<'a, str>),
    /// An integer that fits i64.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// Not a string or number.
    Other,
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Not valid JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Valid JSON whose top level is not an object.
    #[error("top-level JSON value is not an object")]
    NotObject,
    /// Objects and arrays nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 64;

/// Whether brackets nest deeper than `limit` (outside strings). One byte pass, no allocation.
fn too_deep(bytes: &[u8], limit: usize) -> bool {
    // Fast path (SIMD byte count): fewer opening brackets than the limit cannot nest past it.
    if memchr::memchr2_iter(b'{', b'[', bytes)
        .take(limit + 1)
        .count()
        <= limit
    {
        return false;
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Validates `bytes` as one JSON object and returns the value at each of `paths` (in order).
/// (The tests' entry point: it takes bytes that may not be UTF-8.)
#[cfg(test)]
fn scan_fields<'a>(
    bytes: &'a [u8],
    paths: &[Vec<String>],
) -> Result<Vec<Option<Scalar<'a>>>, ScanError> {
    let mut out = vec![None; paths.len()];
    scan_with(
        bytes,
        paths,
        serde_json::Deserializer::from_slice(bytes),
        &mut out,
    )?;
    Ok(out)
}

/// Validates `text` (already checked as UTF-8, so serde_json skips its own string validation)
/// as one JSON object, writing the value at each of `paths` into `out` (one slot per path): no
/// allocation but the
/// strings found.
pub fn scan_fields_into<'a>(
    text: &'a str,
    paths: &[Vec<String>],
    out: &mut [Option<Scalar<'a>>],
) -> Result<(), ScanError> {
    scan_with(
        text.as_bytes(),
        paths,
        serde_json::Deserializer::from_str(text),
        out,
    )
}

fn scan_with<'de, R: serde_json::de::Read<'de>>(
    bytes: &[u8],
    paths: &[Vec<String>],
    mut de: serde_json::Deserializer<R>,
    out: &mut [Option<Scalar<'de>>],
) -> Result<(), ScanError> {
    if too_deep(bytes, MAX_DEPTH) {
        return Err(ScanError::TooDeep);
    }
    let all = if paths.len() >= 64 {
        u64::MAX
    } else {
        (1u64 << paths.len()) - 1
    };
    let is_object = ObjectSeed {
        paths,
        active: all,
        depth: 0,
        out,
    }
    .deserialize(&mut de)?;
    de.end()?;
    if is_object {
        Ok(())
    } else {
        Err(ScanError::NotObject)
    }
}

/// Walks one object at `depth`, capturing values of the `active` paths (bit i: `paths[i]` still
/// matches the keys above this object).
struct ObjectSeed<'w, 'p, 'de> {
    paths: &'p [Vec<String>],
    active: u64,
    depth: usize,
    out: &'w mut [Option<Scalar<'de>>],
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key_seed(KeyMatch {
            paths: self.paths,
            active: self.active,
            depth: self.depth,
        })? {
            if key == 0 {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            // Paths whose segment at this depth is this key: capture (last segment) or descend.
            let ends = (0..self.paths.len().min(64))
                .find(|&i| key & (1 << i) != 0 && self.paths[i].len() == self.depth + 1);
            if let Some(slot) = ends {
                let v = map.next_value_seed(ScalarSeed)?;
                self.out[slot] = Some(v);
            } else {
                map.next_value_seed(ObjectSeed {
                    paths: self.paths,
                    active: key,
                    depth: self.depth + 1,
                    out: &mut *self.out,
                })?;
            }
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Matches a key against the segment at `depth` of every active path; returns a bit mask
/// (0: none).
struct KeyMatch<'p> {
    paths: &'p [Vec<String>],
    active: u64,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for KeyMatch<'_> {
    type Value = u64;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyMatch<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, k: &str) -> Result<u64, E> {
        let mut mask = 0u64;
        for (bit, path) in self.paths.iter().enumerate().take(64) {
            if self.active & (1 << bit) != 0 && path.get(self.depth).is_some_and(|p| p == k) {
                mask |= 1 << bit;
            }
        }
        Ok(mask)
    }
}

/// Reads any value, keeping strings and numbers.
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(s.to_string())))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn finds_top_level_and_nested_fields() {
        let doc = br#"{"type":"track","context":{"sent_at":"2026-11-01T00:00:00Z","n":1},"timestamp":1700000000}"#;
        let got = scan_fields(
            doc,
            &[p("timestamp"), p("context.sent_at"), p("type"), p("nope.x")],
        )
        .unwrap();
        assert_eq!(got[0], Some(Scalar::Int(1_700_000_000)));
        assert_eq!(got[1], Some(Scalar::Str("2026-11-01T00:00:00Z".into())));
        assert_eq!(got[2], Some(Scalar::Str("track".into())));
        assert_eq!(got[3], None);
    }

    #[test]
    fn escaped_keys_and_values_match() {
        let doc = br#"{"ty\u0070e":"a\"b","x":[1,{"y":2}]}"#;
        let got = scan_fields(doc, &[p("type")]).unwrap();
        assert_eq!(got[0], Some(Scalar::Str("a\"b".into())));
    }

    #[test]
    fn non_scalars_are_other() {
        let got = scan_fields(
            br#"{"t":{"a":1},"u":null,"v":[1]}"#,
            &[p("t"), p("u"), p("v")],
        )
        .unwrap();
        assert_eq!(got, vec![Some(Scalar::Other); 3]);
    }

    #[test]
    fn rejects_bad_json_and_non_objects() {
        assert!(matches!(
            scan_fields(b"{\"a\":", &[]),
            Err(ScanError::Json(_))
        ));
        assert!(matches!(scan_fields(b"{} x", &[]), Err(ScanError::Json(_))));
        assert!(matches!(
            scan_fields(b"[1,2]", &[]),
            Err(ScanError::NotObject)
        ));
        assert!(matches!(
            scan_fields(b"\"s\"", &[]),
            Err(ScanError::NotObject)
        ));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(
            scan_fields(deep.as_bytes(), &[]),
            Err(ScanError::TooDeep)
        ));
        let ok = format!(
            "{{\"a\":{}{}, \"s\":\"[[[[\\\"{}\"}}",
            "[".repeat(60),
            "]".repeat(60),
            "[".repeat(100)
        );
        assert!(scan_fields(ok.as_bytes(), &[]).is_ok(), "{ok}");
    }
}
