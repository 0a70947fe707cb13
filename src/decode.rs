//! Schema Registry payloads to JSON text: the Confluent wire format's frame, the parsed schemas
//! (Avro, Protobuf, JSON Schema) and the decoding of one payload into one JSON object line.
//! Pure: no I/O, no async; the registry client that fetches the schemas sits beside it. A
//! parsed schema also names the columns it gives a `from_schema` destination (`columns.rs`).
//!
//! Invariants: [`Parsed::decode_into`] appends exactly one JSON object without line breaks, or
//! nothing and an error (`out` is truncated back to its length on entry); it never panics on
//! any payload; an error's message names what failed (a field, a message index) without
//! quoting the payload. The JSON mapping of each kind is in docs/schema-registry.md
//! ("Decoding").

use std::sync::Arc;

mod avro;
mod columns;
mod protobuf;
pub mod registry;
pub mod value;

/// The kinds of schema a registry serves (its `schemaType`: absent means AVRO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    /// Apache Avro: a JSON schema; payloads are binary datums written with it.
    Avro,
    /// Protocol Buffers: `.proto` source; payloads are message indexes then the message.
    Protobuf,
    /// JSON Schema: payloads are JSON text.
    Json,
}

impl SchemaKind {
    /// The registry's name of the kind (`schemaType`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaKind::Avro => "AVRO",
            SchemaKind::Protobuf => "PROTOBUF",
            SchemaKind::Json => "JSON",
        }
    }
}

/// Why a schema's text could not be made into a decoder.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchemaError {
    /// The Avro schema (or one of its references) does not parse or leaves a name unresolved.
    #[error("Avro schema: {0}")]
    Avro(String),
    /// The `.proto` source (or an imported file) does not compile.
    #[error("Protobuf schema: {0}")]
    Protobuf(String),
    /// The `.proto` file declares no message, so no payload can name one.
    #[error("Protobuf schema declares no message")]
    NoMessage,
}

/// Why one payload could not be decoded. Shown to users as the quarantine reason's detail, so
/// it says what failed and where, and quotes no payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The Avro datum does not fit its schema (`at` names the field, empty for the top level).
    #[error("Avro{}: {detail}", at_field(at))]
    Avro {
        /// Dotted path of the field where decoding failed; empty when not known.
        at: String,
        /// What failed.
        detail: String,
    },
    /// The datum decoded, but bytes are left after it: the payload is not this schema's.
    #[error("Avro: {0} bytes left after the datum (written with another schema?)")]
    AvroTrailing(usize),
    /// The Protobuf message indexes before the message do not read.
    #[error("Protobuf message indexes: {0}")]
    MessageIndexes(&'static str),
    /// A message index names no message of the schema.
    #[error("Protobuf message index {index} out of range ({available} messages at that level)")]
    MessageIndex {
        /// The index found.
        index: i64,
        /// How many messages there are where it points.
        available: usize,
    },
    /// The Protobuf message does not decode as the indexed message type.
    #[error("Protobuf message `{message}`: {detail}")]
    Protobuf {
        /// Full name of the message type.
        message: String,
        /// What failed.
        detail: String,
    },
    /// The JSON Schema payload is not a JSON object.
    #[error("JSON: {0}")]
    Json(String),
}

/// ` field `a.b`` for an error at a field, nothing at the top level.
fn at_field(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!(" field `{at}`")
    }
}

/// A value that is not in the Confluent wire format: shorter than 5 bytes or not starting with
/// the magic byte 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not in the Schema Registry wire format (magic byte 0 and a 4-byte schema id)")]
pub struct NotFramed;

/// Splits a Confluent-framed value: `Ok((schema_id, rest))`, or `Err(NotFramed)` when it is
/// shorter than 5 bytes or its magic byte is not 0.
pub fn split_frame(value: &[u8]) -> Result<(u32, &[u8]), NotFramed> {
    match value {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(NotFramed),
    }
}

/// Caps the lengths apache-avro accepts while reading an Avro datum (a string's or bytes'
/// length, an array's or map's item count) at `max_bytes`, for the whole process, and returns
/// the cap in force. Call it once at start-up, before anything reads Avro (the first call
/// wins; apache-avro's default is 512 MiB). Without a cap near the largest record, a corrupt
/// count asks for up to 512 Mi items of 56 bytes before the read fails: memory that is
/// mostly never touched, but an allocation a host may refuse, which aborts the process. The
/// Iceberg manifests read through the same crate hold blocks far below any sensible cap.
pub fn limit_avro_lengths(max_bytes: usize) -> usize {
    apache_avro::util::max_allocation_bytes(max_bytes)
}

