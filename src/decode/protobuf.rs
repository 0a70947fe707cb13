//! Protobuf payloads to JSON: protox compiles the registry's `.proto` text (with its references
//! as imports and the well-known `google/protobuf/*.proto` files built in) into a descriptor
//! pool; a payload's message indexes pick the message type, prost-reflect decodes it and writes
//! the proto3 JSON mapping straight into the output.
//!
//! Invariants: the indexes are Confluent's: a zigzag varint count, then that many zigzag varint
//! indexes (a count of 0 means `[0]`), the first into the schema file's top-level messages in
//! declaration order, each next one into the previous message's nested message types in
//! declaration order, the map entries protoc adds for `map<…>` fields left out (as the
//! registry's Java serializer counts them); every index is checked, and a bad one is an error.
//!
//! Besides `google/protobuf/*.proto`, the files the registry treats as built in without listing
//! them as references resolve too: `confluent/meta.proto` (the field, message and file metadata
//! options Confluent's tools add) and `confluent/type/decimal.proto`.

use std::collections::HashMap;

use prost_reflect::prost::encoding::decode_varint;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use super::{DecodeError, SchemaError};

#[cfg(test)]
mod tests;

/// The file name the main schema compiles under (imports name the references by theirs).
const MAIN_FILE: &str = "kafka-s3-sink-registry-schema.proto";

/// Most message indexes taken before the message (nesting deeper than this is refused).
const MAX_INDEXES: u64 = 64;

/// A compiled `.proto` schema.
#[derive(Debug)]
pub(super) struct ProtoDecoder {
    /// The schema file's top-level messages, in declaration order.
    top: Vec<MessageDescriptor>,
    /// Heap bytes of the pool, estimated when compiled.
    memory_bytes: usize,
    options: SerializeOptions,
}

/// Confluent's metadata options (`confluent.field_meta` etc.): only their declarations, so
/// that a schema setting them compiles.
const CONFLUENT_META: &str = r#"syntax = "proto3";
package confluent;
import "google/protobuf/descriptor.proto";
message Meta {
  string doc = 1;
  map<string, string> params = 2;
  repeated string tags = 3;
}
extend google.protobuf.FileOptions { Meta file_meta = 1088; }
extend google.protobuf.MessageOptions { Meta message_meta = 1088; }
extend google.protobuf.FieldOptions { Meta field_meta = 1088; }
extend google.protobuf.EnumOptions { Meta enum_meta = 1088; }
extend google.protobuf.EnumValueOptions { Meta enum_value_meta = 1088; }
"#;

/// Confluent's decimal message (Kafka Connect's decimals in Protobuf).
const CONFLUENT_DECIMAL: &str = r#"syntax = "proto3";
package confluent.type;
message Decimal {
  bytes value = 1;
  uint32 precision = 2;
  int32 scale = 3;
}
"#;

/// The schema text and its references, served to protox by file name.
struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source).or_else(|e| {
                // Serializers that register a compiled descriptor (confluent-kafka's Python
                // ProtobufSerializer, for one) send it base64-encoded; a registry may serve it
                // back as it was registered.
                serialized_descriptor(name, source).ok_or(e)
            }),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A base64-encoded `FileDescriptorProto` as the file `name`, if `text` is one.
fn serialized_descriptor(name: &str, text: &str) -> Option<File> {
    use base64::Engine as _;
    use prost_reflect::prost::Message as _;
    let text = text.trim();
    if text.is_empty() || text.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let mut descriptor =
        prost_reflect::prost_types::FileDescriptorProto::decode(&bytes[..]).ok()?;
    // Imports name the references by the names the registry lists them under.
    descriptor.name = Some(name.to_string());
    Some(File::from_file_descriptor_proto(descriptor))
}

