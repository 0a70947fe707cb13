//! Byte-exact JSON writers shared by the lines the connector writes (error lines and Kafka
//! metadata in `envelope`, record headers in `source`).
//!
//! Invariant: a value's bytes are recoverable exactly: a JSON string when it is valid UTF-8 and
//! escaping does not make it longer than base64, `<name>_base64` otherwise, `null` for none.

use base64::Engine;

/// Bytes `b` takes as the characters of a JSON string (without the quotes): control characters
/// are escaped as `\u00XX` (6 bytes) except the five with a short escape, `"` and `\\` as 2.
pub fn escaped_len(b: &[u8]) -> usize {
    b.iter()
        .map(|&c| match c {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Writes `"name":<bytes>` (after a comma): a JSON string when `bytes` is valid UTF-8 and its
/// escaped form is no longer than base64, else `"name_base64":"…"` (at most 4/3 of the size, so a
/// value of control characters never grows 6-fold); `null` for `None`.
pub fn put_bytes(out: &mut Vec<u8>, name: &str, bytes: Option<&[u8]>) {
    out.push(b',');
    let Some(b) = bytes else {
        write_str(out, name);
        out.extend_from_slice(b":null");
        return;
    };
    match std::str::from_utf8(b) {
        Ok(s) if escaped_len(b) <= b.len().div_ceil(3) * 4 => {
            write_str(out, name);
            out.push(b':');
            write_str(out, s);
        }
        _ => {
            write_str(out, &format!("{name}_base64"));
            out.extend_from_slice(b":\"");
            let start = out.len();
            out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(b, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + n);
            out.push(b'"');
        }
    }
}

/// A JSON string, escaped.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
