//! Offset tracker: per partition, the contiguous watermark that is safe to commit, and the
//! offset windows of deterministic destinations (where their files are cut, and where their
//! commits land).
//!
//! A committed offset means "next offset to read". For each assigned partition the tracker knows
//! the offset after the last record the pipeline has taken in (`next`), and the first offset of
//! every file that holds records of the partition and is not yet in S3 (`held`, a multiset: one
//! record can sit in files of several destinations). The safe commit is the lowest held offset,
//! or `next` when nothing is held. Files finish uploading in any order; the watermark only moves
//! forward once the lowest held file is in S3.
//!
//! Deterministic destinations (`batch.deterministic`) cut files at offset windows of
//! `max_records`; for their topics every commit lands on a window start (or on the first offset
//! taken in since the assignment, if later), so whoever reads the partition next starts where
//! the files of that window started and rebuilds the same objects, even when nothing is held:
//! a mid-window commit after a revoke or shutdown would let the next owner start new files
//! inside a window whose whole object an earlier incarnation may already have written. The same
//! windows cut the files: a record of a new window closes every file of the destination and
//! partition ([`OffsetTracker::enter_window`]), so files hold fixed windows whatever happened
//! before.

use std::collections::{BTreeMap, HashMap};

use crate::model::TopicPartition;

#[derive(Debug, Default)]
struct PartitionState {
    /// Offset after the last record taken in; `None` before the first.
    next: Option<i64>,
    /// First offset of each file not yet in S3 → how many such files start there.
    held: BTreeMap<i64, usize>,
    /// Last offset committed (or handed out for commit).
    committed: Option<i64>,
    /// First offset taken in since the assignment.
    first: Option<i64>,
    /// The current offset window of each deterministic destination (index) that took a record
    /// of the partition since the assignment.
    current: Vec<(usize, i64)>,
}

impl PartitionState {
    fn safe(&self, windows: &[u64]) -> Option<i64> {
        let w = match self.held.first_key_value() {
            Some((&lowest, _)) => Some(lowest),
            None => self.next,
        };
        w.map(|w| align(w, windows, self.first))
    }
}

/// The commit point at or below `w` where no file of a deterministic destination (window sizes
/// `windows`) starts earlier: the lowest window start, but not below `first`.
fn align(w: i64, windows: &[u64], first: Option<i64>) -> i64 {
    let floor = windows
        .iter()
        .map(|&n| w - w.rem_euclid(n.max(1) as i64))
        .min()
        .unwrap_or(w);
    floor.max(first.unwrap_or(floor)).min(w)
}

/// Why the tracker refused a call; each one is a bug upstream, reported instead of hidden.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    /// The partition is not assigned.
    #[error("partition {0} is not assigned")]
    NotAssigned(TopicPartition),
    /// An offset went backwards.
    #[error("offset {offset} of {tp} is below the next expected offset {next}")]
    Backwards {
        /// Partition.
        tp: TopicPartition,
        /// Offered offset.
        offset: i64,
        /// Expected next.
        next: i64,
    },
    /// A release without a matching hold.
    #[error("no file starting at offset {offset} of {tp} is held")]
    NotHeld {
        /// Partition.
        tp: TopicPartition,
        /// Offset.
        offset: i64,
    },
}

