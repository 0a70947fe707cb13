//! The worker's open files as one type: the files by key with their indexes (`open.rs`), the
//! ids they get, the bound on how many are open, the compression state they share, and the
//! memory budget they share with the uploads queued. It answers every question the worker asks
//! about its files: which file a record goes to (opening it), which to close for the bound,
//! which for the budget, which are due, and whether to take more records.
//!
//! Invariants: a file gets an id no other file of the worker had; opening a file at the bound
//! is preceded by closing the least recently written ([`Files::evict_for`]), so at most
//! `max_open` files are open; [`Files::memory`] is the open files' memory as their indexes hold
//! it (kept current by every write) plus the shared encoders'; while that memory and the queued
//! uploads exceed the budget, [`Files::to_free`] names the largest file, unless the queued
//! uploads already hold half the budget (closing more would free nothing: intake stops instead,
//! [`Files::intake`]).

use bytes::Bytes;
use parquet::file::metadata::ParquetMetaData;
use std::sync::Arc;
use tokio::time::Instant;

use super::open::{Indexed, OpenFiles};
use crate::batch::{Batch, EncoderPool};
use crate::config::BatchConfig;
use crate::destination::FileKind;
use crate::model::{FlushReason, TopicPartition};
use crate::upload::ObjectWriter;
use hashbrown::hash_map::RawEntryMut;

/// Which open file: destination, partition and folder or error reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct FileKey {
    pub dest: usize,
    pub tp: TopicPartition,
    pub kind: FileKind,
}

/// A [`FileKey`] borrowing its partition, to look a file up without cloning it. Its fields and
/// their order are `FileKey`'s, so both hash alike.
#[derive(Hash)]
pub(super) struct FileKeyRef<'a> {
    pub dest: usize,
    pub tp: &'a TopicPartition,
    pub kind: &'a FileKind,
}

impl hashbrown::Equivalent<FileKey> for FileKeyRef<'_> {
    fn equivalent(&self, key: &FileKey) -> bool {
        self.dest == key.dest && *self.tp == key.tp && *self.kind == key.kind
    }
}

pub(super) struct OpenFile {
    /// Unique among the worker's files.
    pub id: u64,
    /// Its records.
    pub batch: Batch,
    /// Its upload, once a part was sent.
    pub writer: Option<ObjectWriter>,
    /// Its object key, once a part was sent.
    pub key: Option<String>,
    /// Its values as the open-file indexes hold them (see `open.rs`).
    pub indexed: Indexed,
}

/// What a write left to do.
#[derive(Debug)]
pub(super) enum Wrote {
    /// Nothing.
    Appended,
    /// The file reached a limit: close it.
    Full(FlushReason),
    /// The file's buffered bytes reached a part: upload it.
    Part(Bytes),
}

/// The open files, their bound and their budget (see the module doc).
pub(super) struct Files {
    open: OpenFiles,
    /// Most files open at once.
    max_open: usize,
    /// Bytes the files, the shared encoders and the queued uploads may hold.
    budget: usize,
    /// The last id given to a file.
    next_id: u64,
    /// The worker's deflate state(s), shared by all its gzip files.
    encoders: EncoderPool,
}

impl Files {
    /// No file open yet.
    pub fn new(max_open: usize, budget: usize) -> Self {
        Self {
            open: OpenFiles::default(),
            max_open,
            budget,
            next_id: 0,
            encoders: EncoderPool::default(),
        }
    }

