//! Avro datums to JSON: apache-avro decodes the binary datum with the writer's schema (the one
//! the payload's id names) into its value tree, which `json` writes straight into the output,
//! walking the schema alongside for what the tree does not carry (a decimal's scale). The
//! schema is adjusted once, when parsed, where apache-avro 0.21 would misread or refuse it
//! (a named decimal, `uuid` or `duration` fixed).
//!
//! Invariants: records keep their schema's field order; map keys are written sorted (the tree
//! holds them in a hash map), so the same datum always gives the same text; a union is its
//! value, never `{"type": value}`; an error names the field where decoding failed.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use apache_avro::headers::HeaderBuilder;
use apache_avro::schema::{Name, RecordField, ResolvedSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::{GenericSingleObjectReader, Schema};

use super::{DecodeError, SchemaError};

/// The items of a strftime format, parsed on first use: chrono parses a format string anew
/// each time it formats with it, which cost a logical-timestamp field more than its decoding.
macro_rules! items {
    ($format:literal) => {{
        static ITEMS: std::sync::LazyLock<Vec<chrono::format::Item<'static>>> =
            std::sync::LazyLock::new(|| {
                chrono::format::StrftimeItems::new($format)
                    .parse_to_owned()
                    .expect("invariant: a valid strftime format")
            });
        ITEMS.as_slice()
    }};
}

mod columnar;
mod json;
#[cfg(test)]
mod tests;

use json::{Json, Walk};

/// The attribute that keeps the logical type (`uuid`, `duration`) of a named fixed, which
/// [`mark_fixed_logical_types`] takes out of apache-avro's sight.
const FIXED_LOGICAL_TYPE: &str = "kafka-s3-sink.logicalType";

/// Heap bytes a parsed schema tree takes per byte of its JSON form (boxed nodes, names and
/// symbols as strings, attribute and lookup maps): measured 10 to 17 with a counting allocator
/// (a one-field record, 30 fields of primitives, unions and records, 12 nested records); 24
/// leaves a margin.
const HEAP_PER_SCHEMA_JSON_BYTE: usize = 24;

/// Length of the JSON form of a schema tree (a reference counts as its name).
fn tree_bytes(schema: &Schema) -> usize {
    serde_json::to_vec(schema).map_or(0, |v| v.len())
}

/// Longest detail taken from an apache-avro error (some quote a decoded value).
const MAX_DETAIL_CHARS: usize = 160;

/// A parsed Avro schema with its references.
pub(super) struct AvroDecoder {
    /// The referenced schemas in dependency order, then the main schema (last): the order
    /// apache-avro resolves names in.
    schemata: Vec<Schema>,
    /// Every named type by full name, to follow a reference while writing (a decimal's scale).
    names: HashMap<Name, Schema>,
    /// The main schema with its names resolved once (apache-avro's plain datum reading
    /// resolves them again for every datum, most of its time on a schema with a few named
    /// types): its single-object reader with an empty header. `None` when the references
    /// could not be made part of the main schema; datums then take the slow path.
    reader: Option<GenericSingleObjectReader>,
    /// The column-wise reader of a window of datums (`columnar.rs`), for a record schema
    /// without references whose types it writes; cleared if its line for a window's first
    /// datum ever differs from the value tree's.
    columnar: Option<columnar::Columnar>,
    /// Whether `columnar` is still used.
    columnar_on: std::sync::atomic::AtomicBool,
    /// Heap bytes, estimated when parsed.
    memory_bytes: usize,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder")
            .field("schema", self.main())
            .field("references", &(self.schemata.len() - 1))
            .field("resolved_once", &self.reader.is_some())
            .finish()
    }
}

/// The single-object header expected before a datum: none (the payload is a bare datum).
struct NoHeader;

impl HeaderBuilder for NoHeader {
    fn build_header(&self) -> Vec<u8> {
        Vec::new()
    }
}

