//! Kafka offsets in a table's snapshots: each commit's snapshot summary carries
//! `kafka-s3-sink.offset.<group>.<topic>.<partition>` = the next offset to read (the group
//! percent-escaped, see [`offset_key`]), for every
//! partition it covers, and `kafka-s3-sink.commit-id` = the commit's id.
//!
//! Invariants: a partition's committed offset is the value in the newest snapshot of the main
//! branch's ancestry that carries its key (each worker's snapshot carries only its own
//! partitions, so the history is walked, newest first); keys are looked up whole, never parsed,
//! so dots in group and topic names are harmless. Snapshot expiry must keep every snapshot from
//! [`expiry_horizon`] to the current one (docs/iceberg.md).

use std::collections::{HashMap, HashSet};

use iceberg::spec::{Snapshot, TableMetadata};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::model::TopicPartition;

/// Prefix of the offset keys in snapshot summaries.
pub const OFFSET_KEY_PREFIX: &str = "kafka-s3-sink.offset.";

/// Summary key of the id of the commit that made a snapshot.
pub const COMMIT_ID_KEY: &str = "kafka-s3-sink.commit-id";

/// Characters of a group id escaped in keys: `.` (the separator; Kafka topic names hold no
/// `%`, so the first `.` after the group always ends it), `%` itself, controls and spaces.
const GROUP_ESCAPES: &AsciiSet = &CONTROLS.add(b'.').add(b'%').add(b' ');

/// The summary key holding `tp`'s next offset for consumer group `group`:
/// `kafka-s3-sink.offset.<group, with . % and controls percent-escaped>.<topic>.<partition>`,
/// so two (group, topic) pairs never share a key.
pub fn offset_key(group: &str, tp: &TopicPartition) -> String {
    format!(
        "{OFFSET_KEY_PREFIX}{}.{}.{}",
        utf8_percent_encode(group, GROUP_ESCAPES),
        tp.topic,
        tp.partition
    )
}

/// The snapshots of the main branch's ancestry, newest first, as long as the chain is unbroken
/// (an expired parent ends it).
pub fn ancestry(meta: &TableMetadata) -> impl Iterator<Item = &Snapshot> {
    let mut next = meta.current_snapshot().map(|s| s.as_ref());
    std::iter::from_fn(move || {
        let s = next?;
        next = s
            .parent_snapshot_id()
            .and_then(|id| meta.snapshot_by_id(id))
            .map(|p| p.as_ref());
        Some(s)
    })
}

/// Where a partition's committed offset was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to read.
    pub next: i64,
    /// The snapshot carrying it.
    pub snapshot_id: i64,
    /// The id of the commit that made that snapshot, if it recorded one.
    pub commit_id: Option<String>,
}

/// The committed offsets of `wanted` for `group` in the table's current state: absent for a
/// partition no snapshot of the (unexpired) ancestry covers. The walk stops once every wanted
/// partition is found.
pub fn committed_offsets(
    meta: &TableMetadata,
    group: &str,
    wanted: &[TopicPartition],
) -> HashMap<TopicPartition, Committed> {
    let mut keys: Vec<(String, &TopicPartition)> = wanted
        .iter()
        .map(|tp| (offset_key(group, tp), tp))
        .collect();
    let mut found = HashMap::new();
    for s in ancestry(meta) {
        if keys.is_empty() {
            break;
        }
        let props = &s.summary().additional_properties;
        keys.retain(|(key, tp)| {
            let Some(next) = props.get(key).and_then(|v| v.parse::<i64>().ok()) else {
                return true;
            };
            found.insert(
                (*tp).clone(),
                Committed {
                    next,
                    snapshot_id: s.snapshot_id(),
                    commit_id: props.get(COMMIT_ID_KEY).cloned(),
                },
            );
            false
        });
    }
    found
}

