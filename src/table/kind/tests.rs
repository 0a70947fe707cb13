use std::collections::HashMap;

use super::*;
use crate::model::QuarantineReason;
use crate::upload::FileStats;

/// The watermarks of a worker: per partition, the first offsets of the files holding it and
/// the offset after its last record.
struct Marks(HashMap<i32, (Vec<i64>, i64)>);

impl Watermarks for Marks {
    fn safe_without(&self, tp: &TopicPartition, landed: &[i64]) -> Option<i64> {
        let (held, next) = self.0.get(&tp.partition)?;
        let mut held = held.clone();
        for o in landed {
            if let Some(i) = held.iter().position(|h| h == o) {
                held.remove(i);
            }
        }
        Some(held.into_iter().min().unwrap_or(*next))
    }
}

fn landed(p: i32, first: i64, last: i64) -> Landed {
    Landed {
        tp: TopicPartition::new("t", p),
        kind: FileKind::Error(QuarantineReason::NotJson),
        first_offset: first,
        last_offset: last,
        key: format!("k{p}-{first}"),
        stats: FileStats::default(),
        footer: None,
    }
}

#[test]
fn a_commit_takes_only_files_below_every_other_files_first_offset() {
    // Partition 0: landed files 0..=4 and 5..=9, nothing else held, 10 taken in: both go, next
    // 10. Partition 1: landed 0..=6 spans a file still open at 3: nothing goes.
    let pending = vec![landed(0, 0, 4), landed(0, 5, 9), landed(1, 0, 6)];
    let marks = Marks(HashMap::from([(0, (vec![0, 5], 10)), (1, (vec![0, 3], 8))]));
    let (ranges, chosen) = committable(&pending, &marks);
    assert_eq!(chosen, vec![0, 1]);
    assert_eq!(
        ranges,
        vec![PartitionRange {
            tp: TopicPartition::new("t", 0),
            start: 0,
            next: 10
        }]
    );
}

#[test]
fn a_file_left_out_holds_back_the_files_above_its_first_offset() {
    // Landed 0..=2 and 3..=9; an open file at 5; the 3..=9 file spans it, so it waits, and
    // its first offset (3) then bounds the commit: only 0..=2 goes, next 3.
    let pending = vec![landed(0, 0, 2), landed(0, 3, 9)];
    let marks = Marks(HashMap::from([(0, (vec![0, 3, 5], 12))]));
    let (ranges, chosen) = committable(&pending, &marks);
    assert_eq!(chosen, vec![0]);
    assert_eq!(ranges[0].next, 3);
    // Interleaved files (0,2,4 in one, 1,3 in another): the first waits for the second.
    let pending = vec![landed(0, 0, 4)];
    let marks = Marks(HashMap::from([(0, (vec![0, 1], 5))]));
    assert!(committable(&pending, &marks).1.is_empty());
}

#[test]
fn the_data_prefix_is_under_the_table_location_in_its_bucket() {
    assert_eq!(
        TableTarget::data_location("s3://lake/warehouse/analytics/events").unwrap(),
        (
            "lake".to_string(),
            "warehouse/analytics/events/data/".to_string()
        )
    );
    assert_eq!(
        TableTarget::data_location("s3://abc--table-s3").unwrap(),
        ("abc--table-s3".to_string(), "data/".to_string())
    );
    assert!(TableTarget::data_location("/tmp/warehouse/t").is_err());
    assert!(TableTarget::data_location("s3:///t").is_err());
}