/// A parsed schema ready to decode payloads; cheap to share (`Arc` it in the cache).
#[derive(Debug, Clone)]
pub struct Parsed {
    inner: Inner,
    /// The columns it gives a `from_schema` destination ([`columns`]): one set for an Avro or
    /// JSON Schema, one per message (by full name, in [`protobuf::ProtoDecoder::messages`]'
    /// order) for a Protobuf file.
    columns: Vec<(String, Vec<crate::config::Column>)>,
    memory_bytes: usize,
}

#[derive(Debug, Clone)]
enum Inner {
    Avro(Arc<avro::AvroDecoder>),
    Protobuf(Arc<protobuf::ProtoDecoder>),
    Json,
}

/// Heap bytes counted for any parsed schema besides its own parts (the cache entry, the
/// allocator's slack).
const BASE_BYTES: usize = 256;

impl Parsed {
    /// Parses a schema's text; `references` are the referenced schemas' (name, text) in
    /// dependency order (Avro: named types used by the main schema; Protobuf: imported files by
    /// their import name). JSON Schema's text is not read: payloads are only checked to be
    /// JSON objects.
    pub fn parse(
        kind: SchemaKind,
        text: &str,
        references: &[(String, String)],
    ) -> Result<Parsed, SchemaError> {
        let (inner, own, columns) = match kind {
            SchemaKind::Avro => {
                let d = avro::AvroDecoder::parse(text, references)?;
                let bytes = d.memory_bytes();
                let (main, names) = d.main_and_names();
                let columns = vec![(String::new(), columns::avro(main, names))];
                (Inner::Avro(Arc::new(d)), bytes, columns)
            }
            SchemaKind::Protobuf => {
                let d = protobuf::ProtoDecoder::parse(text, references)?;
                let bytes = d.memory_bytes();
                let columns = d
                    .messages()
                    .iter()
                    .map(|m| (m.full_name().to_string(), columns::protobuf(m)))
                    .collect();
                (Inner::Protobuf(Arc::new(d)), bytes, columns)
            }
            SchemaKind::Json => (
                Inner::Json,
                0,
                vec![(String::new(), columns::json_schema(text))],
            ),
        };
        let column_bytes: usize = columns
            .iter()
            .flat_map(|(m, cs)| cs.iter().map(move |c| (m, c)))
            .map(|(m, c)| {
                std::mem::size_of::<crate::config::Column>() + 2 * c.name.len() + 64 + m.len() / 4
            })
            .sum();
        Ok(Parsed {
            inner,
            columns,
            memory_bytes: BASE_BYTES + own + column_bytes,
        })
    }

    /// Approximate heap bytes this parsed schema holds (for the memory budget; an
    /// overestimate rather than under).
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// The columns a payload of this schema gives a destination with `columns =
    /// "from_schema"` (one per top-level field of its record, or of the Protobuf message its
    /// indexes name; optional, typed by the field's decoded JSON), and which of the schema's
    /// column sets they are (always 0 but for Protobuf files of several messages). `None`
    /// when a Protobuf payload's indexes do not read (its decoding fails too).
    pub fn columns_of(&self, payload: &[u8]) -> Option<(u32, &[crate::config::Column])> {
        let at = match &self.inner {
            Inner::Protobuf(d) => {
                let m = d.message_of(payload)?;
                self.columns.iter().position(|(n, _)| n == m.full_name())?
            }
            Inner::Avro(_) | Inner::Json => 0,
        };
        let set = self.columns.get(at)?;
        Some((u32::try_from(at).ok()?, &set.1))
    }

    /// The kind of schema this is.
    pub fn kind(&self) -> SchemaKind {
        match self.inner {
            Inner::Avro(_) => SchemaKind::Avro,
            Inner::Protobuf(_) => SchemaKind::Protobuf,
            Inner::Json => SchemaKind::Json,
        }
    }

    /// The JSON lines of `values`, framed values each of schema `id`, decoded together when
    /// this schema reads column-wise (an Avro record schema of the types `avro/columnar.rs`
    /// writes): each value's line, what [`Self::decode_into`] writes for its payload, or `None`
    /// for a value to decode alone. `None`: decode them all one by one.
    pub fn decode_many(&self, id: u32, values: &[&[u8]]) -> Option<Vec<Option<Vec<u8>>>> {
        match &self.inner {
            Inner::Avro(d) => d.decode_many(id, values),
            Inner::Protobuf(_) | Inner::Json => None,
        }
    }

    /// Decodes one payload (the bytes after the 5-byte header; for Protobuf the message indexes
    /// come first and are read here) and appends its JSON object text (one line, no newline) to
    /// `out`. On error `out` is left as it was.
    pub fn decode_into(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let start = out.len();
        let done = match &self.inner {
            Inner::Avro(d) => d.decode_into(payload, out),
            Inner::Protobuf(d) => d.decode_into(payload, out),
            Inner::Json => json_into(payload, out),
        };
        if done.is_err() {
            out.truncate(start);
        }
        done
    }
}

