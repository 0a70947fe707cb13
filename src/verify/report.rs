//! The outcome of `verify`: totals, per-partition detail and bounded examples, printed as text
//! (the last line is the fixed `verify: records=… expected=… …` summary) or as one JSON object.
//!
//! Invariants: `expected = records − filtered` and `missing = expected − found`, per partition
//! and in total; the exit code is 1 exactly when `missing > 0`.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::extsort::SortStats;
use super::join::{Counts, Tally};
use super::kafkaside::{KafkaCounts, PartitionPlan};
use super::s3side::{S3Tally, TopicIndex};
use crate::config::DestinationConfig;

/// One partition's result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionReport {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset checked.
    pub from: i64,
    /// End offset checked (exclusive).
    pub to: i64,
    /// Log start offset.
    pub log_start: i64,
    /// High watermark.
    pub high_watermark: i64,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// Records in range.
    pub records: u64,
    /// Records expected in S3.
    pub expected: u64,
    /// Expected records found.
    pub found: u64,
    /// Expected records not found.
    pub missing: u64,
    /// Extra copies.
    pub duplicated: u64,
    /// Lines in S3 matching no record of the range.
    pub outside_range: u64,
    /// Expected records found as error envelopes.
    pub quarantined: u64,
    /// Records the destination's filter drops.
    pub filtered: u64,
    /// Lowest missing offset.
    pub first_missing: Option<i64>,
    /// Highest missing offset.
    pub last_missing: Option<i64>,
    /// Why the range differs from what was asked, if it does.
    pub note: Option<String>,
}

/// A missing record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MissingExample {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A record found more than once.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DuplicateExample {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Copies in S3.
    pub copies: u64,
    /// Keys of (some of) the objects holding them.
    pub keys: Vec<String>,
}

/// An object that could not be decoded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unreadable {
    /// Key.
    pub key: String,
    /// Error.
    pub error: String,
}

/// Everything `verify` found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    /// Destination name.
    pub destination: String,
    /// Bucket.
    pub bucket: String,
    /// Prefix listed.
    pub prefix: String,
    /// Consumer group whose commits bound the default range.
    pub group: String,
    /// Topics verified.
    pub topics: Vec<String>,
    /// Kafka records in range.
    pub records: u64,
    /// Records that should be in S3 (not filtered).
    pub expected: u64,
    /// Expected records found at least once.
    pub found: u64,
    /// `expected − found`.
    pub missing: u64,
    /// Copies beyond the first.
    pub duplicated: u64,
    /// Lines/envelopes in S3 matching no record of the range.
    pub outside_range: u64,
    /// Objects read.
    pub objects: u64,
    /// Expected records whose copy is an error envelope.
    pub quarantined: u64,
    /// Records the filter drops.
    pub filtered: u64,
    /// Objects with no metadata and a key of another template (not checked).
    pub unattributed: u64,
    /// Objects or envelopes of topics not verified (skipped).
    pub other_topics: u64,
    /// Lines in the error folder that are not envelopes.
    pub bad_envelopes: u64,
    /// Objects listed but deleted before they were read.
    pub vanished: u64,
    /// Per partition.
    pub partitions: Vec<PartitionReport>,
    /// Smallest missing offsets.
    pub missing_examples: Vec<MissingExample>,
    /// Duplicated records with the smallest offsets.
    pub duplicate_examples: Vec<DuplicateExample>,
    /// Some objects holding lines outside the range.
    pub outside_range_keys: Vec<String>,
    /// Some unattributed objects.
    pub unattributed_keys: Vec<String>,
    /// Objects that could not be decoded.
    pub unreadable: Vec<Unreadable>,
    /// Entries sorted (both sides).
    pub sorted_entries: u64,
    /// Sorted runs written to disk.
    pub runs_spilled: u64,
    /// Bytes written to disk by the sort.
    pub bytes_spilled: u64,
    /// `--max-memory-mb`.
    pub max_memory_mb: u64,
}

