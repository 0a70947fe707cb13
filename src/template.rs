//! Folder and file-name templates: parsed once at start-up, rendered per file.
//!
//! Folder templates are strftime patterns with `{topic}` `{partition}` `{source}` `{destination}`
//! placeholders; the time they are rendered with is truncated to the template's finest directive
//! (see [`FolderTemplate::slot`]) so the router can key batches without rendering strings per
//! record. File templates take `{topic} {partition} {start_offset} {end_offset} {record_count}
//! {upload_time} {upload_time:FMT} {random5} {app} {destination} {source}`.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Timelike, Utc};
use std::fmt::Write as _;

mod check;
mod shape;
pub use check::{check_path, check_strftime_items, FOLDER_FIELDS};
pub use shape::{alternation, KeyShape, MAX_TOPIC_LEN, TOPIC_CLASS};

/// Values a template may refer to, fixed per batch.
#[derive(Debug, Clone)]
pub struct KeyContext<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// `{source}` (source id or topic).
    pub source: &'a str,
    /// Destination name.
    pub destination: &'a str,
    /// `{app}`.
    pub app: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Topic,
    Partition,
    Source,
    Destination,
    App,
    StartOffset,
    EndOffset,
    RecordCount,
    UploadTime(String),
    Random5,
    /// `{field:a.b}`: the record's value at a dotted path, sanitised (folder templates only);
    /// the index of its value in the folder's values.
    Field(usize),
}

fn parse_pieces(s: &str, allowed: &[&str]) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {s:?}; close the placeholder with }}"))?
            + open;
        let inner = &rest[open + 1..close];
        let (name, arg) = match inner.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (inner, None),
        };
        if !allowed.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{inner}}}; use {}",
                allowed
                    .iter()
                    .map(|a| format!("{{{a}}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let piece = match (name, arg) {
            ("field", Some(path)) => {
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return Err(format!(
                        "{{field:{path}}} needs a dotted field path, e.g. {{field:type}} or {{field:context.tenant}}"
                    ));
                }
                let i = out.iter().filter(|p| matches!(p, Piece::Field(_))).count();
                Piece::Field(i)
            }
            ("field", None) => {
                return Err("{field} needs a path: {field:type} or {field:context.tenant}".into())
            }
            ("upload_time", fmt) => {
                let fmt = fmt.unwrap_or("%Y%m%d%H%M%S%6f").to_string();
                check_strftime(&fmt)?;
                check_strftime_items(&fmt, false)?;
                Piece::UploadTime(fmt)
            }
            (_, Some(_)) => return Err(format!("placeholder {{{name}}} takes no :argument")),
            ("topic", None) => Piece::Topic,
            ("partition", None) => Piece::Partition,
            ("source", None) => Piece::Source,
            ("destination", None) => Piece::Destination,
            ("app", None) => Piece::App,
            ("start_offset", None) => Piece::StartOffset,
            ("end_offset", None) => Piece::EndOffset,
            ("record_count", None) => Piece::RecordCount,
            ("random5", None) => Piece::Random5,
            _ => return Err(format!("unknown placeholder {{{inner}}}")),
        };
        out.push(piece);
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// The dotted paths of `{field:…}` placeholders in a template text, in order.
fn field_paths(s: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("{field:") {
        let tail = &rest[i + "{field:".len()..];
        let Some(end) = tail.find('}') else { break };
        out.push(tail[..end].split('.').map(str::to_string).collect());
        rest = &tail[end..];
    }
    out
}

fn check_strftime(fmt: &str) -> Result<(), String> {
    if StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
        return Err(format!("invalid strftime pattern {fmt:?}"));
    }
    Ok(())
}

/// How finely a folder template divides time; folder names are constant within one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimeUnit {
    /// No date directive.
    Never,
    /// Year.
    Year,
    /// Month.
    Month,
    /// Day (also weeks and weekdays).
    Day,
    /// Hour.
    Hour,
    /// Minute.
    Minute,
    /// Second or finer.
    Second,
}

/// A parsed folder template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderTemplate {
    pieces: Vec<Piece>,
    unit: TimeUnit,
    /// The dotted paths of its `{field:…}` placeholders, in order.
    fields: Vec<Vec<String>>,
    /// The template as written.
    text: String,
}

