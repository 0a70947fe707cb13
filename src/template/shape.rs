//! The shape of the keys a destination's templates can produce, known without rendering one:
//! the longest (checked against S3's 1,024-byte key limit at start-up) and a regular expression
//! every produced key matches (so the start-up cleanup aborts only multipart uploads this
//! destination could have started, never another application's).
//!
//! Invariant: for every value the placeholders can take (as described by [`KeyShape`]) and every
//! time chrono can represent, a rendered folder or file name is at most [`FolderTemplate::max_len`]
//! / [`FileTemplate::max_len`] bytes and matches [`FolderTemplate::regex`] /
//! [`FileTemplate::regex`] (tested against renders in this module's tests).

use chrono::format::{Item, StrftimeItems};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use std::fmt::Write as _;

use super::{FileTemplate, FolderTemplate, Piece, OFFSET_WIDTH};

/// Longest Kafka topic name (the broker refuses longer ones).
pub const MAX_TOPIC_LEN: usize = 249;

/// Characters of a Kafka topic name, as a regex class.
pub const TOPIC_CLASS: &str = "[a-zA-Z0-9._-]";

/// What a destination's placeholders can hold.
#[derive(Debug, Clone)]
pub struct KeyShape<'a> {
    /// The exact topic names the destination receives; `None` when a pattern admits any name.
    pub topics: Option<&'a [String]>,
    /// `source_id`, if set (else `{source}` is the topic).
    pub source: Option<&'a str>,
    /// The destination's name.
    pub destination: &'a str,
    /// `app_name`.
    pub app: &'a str,
}

impl KeyShape<'_> {
    fn topic_regex(&self) -> String {
        match self.topics {
            Some(names) if !names.is_empty() => alternation(names),
            _ => format!("{TOPIC_CLASS}+"),
        }
    }

    fn topic_max(&self) -> usize {
        match self.topics {
            Some(names) if !names.is_empty() => names.iter().map(String::len).max().unwrap_or(0),
            _ => MAX_TOPIC_LEN,
        }
    }
}

/// `(?:a|b|c)` of escaped literals.
pub fn alternation<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| regex::escape(s.as_ref())).collect();
    format!("(?:{})", parts.join("|"))
}

/// Times whose renders reach every width a strftime directive has: the first and last day
/// chrono represents (longest years), every month (longest names) and weekday, at midnight,
/// noon and the last nanosecond of a day.
fn extreme_times() -> Vec<NaiveDateTime> {
    let times = [
        NaiveTime::MIN,
        NaiveTime::from_hms_opt(12, 0, 0).unwrap_or(NaiveTime::MIN),
        NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).unwrap_or(NaiveTime::MIN),
    ];
    let mut dates = vec![NaiveDate::MIN, NaiveDate::MAX];
    for m in 1..=12 {
        for d in [1, 2, 3, 4, 5, 6, 7, 28] {
            dates.extend(NaiveDate::from_ymd_opt(2026, m, d));
        }
    }
    dates
        .iter()
        .flat_map(|d| times.iter().map(move |t| d.and_time(*t)))
        .collect()
}

/// The longest render of a strftime pattern over [`extreme_times`].
fn strftime_max_len(fmt: &str) -> usize {
    extreme_times()
        .iter()
        .map(|t| {
            let mut s = String::new();
            let _ = write!(s, "{}", t.format(fmt));
            s.len()
        })
        .max()
        .unwrap_or(0)
}

/// A regex matching every render of a strftime pattern: literals as they are, numbers as signed
/// or space-padded digits, names and composite directives as anything up to the next `/`.
fn strftime_regex(fmt: &str) -> String {
    let mut out = String::new();
    for item in StrftimeItems::new(fmt) {
        match item {
            Item::Literal(s) | Item::Space(s) => out.push_str(&regex::escape(s)),
            Item::OwnedLiteral(s) | Item::OwnedSpace(s) => out.push_str(&regex::escape(&s)),
            Item::Numeric(..) => out.push_str("[-+ 0-9]+"),
            Item::Fixed(_) => out.push_str("[^/]*"),
            Item::Error => out.push_str("[^/]*"),
        }
    }
    out
}

/// Regex and longest length of one piece.
fn piece_shape(p: &Piece, shape: &KeyShape<'_>, dated: bool) -> (String, usize) {
    match p {
        Piece::Text(t) if dated => (strftime_regex(t), strftime_max_len(t)),
        Piece::Text(t) => (regex::escape(t), t.len()),
        Piece::Topic => (shape.topic_regex(), shape.topic_max()),
        Piece::Source => match shape.source {
            Some(s) => (regex::escape(s), s.len()),
            None => (shape.topic_regex(), shape.topic_max()),
        },
        Piece::Destination => (regex::escape(shape.destination), shape.destination.len()),
        Piece::App => (regex::escape(shape.app), shape.app.len()),
        Piece::Partition => ("[0-9]+".into(), i32::MAX.to_string().len()),
        Piece::StartOffset | Piece::EndOffset => (
            format!("[0-9]{{{OFFSET_WIDTH},}}"),
            OFFSET_WIDTH.max(i64::MAX.to_string().len()),
        ),
        Piece::RecordCount => ("[0-9]+".into(), u64::MAX.to_string().len()),
        Piece::UploadTime(fmt) => (strftime_regex(fmt), strftime_max_len(fmt)),
        Piece::Random5 => ("[0-9]{5}".into(), 5),
        Piece::Field(_) => ("[A-Za-z0-9._~-]+".into(), super::MAX_FIELD_VALUE_BYTES),
    }
}

