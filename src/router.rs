//! Router: decides, per record and destination, whether the record is written (and to which
//! folder slot), filtered out, or quarantined with a reason.
//!
//! Invariant: every record gets exactly one [`Route`] per destination; nothing is dropped
//! silently (a filtered record is counted by the caller and its offset still commits).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use std::borrow::Cow;

use std::ops::Range;

use crate::config::{Column, DestinationConfig, FilterConfig, Granularity, TimeFormat, TimeSource};
use crate::model::Record;
use crate::scan::{scan_fields_with_spans, Scalar, ScanError};

pub mod columns;
pub use crate::model::{Cell, FolderKey, QuarantineReason};

/// The router's decision for one record and one destination.
#[derive(Debug, Clone, PartialEq)]
pub enum Route<'a> {
    /// Write `line` into the file for `folder`. `time` is the record's date, if it has one.
    Write {
        /// Folder key.
        folder: FolderKey,
        /// The record's event time (for first-event dating).
        time: Option<DateTime<Utc>>,
        /// The bytes to write (raw value unless fields were dropped), without newline.
        line: Cow<'a, [u8]>,
        /// The sanitised values of the folder template's `{field:…}` placeholders (empty
        /// without them).
        values: Vec<String>,
        /// Its declared Parquet columns' values (empty for NDJSON).
        row: Vec<Cell<'a>>,
    },
    /// Excluded by the event-type filter.
    Filtered,
    /// Goes to the error folder.
    Quarantine(QuarantineReason),
    /// Goes to the error folder as `schema_mismatch`: a value does not fit its Parquet column.
    Mismatch(columns::Mismatch),
}

/// Routes records for one destination.
#[derive(Debug, Clone)]
pub struct Router {
    time_source: TimeSource,
    granularity: Granularity,
    timezone: chrono_tz::Tz,
    folder: crate::template::FolderTemplate,
    filter: FilterConfig,
    paths: Vec<Vec<String>>,
    time_slot: Option<usize>,
    kind_slot: Option<usize>,
    /// Indices in `paths` of the folder template's `{field:…}` placeholders.
    value_slots: Vec<usize>,
    /// The declared Parquet columns and the index in `paths` of each one's value.
    columns: Vec<(Column, usize)>,
    /// Indices in `columns` of an Iceberg table's identity partition columns: their values
    /// group the files too, as they are (a file's rows share one partition value).
    partition_columns: Vec<usize>,
    max_future: Option<chrono::Duration>,
    max_past: Option<chrono::Duration>,
    max_record_bytes: Option<u64>,
}

impl Router {
    /// Builds the router of a destination.
    pub fn new(d: &DestinationConfig) -> Self {
        let mut paths = Vec::new();
        let time_slot = match &d.routing.time_source {
            TimeSource::EventTime { path, .. } | TimeSource::EventTimeOrUploadTime { path, .. } => {
                paths.push(path.clone());
                Some(0)
            }
            _ => None,
        };
        let kind_slot = d.filter.field.as_ref().map(|f| {
            paths.push(f.clone());
            paths.len() - 1
        });
        let value_slots = d
            .routing
            .folder
            .field_paths()
            .iter()
            .map(|p| {
                paths.push(p.clone());
                paths.len() - 1
            })
            .collect();
        // A column shares the slot of an equal earlier path (each path is looked for once).
        let columns = d
            .parquet
            .iter()
            .flat_map(|p| p.columns.iter())
            .map(|c| {
                let slot = match paths.iter().position(|p| *p == c.path) {
                    Some(i) => i,
                    None => {
                        paths.push(c.path.clone());
                        paths.len() - 1
                    }
                };
                (c.clone(), slot)
            })
            .collect::<Vec<(Column, usize)>>();
        let partition_columns = d
            .iceberg
            .iter()
            .flat_map(|t| t.partition.iter())
            .filter_map(|s| match s {
                crate::config::iceberg::PartitionSource::Identity { column } => {
                    columns.iter().position(|(c, _)| &c.name == column)
                }
                crate::config::iceberg::PartitionSource::Time { .. } => None,
            })
            .collect();
        Self {
            time_source: d.routing.time_source.clone(),
            granularity: d.routing.granularity,
            timezone: d.routing.timezone,
            folder: d.routing.folder.clone(),
            filter: d.filter.clone(),
            paths,
            time_slot,
            kind_slot,
            value_slots,
            columns,
            partition_columns,
            max_future: d
                .routing
                .max_future
                .and_then(|x| chrono::Duration::from_std(x).ok()),
            max_past: d
                .routing
                .max_past
                .and_then(|x| chrono::Duration::from_std(x).ok()),
            max_record_bytes: d.batch.max_record_bytes,
        }
    }

