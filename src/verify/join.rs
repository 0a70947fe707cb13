//! Merge-join of the two sorted entry streams of `verify`: Kafka records in range and lines
//! found in S3, grouped by (topic, partition, identity hash).
//!
//! Per group, with `k` Kafka entries and `s` S3 entries: `found += min(k, s)`,
//! `missing += k − min(k, s)`, `duplicated += s − k` when `k > 0` and `s > k`, and
//! `outside_range += s` when `k == 0`. Identical records (the same bytes produced twice) are
//! handled by the counts. Examples are bounded: the smallest offsets and object indexes.
//!
//! Invariant: memory is bounded by the number of partitions and the example limit, never by the
//! number of entries.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::io;

use super::extsort::Entry;

/// S3-side `aux`: object index and whether the line is an error envelope.
pub fn s3_aux(object: u64, envelope: bool) -> i64 {
    ((object << 1) | u64::from(envelope)) as i64
}

fn object_of(aux: i64) -> u64 {
    (aux as u64) >> 1
}

fn is_envelope(aux: i64) -> bool {
    aux & 1 == 1
}

/// Match counts of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Expected records found at least once.
    pub found: u64,
    /// Expected records found nowhere.
    pub missing: u64,
    /// Copies beyond the first.
    pub duplicated: u64,
    /// Lines matching no record of the range.
    pub outside_range: u64,
    /// Expected records whose copy is an error envelope.
    pub quarantined: u64,
    /// Lowest missing offset seen.
    pub first_missing: Option<i64>,
    /// Highest missing offset seen.
    pub last_missing: Option<i64>,
}

/// A record present more than once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duplicate {
    /// Topic index.
    pub topic: u32,
    /// Partition.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// Copies in S3.
    pub copies: u64,
    /// Indexes of (some of) the objects holding the copies.
    pub objects: Vec<u64>,
}

/// The join's result.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Counts per (topic index, partition).
    pub partitions: BTreeMap<(u32, i32), Counts>,
    /// Smallest missing (topic, partition, offset), at most `limit`, sorted.
    pub missing_examples: Vec<(u32, i32, i64)>,
    /// Duplicates with the smallest offsets, at most `limit`, sorted.
    pub duplicate_examples: Vec<Duplicate>,
    /// Smallest indexes of objects holding lines outside the range, at most `limit`.
    pub outside_objects: BTreeSet<u64>,
}

/// Keeps the `limit` smallest values.
struct Smallest<T: Ord> {
    heap: BinaryHeap<T>,
    limit: usize,
}

impl<T: Ord> Smallest<T> {
    fn new(limit: usize) -> Self {
        Self {
            heap: BinaryHeap::new(),
            limit,
        }
    }

    fn offer(&mut self, v: T) {
        if self.heap.len() < self.limit {
            self.heap.push(v);
        } else if self.heap.peek().is_some_and(|top| v < *top) {
            self.heap.pop();
            self.heap.push(v);
        }
    }

    fn into_sorted(self) -> Vec<T> {
        self.heap.into_sorted_vec()
    }
}

/// One side's stream with its current entry.
struct Head<I> {
    it: I,
    cur: Option<Entry>,
}

impl<I: Iterator<Item = io::Result<Entry>>> Head<I> {
    fn new(mut it: I) -> io::Result<Self> {
        let cur = it.next().transpose()?;
        Ok(Self { it, cur })
    }

    fn key(&self) -> Option<(u32, i32, u64)> {
        self.cur.map(|e| e.key())
    }

    /// Consumes every entry with `key`; returns how many, and the `aux` of the first `keep`.
    fn take_group(&mut self, key: (u32, i32, u64), keep: usize) -> io::Result<(u64, Vec<i64>)> {
        let mut n = 0;
        let mut aux = Vec::new();
        while let Some(e) = self.cur.filter(|e| e.key() == key) {
            n += 1;
            if aux.len() < keep {
                aux.push(e.aux);
            }
            self.cur = self.it.next().transpose()?;
        }
        Ok((n, aux))
    }

