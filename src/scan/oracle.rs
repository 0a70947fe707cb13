//! The test oracle: the serde_json walk this module used before its own scanner (a bracket
//! prescan for the depth limit, then serde_json's `IgnoredAny` walk with seeds for the paths).
//! The differential tests hold the scanner to it.

use super::{Scalar, ScalarSeed, ScanError, MAX_DEPTH};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

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

/// The old scan: the value at each of `paths` (in order), or why `text` was refused.
pub fn scan_fields<'a>(
    text: &'a str,
    paths: &[Vec<String>],
) -> Result<Vec<Option<Scalar<'a>>>, ScanError> {
    let mut out = vec![None; paths.len()];
    if too_deep(text.as_bytes(), MAX_DEPTH) {
        return Err(ScanError::TooDeep);
    }
    let all = if paths.len() >= 64 {
        u64::MAX
    } else {
        (1u64 << paths.len()) - 1
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let is_object = ObjectSeed {
        paths,
        active: all,
        depth: 0,
        out: &mut out,
    }
    .deserialize(&mut de)
    .map_err(json)?;
    de.end().map_err(json)?;
    if is_object {
        Ok(out)
    } else {
        Err(ScanError::NotObject)
    }
}

/// serde_json's verdict as a [`ScanError`] (the oracle does not say where).
fn json(_: serde_json::Error) -> ScanError {
    ScanError::Json {
        at: 0,
        what: "rejected by serde_json",
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