impl ProtoDecoder {
    /// Compiles the schema's text, its imports served from `references` (import name, text)
    /// and the well-known types.
    pub(super) fn parse(text: &str, references: &[(String, String)]) -> Result<Self, SchemaError> {
        let mut files: HashMap<String, String> = [
            ("confluent/meta.proto", CONFLUENT_META),
            ("confluent/type/decimal.proto", CONFLUENT_DECIMAL),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
        files.extend(references.iter().cloned());
        files.insert(MAIN_FILE.to_string(), text.to_string());
        let mut resolver = ChainFileResolver::new();
        resolver.add(Sources(files));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.open_file(MAIN_FILE).map_err(|e| {
            SchemaError::Protobuf(match e.file() {
                Some(file) if file != MAIN_FILE && !e.is_file_not_found() => {
                    format!("in {file}: {e}")
                }
                _ => e.to_string(),
            })
        })?;
        let pool: DescriptorPool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(MAIN_FILE)
            .ok_or_else(|| SchemaError::Protobuf("the schema's file is not in its pool".into()))?;
        let top: Vec<MessageDescriptor> = file.messages().collect();
        if top.is_empty() {
            return Err(SchemaError::NoMessage);
        }
        // The pool holds every file's descriptor with its names and index maps: 24 to 30 times
        // the encoded descriptors, measured with a counting allocator; 48 leaves a margin.
        let encoded = pool.encode_to_vec().len();
        let sources = text.len()
            + references
                .iter()
                .map(|(n, t)| n.len() + t.len())
                .sum::<usize>();
        let memory_bytes = 48 * encoded + 2 * sources + 4096;
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .skip_default_fields(false)
            .stringify_64_bit_integers(true)
            .use_enum_numbers(false);
        Ok(ProtoDecoder {
            top,
            memory_bytes,
            options,
        })
    }

    /// Heap bytes of the compiled schema.
    pub(super) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Every message of the schema's file a payload's indexes can name: each top-level one
    /// followed by its nested ones, depth first (map entries excepted).
    pub(super) fn messages(&self) -> Vec<MessageDescriptor> {
        fn walk(m: &MessageDescriptor, out: &mut Vec<MessageDescriptor>) {
            out.push(m.clone());
            for c in m.child_messages().filter(|c| !c.is_map_entry()) {
                walk(&c, out);
            }
        }
        let mut out = Vec::new();
        for m in &self.top {
            walk(m, &mut out);
        }
        out
    }

    /// The message type a payload's indexes name, if they read.
    pub(super) fn message_of(&self, payload: &[u8]) -> Option<MessageDescriptor> {
        self.message_type(payload).ok().map(|(d, _)| d)
    }

    /// The message type the indexes at the start of `payload` name, and the message's bytes.
    fn message_type<'p>(
        &self,
        payload: &'p [u8],
    ) -> Result<(MessageDescriptor, &'p [u8]), DecodeError> {
        let mut buf = payload;
        let count = zigzag(&mut buf)?;
        if count == 0 {
            return Ok((self.top[0].clone(), buf));
        }
        let count = u64::try_from(count)
            .ok()
            .filter(|&c| c <= MAX_INDEXES)
            .ok_or(DecodeError::MessageIndexes("count negative or above 64"))?;
        let mut desc: Option<MessageDescriptor> = None;
        for _ in 0..count {
            let index = zigzag(&mut buf)?;
            let found = match &desc {
                None => pick(self.top.iter().cloned(), self.top.len(), index),
                Some(d) => {
                    let nested = || d.child_messages().filter(|m| !m.is_map_entry());
                    pick(nested(), nested().count(), index)
                }
            }?;
            desc = Some(found);
        }
        let desc = desc.expect("invariant: count is at least 1");
        Ok((desc, buf))
    }

    /// Decodes one payload (message indexes, then the message) and appends its JSON object.
    pub(super) fn decode_into(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let (desc, body) = self.message_type(payload)?;
        let fail = |detail: String| DecodeError::Protobuf {
            message: desc.full_name().to_string(),
            detail,
        };
        let message =
            DynamicMessage::decode(desc.clone(), body).map_err(|e| fail(e.to_string()))?;
        let mut ser = serde_json::Serializer::new(&mut *out);
        message
            .serialize_with_options(&mut ser, &self.options)
            .map_err(|e| fail(e.to_string()))
    }
}

/// One zigzag varint (Confluent's encoding of the index count and the indexes).
fn zigzag(buf: &mut &[u8]) -> Result<i64, DecodeError> {
    let n = decode_varint(buf)
        .map_err(|_| DecodeError::MessageIndexes("truncated or invalid varint"))?;
    Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
}

/// The message at `index` of `messages` (`len` of them).
fn pick(
    mut messages: impl Iterator<Item = MessageDescriptor>,
    len: usize,
    index: i64,
) -> Result<MessageDescriptor, DecodeError> {
    let out_of_range = DecodeError::MessageIndex {
        index,
        available: len,
    };
    let i = usize::try_from(index).map_err(|_| out_of_range.clone())?;
    messages.nth(i).ok_or(out_of_range)
}