/// Most `{field:…}` placeholders a folder template may hold.
pub const MAX_FOLDER_FIELDS: usize = 2;

/// Longest a field value becomes in a key, in bytes.
pub const MAX_FIELD_VALUE_BYTES: usize = 64;

/// What a missing, empty or non-scalar field value becomes.
pub const UNKNOWN_FIELD_VALUE: &str = "__unknown__";

/// A field value made safe for a key segment: ASCII letters, digits, `.`, `_` and `-` kept,
/// every other character (`/`, spaces, control characters, non-ASCII) replaced by `_`; a
/// leading `.` replaced too (no `.` or `..` segment); empty becomes [`UNKNOWN_FIELD_VALUE`];
/// longer than [`MAX_FIELD_VALUE_BYTES`] becomes its first 47 characters, `~` and 16 hex digits
/// of its hash, so distinct long values stay distinct.
pub fn sanitize_field_value(v: &str) -> String {
    let mut out: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        return UNKNOWN_FIELD_VALUE.to_string();
    }
    if out.len() > MAX_FIELD_VALUE_BYTES {
        let hash = xxhash_rust::xxh3::xxh3_64(v.as_bytes());
        out.truncate(MAX_FIELD_VALUE_BYTES - 17);
        out = format!("{out}~{hash:016x}");
    }
    out
}

impl FolderTemplate {
    /// Parses and checks a folder template.
    pub fn parse(s: &str) -> Result<Self, String> {
        check_path("the template", s)?;
        let pieces = parse_pieces(s, &["topic", "partition", "source", "destination", "field"])?;
        let mut unit = TimeUnit::Never;
        for p in &pieces {
            if let Piece::Text(t) = p {
                check_strftime(t)?;
                check_strftime_items(t, true)?;
                unit = unit.max(finest_unit(t));
            }
        }
        let fields: Vec<Vec<String>> = field_paths(s);
        if fields.len() > MAX_FOLDER_FIELDS {
            return Err(format!(
                "at most {MAX_FOLDER_FIELDS} {{field:…}} placeholders per folder template"
            ));
        }
        Ok(Self {
            pieces,
            unit,
            fields,
            text: s.to_string(),
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The dotted paths of its `{field:…}` placeholders, in order.
    pub fn field_paths(&self) -> &[Vec<String>] {
        &self.fields
    }

    /// Whether the template contains date directives.
    pub fn uses_time(&self) -> bool {
        self.unit != TimeUnit::Never
    }

    /// The local time truncated to the template's unit: two times with the same slot render the
    /// same folder.
    pub fn slot<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<NaiveDateTime> {
        let n = t.naive_local();
        let d = n.date();
        let (date, h, m, s) = match self.unit {
            TimeUnit::Never => return None,
            TimeUnit::Year => (d.with_ordinal(1)?, 0, 0, 0),
            TimeUnit::Month => (d.with_day(1)?, 0, 0, 0),
            TimeUnit::Day => (d, 0, 0, 0),
            TimeUnit::Hour => (d, n.hour(), 0, 0),
            TimeUnit::Minute => (d, n.hour(), n.minute(), 0),
            TimeUnit::Second => (d, n.hour(), n.minute(), n.second()),
        };
        date.and_hms_opt(h, m, s)
    }

    /// Renders the folder for a slot (see [`Self::slot`]) and the sanitised values of its
    /// `{field:…}` placeholders (see [`sanitize_field_value`]); `None` renders a template without
    /// dates.
    pub fn render(
        &self,
        slot: Option<NaiveDateTime>,
        ctx: &KeyContext<'_>,
        fields: &[String],
    ) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => match slot {
                    Some(s) => {
                        let _ = write!(out, "{}", s.format(t));
                    }
                    None => out.push_str(t),
                },
                Piece::Field(i) => {
                    out.push_str(fields.get(*i).map_or(UNKNOWN_FIELD_VALUE, String::as_str))
                }
                other => render_common(&mut out, other, ctx),
            }
        }
        if !out.is_empty() && !out.ends_with('/') {
            out.push('/');
        }
        out
    }
}

fn render_common(out: &mut String, p: &Piece, ctx: &KeyContext<'_>) {
    match p {
        Piece::Topic => out.push_str(ctx.topic),
        Piece::Partition => {
            let _ = write!(out, "{}", ctx.partition);
        }
        Piece::Source => out.push_str(ctx.source),
        Piece::Destination => out.push_str(ctx.destination),
        Piece::App => out.push_str(ctx.app),
        Piece::Text(t) => out.push_str(t),
        _ => {}
    }
}

