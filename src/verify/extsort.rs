//! External sort of fixed-size [`Entry`] values: runs of at most `run_entries` are sorted in
//! memory and spilled to anonymous temp files, then merged k ways (in several passes when there
//! are more runs than `fan_in`) into one sorted stream.
//!
//! Invariant: memory stays within `run_entries` entries plus `fan_in` read buffers, whatever the
//! number of entries; the merged stream yields every pushed entry exactly once, in order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One fact to compare: a record (Kafka side) or a line (S3 side) of a topic-partition, by the
/// hash of its identity. `aux` is the offset (Kafka side) or object index and flags (S3 side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// Index of the topic in the verified list.
    pub topic: u32,
    /// Partition.
    pub partition: i32,
    /// Hash of the record's identity.
    pub hash: u64,
    /// Offset or object index (see the side that wrote it).
    pub aux: i64,
}

impl Entry {
    /// Encoded size in bytes.
    pub const SIZE: usize = 24;

    /// The part that matches across sides: (topic, partition, hash).
    pub fn key(&self) -> (u32, i32, u64) {
        (self.topic, self.partition, self.hash)
    }

    fn encode(&self, out: &mut [u8; Self::SIZE]) {
        out[0..4].copy_from_slice(&self.topic.to_le_bytes());
        out[4..8].copy_from_slice(&self.partition.to_le_bytes());
        out[8..16].copy_from_slice(&self.hash.to_le_bytes());
        out[16..24].copy_from_slice(&self.aux.to_le_bytes());
    }

    fn decode(b: &[u8; Self::SIZE]) -> Self {
        let mut u4 = [0u8; 4];
        let mut u8b = [0u8; 8];
        u4.copy_from_slice(&b[0..4]);
        let topic = u32::from_le_bytes(u4);
        u4.copy_from_slice(&b[4..8]);
        let partition = i32::from_le_bytes(u4);
        u8b.copy_from_slice(&b[8..16]);
        let hash = u64::from_le_bytes(u8b);
        u8b.copy_from_slice(&b[16..24]);
        let aux = i64::from_le_bytes(u8b);
        Self {
            topic,
            partition,
            hash,
            aux,
        }
    }
}

/// Sizes of an external sort.
#[derive(Debug, Clone, Copy)]
pub struct SortOptions {
    /// Entries sorted in memory per run.
    pub run_entries: usize,
    /// Runs merged at once (each holds one read buffer).
    pub fan_in: usize,
    /// Read/write buffer per run file, in bytes.
    pub buffer_bytes: usize,
}

impl SortOptions {
    /// Options for a memory share of `bytes`: 3/4 for the run, 1/4 for merge buffers.
    pub fn for_memory(bytes: usize) -> Self {
        let buffer_bytes = 64 * 1024;
        Self {
            run_entries: (bytes / 4 * 3 / Entry::SIZE).max(1024),
            fan_in: (bytes / 4 / buffer_bytes).clamp(2, 512),
            buffer_bytes,
        }
    }
}

/// What a sort spilled (for the report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SortStats {
    /// Entries pushed.
    pub entries: u64,
    /// Runs written to disk (including intermediate merge passes).
    pub runs_spilled: u64,
    /// Bytes written to disk.
    pub bytes_spilled: u64,
}

struct Run {
    file: File,
    len: u64,
}

/// Collects entries and sorts them with bounded memory.
pub struct ExternalSorter {
    opts: SortOptions,
    dir: PathBuf,
    buf: Vec<Entry>,
    runs: Vec<Run>,
    stats: SortStats,
}

impl ExternalSorter {
    /// A sorter spilling into `dir` (which must outlive the merged stream).
    pub fn new(dir: &Path, opts: SortOptions) -> Self {
        let opts = SortOptions {
            run_entries: opts.run_entries.max(1),
            fan_in: opts.fan_in.max(2),
            buffer_bytes: opts.buffer_bytes.max(Entry::SIZE),
        };
        Self {
            opts,
            dir: dir.to_path_buf(),
            buf: Vec::new(),
            runs: Vec::new(),
            stats: SortStats::default(),
        }
    }

