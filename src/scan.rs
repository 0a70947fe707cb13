//! Single-pass JSON scan: validates a whole document and picks out the values at a few dotted
//! paths without building a JSON tree (no allocation for fields that are not asked for).
//!
//! The walk is our own because the same pass also tracks the nesting depth and the line breaks,
//! which took two more byte passes over every record next to serde_json's validating walk (the
//! fastest of serde_json, simd-json, sonic-rs and jiter on these records); the one walk is faster
//! than the three passes (`kafka-s3-sink-bench scan`; BENCHMARKS.md, "Measured and kept").
//! serde_json still reads the values that are asked for, a scalar found where a
//! path expected an object, and the escaped keys of the objects on the way to the paths, so those
//! mean exactly what serde_json says they mean.
//!
//! Invariant (held to the old serde_json walk in the tests, on mutated documents): a document is
//! accepted exactly when serde_json accepts it with at most [`MAX_DEPTH`] levels of nesting, and
//! the values found are serde_json's.

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;

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
    #[error("not JSON: {what} at byte {at}")]
    Json {
        /// Byte offset where the document stopped being JSON.
        at: usize,
        /// What was expected or found there.
        what: &'static str,
    },
    /// Valid JSON whose top level is not an object.
    #[error("top-level JSON value is not an object")]
    NotObject,
    /// Objects and arrays nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 64;

/// What an accepted document looked like, besides its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// A raw CR or LF byte occurs (only possible as whitespace between tokens).
    pub line_breaks: bool,
}

/// Validates `text` as one JSON object, writing the value at each of `paths` into `out` (one
/// slot per path; a path seen twice keeps its last value). No allocation but the strings found
/// that hold escapes.
pub fn scan_fields_into<'a>(
    text: &'a str,
    paths: &[Vec<String>],
    out: &mut [Option<Scalar<'a>>],
) -> Result<Shape, ScanError> {
    scan_fields_with_spans(text, paths, out, &mut [])
}

/// [`scan_fields_into`], also writing where each value found lies in `text` (its JSON text,
/// e.g. `true` or a whole object) into `spans`, for as many paths as `spans` has slots.
pub fn scan_fields_with_spans<'a>(
    text: &'a str,
    paths: &[Vec<String>],
    out: &mut [Option<Scalar<'a>>],
    spans: &mut [Option<std::ops::Range<usize>>],
) -> Result<Shape, ScanError> {
    let all = if paths.len() >= 64 {
        u64::MAX
    } else {
        (1u64 << paths.len()) - 1
    };
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
        line_breaks: false,
        paths,
        out,
        spans,
        error: None,
    };
    let walked = s.walk_into(0, all).and_then(|()| {
        s.ws();
        if s.i == s.b.len() {
            Ok(())
        } else {
            Err(s.err("trailing characters"))
        }
    });
    if walked.is_err() {
        return Err(s.error.unwrap_or(ScanError::Json {
            at: s.i,
            what: "refused",
        }));
    }
    if text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .as_bytes()
        .first()
        != Some(&b'{')
    {
        return Err(ScanError::NotObject);
    }
    Ok(Shape {
        line_breaks: s.line_breaks,
    })
}

/// The walk's cursor. `walk` arguments: `Some(mask)` for an object on the way to a path (bit i:
/// `paths[i]` matches every key above it; its escaped keys are decoded by serde_json), `None`
/// for a value that is only validated.
struct Scanner<'a, 'p, 'o> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    line_breaks: bool,
    paths: &'p [Vec<String>],
    out: &'o mut [Option<Scalar<'a>>],
    /// Where each value found lies in `text` (as many slots as the caller asked for).
    spans: &'o mut [Option<std::ops::Range<usize>>],
    /// Why the document was refused, once [`Bad`] has been returned.
    error: Option<ScanError>,
}

/// The document was refused; the reason is in [`Scanner::error`]. (A one-byte error keeps the
/// walk's results in registers.)
struct Bad;

/// One step of the walk.
type Step = Result<(), Bad>;

impl<'a> Scanner<'a, '_, '_> {
    /// Records why the document was refused (the first reason only) and returns the marker.
    #[cold]
    fn fail(&mut self, e: ScanError) -> Bad {
        self.error.get_or_insert(e);
        Bad
    }

    #[cold]
    fn err(&mut self, what: &'static str) -> Bad {
        let at = self.i;
        self.fail(ScanError::Json { at, what })
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(c) = self.peek() {
            // Every token starts above the space: one compare in the usual, compact case.
            if c > b' ' {
                return;
            }
            match c {
                b' ' | b'\t' => {}
                b'\n' | b'\r' => self.line_breaks = true,
                _ => return,
            }
            self.i += 1;
        }
    }