    /// Routes one record. `now` is the processing time, used by upload-time dating.
    pub fn route<'a>(&self, rec: &'a Record, now: DateTime<Utc>) -> Route<'a> {
        let value = match &rec.value {
            None => return Route::Quarantine(QuarantineReason::Tombstone),
            Some(v) if v.is_empty() => return Route::Quarantine(QuarantineReason::Empty),
            Some(v) => &v[..],
        };
        if self
            .max_record_bytes
            .is_some_and(|m| value.len() as u64 > m)
        {
            return Route::Quarantine(QuarantineReason::TooLarge);
        }
        // SIMD validation (several times faster than std's on this ASCII-heavy data).
        let Ok(text) = simdutf8::basic::from_utf8(value) else {
            return Route::Quarantine(QuarantineReason::InvalidUtf8);
        };
        // Without Parquet columns at most four paths (time, event type, two folder fields): the
        // values land on the stack. Columns need more, and where each value lies.
        let mut slots: [Option<Scalar>; 4] = Default::default();
        let mut many: Vec<Option<Scalar>>;
        let mut spans: Vec<Option<Range<usize>>> = Vec::new();
        let fields: &mut [Option<Scalar>] = if self.paths.len() <= slots.len() {
            &mut slots[..self.paths.len()]
        } else {
            many = vec![None; self.paths.len()];
            &mut many
        };
        if !self.columns.is_empty() {
            spans = vec![None; self.paths.len()];
        }
        let shape = match scan_fields_with_spans(text, &self.paths, fields, &mut spans) {
            Ok(shape) => shape,
            Err(ScanError::NotObject) => return Route::Quarantine(QuarantineReason::NotObject),
            Err(ScanError::TooDeep) => return Route::Quarantine(QuarantineReason::TooDeep),
            Err(ScanError::Json { .. }) => return Route::Quarantine(QuarantineReason::NotJson),
        };
        if let Some(slot) = self.kind_slot {
            if !self.keeps(fields[slot].as_ref()) {
                return Route::Filtered;
            }
        }
        let event_time = self.time_slot.map(|s| fields[s].as_ref());
        let time = match (&self.time_source, event_time) {
            (TimeSource::EventTime { format, .. }, Some(v)) => match v {
                None => return Route::Quarantine(QuarantineReason::MissingTime),
                Some(v) => match parse_time(v, *format) {
                    Some(t) => Some(t),
                    None => return Route::Quarantine(QuarantineReason::BadTime),
                },
            },
            (TimeSource::EventTimeOrUploadTime { format, .. }, Some(v)) => {
                Some(v.and_then(|v| parse_time(v, *format)).unwrap_or(now))
            }
            (TimeSource::KafkaTimestamp, _) => match rec.timestamp_ms.and_then(from_millis) {
                Some(t) => Some(t),
                None => return Route::Quarantine(QuarantineReason::NoKafkaTimestamp),
            },
            _ => None,
        };
        if let Some(t) = time {
            let too_new = self.max_future.is_some_and(|d| t > now + d);
            let too_old = self.max_past.is_some_and(|d| t < now - d);
            if too_new || too_old {
                return Route::Quarantine(QuarantineReason::TimeOutOfRange);
            }
        }
        let values: Vec<String> = self
            .value_slots
            .iter()
            .map(|&s| field_value(fields[s].as_ref()))
            .collect();
        let mut row = Vec::with_capacity(self.columns.len());
        for (column, slot) in &self.columns {
            match columns::cell(column, text, fields[*slot].as_ref(), spans[*slot].as_ref()) {
                Ok(c) => row.push(c),
                Err(m) => return Route::Mismatch(m),
            }
        }
        let mut id = values_id(&values);
        if !self.partition_columns.is_empty() {
            id ^= cells_id(self.partition_columns.iter().map(|&i| &row[i]));
        }
        let folder = match (&self.time_source, self.granularity) {
            (TimeSource::None, _) => FolderKey::Slot(None, id),
            (TimeSource::UploadTime, _) | (_, Granularity::FirstEvent) => FolderKey::AtSeal(id),
            (_, Granularity::Record) => FolderKey::Slot(
                time.and_then(|t| self.folder.slot(&t.with_timezone(&self.timezone))),
                id,
            ),
        };
        let line = if !self.filter.drop_fields.is_empty() {
            match drop_fields(value, &self.filter.drop_fields) {
                Some(v) => Cow::Owned(v),
                None => return Route::Quarantine(QuarantineReason::NotJson),
            }
        } else if shape.line_breaks {
            Cow::Owned(one_line(value))
        } else {
            Cow::Borrowed(value)
        };
        Route::Write {
            folder,
            time,
            line,
            values,
            row,
        }
    }

    /// The folder slot of a file sealed now whose first record had time `first` (for
    /// [`FolderKey::AtSeal`]).
    pub fn seal_slot(
        &self,
        first: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<NaiveDateTime> {
        let t = match self.time_source {
            TimeSource::UploadTime => now,
            TimeSource::None => return None,
            _ => first.unwrap_or(now),
        };
        self.folder.slot(&t.with_timezone(&self.timezone))
    }

    fn keeps(&self, kind: Option<&Scalar<'_>>) -> bool {
        let kind = match kind {
            Some(Scalar::Str(s)) => Some(s.as_ref()),
            _ => None,
        };
        if !self.filter.include.is_empty()
            && !kind.is_some_and(|k| self.filter.include.iter().any(|i| i == k))
        {
            return false;
        }
        !kind.is_some_and(|k| self.filter.exclude.iter().any(|e| e == k))
    }
}

