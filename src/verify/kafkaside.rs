//! The Kafka side of `verify`: resolves the offset range of every partition (log start,
//! high watermark, the group's committed offsets) and reads it, emitting one [`Entry`] per
//! record the destination expects (filtered records are only counted).
//!
//! Invariant: a range never reaches below the log start or past the high watermark; partitions
//! whose range had to be narrowed, or that have no committed offset, carry a note saying so. A
//! committed offset past the high watermark is never narrowed: the range reaches the commit (a
//! broker may report a watermark below records it still serves), and when those records do not
//! come the read fails ([`VerifyError::PastEnd`], exit 3) rather than let the audit pass short.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::extsort::{Entry, ExternalSorter};
use super::identity::{Identifier, Identity};
use super::s3side::TopicIndex;
use super::{FromOffset, ToOffset, VerifyError};
use crate::model::TopicPartition;
use crate::source::reader::{OffsetRange, RangeReader, ReaderError};

/// One partition's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// Topic index.
    pub topic: u32,
    /// The partition.
    pub tp: TopicPartition,
    /// Log start offset (older records were deleted by retention).
    pub log_start: i64,
    /// High watermark.
    pub high: i64,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// First offset checked.
    pub from: i64,
    /// End offset checked (exclusive); `from == to` when nothing is expected.
    pub to: i64,
    /// Why the range is not what was asked, if it is not.
    pub note: Option<String>,
}

/// Resolves `from` / `to` against one partition's watermarks and commit. A commit past the high
/// watermark stays the end, with a note: [`read`] fails if the records up to it do not come.
pub fn resolve(
    from: FromOffset,
    to: ToOffset,
    (log_start, high): (i64, i64),
    committed: Option<i64>,
) -> (i64, i64, Option<String>) {
    let mut notes = Vec::new();
    let start = match from {
        FromOffset::Earliest => log_start,
        FromOffset::Offset(n) if n < log_start => {
            notes.push(format!(
                "offsets {n}..{log_start} were deleted by retention and cannot be checked"
            ));
            log_start
        }
        FromOffset::Offset(n) => n,
    };
    let end = match to {
        ToOffset::Latest => high,
        ToOffset::Committed => match committed {
            Some(c) if c > high => {
                notes.push(format!(
                    "committed offset {c} is past the high watermark {high}: read up to the commit"
                ));
                c
            }
            Some(c) => c,
            None => {
                notes.push("the group has no committed offset: nothing expected".into());
                start
            }
        },
        ToOffset::Offset(n) if n > high => {
            notes.push(format!("--to {n} is past the high watermark {high}"));
            high
        }
        ToOffset::Offset(n) => n,
    };
    let end = end.max(start);
    if matches!(to, ToOffset::Committed) && committed.is_some_and(|c| c < log_start) {
        notes.push("the committed offset is below the log start: nothing left to check".into());
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    (start, end, note)
}

/// Plans every partition of the verified topics.
pub fn plan(
    reader: &RangeReader,
    topics: &TopicIndex,
    from: FromOffset,
    to: ToOffset,
) -> Result<Vec<PartitionPlan>, VerifyError> {
    let mut tps = Vec::new();
    for (i, topic) in topics.names().iter().enumerate() {
        for p in reader.partitions(topic)? {
            tps.push((i as u32, TopicPartition::new(topic.as_str(), p)));
        }
    }
    let committed = if matches!(to, ToOffset::Committed) {
        let list: Vec<TopicPartition> = tps.iter().map(|(_, tp)| tp.clone()).collect();
        reader.committed(&list)?
    } else {
        vec![None; tps.len()]
    };
    let mut out = Vec::with_capacity(tps.len());
    for ((topic, tp), committed) in tps.into_iter().zip(committed) {
        // Read after the commits: a commit made before it cannot exceed a healthy watermark.
        let marks = reader.watermarks(&tp)?;
        let (from, to, note) = resolve(from, to, marks, committed);
        out.push(PartitionPlan {
            topic,
            tp,
            log_start: marks.0,
            high: marks.1,
            committed,
            from,
            to,
            note,
        });
    }
    Ok(out)
}

/// Records of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaCounts {
    /// Records read in range.
    pub records: u64,
    /// Of those, dropped by the destination's filter.
    pub filtered: u64,
}