fn finest_unit(fmt: &str) -> TimeUnit {
    let mut unit = TimeUnit::Never;
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        // Skip padding/width modifiers such as %-d, %_H, %3f, %.3f.
        let mut spec = chars.next();
        while let Some(m) = spec {
            if m == '-' || m == '_' || m == '0' || m == '.' || m == ':' || m.is_ascii_digit() {
                spec = chars.next();
            } else {
                break;
            }
        }
        let u = match spec {
            Some('%') | Some('n') | Some('t') | None => continue,
            Some('Y' | 'y' | 'C' | 'G' | 'g') => TimeUnit::Year,
            Some('m' | 'b' | 'B' | 'h') => TimeUnit::Month,
            Some(
                'd' | 'e' | 'j' | 'a' | 'A' | 'u' | 'w' | 'U' | 'W' | 'V' | 'D' | 'F' | 'x' | 'v',
            ) => TimeUnit::Day,
            Some('H' | 'I' | 'k' | 'l' | 'p' | 'P') => TimeUnit::Hour,
            Some('M' | 'R') => TimeUnit::Minute,
            _ => TimeUnit::Second,
        };
        unit = unit.max(u);
    }
    unit
}

/// A parsed file-name template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTemplate {
    pieces: Vec<Piece>,
}

/// Per-file values of a file name.
#[derive(Debug, Clone)]
pub struct FileValues {
    /// First offset in the file.
    pub start_offset: i64,
    /// Last offset in the file.
    pub end_offset: i64,
    /// Records in the file.
    pub record_count: u64,
    /// When the file's upload starts.
    pub upload_time: DateTime<Utc>,
}

/// The file-name template of a Parquet destination that does not set its own.
pub const PARQUET_FILE_TEMPLATE: &str = "{topic}+{partition}+{start_offset}.parquet";

/// File name of quarantined records' objects (under `<error_prefix><reason>/`).
pub const ERROR_FILE_TEMPLATE: &str = "{topic}+{partition}+{start_offset}.ndjson";

/// Width of zero-padded offsets in file names, so keys sort by offset.
pub const OFFSET_WIDTH: usize = 20;

impl FileTemplate {
    /// Parses and checks a file template.
    pub fn parse(s: &str) -> Result<Self, String> {
        let pieces = parse_pieces(
            s,
            &[
                "topic",
                "partition",
                "start_offset",
                "end_offset",
                "record_count",
                "upload_time",
                "random5",
                "app",
                "destination",
                "source",
            ],
        )?;
        if s.contains('/') {
            return Err("file names must not contain '/'; put folders in folder_template".into());
        }
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        check_path("the file name", s)?;
        Ok(Self { pieces })
    }

    /// Whether the name can only be known once the file is complete (end offset or count).
    pub fn needs_end(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::EndOffset | Piece::RecordCount))
    }

    /// Whether the same records always get the same name (no upload time, no random digits).
    pub fn is_deterministic(&self) -> bool {
        !self
            .pieces
            .iter()
            .any(|p| matches!(p, Piece::UploadTime(_) | Piece::Random5))
    }

    /// Renders the file name, appending `suffix` (e.g. `.gz`) unless it already ends with it.
    pub fn render(&self, ctx: &KeyContext<'_>, v: &FileValues, suffix: &str) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::StartOffset => {
                    let _ = write!(out, "{:0w$}", v.start_offset, w = OFFSET_WIDTH);
                }
                Piece::EndOffset => {
                    let _ = write!(out, "{:0w$}", v.end_offset, w = OFFSET_WIDTH);
                }
                Piece::RecordCount => {
                    let _ = write!(out, "{}", v.record_count);
                }
                Piece::UploadTime(fmt) => {
                    let _ = write!(out, "{}", v.upload_time.format(fmt));
                }
                Piece::Random5 => {
                    let _ = write!(out, "{:05}", rand::random_range(0..100_000u32));
                }
                other => render_common(&mut out, other, ctx),
            }
        }
        if !out.ends_with(suffix) {
            out.push_str(suffix);
        }
        out
    }
}

#[cfg(test)]
mod tests;