/// Tracks every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Looked up for every record: hashbrown's default hasher (foldhash) rather than SipHash.
    parts: hashbrown::HashMap<TopicPartition, PartitionState>,
    /// Offset-window sizes of the deterministic destinations, per topic.
    windows: HashMap<String, Vec<u64>>,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker whose commits for `topic` land on multiples of each window size (see the
    /// module doc).
    pub fn with_windows(windows: HashMap<String, Vec<u64>>) -> Self {
        Self {
            parts: hashbrown::HashMap::new(),
            windows,
        }
    }

    /// Sets the window sizes of `topic` (see [`Self::with_windows`]); for topics resolved only
    /// when their first partition is assigned (subscription patterns).
    pub fn set_windows(&mut self, topic: &str, windows: Vec<u64>) {
        if windows.is_empty() {
            self.windows.remove(topic);
        } else {
            self.windows.insert(topic.to_string(), windows);
        }
    }

    fn windows_of(&self, tp: &TopicPartition) -> &[u64] {
        self.windows.get(&*tp.topic).map_or(&[], Vec::as_slice)
    }

    /// Starts tracking a newly assigned partition (its position is learnt from its first record).
    pub fn assign(&mut self, tp: TopicPartition) {
        self.parts.entry(tp).or_default();
    }

    /// Stops tracking a partition (after its revoke was handled).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.parts.remove(tp);
    }

    /// Whether the partition is assigned.
    pub fn is_assigned(&self, tp: &TopicPartition) -> bool {
        self.parts.contains_key(tp)
    }

    /// Assigned partitions.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.parts.keys()
    }

    /// Deterministic destination `dest`, whose windows are `size` offsets, takes the record at
    /// `offset` of `tp`: true when the record starts a new window after an earlier one the
    /// destination took records of (every file of the destination and partition must then
    /// close). The first window since the assignment closes nothing; an unassigned partition
    /// has none.
    pub fn enter_window(
        &mut self,
        tp: &TopicPartition,
        dest: usize,
        size: i64,
        offset: i64,
    ) -> bool {
        let Some(st) = self.parts.get_mut(tp) else {
            return false;
        };
        let window = offset / size.max(1);
        match st.current.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, w)) if *w == window => false,
            Some((_, w)) => {
                *w = window;
                true
            }
            None => {
                st.current.push((dest, window));
                false
            }
        }
    }

    /// Records that the pipeline took in the record at `offset`.
    pub fn consumed(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), OffsetError> {
        let st = self
            .parts
            .get_mut(tp)
            .ok_or_else(|| OffsetError::NotAssigned(tp.clone()))?;
        if let Some(next) = st.next {
            if offset < next {
                return Err(OffsetError::Backwards {
                    tp: tp.clone(),
                    offset,
                    next,
                });
            }
        }
        st.next = Some(offset + 1);
        st.first.get_or_insert(offset);
        Ok(())
    }

    /// A file starting at `offset` now holds records of `tp` (call before [`Self::consumed`]
    /// for the same record, or right after: both keep the watermark at or below `offset`).
    pub fn hold(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), OffsetError> {
        let st = self
            .parts
            .get_mut(tp)
            .ok_or_else(|| OffsetError::NotAssigned(tp.clone()))?;
        *st.held.entry(offset).or_default() += 1;
        st.first.get_or_insert(offset);
        Ok(())
    }

    /// The file starting at `offset` is in S3 (or was given up): it no longer holds the watermark.
    pub fn release(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), OffsetError> {
        let st = self
            .parts
            .get_mut(tp)
            .ok_or_else(|| OffsetError::NotAssigned(tp.clone()))?;
        match st.held.get_mut(&offset) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                st.held.remove(&offset);
            }
            None => {
                return Err(OffsetError::NotHeld {
                    tp: tp.clone(),
                    offset,
                })
            }
        }
        Ok(())
    }

    /// The lowest first offset of the files holding `tp` other than those starting at `landed`
    /// (each listed once per file), else the offset after the last record taken in; windows
    /// are not applied. See [`crate::destination::Watermarks`].
    pub fn safe_without(&self, tp: &TopicPartition, landed: &[i64]) -> Option<i64> {
        let st = self.parts.get(tp)?;
        let mut landed: BTreeMap<i64, usize> = landed.iter().fold(BTreeMap::new(), |mut m, o| {
            *m.entry(*o).or_default() += 1;
            m
        });
        for (&offset, &n) in &st.held {
            let gone = landed.remove(&offset).unwrap_or(0);
            if n > gone {
                return Some(offset);
            }
        }
        st.next
    }

    /// The offset safe to commit for `tp` now, if any.
    pub fn safe_offset(&self, tp: &TopicPartition) -> Option<i64> {
        let windows = self.windows_of(tp);
        self.parts.get(tp).and_then(|st| st.safe(windows))
    }

    /// Offsets that moved past the last commit, marking them committed. Pass `only` to limit
    /// the answer to some partitions (e.g. the revoked ones).
    pub fn take_commits(&mut self, only: Option<&[TopicPartition]>) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, st) in &mut self.parts {
            if only.is_some_and(|o| !o.contains(tp)) {
                continue;
            }
            let windows = self.windows.get(&*tp.topic).map_or(&[][..], Vec::as_slice);
            if let Some(safe) = st.safe(windows) {
                if st.committed.is_none_or(|c| safe > c) {
                    st.committed = Some(safe);
                    out.push((tp.clone(), safe));
                }
            }
        }
        out.sort();
        out
    }

    /// Offsets taken in past the last commit, over every partition: the records a shutdown
    /// leaves for the next owner to read again.
    pub fn uncommitted(&self) -> u64 {
        self.parts
            .values()
            .filter_map(|st| {
                let next = st.next?;
                let from = st.committed.or(st.first)?;
                Some((next - from).max(0) as u64)
            })
            .sum()
    }

    /// Offsets still held per partition (for diagnostics and metrics).
    pub fn held_files(&self, tp: &TopicPartition) -> usize {
        self.parts.get(tp).map_or(0, |s| s.held.values().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_counts_offsets_past_the_last_commit() {
        let mut t = OffsetTracker::new();
        t.assign(tp(0));
        t.assign(tp(1));
        assert_eq!(t.uncommitted(), 0);
        for o in 10..20 {
            t.hold(&tp(0), 10).ok();
            t.consumed(&tp(0), o).unwrap();
        }
        t.hold(&tp(1), 0).unwrap();
        for o in 0..5 {
            t.consumed(&tp(1), o).unwrap();
        }
        // Nothing committed yet: everything taken in counts.
        assert_eq!(t.uncommitted(), 15);
        // Partition 1's file is in S3 and committed; partition 0's is not.
        t.release(&tp(1), 0).unwrap();
        t.take_commits(None);
        assert_eq!(t.uncommitted(), 10);
    }

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    /// The watermark a table commit records: the files it commits are counted as landed, each
    /// once, and any other file still holding the partition bounds it.
    #[test]
    fn safe_without_counts_the_given_files_as_landed() {
        let mut t = OffsetTracker::new();
        t.assign(tp(0));
        assert_eq!(t.safe_without(&tp(0), &[]), None);
        // Two files start at 0 (two destinations), one at 3; records 0..6 taken in.
        t.hold(&tp(0), 0).unwrap();
        t.hold(&tp(0), 0).unwrap();
        t.hold(&tp(0), 3).unwrap();
        for o in 0..6 {
            t.consumed(&tp(0), o).unwrap();
        }
        assert_eq!(t.safe_without(&tp(0), &[]), Some(0));
        assert_eq!(
            t.safe_without(&tp(0), &[0]),
            Some(0),
            "the other file at 0 holds"
        );
        assert_eq!(t.safe_without(&tp(0), &[0, 0]), Some(3));
        assert_eq!(t.safe_without(&tp(0), &[0, 0, 3]), Some(6));
        assert_eq!(t.safe_without(&tp(1), &[]), None, "not assigned");
        // Nothing changed: the files are still held.
        assert_eq!(t.safe_offset(&tp(0)), Some(0));
    }

    #[test]
    fn nothing_to_commit_before_the_first_record() {
        let mut t = OffsetTracker::new();
        t.assign(tp(0));
        assert_eq!(t.safe_offset(&tp(0)), None);
        assert!(t.take_commits(None).is_empty());
    }

    #[test]
    fn commit_is_next_offset_when_nothing_held() {
        let mut t = OffsetTracker::new();
        t.assign(tp(0));
        t.consumed(&tp(0), 41).unwrap();
        // Off-by-one: having consumed offset 41, the next offset to read is 42.
        assert_eq!(t.safe_offset(&tp(0)), Some(42));
        assert_eq!(t.take_commits(None), vec![(tp(0), 42)]);
        assert!(t.take_commits(None).is_empty(), "no repeat commit");
    }

    #[test]
    fn out_of_order_uploads_never_commit_past_a_held_record() {
        let mut t = OffsetTracker::new();
        t.assign(tp(0));
        // Folder A gets offsets 0,2,4; folder B gets 1,3; folder C gets 5.
        for (off, file_start) in [
            (0, Some(0)),
            (1, Some(1)),
            (2, None),
            (3, None),
            (4, None),
            (5, Some(5)),
        ] {
            if let Some(s) = file_start {
                t.hold(&tp(0), s).unwrap();
            }
            t.consumed(&tp(0), off).unwrap();
        }
        assert_eq!(t.safe_offset(&tp(0)), Some(0));
        // C (starts at 5) lands first: still 0.
        t.release(&tp(0), 5).unwrap();
        assert_eq!(t.take_commits(None), vec![(tp(0), 0)]);
        // B (starts at 1) lands: A still holds 0.
        t.release(&tp(0), 1).unwrap();
        assert!(t.take_commits(None).is_empty());
        // A lands: everything consumed is in S3.
        t.release(&tp(0), 0).unwrap();
        assert_eq!(t.take_commits(None), vec![(tp(0), 6)]);
    }

    #[test]
    fn same_start_in_two_destinations_is_counted() {
        let mut t = OffsetTracker::new();
        t.assign(tp(0));
        t.hold(&tp(0), 7).unwrap();
        t.hold(&tp(0), 7).unwrap();
        t.consumed(&tp(0), 7).unwrap();
        t.release(&tp(0), 7).unwrap();
        assert_eq!(t.safe_offset(&tp(0)), Some(7));
        t.release(&tp(0), 7).unwrap();
        assert_eq!(t.safe_offset(&tp(0)), Some(8));
        assert!(matches!(
            t.release(&tp(0), 7),
            Err(OffsetError::NotHeld { .. })
        ));
    }

    #[test]
    fn refuses_backwards_offsets_and_unassigned_partitions() {
        let mut t = OffsetTracker::new();
        t.assign(tp(0));
        t.consumed(&tp(0), 10).unwrap();
        assert!(matches!(
            t.consumed(&tp(0), 10),
            Err(OffsetError::Backwards { .. })
        ));
        assert!(matches!(
            t.consumed(&tp(1), 0),
            Err(OffsetError::NotAssigned(_))
        ));
        // Gaps (compaction, transaction markers) are fine.
        t.consumed(&tp(0), 15).unwrap();
        assert_eq!(t.safe_offset(&tp(0)), Some(16));
    }

    #[test]
    fn commits_can_be_limited_to_revoked_partitions() {
        let mut t = OffsetTracker::new();
        t.assign(tp(0));
        t.assign(tp(1));
        t.consumed(&tp(0), 1).unwrap();
        t.consumed(&tp(1), 2).unwrap();
        assert_eq!(t.take_commits(Some(&[tp(1)])), vec![(tp(1), 3)]);
        assert_eq!(t.take_commits(None), vec![(tp(0), 2)]);
        t.forget(&tp(1));
        assert!(!t.is_assigned(&tp(1)));
    }

    #[test]
    fn deterministic_topics_commit_at_window_starts() {
        let windows = HashMap::from([("t".to_string(), vec![100])]);
        let mut o = OffsetTracker::with_windows(windows);
        let t = tp(0);
        o.assign(t.clone());
        // Assigned at 40 (mid-window): files of this assignment start at ≥ 40.
        for off in 40..250 {
            if off == 40 || off == 100 || off == 200 {
                o.hold(&t, off).unwrap();
            }
            o.consumed(&t, off).unwrap();
        }
        assert_eq!(o.safe_offset(&t), Some(40));
        o.release(&t, 40).unwrap();
        assert_eq!(o.safe_offset(&t), Some(100));
        // A second folder's file of window 1 starting at 130 is in S3 or not: the commit stays
        // on the window start until every file of the window is in S3.
        o.hold(&t, 130).unwrap();
        o.release(&t, 100).unwrap();
        assert_eq!(
            o.safe_offset(&t),
            Some(100),
            "130 is held: back to its window start"
        );
        o.release(&t, 130).unwrap();
        assert_eq!(o.safe_offset(&t), Some(200));
        o.release(&t, 200).unwrap();
        assert_eq!(
            o.safe_offset(&t),
            Some(200),
            "nothing held: still the window start (the next owner rebuilds the window)"
        );
        for off in 250..300 {
            o.consumed(&t, off).unwrap();
        }
        assert_eq!(o.safe_offset(&t), Some(300), "exactly at a window start");
        // Other topics are not aligned.
        let mut plain = OffsetTracker::with_windows(HashMap::new());
        plain.assign(t.clone());
        plain.hold(&t, 130).unwrap();
        plain.consumed(&t, 130).unwrap();
        assert_eq!(plain.safe_offset(&t), Some(130));
    }

    #[test]
    fn a_new_window_closes_the_previous_one_per_destination() {
        let mut o = OffsetTracker::new();
        let t = tp(0);
        assert!(
            !o.enter_window(&t, 0, 100, 5),
            "unassigned: nothing to close"
        );
        o.assign(t.clone());
        assert!(
            !o.enter_window(&t, 0, 100, 150),
            "the first window closes nothing"
        );
        assert!(!o.enter_window(&t, 0, 100, 199));
        assert!(
            !o.enter_window(&t, 1, 10, 199),
            "another destination has its own windows"
        );
        assert!(
            o.enter_window(&t, 0, 100, 200),
            "a record of the next window"
        );
        assert!(o.enter_window(&t, 1, 10, 200));
        assert!(!o.enter_window(&t, 0, 100, 250));
        o.forget(&t);
        o.assign(t.clone());
        assert!(
            !o.enter_window(&t, 0, 100, 900),
            "a new assignment starts afresh"
        );
    }

    #[test]
    fn alignment_never_goes_below_the_assignment_start_or_above_the_watermark() {
        assert_eq!(align(250, &[100], Some(40)), 200);
        assert_eq!(align(250, &[100], Some(230)), 230);
        assert_eq!(align(250, &[100, 30], None), 200);
        assert_eq!(align(250, &[], Some(0)), 250);
        assert_eq!(align(7, &[100], None), 0);
    }
}