/// Reads every planned range, pushing an entry per expected record into `sorter`; stops with
/// an error once `cancel` is set (the other side failed).
pub fn read(
    reader: &RangeReader,
    plans: &[PartitionPlan],
    ident: &Identifier,
    topics: &TopicIndex,
    sorter: &mut ExternalSorter,
    cancel: &AtomicBool,
) -> Result<BTreeMap<(u32, i32), KafkaCounts>, VerifyError> {
    let ranges: Vec<OffsetRange> = plans
        .iter()
        .map(|p| OffsetRange {
            tp: p.tp.clone(),
            from: p.from,
            to: p.to,
        })
        .collect();
    let mut counts: BTreeMap<(u32, i32), KafkaCounts> = plans
        .iter()
        .map(|p| ((p.topic, p.tp.partition), KafkaCounts::default()))
        .collect();
    // Last offset read per partition: tells a range past the watermark that came up short.
    let mut last: BTreeMap<(u32, i32), i64> = BTreeMap::new();
    let result = reader.read(&ranges, |rec| {
        if cancel.load(Ordering::Relaxed) {
            return Err(VerifyError::Task("cancelled: the S3 side failed".into()));
        }
        let Some(topic) = topics.get(&rec.tp.topic) else {
            return Ok::<(), VerifyError>(());
        };
        last.insert((topic, rec.tp.partition), rec.offset);
        let c = counts.entry((topic, rec.tp.partition)).or_default();
        c.records += 1;
        match ident.of_record(rec)? {
            Identity::Filtered => c.filtered += 1,
            Identity::Expected { hash, .. } => sorter
                .push(Entry {
                    topic,
                    partition: rec.tp.partition,
                    hash,
                    aux: rec.offset,
                })
                .map_err(VerifyError::Spill)?,
        }
        Ok(())
    });
    if let Err(VerifyError::Kafka(ReaderError::Stalled { secs, .. })) = &result {
        let short: Vec<String> = plans
            .iter()
            .filter(|p| p.to > p.high)
            .filter(|p| {
                last.get(&(p.topic, p.tp.partition))
                    .is_none_or(|&o| o + 1 < p.to)
            })
            .map(|p| {
                format!(
                    "{} committed {} but its high watermark is {} and no record up to the commit came within {secs} s",
                    p.tp, p.to, p.high
                )
            })
            .collect();
        if !short.is_empty() {
            return Err(VerifyError::PastEnd {
                partitions: short.join(", "),
            });
        }
    }
    result?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_default_to_log_start_and_the_commit() {
        let r = resolve(
            FromOffset::Earliest,
            ToOffset::Committed,
            (5, 100),
            Some(60),
        );
        assert_eq!(r, (5, 60, None));
        let (from, to, note) = resolve(FromOffset::Earliest, ToOffset::Committed, (5, 100), None);
        assert_eq!((from, to), (5, 5));
        assert!(note.unwrap().contains("no committed offset"));
    }

    #[test]
    fn numeric_bounds_are_clamped_to_what_kafka_has() {
        let (from, to, note) =
            resolve(FromOffset::Offset(0), ToOffset::Offset(500), (5, 100), None);
        assert_eq!((from, to), (5, 100));
        let note = note.unwrap();
        assert!(note.contains("deleted by retention") && note.contains("past the high"));
        assert_eq!(
            resolve(FromOffset::Offset(50), ToOffset::Latest, (0, 100), None),
            (50, 100, None)
        );
        // An inverted range is empty, not negative.
        let (from, to, _) = resolve(FromOffset::Offset(80), ToOffset::Offset(20), (0, 100), None);
        assert_eq!((from, to), (80, 80));
    }

    #[test]
    fn a_commit_past_the_high_watermark_is_kept_as_the_end() {
        let (from, to, note) = resolve(
            FromOffset::Earliest,
            ToOffset::Committed,
            (0, 100),
            Some(124),
        );
        assert_eq!((from, to), (0, 124));
        assert!(note.unwrap().contains("past the high watermark 100"));
        // An explicit --to past it is a cap, narrowed with a note.
        assert_eq!(
            resolve(FromOffset::Earliest, ToOffset::Offset(124), (0, 100), None).1,
            100
        );
    }
}