    /// One value at nesting `depth` (the number of objects and arrays around it).
    fn value(&mut self, depth: usize, walk: Option<u64>) -> Step {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1, walk),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end")),
        }
    }

    /// A value on the way to the paths in `mask`: an object is walked; anything else is read as
    /// serde_json reads it there (its range and escape checks), then dropped.
    fn walk_into(&mut self, depth: usize, mask: u64) -> Step {
        self.ws();
        if self.peek() == Some(b'{') {
            return self.value(depth, Some(mask));
        }
        let start = self.i;
        self.value(depth, None)?;
        self.read_scalar(start).map(drop)
    }

    /// Enters an object or array (at its opening bracket) at nesting `depth`; true if it is
    /// empty (then its `close` is consumed too).
    #[inline(always)]
    fn open(&mut self, depth: usize, close: u8) -> Result<bool, Bad> {
        if depth > MAX_DEPTH {
            return Err(self.fail(ScanError::TooDeep));
        }
        self.i += 1;
        self.ws();
        let empty = self.peek() == Some(close);
        if empty {
            self.i += 1;
        }
        Ok(empty)
    }

    /// After a member: true at a comma (another member follows), false at `close` (consumed).
    #[inline(always)]
    fn more(&mut self, close: u8, what: &'static str) -> Result<bool, Bad> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                self.ws();
                Ok(true)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(self.err(what)),
        }
    }

    fn object(&mut self, depth: usize, walk: Option<u64>) -> Step {
        if self.open(depth, b'}')? {
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a key"));
            }
            let start = self.i;
            let escaped = self.string()?;
            let mask = match walk {
                Some(active) => self.key_mask(start, escaped, depth - 1, active)?,
                None => 0,
            };
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.i += 1;
            // The paths that end at this member (several when equal paths were asked for).
            let ending = if mask == 0 {
                0
            } else {
                (0..self.paths.len().min(64))
                    .filter(|&i| mask & (1 << i) != 0 && self.paths[i].len() == depth)
                    .fold(0u64, |m, i| m | (1 << i))
            };
            if mask == 0 {
                self.value(depth, None)?;
            } else if ending != 0 {
                self.ws();
                let start = self.i;
                // Longer paths through the same member (`a` and `a.b`) are still walked.
                let deeper = mask & !ending;
                if deeper != 0 {
                    self.walk_into(depth, deeper)?;
                } else {
                    self.value(depth, None)?;
                }
                let v = self.read_scalar(start)?;
                let end = self.i;
                for slot in (0..self.paths.len().min(64)).filter(|&i| ending & (1 << i) != 0) {
                    if let Some(o) = self.out.get_mut(slot) {
                        *o = Some(v.clone());
                    }
                    if let Some(span) = self.spans.get_mut(slot) {
                        *span = Some(start..end);
                    }
                }
            } else {
                self.walk_into(depth, mask)?;
            }
            if !self.more(b'}', "expected ',' or '}'")? {
                return Ok(());
            }
        }
    }

    fn array(&mut self, depth: usize) -> Step {
        if self.open(depth, b']')? {
            return Ok(());
        }
        loop {
            self.value(depth, None)?;
            if !self.more(b']', "expected ',' or ']'")? {
                return Ok(());
            }
        }
    }

    /// Skips a string (at its opening quote); whether it holds escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, Bad> {
        self.i += 1;
        let mut escaped = false;
        loop {
            self.i = skip_plain(self.b, self.i);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return Err(self.err("control character in a string")),
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    /// Skips one escape (at its backslash). As serde_json does for a skipped string, `\u` takes
    /// any four hex digits; strings that are read are decoded by serde_json itself.
    fn escape(&mut self) -> Step {
        match self.b.get(self.i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 2;
                Ok(())
            }
            Some(b'u') => match self.b.get(self.i + 2..self.i + 6) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => {
                    self.i += 6;
                    Ok(())
                }
                _ => Err(self.err("bad \\u escape")),
            },
            _ => Err(self.err("bad escape")),
        }
    }

    /// The string that starts at `start` and ends at the cursor, decoded by serde_json.
    fn decode(&mut self, start: usize) -> Result<Cow<'a, str>, Bad> {
        serde_json::from_str::<Cow<'a, str>>(&self.text[start..self.i]).map_err(|_| {
            self.fail(ScanError::Json {
                at: start,
                what: "bad escape",
            })
        })
    }

    /// Paths among `active` whose segment `seg` is the key that starts at `start`.
    fn key_mask(
        &mut self,
        start: usize,
        escaped: bool,
        seg: usize,
        active: u64,
    ) -> Result<u64, Bad> {
        let key = if escaped {
            self.decode(start)?
        } else {
            Cow::Borrowed(&self.text[start + 1..self.i - 1])
        };
        let mut mask = 0u64;
        for (bit, path) in self.paths.iter().enumerate().take(64) {
            if active & (1 << bit) != 0 && path.get(seg).is_some_and(|p| *p == key) {
                mask |= 1 << bit;
            }
        }
        Ok(mask)
    }

    /// The value that starts at `start` and ends at the cursor (already validated), as
    /// serde_json reads it.
    fn read_scalar(&mut self, start: usize) -> Result<Scalar<'a>, Bad> {
        let span = &self.text[start..self.i];
        if let Some(plain) = span.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            if !plain.contains('\\') {
                return Ok(Scalar::Str(Cow::Borrowed(plain)));
            }
        }
        ScalarSeed
            .deserialize(&mut serde_json::Deserializer::from_str(span))
            .map_err(|_| {
                self.fail(ScanError::Json {
                    at: start,
                    what: "value out of range",
                })
            })
    }

    fn literal(&mut self, word: &'static [u8]) -> Step {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("bad literal"))
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Step {
        let digits = |b: &[u8], mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(b, i + 1),
            _ => return Err(self.err("bad number")),
        }
        if b.get(i) == Some(&b'.') {
            let end = digits(b, i + 1);
            if end == i + 1 {
                return Err(self.err("bad number"));
            }
            i = end;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let end = digits(b, i);
            if end == i {
                return Err(self.err("bad number"));
            }
            i = end;
        }
        self.i = i;
        Ok(())
    }
}

/// The first index at or after `i` holding `"`, `\` or a control byte (< 0x20), or the end.
/// Eight bytes at a time (the classic "has a zero / a byte below n" word tricks; only the lowest
/// flagged byte is exact, and only it is used).
#[inline(always)]
fn skip_plain(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let quote = w ^ (ONES * u64::from(b'"'));
        let slash = w ^ (ONES * u64::from(b'\\'));
        let flagged = ((quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if flagged != 0 {
            return i + (flagged.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
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
