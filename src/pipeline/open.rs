//! The worker's open files and the indexes that keep every decision about them O(log n) however
//! many are open: which are due to expire (age and idle), which was written least recently (the
//! `max_open_files` bound), which is largest (the memory budget) and which is oldest (its
//! gauge). A backfill whose records each open a folder of their own therefore costs a few
//! B-tree steps per file, not a scan of every open file per record.
//!
//! Invariants: every file in `map` has exactly one entry in each index, added and removed with
//! it; an index's deadline or last write is never later than the file's own (both only move
//! later; stale entries are refreshed when they come first), so nothing expires late and the
//! least recently written file is found exactly; `memory` is the sum of every file's
//! `memory_bytes()` as last indexed plus [`FILE_FIXED_BYTES`] per file, and the size index holds
//! the same values.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::mem::size_of;
use tokio::time::Instant;

use super::files::{FileKey, OpenFile};

/// Share of a hash table's memory one entry of `entry` bytes can hold: hashbrown keeps at most
/// 7/8 of its buckets full, doubles them when it gets there and holds both tables while it moves
/// the entries, so at a resize each entry has up to 8/7 + 16/7 = 24/7 buckets (and their control
/// bytes) to itself.
const fn table_share(entry: usize) -> usize {
    (entry + 1) * 24 / 7
}

/// What an open file costs besides its buffers, charged to the memory budget: the file's state
/// (boxed, so the open-file map's buckets stay small however large `OpenFile` is), its entry in
/// the open-file map and in the id map at a resize's worst, its entries in the four indexes
/// (B-tree nodes at half fill at worst), and the offset it holds in the offset tracker
/// (BENCHMARKS.md, "Memory", has the heap profile behind it).
pub(super) const FILE_FIXED_BYTES: usize = size_of::<OpenFile>()
    + 16
    + table_share(size_of::<FileKey>() + size_of::<Box<OpenFile>>())
    + table_share(size_of::<u64>() + size_of::<FileKey>())
    + 4 * 2 * size_of::<(usize, Reverse<Instant>, u64)>()
    + 64;

/// A file's values as its index entries hold them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Indexed {
    /// Expiry deadline (age or idle, whichever comes first).
    pub deadline: Instant,
    /// Last write.
    pub write: Instant,
    /// `memory_bytes()`.
    pub memory: usize,
}

/// The indexes over the open files (see the module doc).
#[derive(Default)]
pub(super) struct FileIndex {
    ids: HashMap<u64, FileKey>,
    expiry: BTreeSet<(Instant, u64)>,
    lru: BTreeSet<(Instant, u64)>,
    size: BTreeSet<(usize, Reverse<Instant>, u64)>,
    created: BTreeSet<(Instant, u64)>,
    memory: usize,
}

impl FileIndex {
    /// Indexes a new file, expiring at `deadline`.
    pub fn insert(&mut self, key: &FileKey, f: &mut OpenFile, deadline: Instant) {
        let created = f.batch.created();
        f.indexed = Indexed {
            deadline,
            write: f.batch.last_write(),
            memory: f.batch.memory_bytes(),
        };
        self.ids.insert(f.id, key.clone());
        self.expiry.insert((deadline, f.id));
        self.lru.insert((f.indexed.write, f.id));
        self.size.insert((f.indexed.memory, Reverse(created), f.id));
        self.created.insert((created, f.id));
        self.memory += f.indexed.memory + FILE_FIXED_BYTES;
    }

    /// Removes a file's entries.
    pub fn remove(&mut self, f: &OpenFile) {
        let created = f.batch.created();
        self.ids.remove(&f.id);
        self.expiry.remove(&(f.indexed.deadline, f.id));
        self.lru.remove(&(f.indexed.write, f.id));
        self.size
            .remove(&(f.indexed.memory, Reverse(created), f.id));
        self.created.remove(&(created, f.id));
        self.memory = self
            .memory
            .saturating_sub(f.indexed.memory + FILE_FIXED_BYTES);
    }