impl AvroDecoder {
    /// Parses the main schema with its references' (name, text) and checks every name used
    /// resolves.
    pub(super) fn parse(text: &str, references: &[(String, String)]) -> Result<Self, SchemaError> {
        let avro = |e: apache_avro::Error| SchemaError::Avro(e.to_string());
        let text = mark_fixed_logical_types(text);
        let (main, refs) = if references.is_empty() {
            (Schema::parse_str(&text).map_err(avro)?, Vec::new())
        } else {
            let refs: Vec<_> = references
                .iter()
                .map(|(_, t)| mark_fixed_logical_types(t))
                .collect();
            Schema::parse_str_with_list(&text, &refs).map_err(avro)?
        };
        let mut schemata = refs;
        schemata.push(main);
        // apache-avro resolves no reference to a decimal on a named fixed (it registers the
        // fixed's name for nothing else): each such reference becomes a copy of the decimal.
        let decimals: HashMap<Name, Schema> = names_of(&schemata)
            .into_iter()
            .filter(|(_, s)| matches!(s, Schema::Decimal(_)))
            .collect();
        if !decimals.is_empty() {
            for s in &mut schemata {
                inline_decimals(s, &decimals).map_err(avro)?;
            }
        }
        ResolvedSchema::try_from(schemata.iter().collect::<Vec<_>>()).map_err(avro)?;
        let names = names_of(&schemata);
        let mut whole = schemata.last().expect("invariant: main pushed").clone();
        let refs: HashMap<&Name, &Schema> = schemata[..schemata.len() - 1]
            .iter()
            .filter_map(|s| Some((s.name()?, s)))
            .collect();
        inline_references(&mut whole, &refs, &None, &mut HashSet::new());
        // Every tree held: the schemata, the named types here and in the reader's index (each
        // a copy of its subtree), the reader's own copy of the whole.
        let weight = schemata.iter().map(tree_bytes).sum::<usize>()
            + 2 * names.values().map(tree_bytes).sum::<usize>()
            + tree_bytes(&whole);
        let columnar = match (&whole, references.is_empty()) {
            (Schema::Record(_), true) => columnar::Columnar::new(&text),
            _ => None,
        };
        let memory_bytes = HEAP_PER_SCHEMA_JSON_BYTE * weight
            + 4096
            + columnar
                .as_ref()
                .map_or(0, columnar::Columnar::memory_bytes);
        let reader = GenericSingleObjectReader::new_with_header_builder(whole, NoHeader).ok();
        Ok(AvroDecoder {
            schemata,
            names,
            reader,
            columnar_on: std::sync::atomic::AtomicBool::new(columnar.is_some()),
            columnar,
            memory_bytes,
        })
    }

    fn main(&self) -> &Schema {
        self.schemata
            .last()
            .expect("invariant: parse pushes the main schema")
    }

    /// The main schema and every named type by full name.
    pub(super) fn main_and_names(&self) -> (&Schema, &HashMap<Name, Schema>) {
        (self.main(), &self.names)
    }