impl VerifyReport {
    /// 0 when nothing is missing, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.missing > 0)
    }

    /// The fixed summary line.
    pub fn summary(&self) -> String {
        format!(
            "verify: records={} expected={} found={} missing={} duplicated={} outside_range={} objects={} quarantined={} filtered={}",
            self.records,
            self.expected,
            self.found,
            self.missing,
            self.duplicated,
            self.outside_range,
            self.objects,
            self.quarantined,
            self.filtered
        )
    }

    /// Human-readable report; the last line is [`summary`](Self::summary).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "destination {} (s3://{}/{}), group {}, topics {}",
            self.destination,
            self.bucket,
            self.prefix,
            self.group,
            self.topics.join(",")
        );
        for p in &self.partitions {
            let committed = p.committed.map_or("none".into(), |c| c.to_string());
            let _ = writeln!(
                s,
                "partition {}/{}: offsets {}..{} (log start {}, high {}, committed {committed}) records={} expected={} found={} missing={} duplicated={} outside_range={} quarantined={} filtered={}",
                p.topic, p.partition, p.from, p.to, p.log_start, p.high_watermark, p.records,
                p.expected, p.found, p.missing, p.duplicated, p.outside_range, p.quarantined, p.filtered
            );
            if let (Some(a), Some(b)) = (p.first_missing, p.last_missing) {
                let _ = writeln!(s, "  missing offsets between {a} and {b}");
            }
            if let Some(n) = &p.note {
                let _ = writeln!(s, "  note: {n}");
            }
        }
        for m in &self.missing_examples {
            let _ = writeln!(s, "missing: {}/{}/{}", m.topic, m.partition, m.offset);
        }
        for d in &self.duplicate_examples {
            let _ = writeln!(
                s,
                "duplicated: {}/{}/{} ×{} in {}",
                d.topic,
                d.partition,
                d.offset,
                d.copies,
                d.keys.join(" ")
            );
        }
        for k in &self.outside_range_keys {
            let _ = writeln!(s, "outside range: {k}");
        }
        if self.unattributed > 0 {
            let _ = writeln!(
                s,
                "unattributed objects (no metadata, unknown key format; not checked): {} e.g. {}",
                self.unattributed,
                self.unattributed_keys.join(" ")
            );
        }
        for u in &self.unreadable {
            let _ = writeln!(s, "unreadable: {}: {}", u.key, u.error);
        }
        let extras = [
            (
                "objects or envelopes of other topics skipped",
                self.other_topics,
            ),
            (
                "lines in the error folder that are not envelopes",
                self.bad_envelopes,
            ),
            ("objects deleted while verifying", self.vanished),
        ];
        for (what, n) in extras {
            if n > 0 {
                let _ = writeln!(s, "{what}: {n}");
            }
        }
        let _ = writeln!(
            s,
            "sorted {} entries; {} runs ({} bytes) spilled with --max-memory-mb {}",
            self.sorted_entries, self.runs_spilled, self.bytes_spilled, self.max_memory_mb
        );
        s.push_str(&self.summary());
        s.push('\n');
        s
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// What [`build`] assembles.
pub struct Parts<'a> {
    /// The destination.
    pub destination: &'a DestinationConfig,
    /// Group id.
    pub group: &'a str,
    /// Verified topics.
    pub topics: &'a TopicIndex,
    /// Per-partition plans.
    pub plans: &'a [PartitionPlan],
    /// Kafka-side counts.
    pub kafka: &'a BTreeMap<(u32, i32), KafkaCounts>,
    /// S3-side totals.
    pub s3: &'a S3Tally,
    /// The join.
    pub tally: &'a Tally,
    /// Keys of object indexes.
    pub keys: &'a HashMap<u64, String>,
    /// Sort totals.
    pub spill: SortStats,
    /// Memory bound.
    pub max_memory_mb: u64,
}