/// A JSON Schema payload: checked to be one JSON object (the same scan as the router's) and
/// appended with any raw line breaks (whitespace between tokens) turned into spaces.
fn json_into(payload: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| DecodeError::Json(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    let shape = crate::scan::scan_fields_into(text, &[], &mut [])
        .map_err(|e| DecodeError::Json(e.to_string()))?;
    if shape.line_breaks {
        out.extend(
            payload
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(payload);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_frame_reads_the_id_and_leaves_the_rest() {
        assert_eq!(
            split_frame(&[0, 0, 0, 1, 2, 9, 8]),
            Ok((258, &[9u8, 8][..]))
        );
        assert_eq!(
            split_frame(&[0, 0xff, 0xff, 0xff, 0xff]),
            Ok((u32::MAX, &[][..]))
        );
    }

    #[test]
    fn split_frame_refuses_short_values_and_other_magic_bytes() {
        for v in [&[][..], &[0], &[0, 0, 0, 1]] {
            assert_eq!(split_frame(v), Err(NotFramed), "{v:?}");
        }
        assert_eq!(split_frame(&[1, 0, 0, 0, 1, 5]), Err(NotFramed));
        assert_eq!(split_frame(b"{\"a\":1}"), Err(NotFramed));
    }

    fn json(payload: &[u8]) -> Result<String, DecodeError> {
        let p = Parsed::parse(SchemaKind::Json, r#"{"type":"object"}"#, &[]).unwrap();
        assert_eq!(p.kind(), SchemaKind::Json);
        let mut out = b"prefix ".to_vec();
        let r = p.decode_into(payload, &mut out);
        let text = String::from_utf8(out).unwrap();
        match r {
            Ok(()) => Ok(text.strip_prefix("prefix ").unwrap().to_string()),
            Err(e) => {
                assert_eq!(text, "prefix ", "nothing appended on error");
                Err(e)
            }
        }
    }

    #[test]
    fn json_payloads_are_objects_made_one_line() {
        assert_eq!(json(br#"{"a":1}"#).unwrap(), r#"{"a":1}"#);
        assert_eq!(
            json(b"{\"a\":\n \"x\\ny\",\r\n\"b\":2}").unwrap(),
            "{\"a\":  \"x\\ny\",  \"b\":2}"
        );
        assert!(json(b"[1]")
            .unwrap_err()
            .to_string()
            .contains("not an object"));
        assert!(json(b"{\"a\":")
            .unwrap_err()
            .to_string()
            .starts_with("JSON: not JSON"));
        assert!(json(b"{\"a\":\"\xff\"}")
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
    }

    #[test]
    fn parsed_schemas_are_shared_between_threads() {
        fn shared<T: Send + Sync + Clone>() {}
        shared::<Parsed>();
    }

    #[test]
    fn a_protobuf_payloads_columns_are_its_messages() {
        let p = Parsed::parse(
            SchemaKind::Protobuf,
            r#"syntax = "proto3";
            import "google/protobuf/timestamp.proto";
            message Customer { string name = 1; }
            message Order {
              message Line { string sku = 1; }
              uint64 big = 5; int64 id = 1; Customer c = 2; google.protobuf.Timestamp at = 3;
              repeated string tags = 4; double score = 6; map<string, int32> m = 7;
              oneof pay { string card = 8; }
            }"#,
            &[],
        )
        .unwrap();
        let kinds = |payload: &[u8]| {
            let (set, cols) = p.columns_of(payload).unwrap();
            let cols: Vec<String> = cols
                .iter()
                .map(|c| format!("{}:{}", c.name, c.kind.name()))
                .collect();
            (set, cols.join(" "))
        };
        // No indexes: the first message; indexes [1]: Order; [1, 0]: Order.Line.
        assert_eq!(kinds(&[0]), (0, "name:string".to_string()));
        assert_eq!(
            kinds(&[2, 2]),
            (
                1,
                "id:int64 c:json at:timestamp tags:json big:string score:double m:json card:string"
                    .to_string()
            )
        );
        assert_eq!(kinds(&[4, 2, 0]), (2, "sku:string".to_string()));
        assert!(p.columns_of(&[2, 40]).is_none(), "an index out of range");
    }

    #[test]
    fn kinds_have_the_registry_names() {
        assert_eq!(SchemaKind::Avro.as_str(), "AVRO");
        assert_eq!(SchemaKind::Protobuf.as_str(), "PROTOBUF");
        assert_eq!(SchemaKind::Json.as_str(), "JSON");
    }
}