    /// Takes a change of `f`'s memory into the size index and the total (cheap when it did
    /// not change, which is most appends: buffers grow in steps).
    pub fn resized(&mut self, f: &mut OpenFile) {
        let now = f.batch.memory_bytes();
        let was = f.indexed.memory;
        if now == was {
            return;
        }
        let created = Reverse(f.batch.created());
        self.size.remove(&(was, created, f.id));
        self.size.insert((now, created, f.id));
        self.memory = (self.memory + now).saturating_sub(was);
        f.indexed.memory = now;
    }

    /// Memory of the open files, fixed costs included.
    pub fn memory(&self) -> usize {
        self.memory
    }
}

/// The open files and their indexes. Fields are separate so a file borrowed from `map` can be
/// re-indexed through `index` in the same scope.
#[derive(Default)]
pub(super) struct OpenFiles {
    /// The files by key (looked up for every record).
    pub map: hashbrown::HashMap<FileKey, Box<OpenFile>>,
    /// Their indexes.
    pub index: FileIndex,
}

impl OpenFiles {
    /// Open files.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Memory of the open files, fixed costs included.
    pub fn memory(&self) -> usize {
        self.index.memory()
    }

    /// Every open file's key.
    pub fn keys(&self) -> impl Iterator<Item = &FileKey> {
        self.map.keys()
    }

    /// Removes a file and its index entries.
    pub fn remove(&mut self, key: &FileKey) -> Option<Box<OpenFile>> {
        let f = self.map.remove(key)?;
        self.index.remove(&f);
        Some(f)
    }

    /// The files whose own deadline (`deadline_of`) has passed at `now`. Index entries that
    /// came due but whose file was written since are moved to the file's new deadline.
    pub fn due(
        &mut self,
        now: Instant,
        deadline_of: impl Fn(&FileKey, &OpenFile) -> Instant,
    ) -> Vec<FileKey> {
        let ripe: Vec<(Instant, u64)> = self
            .index
            .expiry
            .range(..=(now, u64::MAX))
            .copied()
            .collect();
        let mut out = Vec::new();
        for (at, id) in ripe {
            let Some(key) = self.index.ids.get(&id) else {
                continue;
            };
            let Some(f) = self.map.get_mut(key) else {
                continue;
            };
            let deadline = deadline_of(key, f);
            if deadline <= now {
                out.push(key.clone());
            } else {
                self.index.expiry.remove(&(at, id));
                self.index.expiry.insert((deadline, id));
                f.indexed.deadline = deadline;
            }
        }
        out
    }

    /// The file written least recently (the one to close when too many are open).
    pub fn least_recently_written(&mut self) -> Option<FileKey> {
        loop {
            let &(at, id) = self.index.lru.first()?;
            let key = self.index.ids.get(&id)?;
            let f = self.map.get_mut(key)?;
            let write = f.batch.last_write();
            if write <= at {
                return Some(key.clone());
            }
            self.index.lru.remove(&(at, id));
            self.index.lru.insert((write, id));
            f.indexed.write = write;
        }
    }

    /// The file holding the most memory (the oldest of equals).
    pub fn largest(&self) -> Option<FileKey> {
        let &(_, _, id) = self.index.size.last()?;
        self.index.ids.get(&id).cloned()
    }

    /// When the oldest open file was opened.
    pub fn oldest_created(&self) -> Option<Instant> {
        self.index.created.first().map(|&(t, _)| t)
    }

    /// Panics unless the module's invariants hold (tests).
    #[cfg(test)]
    pub fn check(&self) {
        let n = self.map.len();
        let i = &self.index;
        assert_eq!(
            (
                i.ids.len(),
                i.expiry.len(),
                i.lru.len(),
                i.size.len(),
                i.created.len()
            ),
            (n, n, n, n, n),
            "one entry per open file in every index"
        );
        let mut memory = 0;
        for (k, f) in &self.map {
            assert_eq!(i.ids.get(&f.id), Some(k));
            assert!(i.expiry.contains(&(f.indexed.deadline, f.id)));
            assert!(i.lru.contains(&(f.indexed.write, f.id)));
            assert!(f.indexed.write <= f.batch.last_write());
            assert_eq!(f.indexed.memory, f.batch.memory_bytes());
            memory += f.indexed.memory + FILE_FIXED_BYTES;
        }
        assert_eq!(i.memory, memory);
    }
}
