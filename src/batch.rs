//! One open file: NDJSON lines of one destination, partition and folder, compressed as they
//! arrive, with the rotation policy (size, records, age, idle) and a memory estimate.
//!
//! Invariants: a batch holds records of exactly one topic-partition in offset order; its bytes
//! can be taken out in parts while it fills (the parts concatenated with the final bytes are one
//! valid gzip stream); `memory_bytes` never under-counts what it holds; `content_hash` is the
//! xxh3-128 of the uncompressed bytes, so two files with the same lines have the same hash
//! whatever their compression (the uploader compares it when a key is already taken).

use bytes::Bytes;
use flate2::write::GzEncoder;
use std::io::Write;
use tokio::time::Instant;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{BatchConfig, Compression};
use crate::model::TopicPartition;

/// Fixed memory a gzip encoder holds (deflate window, hash chains, pending buffer), measured for
/// zlib-rs at level 6 plus slack. Charged to the memory budget for every open gzip file.
pub const GZIP_ENCODER_OVERHEAD_BYTES: usize = 300 * 1024;

/// Why a file was closed. A small fixed set: it is a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushReason {
    /// Compressed size reached `max_bytes`.
    Size,
    /// Record count reached `max_records`.
    Records,
    /// First record older than `max_age_secs`.
    Age,
    /// No record for `idle_secs`.
    Idle,
    /// The memory budget forced it.
    Memory,
    /// Its partition is being revoked.
    Revoke,
    /// The worker is shutting down.
    Shutdown,
}

impl FlushReason {
    /// Every reason (to initialise metric series at zero).
    pub const ALL: [Self; 7] = [
        Self::Size,
        Self::Records,
        Self::Age,
        Self::Idle,
        Self::Memory,
        Self::Revoke,
        Self::Shutdown,
    ];

    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Records => "records",
            Self::Age => "age",
            Self::Idle => "idle",
            Self::Memory => "memory",
            Self::Revoke => "revoke",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Raw bytes a gzip file stages before they are compressed in one block: deflate works much
/// faster on large writes than on one small write per record, and a file that never grows past
/// this holds no encoder (about 300 KiB) at all until it is closed.
pub const STAGE_BYTES: usize = 64 * 1024;

enum Encoder {
    Plain(Vec<u8>),
    Gzip {
        level: u32,
        /// Raw lines not compressed yet.
        staging: Vec<u8>,
        /// Attached once the first block is compressed.
        enc: Option<Box<GzEncoder<Vec<u8>>>>,
    },
}

impl Encoder {
    /// Compressed (or, for plain files, final) bytes ready to be taken.
    fn out(&self) -> &[u8] {
        match self {
            Encoder::Plain(v) => v,
            Encoder::Gzip { enc: Some(g), .. } => g.get_ref(),
            Encoder::Gzip { enc: None, .. } => &[],
        }
    }

    /// Compresses the staged lines into the encoder (attaching it if needed), hashing them.
    fn compress_staging(&mut self, hash: &mut Xxh3) {
        if let Encoder::Gzip {
            level,
            staging,
            enc,
        } = self
        {
            hash.update(staging);
            let g = enc.get_or_insert_with(|| {
                Box::new(GzEncoder::new(Vec::new(), flate2::Compression::new(*level)))
            });
            // Writing into a Vec cannot fail.
            let _ = g.write_all(staging);
            staging.clear();
        }
    }
}

/// An open file being filled.
pub struct Batch {
    /// Its partition.
    pub tp: TopicPartition,
    /// First offset written.
    pub first_offset: i64,
    /// Last offset written.
    pub last_offset: i64,
    /// Records written.
    pub records: u64,
    /// Uncompressed bytes written (lines plus newlines).
    pub raw_bytes: u64,
    /// Event time of the first record, for first-event dating.
    pub first_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Bytes already taken out as parts.
    pub taken_bytes: u64,
    created: Instant,
    last_write: Instant,
    enc: Encoder,
    hash: Xxh3,
}

impl Batch {
    /// Opens a file with its first record's position.
    pub fn new(
        tp: TopicPartition,
        first_offset: i64,
        compression: Compression,
        now: Instant,
    ) -> Self {
        let enc = match compression {
            Compression::None => Encoder::Plain(Vec::new()),
            Compression::Gzip { level } => Encoder::Gzip {
                level,
                staging: Vec::new(),
                enc: None,
            },
        };
        Self {
            tp,
            first_offset,
            last_offset: first_offset,
            records: 0,
            raw_bytes: 0,
            first_time: None,
            taken_bytes: 0,
            created: now,
            last_write: now,
            enc,
            hash: Xxh3::new(),
        }
    }