    /// Adds one entry; spills a sorted run when the buffer is full.
    pub fn push(&mut self, e: Entry) -> io::Result<()> {
        if self.buf.capacity() == 0 {
            // Exactly one run: growing by doubling could overshoot the memory share. Pages are
            // only resident once written, so a small input costs little.
            self.buf.reserve_exact(self.opts.run_entries);
        }
        self.buf.push(e);
        self.stats.entries += 1;
        if self.buf.len() >= self.opts.run_entries {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.buf.sort_unstable();
        let buf = std::mem::take(&mut self.buf);
        let run = self.write_run(buf.into_iter().map(Ok))?;
        self.runs.push(run);
        Ok(())
    }

    fn write_run(&mut self, entries: impl Iterator<Item = io::Result<Entry>>) -> io::Result<Run> {
        let file = super::spill::anonymous_file(&self.dir)?;
        let mut w = BufWriter::with_capacity(self.opts.buffer_bytes, file);
        let mut len = 0u64;
        let mut b = [0u8; Entry::SIZE];
        for e in entries {
            e?.encode(&mut b);
            w.write_all(&b)?;
            len += 1;
        }
        let mut file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.seek(SeekFrom::Start(0))?;
        self.stats.runs_spilled += 1;
        self.stats.bytes_spilled += len * Entry::SIZE as u64;
        Ok(Run { file, len })
    }

    /// Ends input; returns every entry in order, and what was spilled.
    pub fn finish(mut self) -> io::Result<(Sorted, SortStats)> {
        if self.runs.is_empty() {
            self.buf.sort_unstable();
            let buf = std::mem::take(&mut self.buf);
            return Ok((Sorted::Memory(buf.into_iter()), self.stats));
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        self.buf = Vec::new();
        while self.runs.len() > self.opts.fan_in {
            let mut next = Vec::new();
            let runs = std::mem::take(&mut self.runs);
            let mut it = runs.into_iter().peekable();
            while it.peek().is_some() {
                let group: Vec<Run> = it.by_ref().take(self.opts.fan_in).collect();
                if group.len() == 1 {
                    next.extend(group);
                    continue;
                }
                let merged = Merge::new(group, self.opts.buffer_bytes)?;
                next.push(self.write_run(merged)?);
            }
            self.runs = next;
        }
        let runs = std::mem::take(&mut self.runs);
        let merge = Merge::new(runs, self.opts.buffer_bytes)?;
        Ok((Sorted::Merge(merge), self.stats))
    }
}

/// The sorted output of an [`ExternalSorter`].
pub enum Sorted {
    /// Everything fit in one run.
    Memory(std::vec::IntoIter<Entry>),
    /// A k-way merge of spilled runs.
    Merge(Merge),
}

impl Iterator for Sorted {
    type Item = io::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Sorted::Memory(it) => it.next().map(Ok),
            Sorted::Merge(m) => m.next(),
        }
    }
}

struct RunReader {
    r: BufReader<File>,
    left: u64,
}

impl RunReader {
    fn next(&mut self) -> io::Result<Option<Entry>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut b = [0u8; Entry::SIZE];
        self.r.read_exact(&mut b)?;
        self.left -= 1;
        Ok(Some(Entry::decode(&b)))
    }
}

/// K-way merge of sorted runs.
pub struct Merge {
    readers: Vec<RunReader>,
    heap: BinaryHeap<Reverse<(Entry, usize)>>,
    failed: bool,
}

impl Merge {
    fn new(runs: Vec<Run>, buffer_bytes: usize) -> io::Result<Self> {
        let mut readers: Vec<RunReader> = runs
            .into_iter()
            .map(|run| RunReader {
                r: BufReader::with_capacity(buffer_bytes, run.file),
                left: run.len,
            })
            .collect();
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(e) = r.next()? {
                heap.push(Reverse((e, i)));
            }
        }
        Ok(Self {
            readers,
            heap,
            failed: false,
        })
    }
}

impl Iterator for Merge {
    type Item = io::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let Reverse((e, i)) = self.heap.pop()?;
        match self.readers[i].next() {
            Ok(Some(n)) => self.heap.push(Reverse((n, i))),
            Ok(None) => {}
            Err(err) => {
                self.failed = true;
                return Some(Err(err));
            }
        }
        Some(Ok(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u64, seed: u64) -> Vec<Entry> {
        // A small LCG: deterministic and full of repeats in the high bits.
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                Entry {
                    topic: (x >> 62) as u32,
                    partition: ((x >> 58) & 3) as i32,
                    hash: x >> 40,
                    aux: i as i64,
                }
            })
            .collect()
    }

    fn sort_all(input: &[Entry], opts: SortOptions) -> (Vec<Entry>, SortStats) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ExternalSorter::new(dir.path(), opts);
        for e in input {
            s.push(*e).unwrap();
        }
        let (sorted, stats) = s.finish().unwrap();
        (sorted.map(Result::unwrap).collect(), stats)
    }

    #[test]
    fn entries_round_trip_through_bytes() {
        let e = Entry {
            topic: 7,
            partition: -1,
            hash: u64::MAX - 3,
            aux: i64::MIN + 5,
        };
        let mut b = [0u8; Entry::SIZE];
        e.encode(&mut b);
        assert_eq!(Entry::decode(&b), e);
    }

    #[test]
    fn small_input_sorts_in_memory() {
        let input = entries(1000, 1);
        let (out, stats) = sort_all(&input, SortOptions::for_memory(1 << 20));
        let mut want = input.clone();
        want.sort();
        assert_eq!(out, want);
        assert_eq!(stats.runs_spilled, 0);
        assert_eq!(stats.entries, 1000);
    }

    #[test]
    fn tiny_runs_spill_and_merge_in_several_passes() {
        let input = entries(10_007, 2);
        let opts = SortOptions {
            run_entries: 7,
            fan_in: 3,
            buffer_bytes: 48,
        };
        let (out, stats) = sort_all(&input, opts);
        let mut want = input.clone();
        want.sort();
        assert_eq!(out.len(), want.len());
        assert_eq!(out, want);
        // 1430 initial runs, then passes of fan-in 3.
        assert!(stats.runs_spilled > 1430 + 476, "{stats:?}");
    }

    #[test]
    fn exact_multiple_of_the_run_size_and_empty_input() {
        let input = entries(64, 3);
        let opts = SortOptions {
            run_entries: 16,
            fan_in: 2,
            buffer_bytes: 24,
        };
        let (out, _) = sort_all(&input, opts);
        let mut want = input;
        want.sort();
        assert_eq!(out, want);
        let (out, stats) = sort_all(&[], opts);
        assert!(out.is_empty());
        assert_eq!(stats, SortStats::default());
    }
}