/// Builds the report.
pub fn build(p: Parts<'_>) -> VerifyReport {
    let key_of = |i: &u64| p.keys.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
    let mut partitions: BTreeMap<(u32, i32), PartitionReport> = BTreeMap::new();
    for plan in p.plans {
        let k = p
            .kafka
            .get(&(plan.topic, plan.tp.partition))
            .copied()
            .unwrap_or_default();
        partitions.insert(
            (plan.topic, plan.tp.partition),
            part(p.topics.name(plan.topic), plan.tp.partition, Some(plan), k),
        );
    }
    for (&(t, pn), c) in &p.tally.partitions {
        let r = partitions
            .entry((t, pn))
            .or_insert_with(|| part(p.topics.name(t), pn, None, KafkaCounts::default()));
        apply(r, c);
    }
    let partitions: Vec<PartitionReport> = partitions.into_values().collect();
    let sum = |f: fn(&PartitionReport) -> u64| partitions.iter().map(f).sum::<u64>();
    VerifyReport {
        destination: p.destination.name.clone(),
        bucket: p.destination.bucket.clone(),
        prefix: p.destination.prefix.clone(),
        group: p.group.to_string(),
        topics: p.topics.names().to_vec(),
        records: sum(|r| r.records),
        expected: sum(|r| r.expected),
        found: sum(|r| r.found),
        missing: sum(|r| r.missing),
        duplicated: sum(|r| r.duplicated),
        outside_range: sum(|r| r.outside_range),
        objects: p.s3.objects,
        quarantined: sum(|r| r.quarantined),
        filtered: sum(|r| r.filtered),
        unattributed: p.s3.unattributed_objects,
        other_topics: p.s3.other_topic_objects + p.s3.other_topic_envelopes,
        bad_envelopes: p.s3.bad_envelopes,
        vanished: p.s3.vanished,
        missing_examples: p
            .tally
            .missing_examples
            .iter()
            .map(|&(t, partition, offset)| MissingExample {
                topic: p.topics.name(t).to_string(),
                partition,
                offset,
            })
            .collect(),
        duplicate_examples: p
            .tally
            .duplicate_examples
            .iter()
            .map(|d| DuplicateExample {
                topic: p.topics.name(d.topic).to_string(),
                partition: d.partition,
                offset: d.offset,
                copies: d.copies,
                keys: d.objects.iter().map(key_of).collect(),
            })
            .collect(),
        outside_range_keys: p.tally.outside_objects.iter().map(key_of).collect(),
        unattributed_keys: p.s3.unattributed_keys.clone(),
        unreadable: p
            .s3
            .unreadable
            .iter()
            .map(|(key, error)| Unreadable {
                key: key.clone(),
                error: error.clone(),
            })
            .collect(),
        partitions,
        sorted_entries: p.spill.entries,
        runs_spilled: p.spill.runs_spilled,
        bytes_spilled: p.spill.bytes_spilled,
        max_memory_mb: p.max_memory_mb,
    }
}

fn part(
    topic: &str,
    partition: i32,
    plan: Option<&PartitionPlan>,
    k: KafkaCounts,
) -> PartitionReport {
    let expected = k.records - k.filtered;
    PartitionReport {
        topic: topic.to_string(),
        partition,
        from: plan.map_or(0, |p| p.from),
        to: plan.map_or(0, |p| p.to),
        log_start: plan.map_or(0, |p| p.log_start),
        high_watermark: plan.map_or(0, |p| p.high),
        committed: plan.and_then(|p| p.committed),
        records: k.records,
        expected,
        found: 0,
        // Until the join says otherwise, every expected record is missing (it also covers
        // partitions whose records matched nothing at all).
        missing: expected,
        duplicated: 0,
        outside_range: 0,
        quarantined: 0,
        filtered: k.filtered,
        first_missing: None,
        last_missing: None,
        note: match plan {
            Some(p) => p.note.clone(),
            None => Some("partition not in Kafka's metadata".into()),
        },
    }
}

fn apply(r: &mut PartitionReport, c: &Counts) {
    r.found = c.found;
    r.missing = r.expected.saturating_sub(c.found);
    r.duplicated = c.duplicated;
    r.outside_range = c.outside_range;
    r.quarantined = c.quarantined;
    r.first_missing = c.first_missing;
    r.last_missing = c.last_missing;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_has_the_fixed_shape() {
        let r = VerifyReport {
            destination: "d".into(),
            bucket: "b".into(),
            prefix: String::new(),
            group: "g".into(),
            topics: vec!["t".into()],
            records: 10,
            expected: 9,
            found: 8,
            missing: 1,
            duplicated: 2,
            outside_range: 3,
            objects: 4,
            quarantined: 5,
            filtered: 1,
            unattributed: 0,
            other_topics: 0,
            bad_envelopes: 0,
            vanished: 0,
            partitions: vec![],
            missing_examples: vec![],
            duplicate_examples: vec![],
            outside_range_keys: vec![],
            unattributed_keys: vec![],
            unreadable: vec![],
            sorted_entries: 0,
            runs_spilled: 0,
            bytes_spilled: 0,
            max_memory_mb: 1,
        };
        let text = r.to_text();
        assert_eq!(
            text.lines().last().unwrap(),
            "verify: records=10 expected=9 found=8 missing=1 duplicated=2 outside_range=3 objects=4 quarantined=5 filtered=1"
        );
        assert_eq!(r.exit_code(), 1);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["outside_range"], 3);
        assert_eq!(v["missing"], 1);
    }
}