    /// Appends one line (a newline is added).
    pub fn append(&mut self, offset: i64, line: &[u8], now: Instant) {
        match &mut self.enc {
            Encoder::Plain(v) => {
                v.extend_from_slice(line);
                v.push(b'\n');
            }
            Encoder::Gzip { staging, .. } => {
                staging.extend_from_slice(line);
                staging.push(b'\n');
                if staging.len() >= STAGE_BYTES {
                    self.enc.compress_staging(&mut self.hash);
                }
            }
        }
        self.last_offset = offset;
        self.records += 1;
        self.raw_bytes += line.len() as u64 + 1;
        self.last_write = now;
    }

    /// Compressed bytes produced so far (taken parts included; staged lines not yet).
    pub fn compressed_bytes(&self) -> u64 {
        self.taken_bytes + self.enc.out().len() as u64
    }

    /// Compressed bytes currently held in memory, ready to be taken as a part.
    pub fn buffered_bytes(&self) -> usize {
        self.enc.out().len()
    }

    /// Memory this batch holds: buffer capacities plus encoder state, if attached.
    pub fn memory_bytes(&self) -> usize {
        match &self.enc {
            Encoder::Plain(v) => v.capacity(),
            Encoder::Gzip { staging, enc, .. } => {
                staging.capacity()
                    + enc
                        .as_ref()
                        .map_or(0, |g| g.get_ref().capacity() + GZIP_ENCODER_OVERHEAD_BYTES)
            }
        }
    }

    /// Takes the compressed bytes produced so far (for a multipart part).
    pub fn take_part(&mut self) -> Bytes {
        let buf = match &mut self.enc {
            Encoder::Plain(v) => {
                self.hash.update(v);
                v
            }
            Encoder::Gzip { enc: Some(g), .. } => g.get_mut(),
            Encoder::Gzip { enc: None, .. } => return Bytes::new(),
        };
        let cap = buf.capacity();
        let taken = std::mem::replace(buf, Vec::with_capacity(cap.min(1 << 20)));
        self.taken_bytes += taken.len() as u64;
        Bytes::from(taken)
    }

    /// Closes the stream and returns the remaining bytes and the content hash (xxh3-128 of
    /// every uncompressed byte of the file).
    pub fn finish(mut self) -> (Bytes, u128) {
        self.enc.compress_staging(&mut self.hash);
        if let Encoder::Plain(v) = &self.enc {
            self.hash.update(v);
        }
        let hash = self.hash.digest128();
        let v = match self.enc {
            Encoder::Plain(v) => v,
            // Finishing into a Vec cannot fail; an error would only mean no trailer was written.
            Encoder::Gzip { enc: Some(g), .. } => g.finish().unwrap_or_default(),
            Encoder::Gzip { enc: None, .. } => Vec::new(),
        };
        (Bytes::from(v), hash)
    }

    /// The size or record limit this batch has reached, if any (checked after each append).
    pub fn full(&self, cfg: &BatchConfig) -> Option<FlushReason> {
        if self.records >= cfg.max_records {
            Some(FlushReason::Records)
        } else if self.compressed_bytes() >= cfg.max_bytes {
            Some(FlushReason::Size)
        } else {
            None
        }
    }

    /// The age or idle limit this batch has passed at `now`, if any.
    pub fn expired(&self, cfg: &BatchConfig, now: Instant) -> Option<FlushReason> {
        if now.duration_since(self.created) >= cfg.max_age {
            Some(FlushReason::Age)
        } else if now.duration_since(self.last_write) >= cfg.idle {
            Some(FlushReason::Idle)
        } else {
            None
        }
    }

    /// When this batch will next expire (age or idle), for the pipeline's timer.
    pub fn next_deadline(&self, cfg: &BatchConfig) -> Instant {
        (self.created + cfg.max_age).min(self.last_write + cfg.idle)
    }