    /// Heap bytes of the parsed schema (estimated when parsed).
    pub(super) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// The JSON lines of `values` (framed values, each of schema `id`) decoded together
    /// (`columnar.rs`): each value's line, or `None` for a value to decode alone; `None` when
    /// this schema is not read that way. A window's first line is checked against the value
    /// tree's each time; should they ever differ, this schema's values are decoded one by one
    /// from then on.
    pub(super) fn decode_many(&self, id: u32, values: &[&[u8]]) -> Option<Vec<Option<Vec<u8>>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let columnar = self
            .columnar
            .as_ref()
            .filter(|_| self.columnar_on.load(Relaxed))?;
        let lines = columnar.decode(id, values);
        let Some(k) = lines.iter().position(Option::is_some) else {
            return Some(lines);
        };
        let mut alone = Vec::new();
        // A datum the value tree refuses but the window reads (a boolean byte other than 0 or
        // 1, a nullable union's branch out of range) is not a difference of mapping.
        let refused = values[k]
            .get(5..)
            .is_none_or(|p| self.decode_into(p, &mut alone).is_err());
        if refused || lines[k].as_ref() == Some(&alone) {
            return Some(lines);
        }
        if self.columnar_on.swap(false, Relaxed) {
            tracing::warn!(
                schema_id = id,
                "the column-wise Avro reader writes a datum of this schema otherwise than the value tree; its records are decoded one by one"
            );
        }
        None
    }

    /// Decodes one datum and appends it as a JSON object: a record, or a union's record (a
    /// top-level union of record types is one topic holding several event types).
    pub(super) fn decode_into(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut reader = payload;
        let value = if let Some(resolved) = &self.reader {
            resolved.read_value(&mut reader)
        } else {
            apache_avro::from_avro_datum_schemata(
                self.main(),
                self.schemata.iter().collect(),
                &mut reader,
                None,
            )
        };
        let value = value.map_err(|e| self.locate(payload, e))?;
        if !reader.is_empty() {
            return Err(DecodeError::AvroTrailing(reader.len()));
        }
        let record = match &value {
            Value::Union(_, v) => v,
            v => v,
        };
        if !matches!(record, Value::Record(_)) {
            let kind = apache_avro::schema::SchemaKind::from(record);
            return Err(DecodeError::Avro {
                at: String::new(),
                detail: format!("the datum is {kind:?}, not a record: it makes no JSON object"),
            });
        }
        self.write(&value, self.main(), out)
    }

    /// Writes `value` (of `schema`) as JSON.
    fn write(
        &self,
        value: &Value,
        schema: &Schema,
        out: impl std::io::Write,
    ) -> Result<(), DecodeError> {
        let failed = RefCell::new(None);
        let walk = Walk {
            names: &self.names,
            failed: &failed,
        };
        let json = Json {
            value,
            schema: Some(schema),
            walk: &walk,
            at: None,
        };
        match serde_json::to_writer(out, &json) {
            Ok(()) => Ok(()),
            Err(e) => Err(failed.into_inner().unwrap_or_else(|| DecodeError::Avro {
                at: String::new(),
                detail: e.to_string(),
            })),
        }
    }

    /// The error for a datum that did not decode, with the field where it stopped: the slow
    /// path decodes again one field at a time (records only; the fast path decodes the whole
    /// datum at once and its error does not say where).
    fn locate(&self, payload: &[u8], whole: apache_avro::Error) -> DecodeError {
        let mut reader = payload;
        let mut path = Vec::new();
        let found = self.locate_in(self.main(), &mut reader, &mut path);
        let (at, detail) = match found {
            Some(detail) => (path.join("."), detail),
            None => (String::new(), whole.to_string()),
        };
        DecodeError::Avro {
            at,
            detail: short(&detail),
        }
    }

    fn locate_in<'s>(
        &'s self,
        schema: &'s Schema,
        reader: &mut &[u8],
        path: &mut Vec<&'s str>,
    ) -> Option<String> {
        let Schema::Record(record) = self.resolve(schema)? else {
            return None;
        };
        for RecordField { name, schema, .. } in &record.fields {
            path.push(name);
            if let Some(Schema::Record(_)) = self.resolve(schema) {
                if let Some(e) = self.locate_in(schema, reader, path) {
                    return Some(e);
                }
            } else {
                let value = apache_avro::from_avro_datum_schemata(
                    schema,
                    self.schemata.iter().collect(),
                    reader,
                    None,
                );
                match value {
                    Err(e) => return Some(e.to_string()),
                    // A string cut short reads as null: the walk tells.
                    Ok(v) => {
                        if let Err(DecodeError::Avro { detail, .. }) =
                            self.write(&v, schema, &mut std::io::sink())
                        {
                            return Some(detail);
                        }
                    }
                }
            }
            path.pop();
        }
        None
    }

    fn resolve<'s>(&'s self, schema: &'s Schema) -> Option<&'s Schema> {
        resolve(Some(schema), &self.names)
    }
}

/// At most [`MAX_DETAIL_CHARS`] characters of an error message.
fn short(detail: &str) -> String {
    match detail.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((i, _)) => format!("{}…", &detail[..i]),
        None => detail.to_string(),
    }
}

/// The schema text with the logical type of each `uuid` or `duration` fixed moved to the
/// [`FIXED_LOGICAL_TYPE`] attribute. apache-avro reads a fixed `uuid` as if it were bytes with a
/// length (misreading the datum) and resolves no reference to a named `duration` fixed; as a
/// plain fixed both read right, and the writer formats them from the attribute. Text that
/// names neither, or is not JSON, is returned as it is.
fn mark_fixed_logical_types(text: &str) -> std::borrow::Cow<'_, str> {
    use serde_json::Value as J;
    fn mark(v: &mut J) {
        match v {
            J::Object(o) => {
                let fixed = o.get("type").and_then(J::as_str) == Some("fixed");
                let logical = o.get("logicalType").and_then(J::as_str);
                if fixed && matches!(logical, Some("uuid" | "duration")) {
                    if let Some(l) = o.remove("logicalType") {
                        o.insert(FIXED_LOGICAL_TYPE.to_string(), l);
                    }
                }
                o.values_mut().for_each(mark);
            }
            J::Array(a) => a.iter_mut().for_each(mark),
            _ => {}
        }
    }
    if !(text.contains("uuid") || text.contains("duration")) {
        return text.into();
    }
    match serde_json::from_str::<J>(text) {
        Ok(mut v) => {
            mark(&mut v);
            v.to_string().into()
        }
        Err(_) => text.into(),
    }
}