impl FolderTemplate {
    /// The longest folder (with its closing `/`) this template renders.
    pub fn max_len(&self, shape: &KeyShape<'_>) -> usize {
        let len: usize = self
            .pieces
            .iter()
            .map(|p| piece_shape(p, shape, true).1)
            .sum();
        len + usize::from(len > 0)
    }

    /// A regex (unanchored source) matching every folder this template renders.
    pub fn regex(&self, shape: &KeyShape<'_>) -> String {
        let re: String = self
            .pieces
            .iter()
            .map(|p| piece_shape(p, shape, true).0)
            .collect();
        let ends_with_slash =
            matches!(self.pieces.last(), Some(Piece::Text(t)) if t.ends_with('/'));
        if self.pieces.is_empty() || ends_with_slash {
            re
        } else {
            // `render` adds the closing slash unless the folder is empty or has one already.
            format!("{re}/?")
        }
    }
}

impl FileTemplate {
    /// The longest file name this template renders, with `suffix` appended.
    pub fn max_len(&self, shape: &KeyShape<'_>, suffix: &str) -> usize {
        let len: usize = self
            .pieces
            .iter()
            .map(|p| piece_shape(p, shape, false).1)
            .sum();
        len + suffix.len()
    }

    /// A regex (unanchored source) matching every file name this template renders with
    /// `suffix` (which `render` appends unless the name already ends with it).
    pub fn regex(&self, shape: &KeyShape<'_>, suffix: &str) -> String {
        let re: String = self
            .pieces
            .iter()
            .map(|p| piece_shape(p, shape, false).0)
            .collect();
        if suffix.is_empty() {
            re
        } else {
            format!("{re}(?:{})?", regex::escape(suffix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{FileValues, KeyContext};
    use chrono::{TimeZone, Utc};

    fn shape() -> KeyShape<'static> {
        KeyShape {
            topics: None,
            source: None,
            destination: "d",
            app: "mPTravel",
        }
    }

    fn ctx(topic: &'static str) -> KeyContext<'static> {
        KeyContext {
            topic,
            partition: i32::MAX,
            source: topic,
            destination: "d",
            app: "mPTravel",
        }
    }

    const FOLDERS: [&str; 7] = [
        "%Y/%m/%d/%H/",
        "%Y-%m-%d",
        "segment-logs/{source}/%Y-%m-%d/",
        "{topic}/%B/%A/%-d/%p",
        "dt=%F/hr=%H",
        "",
        "raw/{topic}",
    ];
    const FILES: [&str; 4] = [
        "{topic}+{partition}+{start_offset}.ndjson",
        "{app}_{upload_time}_{random5}.txt",
        "{start_offset}-{end_offset}-{record_count}",
        "{destination}-{upload_time:%Y%m%dT%H%M%S}.log.gz",
    ];

    /// Every render over the extreme times and a longest topic fits the length and the regex.
    #[test]
    fn renders_fit_the_length_and_match_the_regex() {
        let long_topic: &'static str = Box::leak("t".repeat(MAX_TOPIC_LEN).into_boxed_str());
        for f in FOLDERS {
            let t = FolderTemplate::parse(f).unwrap();
            let re = regex::Regex::new(&format!("^{}$", t.regex(&shape()))).unwrap();
            let max = t.max_len(&shape());
            for time in extreme_times() {
                for topic in ["events", long_topic] {
                    let slot = t.slot(&Utc.from_utc_datetime(&time));
                    let out = t.render(slot, &ctx(topic), &[]);
                    assert!(out.len() <= max, "{f}: {out:?} over {max}");
                    assert!(re.is_match(&out), "{f}: {out:?} !~ {re}");
                }
            }
        }
        for f in FILES {
            let t = FileTemplate::parse(f).unwrap();
            for suffix in ["", ".gz"] {
                let re = regex::Regex::new(&format!("^{}$", t.regex(&shape(), suffix))).unwrap();
                let max = t.max_len(&shape(), suffix);
                for time in extreme_times() {
                    let v = FileValues {
                        start_offset: i64::MAX,
                        end_offset: i64::MAX,
                        record_count: u64::MAX,
                        upload_time: Utc.from_utc_datetime(&time),
                    };
                    let out = t.render(&ctx(long_topic), &v, suffix);
                    assert!(out.len() <= max, "{f}: {out:?} over {max}");
                    assert!(re.is_match(&out), "{f}: {out:?} !~ {re}");
                    let small = FileValues {
                        start_offset: 0,
                        end_offset: 7,
                        record_count: 1,
                        ..v
                    };
                    let out = t.render(&ctx("events"), &small, suffix);
                    assert!(re.is_match(&out), "{f}: {out:?} !~ {re}");
                }
            }
        }
    }

    #[test]
    fn exact_topics_narrow_the_pattern() {
        let topics = vec!["events".to_string(), "clicks".to_string()];
        let s = KeyShape {
            topics: Some(&topics),
            ..shape()
        };
        let t = FileTemplate::parse("{topic}+{partition}+{start_offset}.ndjson").unwrap();
        let re = regex::Regex::new(&format!("^{}$", t.regex(&s, ".gz"))).unwrap();
        assert!(re.is_match("events+0+00000000000000000042.ndjson.gz"));
        assert!(re.is_match("clicks+12+00000000000000000042.ndjson"));
        assert!(!re.is_match("other+0+00000000000000000042.ndjson.gz"));
        assert!(!re.is_match("events+0+42.ndjson.gz"));
        assert!(!re.is_match("db.tar"));
        assert_eq!(t.max_len(&s, ".gz"), 6 + 1 + 10 + 1 + 20 + 7 + 3);
    }
}