    /// Consumes every entry with `key`; returns how many, how many are envelopes, and the
    /// object indexes of the first `keep`.
    fn take_s3_group(
        &mut self,
        key: (u32, i32, u64),
        keep: usize,
    ) -> io::Result<(u64, u64, Vec<u64>)> {
        let (mut n, mut env) = (0, 0);
        let mut objects = Vec::new();
        while let Some(e) = self.cur.filter(|e| e.key() == key) {
            n += 1;
            env += u64::from(is_envelope(e.aux));
            if objects.len() < keep {
                objects.push(object_of(e.aux));
            }
            self.cur = self.it.next().transpose()?;
        }
        Ok((n, env, objects))
    }
}

/// Joins sorted Kafka entries (`aux` = offset) with sorted S3 entries (`aux` = [`s3_aux`]).
pub fn join(
    kafka: impl Iterator<Item = io::Result<Entry>>,
    s3: impl Iterator<Item = io::Result<Entry>>,
    limit: usize,
) -> io::Result<Tally> {
    const OBJECTS_PER_DUPLICATE: usize = 4;
    let mut k = Head::new(kafka)?;
    let mut s = Head::new(s3)?;
    let mut partitions: BTreeMap<(u32, i32), Counts> = BTreeMap::new();
    let mut missing_ex = Smallest::new(limit);
    let mut dup_ex = Smallest::new(limit);
    let mut outside: BTreeSet<u64> = BTreeSet::new();
    loop {
        let key = match (k.key(), s.key()) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (Some(a), Some(b)) => a.min(b),
        };
        let (kn, offsets) = k.take_group(key, limit.max(1))?;
        let keep_objects = if kn == 0 {
            limit
        } else {
            OBJECTS_PER_DUPLICATE
        };
        let (sn, envelopes, objects) = s.take_s3_group(key, keep_objects)?;
        let c = partitions.entry((key.0, key.1)).or_default();
        if kn == 0 {
            c.outside_range += sn;
            for o in objects {
                outside.insert(o);
                if outside.len() > limit {
                    outside.pop_last();
                }
            }
            continue;
        }
        let found = kn.min(sn);
        c.found += found;
        c.quarantined += kn.min(envelopes);
        if kn > found {
            c.missing += kn - found;
            // Which of identical records is missing is arbitrary: report the last ones.
            for &off in offsets.iter().skip(found as usize) {
                c.first_missing = Some(c.first_missing.map_or(off, |m| m.min(off)));
                c.last_missing = Some(c.last_missing.map_or(off, |m| m.max(off)));
                missing_ex.offer((key.0, key.1, off));
            }
        }
        if sn > kn {
            c.duplicated += sn - kn;
            dup_ex.offer(Duplicate {
                topic: key.0,
                partition: key.1,
                offset: offsets.first().copied().unwrap_or(-1),
                copies: sn,
                objects,
            });
        }
    }
    Ok(Tally {
        partitions,
        missing_examples: missing_ex.into_sorted(),
        duplicate_examples: dup_ex.into_sorted(),
        outside_objects: outside,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(p: i32, hash: u64, offset: i64) -> Entry {
        Entry {
            topic: 0,
            partition: p,
            hash,
            aux: offset,
        }
    }

    fn s(p: i32, hash: u64, object: u64, envelope: bool) -> Entry {
        Entry {
            topic: 0,
            partition: p,
            hash,
            aux: s3_aux(object, envelope),
        }
    }

    fn run(mut kafka: Vec<Entry>, mut s3: Vec<Entry>) -> Tally {
        kafka.sort();
        s3.sort();
        join(kafka.into_iter().map(Ok), s3.into_iter().map(Ok), 20).unwrap()
    }

    #[test]
    fn exact_match_counts_found_only() {
        let t = run(
            vec![k(0, 1, 0), k(0, 2, 1), k(1, 1, 0)],
            vec![s(0, 2, 0, false), s(0, 1, 0, false), s(1, 1, 1, true)],
        );
        assert_eq!(t.partitions[&(0, 0)].found, 2);
        assert_eq!(t.partitions[&(0, 1)].found, 1);
        assert_eq!(t.partitions[&(0, 1)].quarantined, 1);
        let total: u64 = t
            .partitions
            .values()
            .map(|c| c.missing + c.duplicated + c.outside_range)
            .sum();
        assert_eq!(total, 0);
    }

    #[test]
    fn missing_duplicated_and_outside_range() {
        let t = run(
            vec![k(0, 10, 5), k(0, 11, 6), k(0, 12, 7)],
            vec![
                s(0, 10, 3, false),
                s(0, 10, 4, false),
                s(0, 10, 9, false),
                s(0, 12, 3, false),
                s(0, 99, 2, false),
                s(0, 98, 8, false),
                // Same hash, other partition: not a match.
                s(1, 11, 1, false),
            ],
        );
        let c = t.partitions[&(0, 0)];
        assert_eq!(
            (c.found, c.missing, c.duplicated, c.outside_range),
            (2, 1, 2, 2)
        );
        assert_eq!((c.first_missing, c.last_missing), (Some(6), Some(6)));
        assert_eq!(t.partitions[&(0, 1)].outside_range, 1);
        assert_eq!(t.missing_examples, vec![(0, 0, 6)]);
        assert_eq!(t.duplicate_examples.len(), 1);
        assert_eq!(t.duplicate_examples[0].offset, 5);
        assert_eq!(t.duplicate_examples[0].copies, 3);
        assert_eq!(t.duplicate_examples[0].objects, vec![3, 4, 9]);
        assert_eq!(
            t.outside_objects.iter().copied().collect::<Vec<_>>(),
            vec![1, 2, 8]
        );
    }

    #[test]
    fn identical_records_are_matched_by_count() {
        // The same bytes at three offsets, two copies in S3: one missing, nothing duplicated.
        let t = run(
            vec![k(0, 7, 1), k(0, 7, 2), k(0, 7, 3)],
            vec![s(0, 7, 0, false), s(0, 7, 1, false)],
        );
        let c = t.partitions[&(0, 0)];
        assert_eq!((c.found, c.missing, c.duplicated), (2, 1, 0));
        assert_eq!(t.missing_examples, vec![(0, 0, 3)]);
    }

    #[test]
    fn empty_sides() {
        let t = run(vec![k(0, 1, 0), k(0, 2, 1)], vec![]);
        assert_eq!(t.partitions[&(0, 0)].missing, 2);
        let t = run(vec![], vec![s(0, 1, 0, false)]);
        assert_eq!(t.partitions[&(0, 0)].outside_range, 1);
        let t = run(vec![], vec![]);
        assert!(t.partitions.is_empty());
    }

    #[test]
    fn examples_are_bounded_and_smallest() {
        // Hashes in reverse offset order: the join meets the highest offsets first.
        let mut kafka: Vec<Entry> = (0..100).map(|i| k(0, 1000 - i as u64, i)).collect();
        kafka.sort();
        let t2 = join(kafka.into_iter().map(Ok), std::iter::empty(), 5).unwrap();
        assert_eq!(t2.partitions[&(0, 0)].missing, 100);
        assert_eq!(
            t2.missing_examples,
            (0..5).map(|o| (0, 0, o)).collect::<Vec<_>>()
        );
        assert_eq!(t2.partitions[&(0, 0)].first_missing, Some(0));
        assert_eq!(t2.partitions[&(0, 0)].last_missing, Some(99));
    }

    #[test]
    fn join_of_externally_sorted_streams_with_many_spills() {
        use super::super::extsort::{ExternalSorter, SortOptions};
        let dir = tempfile::tempdir().unwrap();
        let opts = SortOptions {
            run_entries: 5,
            fan_in: 2,
            buffer_bytes: 24,
        };
        let mut ks = ExternalSorter::new(dir.path(), opts);
        let mut ss = ExternalSorter::new(dir.path(), opts);
        for i in 0..1000i64 {
            let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            ks.push(k((i % 3) as i32, h, i)).unwrap();
            // Every 10th record missing, every 7th doubled.
            if i % 10 != 0 {
                ss.push(s((i % 3) as i32, h, i as u64 / 50, false)).unwrap();
            }
            if i % 7 == 0 {
                ss.push(s((i % 3) as i32, h, 999, false)).unwrap();
            }
        }
        let (ka, _) = ks.finish().unwrap();
        let (sa, stats) = ss.finish().unwrap();
        assert!(stats.runs_spilled > 100);
        let t = join(ka, sa, 20).unwrap();
        let sum = |f: fn(&Counts) -> u64| t.partitions.values().map(f).sum::<u64>();
        assert_eq!(sum(|c| c.missing), 100 - 15); // multiples of 10 not of 70 (0, 70, …)
        assert_eq!(sum(|c| c.duplicated), 143 - 15);
        assert_eq!(sum(|c| c.found), 1000 - 85);
        assert_eq!(sum(|c| c.outside_range), 0);
        assert_eq!(t.missing_examples.len(), 20);
    }
}