/// A `{field:…}` value as it goes into a key: strings and numbers as written, sanitised;
/// missing values, booleans, null, objects and arrays as `__unknown__`.
fn field_value(v: Option<&Scalar<'_>>) -> String {
    use crate::template::{sanitize_field_value, UNKNOWN_FIELD_VALUE};
    match v {
        Some(Scalar::Str(s)) => sanitize_field_value(s),
        Some(Scalar::Int(i)) => i.to_string(),
        Some(Scalar::Float(f)) => sanitize_field_value(&f.to_string()),
        Some(Scalar::Other) | None => UNKNOWN_FIELD_VALUE.to_string(),
    }
}

/// The identity of a folder's field values (0 for none).
fn values_id(values: &[String]) -> u128 {
    if values.is_empty() {
        return 0;
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for v in values {
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    h.digest128()
}

/// A hash of partition cells that tells every value apart (null, types, strings as they are).
fn cells_id<'c, 'a: 'c>(cells: impl Iterator<Item = &'c Cell<'a>>) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for c in cells {
        match c {
            Cell::Null => h.update(&[0]),
            Cell::Str(s) => {
                h.update(&[1]);
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            Cell::Int(v) => {
                h.update(&[2]);
                h.update(&v.to_le_bytes());
            }
            Cell::Bool(v) => h.update(&[3, u8::from(*v)]),
            other => {
                h.update(&[4]);
                h.update(format!("{other:?}").as_bytes());
            }
        }
    }
    h.digest128()
}

fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn from_secs_f64(s: f64) -> Option<DateTime<Utc>> {
    if !s.is_finite() {
        return None;
    }
    let ms = (s * 1000.0).round();
    if ms.abs() > 8.0e15 {
        return None;
    }
    from_millis(ms as i64)
}

/// Epoch numbers at or above this are taken as milliseconds by `auto` (10^11 s is year 5138).
const AUTO_MILLIS_THRESHOLD: f64 = 1.0e11;

/// A valid JSON record with line breaks as one NDJSON line. In valid JSON a raw CR or LF byte
/// can only be whitespace between tokens (inside strings they are escaped), so turning them into
/// spaces keeps the same JSON value, byte for byte otherwise. (The scan says whether there are
/// any, so records without them are written as they came, without this copy.)
fn one_line(value: &[u8]) -> Vec<u8> {
    value
        .iter()
        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
        .collect()
}

/// Reads a scalar as a time in the given format.
pub fn parse_time(v: &Scalar<'_>, format: TimeFormat) -> Option<DateTime<Utc>> {
    let number = |n: f64| match format {
        TimeFormat::Rfc3339 => None,
        TimeFormat::EpochSeconds => from_secs_f64(n),
        TimeFormat::EpochMillis => from_secs_f64(n / 1000.0),
        TimeFormat::Auto if n.abs() >= AUTO_MILLIS_THRESHOLD => from_secs_f64(n / 1000.0),
        TimeFormat::Auto => from_secs_f64(n),
    };
    match v {
        Scalar::Int(i) => match format {
            TimeFormat::EpochMillis => from_millis(*i),
            TimeFormat::Auto if (*i as f64).abs() >= AUTO_MILLIS_THRESHOLD => from_millis(*i),
            TimeFormat::EpochSeconds | TimeFormat::Auto => {
                i.checked_mul(1000).and_then(from_millis)
            }
            TimeFormat::Rfc3339 => None,
        },
        Scalar::Float(f) => number(*f),
        Scalar::Str(s) => {
            let s = s.trim();
            match format {
                TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc()),
                TimeFormat::Auto => DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| t.to_utc())
                    .or_else(|| s.parse::<f64>().ok().and_then(number)),
                _ => s.parse::<f64>().ok().and_then(number),
            }
        }
        Scalar::Other => None,
    }
}

/// Removes dotted `paths` from a JSON object, keeping key order; `None` if not a JSON object.
fn drop_fields(value: &[u8], paths: &[Vec<String>]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(value).ok()?;
    for path in paths {
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let mut cur = Some(&mut v);
        for p in parents {
            cur = cur.and_then(|c| c.get_mut(p.as_str()));
        }
        if let Some(obj) = cur.and_then(|c| c.as_object_mut()) {
            obj.shift_remove(last.as_str());
        }
    }
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests;