    /// When the batch was opened.
    pub fn created(&self) -> Instant {
        self.created
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;
    use std::time::Duration;

    fn cfg() -> BatchConfig {
        BatchConfig {
            compression: Compression::Gzip { level: 6 },
            max_bytes: 1 << 20,
            max_records: 3,
            max_age: Duration::from_secs(60),
            idle: Duration::from_secs(10),
            max_record_bytes: None,
            deterministic: false,
        }
    }

    fn gunzip(b: &[u8]) -> String {
        let mut s = String::new();
        MultiGzDecoder::new(b).read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn parts_and_tail_form_one_gzip_stream() {
        let now = Instant::now();
        let mut b = Batch::new(
            TopicPartition::new("t", 0),
            10,
            Compression::Gzip { level: 6 },
            now,
        );
        let mut all = Vec::new();
        for i in 0..1000 {
            b.append(10 + i, format!("{{\"i\":{i}}}").as_bytes(), now);
            if i % 300 == 299 {
                all.extend_from_slice(&b.take_part());
            }
        }
        assert_eq!(b.records, 1000);
        assert_eq!(b.last_offset, 1009);
        let compressed = b.compressed_bytes();
        let (tail, hash) = b.finish();
        all.extend_from_slice(&tail);
        assert!(all.len() as u64 >= compressed);
        let text = gunzip(&all);
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().nth(999), Some("{\"i\":999}"));
        assert_eq!(hash, xxhash_rust::xxh3::xxh3_128(text.as_bytes()));
    }

    #[test]
    fn content_hash_ignores_compression_and_part_boundaries() {
        let now = Instant::now();
        let tp = TopicPartition::new("t", 0);
        let fill = |compression, part_every: i64| {
            let mut b = Batch::new(tp.clone(), 0, compression, now);
            for i in 0..5000 {
                b.append(
                    i,
                    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)).as_bytes(),
                    now,
                );
                if i % part_every == part_every - 1 {
                    b.take_part();
                }
            }
            b.finish().1
        };
        let gz = fill(Compression::Gzip { level: 6 }, 1700);
        assert_eq!(gz, fill(Compression::Gzip { level: 1 }, 900));
        assert_eq!(gz, fill(Compression::None, 1234));
        let mut other = Batch::new(tp.clone(), 0, Compression::None, now);
        other.append(0, b"{}", now);
        assert_ne!(gz, other.finish().1);
    }

    #[test]
    fn plain_batches_are_raw_ndjson() {
        let now = Instant::now();
        let mut b = Batch::new(TopicPartition::new("t", 0), 0, Compression::None, now);
        b.append(0, b"{}", now);
        b.append(1, b"{\"a\":1}", now);
        assert_eq!(b.raw_bytes, 11);
        assert_eq!(&b.finish().0[..], b"{}\n{\"a\":1}\n");
    }

    #[test]
    fn rotation_by_records_size_age_and_idle() {
        let t0 = Instant::now();
        let c = cfg();
        let mut b = Batch::new(TopicPartition::new("t", 0), 0, c.compression, t0);
        b.append(0, b"{}", t0);
        assert_eq!(b.full(&c), None);
        b.append(1, b"{}", t0);
        b.append(2, b"{}", t0);
        assert_eq!(b.full(&c), Some(FlushReason::Records));

        let small = BatchConfig {
            max_bytes: 1024,
            max_records: u64::MAX,
            ..c
        };
        let mut b = Batch::new(TopicPartition::new("t", 0), 0, Compression::None, t0);
        b.append(0, &[b'x'; 1100], t0);
        assert_eq!(b.full(&small), Some(FlushReason::Size));

        let mut b = Batch::new(TopicPartition::new("t", 0), 0, c.compression, t0);
        b.append(0, b"{}", t0);
        assert_eq!(b.expired(&c, t0 + Duration::from_secs(9)), None);
        assert_eq!(
            b.expired(&c, t0 + Duration::from_secs(10)),
            Some(FlushReason::Idle)
        );
        b.append(1, b"{}", t0 + Duration::from_secs(55));
        assert_eq!(b.expired(&c, t0 + Duration::from_secs(59)), None);
        assert_eq!(
            b.expired(&c, t0 + Duration::from_secs(60)),
            Some(FlushReason::Age)
        );
        assert_eq!(b.next_deadline(&c), t0 + Duration::from_secs(60));
    }

    #[test]
    fn memory_estimate_counts_encoder_state_once_attached() {
        let now = Instant::now();
        let tp = TopicPartition::new("t", 0);
        let mut b = Batch::new(tp.clone(), 0, Compression::Gzip { level: 6 }, now);
        b.append(0, b"{}", now);
        assert!(
            b.memory_bytes() < 1024,
            "small files stage raw lines, no encoder"
        );
        let line = vec![b'x'; 1000];
        for i in 1..100 {
            b.append(i, &line, now);
        }
        assert!(
            b.memory_bytes() >= GZIP_ENCODER_OVERHEAD_BYTES,
            "encoder attached past {STAGE_BYTES} bytes"
        );
        let p = Batch::new(tp, 0, Compression::None, now);
        assert_eq!(p.memory_bytes(), 0);
    }
}