/// Makes `schema` self-contained: the first use of a type defined in a reference (first in
/// the order apache-avro registers names: fields, union branches, items and values in order)
/// becomes a copy of its definition. `defined` holds the names registered so far.
fn inline_references(
    schema: &mut Schema,
    refs: &HashMap<&Name, &Schema>,
    ns: &Option<String>,
    defined: &mut HashSet<Name>,
) {
    match schema {
        Schema::Ref { name } => {
            let full = name.fully_qualified_name(ns);
            if !defined.contains(&full) {
                if let Some(def) = refs.get(&full) {
                    *schema = (*def).clone();
                    inline_references(schema, refs, ns, defined);
                }
            }
        }
        Schema::Record(r) => {
            let full = r.name.fully_qualified_name(ns);
            let inner = full.namespace.clone();
            defined.insert(full);
            for f in &mut r.fields {
                inline_references(&mut f.schema, refs, &inner, defined);
            }
        }
        Schema::Enum(e) => {
            defined.insert(e.name.fully_qualified_name(ns));
        }
        Schema::Fixed(f) => {
            defined.insert(f.name.fully_qualified_name(ns));
        }
        Schema::Array(a) => inline_references(&mut a.items, refs, ns, defined),
        Schema::Map(m) => inline_references(&mut m.types, refs, ns, defined),
        Schema::Union(u) => {
            let mut variants = u.variants().to_vec();
            for v in &mut variants {
                inline_references(v, refs, ns, defined);
            }
            if let Ok(changed) = UnionSchema::new(variants) {
                *u = changed;
            }
        }
        _ => {}
    }
}

/// Every named type of `schemata` by full name.
fn names_of(schemata: &[Schema]) -> HashMap<Name, Schema> {
    let mut names = HashMap::new();
    for s in schemata {
        collect_names(s, &None, &mut names);
    }
    names
}

/// Replaces each reference to one of `decimals` in `schema` by a copy of the decimal.
fn inline_decimals(
    schema: &mut Schema,
    decimals: &HashMap<Name, Schema>,
) -> Result<(), apache_avro::Error> {
    match schema {
        Schema::Ref { name } => {
            if let Some(d) = decimals.get(name) {
                *schema = d.clone();
            }
        }
        Schema::Record(r) => {
            for f in &mut r.fields {
                inline_decimals(&mut f.schema, decimals)?;
            }
        }
        Schema::Array(a) => inline_decimals(&mut a.items, decimals)?,
        Schema::Map(m) => inline_decimals(&mut m.types, decimals)?,
        Schema::Union(u) => {
            let mut variants = u.variants().to_vec();
            for v in &mut variants {
                inline_decimals(v, decimals)?;
            }
            *u = UnionSchema::new(variants)?;
        }
        _ => {}
    }
    Ok(())
}

/// Records every named type of `schema` (records, enums, fixed, decimals on a named fixed)
/// under its full name.
fn collect_names(schema: &Schema, ns: &Option<String>, names: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(r) => {
            let full = r.name.fully_qualified_name(ns);
            let inner_ns = full.namespace.clone();
            names.insert(full, schema.clone());
            for f in &r.fields {
                collect_names(&f.schema, &inner_ns, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fully_qualified_name(ns), schema.clone());
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fully_qualified_name(ns), schema.clone());
        }
        Schema::Decimal(d) => {
            if let Schema::Fixed(f) = &*d.inner {
                names.insert(f.name.fully_qualified_name(ns), schema.clone());
            }
        }
        Schema::Array(a) => collect_names(&a.items, ns, names),
        Schema::Map(m) => collect_names(&m.types, ns, names),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_names(v, ns, names);
            }
        }
        _ => {}
    }
}

/// `schema` with a reference followed to the named type.
fn resolve<'s>(schema: Option<&'s Schema>, names: &'s HashMap<Name, Schema>) -> Option<&'s Schema> {
    match schema {
        Some(Schema::Ref { name }) => names.get(name),
        other => other,
    }
}