    /// Sets the memory budget (a worker's share).
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
    }

    /// The memory budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Open files.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Every open file's key.
    pub fn keys(&self) -> impl Iterator<Item = &FileKey> {
        self.open.keys()
    }

    /// An open file.
    pub fn get(&self, key: &FileKey) -> Option<&OpenFile> {
        self.open.map.get(key).map(|f| &**f)
    }

    /// An open file, to attach its upload writer.
    pub fn get_mut(&mut self, key: &FileKey) -> Option<&mut OpenFile> {
        self.open.map.get_mut(key).map(|f| &mut **f)
    }

    /// Every open file.
    #[cfg(test)]
    pub fn files(&self) -> impl Iterator<Item = &OpenFile> {
        self.open.map.values().map(|f| &**f)
    }

    /// Memory the files hold: their buffers and fixed costs, and the shared encoders.
    pub fn memory(&self) -> usize {
        self.open.memory() + self.encoders.memory_bytes()
    }

    /// Memory of the open files alone (tests).
    #[cfg(test)]
    pub fn open_memory(&self) -> usize {
        self.open.memory()
    }

    /// Whether the worker may take more records, with `queued` bytes of uploads pending.
    pub fn intake(&self, queued: usize) -> bool {
        self.memory() + queued < self.budget
    }

    /// Whether the files and `queued` upload bytes exceed the budget.
    pub fn over_budget(&self, queued: usize) -> bool {
        self.memory() + queued > self.budget
    }

    /// Whether the uploads queued may take more files (a drain hands files over in waves that
    /// keep them within half the budget).
    pub fn queue_has_room(&self, queued: usize) -> bool {
        queued <= self.budget / 2
    }

    /// The file to close to bring memory back within the budget, if it is over and closing one
    /// can help: the largest.
    pub fn to_free(&self, queued: usize) -> Option<FileKey> {
        if self.over_budget(queued) && !self.is_empty() && self.queue_has_room(queued) {
            self.open.largest()
        } else {
            None
        }
    }

    /// The file to close before the file of `lookup` can open: the least recently written,
    /// when `max_open` files are open and `lookup`'s is not one of them.
    pub fn evict_for(&mut self, lookup: &FileKeyRef<'_>) -> Option<FileKey> {
        if self.open.len() >= self.max_open && !self.open.map.contains_key(lookup) {
            self.open.least_recently_written()
        } else {
            None
        }
    }

    /// Writes to the file of `lookup` with `write`, opening it first with `open` (given its
    /// new id; returns its key and the file, its deadline set) if it is not open. Then answers
    /// whether the file is full (`cfg`'s limits) or, if it `streams`, holds a part of
    /// `part_size` bytes, which it takes out.
    pub fn write(
        &mut self,
        lookup: &FileKeyRef<'_>,
        open: impl FnOnce(u64) -> (FileKey, OpenFile),
        write: impl FnOnce(&mut Batch, &mut EncoderPool),
        cfg: &BatchConfig,
        part_size: usize,
        streams: impl FnOnce() -> bool,
    ) -> Wrote {
        let file = match self.open.map.raw_entry_mut().from_key(lookup) {
            RawEntryMut::Occupied(o) => o.into_mut(),
            RawEntryMut::Vacant(v) => {
                self.next_id += 1;
                let (key, mut file) = open(self.next_id);
                let deadline = file.indexed.deadline;
                self.open.index.insert(&key, &mut file, deadline);
                v.insert(key, Box::new(file)).1
            }
        };
        write(&mut file.batch, &mut self.encoders);
        self.open.index.resized(file);
        if let Some(reason) = file.batch.full(cfg) {
            return Wrote::Full(reason);
        }
        if file.batch.buffered_bytes() >= part_size && streams() {
            let part = file.batch.take_part();
            self.open.index.resized(file);
            return Wrote::Part(part);
        }
        Wrote::Appended
    }

    /// Takes a file out (to close it).
    pub fn remove(&mut self, key: &FileKey) -> Option<Box<OpenFile>> {
        self.open.remove(key)
    }

    /// A removed file's finished body, content hash and (Parquet) footer.
    pub fn finish(&mut self, batch: Batch) -> (Bytes, u128, Option<Arc<ParquetMetaData>>) {
        batch.finish_with_footer(&mut self.encoders)
    }

    /// The files past their own deadline (`deadline_of`) at `now`.
    pub fn due(
        &mut self,
        now: Instant,
        deadline_of: impl Fn(&FileKey, &OpenFile) -> Instant,
    ) -> Vec<FileKey> {
        self.open.due(now, deadline_of)
    }

    /// When the oldest open file was opened.
    pub fn oldest_created(&self) -> Option<Instant> {
        self.open.oldest_created()
    }

    /// Panics unless the indexes' invariants hold (tests).
    #[cfg(test)]
    pub fn check(&self) {
        self.open.check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Compression;
    use crate::model::FolderKey;

    fn key(n: u32) -> FileKey {
        FileKey {
            dest: 0,
            tp: TopicPartition::new("t", 0),
            kind: FileKind::Data(FolderKey::AtSeal(n.into())),
        }
    }

    fn cfg() -> BatchConfig {
        crate::config::parse(
            "[kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\
             [[destinations]]\nname = \"d\"\nbucket = \"b\"\nregion = \"us-east-1\"\n\
             [destinations.batch]\nmax_records = 5\n",
            &|_| None,
        )
        .unwrap()
        .destinations[0]
            .batch
    }

    /// Writes `bytes` to file `n`, opening it if needed.
    fn write(files: &mut Files, n: u32, bytes: usize, now: Instant) -> Wrote {
        let k = key(n);
        let lookup = FileKeyRef {
            dest: k.dest,
            tp: &k.tp,
            kind: &k.kind,
        };
        let rec = crate::model::Record {
            tp: k.tp.clone(),
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: None,
        };
        let line = vec![b'x'; bytes];
        files.write(
            &lookup,
            |id| {
                let batch = Batch::new(k.tp.clone(), 0, Compression::None, now);
                let file = OpenFile {
                    id,
                    batch,
                    writer: None,
                    key: None,
                    indexed: Indexed {
                        deadline: now,
                        write: now,
                        memory: 0,
                    },
                };
                (k.clone(), file)
            },
            |batch, enc| batch.append_row(&rec, &line, &[], now, enc),
            &cfg(),
            usize::MAX,
            || false,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_bound_the_least_recently_written_file_makes_room() {
        let mut files = Files::new(2, 1 << 30);
        let t0 = Instant::now();
        write(&mut files, 1, 10, t0);
        write(&mut files, 2, 10, t0 + std::time::Duration::from_secs(1));
        write(&mut files, 1, 10, t0 + std::time::Duration::from_secs(2));
        let k3 = key(3);
        let lookup = FileKeyRef {
            dest: 0,
            tp: &k3.tp,
            kind: &k3.kind,
        };
        assert_eq!(files.evict_for(&lookup), Some(key(2)));
        let k1 = key(1);
        let open = FileKeyRef {
            dest: 0,
            tp: &k1.tp,
            kind: &k1.kind,
        };
        assert_eq!(files.evict_for(&open), None, "an open file needs no room");
        files.check();
    }

    #[tokio::test(start_paused = true)]
    async fn over_budget_the_largest_file_is_freed_unless_uploads_hold_half() {
        let mut files = Files::new(100, 1 << 30);
        let now = Instant::now();
        write(&mut files, 1, 100, now);
        write(&mut files, 2, 3000, now);
        let used = files.memory();
        files.set_budget(used + 1000);
        assert!(files.intake(999));
        assert!(!files.intake(1000), "no intake at the budget");
        assert_eq!(files.to_free(1000), None, "within the budget");
        assert_eq!(files.to_free(1001), Some(key(2)), "over it: the largest");
        let half = files.budget() / 2 + 1;
        assert!(files.over_budget(half));
        assert_eq!(
            files.to_free(half),
            None,
            "uploads hold half the budget: closing more frees nothing"
        );
        let f = files.remove(&key(2)).unwrap();
        let (body, _, _) = files.finish(f.batch);
        assert!(body.len() >= 3000);
        assert_eq!(files.len(), 1);
        assert!(files.memory() < used);
        files.check();
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_at_its_record_limit_is_full() {
        let mut files = Files::new(10, 1 << 30);
        let now = Instant::now();
        let limit = cfg().max_records;
        for _ in 1..limit {
            assert!(matches!(write(&mut files, 1, 1, now), Wrote::Appended));
        }
        assert!(matches!(
            write(&mut files, 1, 1, now),
            Wrote::Full(FlushReason::Records)
        ));
    }
}