/// The oldest snapshot snapshot expiry must keep for `group`: the oldest of the snapshots that
/// carry some partition's latest offset (walking the whole ancestry). Snapshots older than it
/// may be expired; it and every newer snapshot of the ancestry must stay, or a partition's
/// offset (and with it the zombie check and the restart position) is lost. `None`: the group
/// has no offsets in the table.
pub fn expiry_horizon(meta: &TableMetadata, group: &str) -> Option<(i64, i64)> {
    let prefix = format!(
        "{OFFSET_KEY_PREFIX}{}.",
        utf8_percent_encode(group, GROUP_ESCAPES)
    );
    let mut seen: HashSet<&str> = HashSet::new();
    let mut horizon = None;
    for s in ancestry(meta) {
        let mut newest_for_some = false;
        for k in s.summary().additional_properties.keys() {
            if k.starts_with(&prefix) && seen.insert(k.as_str()) {
                newest_for_some = true;
            }
        }
        if newest_for_some {
            horizon = Some((s.snapshot_id(), s.timestamp_ms()));
        }
    }
    horizon
}

/// The summary properties of a commit: the commit id and each partition's next offset.
pub fn commit_properties<'a>(
    group: &str,
    commit_id: &str,
    next: impl IntoIterator<Item = (&'a TopicPartition, i64)>,
) -> HashMap<String, String> {
    let mut props: HashMap<String, String> = next
        .into_iter()
        .map(|(tp, n)| (offset_key(group, tp), n.to_string()))
        .collect();
    props.insert(COMMIT_ID_KEY.to_string(), commit_id.to_string());
    props
}

/// How many times the table's current snapshot holds each (Kafka partition, offset), read from
/// its `<prefix>_partition` and `<prefix>_offset` columns with the crate's scan (tests and
/// tools: every data file is read).
pub async fn row_coordinates(
    table: &iceberg::table::Table,
    prefix: &str,
) -> Result<std::collections::BTreeMap<(i32, i64), usize>, iceberg::Error> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    use futures::TryStreamExt;
    let mut seen = std::collections::BTreeMap::new();
    if table.metadata().current_snapshot().is_none() {
        return Ok(seen);
    }
    let (pcol, ocol) = (format!("{prefix}_partition"), format!("{prefix}_offset"));
    let mut batches = table
        .scan()
        .select([pcol.as_str(), ocol.as_str()])
        .build()?
        .to_arrow()
        .await?;
    while let Some(b) = batches.try_next().await? {
        let missing = |c: &str| {
            iceberg::Error::new(
                iceberg::ErrorKind::DataInvalid,
                format!("the table has no column {c}"),
            )
        };
        let part = b.column_by_name(&pcol).ok_or_else(|| missing(&pcol))?;
        let off = b.column_by_name(&ocol).ok_or_else(|| missing(&ocol))?;
        let (part, off) = (
            part.as_primitive::<Int32Type>(),
            off.as_primitive::<Int64Type>(),
        );
        for r in 0..b.num_rows() {
            *seen.entry((part.value(r), off.value(r))).or_default() += 1;
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_group_topic_and_partition() {
        let tp = TopicPartition::new("web.events", 7);
        assert_eq!(
            offset_key("sink", &tp),
            "kafka-s3-sink.offset.sink.web.events.7"
        );
        // A dot in the group is escaped: ("a.b", "c") and ("a", "b.c") keep distinct keys.
        assert_eq!(
            offset_key("sink.prod", &tp),
            "kafka-s3-sink.offset.sink%2Eprod.web.events.7"
        );
        assert_ne!(
            offset_key("a.b", &TopicPartition::new("c", 0)),
            offset_key("a", &TopicPartition::new("b.c", 0))
        );
        let props = commit_properties("g", "c1", [(&tp, 42)]);
        assert_eq!(props["kafka-s3-sink.offset.g.web.events.7"], "42");
        assert_eq!(props[COMMIT_ID_KEY], "c1");
    }
}
