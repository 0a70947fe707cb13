//! One open file: NDJSON lines of one destination, partition and folder, compressed as they
//! arrive, with the rotation policy (size, records, age, idle) and a memory estimate.
//!
//! Invariants: a batch holds records of exactly one topic-partition in offset order; its bytes
//! can be taken out in parts while it fills (the parts concatenated with the final bytes are one
//! gzip member); a file holds no deflate state (see [`EncoderPool`]); `memory_bytes` never under-counts what it holds; `content_hash` is the
//! xxh3-128 of the uncompressed bytes, so two files with the same lines have the same hash
//! whatever their compression (the uploader compares it when a key is already taken).

use bytes::Bytes;
use flate2::{Compress, Crc, FlushCompress, Status};
use tokio::time::Instant;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{BatchConfig, Compression};
use crate::model::TopicPartition;

/// Fixed memory a gzip encoder holds (deflate window, hash chains, pending buffer), measured for
/// zlib-rs at level 6 plus slack. Charged to the memory budget once per worker and level
/// ([`EncoderPool::memory_bytes`]).
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
/// faster on large writes than on one small write per record.
pub const STAGE_BYTES: usize = 256 * 1024;

/// Deflate's window: the most a preset dictionary can be used for.
const DICT_BYTES: usize = 32 * 1024;

/// gzip member header (RFC 1952): deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A worker's raw-deflate encoders, one per compression level, shared by all its files.
///
/// Each staged block of a file is compressed by the worker's encoder, reset first and given the
/// file's previous 32 KiB as preset dictionary, and ends with a sync flush (byte-aligned, not
/// final); the file's last block ends the deflate stream. Between one gzip header and one
/// CRC-32/size trailer the blocks form a single ordinary gzip member (pigz's layout; flate2 has
/// no writer for it). So no file holds a deflate state of its own (about 300 KiB), and the one
/// in use stays hot in the CPU caches: with an encoder per file, each block started on a cold
/// state, which cost about a sixth more CPU with dozens of files filling at once. Objects stay
/// within about 0.1 % of the size of one continuous stream (measured on the benchmark input).
///
/// When the encoder's last block was the same file's (a Kafka fetch hands over long runs of one
/// partition, most of them into its current folder), the stream simply goes on: no reset, no
/// preset dictionary, the block compressed exactly as in one continuous stream.
///
/// The pool also keeps a few spare staging blocks of finished files: a growing file's buffer
/// doubles up to half a block, then it takes a whole block, whose pages are already mapped if it
/// is a spare.
#[derive(Default)]
pub struct EncoderPool {
    /// Per level: the encoder and the file whose block it compressed last (sync-flushed, so its
    /// stream can go on).
    encoders: Vec<(u32, Compress, Option<u64>)>,
    /// Files handed out so far: each file's id among this pool's users.
    files: u64,
    /// Empty staging blocks of `STAGE_BYTES` capacity.
    spare: Vec<Vec<u8>>,
    /// Blocks compressed, and of them those that continued their file's stream (no reset, no
    /// dictionary).
    blocks: u64,
    continued: u64,
}

/// Spare staging blocks a pool keeps at most (memory counted in [`EncoderPool::memory_bytes`]).
const SPARE_BLOCKS: usize = 8;

impl EncoderPool {
    /// The encoder for `level`, ready for a block of `file`: reset, and whether the stream goes on
    /// from that file's previous block (then it must not be reset nor given a dictionary).
    fn for_file(&mut self, level: u32, file: u64) -> (&mut Compress, bool) {
        let i = match self.encoders.iter().position(|(l, _, _)| *l == level) {
            Some(i) => i,
            None => {
                let c = Compress::new(flate2::Compression::new(level), false);
                self.encoders.push((level, c, None));
                self.encoders.len() - 1
            }
        };
        let (_, enc, last) = &mut self.encoders[i];
        let goes_on = *last == Some(file);
        self.blocks += 1;
        if goes_on {
            self.continued += 1;
        } else {
            enc.reset();
        }
        *last = Some(file);
        (enc, goes_on)
    }

    /// A new file's id.
    fn next_file(&mut self) -> u64 {
        self.files += 1;
        self.files
    }

    /// An empty staging block (a spare one, or a new allocation).
    fn block(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(STAGE_BYTES))
    }

    /// Takes back a finished file's staging buffer if it is a whole block and room is left.
    fn give_back(&mut self, mut staging: Vec<u8>) {
        if staging.capacity() == STAGE_BYTES && self.spare.len() < SPARE_BLOCKS {
            staging.clear();
            self.spare.push(staging);
        }
    }

    /// Memory the encoders and spare blocks hold.
    pub fn memory_bytes(&self) -> usize {
        self.encoders.len() * GZIP_ENCODER_OVERHEAD_BYTES + self.spare.len() * STAGE_BYTES
    }
}

/// Free output space below which more is reserved before a deflate call. Reservations are sized
/// to the input (NDJSON deflates about 6:1) and the `Vec` grows by doubling beyond that, so a
/// small file's buffer stays small: thousands of them can wait for upload at once.
const OUT_MIN_SPARE: usize = 1024;

/// Runs `input` through `enc` into `out` (growing it as needed), ending with `flush`: `Sync`
/// (byte-aligned end, the stream goes on) or `Finish` (the stream's last block).
fn deflate_into(enc: &mut Compress, mut input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) {
    loop {
        if out.capacity() - out.len() < OUT_MIN_SPARE {
            out.reserve(input.len() / 4 + OUT_MIN_SPARE);
        }
        let (in_before, out_before) = (enc.total_in(), enc.total_out());
        let status = enc.compress_vec(input, out, flush);
        input = &input[(enc.total_in() - in_before) as usize..];
        let progressed = enc.total_in() != in_before || enc.total_out() != out_before;
        match status {
            // An error is impossible with a valid stream and output space; stop rather than spin.
            Ok(Status::StreamEnd) | Err(_) => return,
            // No progress with free output space: nothing is left to do.
            Ok(_) if !progressed => return,
            // A sync flush is complete once all input is taken and output space is left over.
            Ok(_)
                if flush != FlushCompress::Finish
                    && input.is_empty()
                    && out.len() < out.capacity() =>
            {
                return
            }
            Ok(_) => {}
        }
    }
}

enum Encoder {
    Plain(Vec<u8>),
    Gzip {
        level: u32,
        /// This file's id in the worker's [`EncoderPool`] (0: none yet).
        file: u64,
        /// Raw lines not compressed yet.
        staging: Vec<u8>,
        /// The gzip member so far (header, then compressed blocks).
        out: Vec<u8>,
        /// CRC-32 and length of every raw byte, for the trailer.
        crc: Crc,
        /// Whether the header was written (`out` may have been taken as parts since).
        started: bool,
        /// The last raw bytes compressed (up to the 32 KiB deflate window): the next block's
        /// preset dictionary, so blocks keep nearly the ratio of one continuous stream.
        dict: Vec<u8>,
    },
}

impl Encoder {
    /// Compressed (or, for plain files, final) bytes ready to be taken.
    fn out(&self) -> &[u8] {
        match self {
            Encoder::Plain(v) | Encoder::Gzip { out: v, .. } => v,
        }
    }

    /// Compresses the staged lines as one block, hashing them; `last` ends the gzip member.
    fn compress_staging(&mut self, hash: &mut Xxh3, pool: &mut EncoderPool, last: bool) {
        if let Encoder::Gzip {
            level,
            file,
            staging,
            out,
            crc,
            started,
            dict,
        } = self
        {
            if !*started {
                if staging.is_empty() {
                    return; // nothing was ever written: no member at all
                }
                out.extend_from_slice(&GZIP_HEADER);
                *started = true;
                *file = pool.next_file();
            }
            hash.update(staging);
            crc.update(staging);
            let flush = if last {
                FlushCompress::Finish
            } else {
                FlushCompress::Sync
            };
            let (enc, goes_on) = pool.for_file(*level, *file);
            if !goes_on && !dict.is_empty() {
                // Cannot fail on a freshly reset raw-deflate stream.
                let _ = enc.set_dictionary(dict);
            }
            deflate_into(enc, staging, out, flush);
            // (After the last block no file has this id any more, so no stream goes on from it.)
            if !last {
                let tail = staging.len().saturating_sub(DICT_BYTES);
                dict.clear();
                dict.extend_from_slice(&staging[tail..]);
            }
            staging.clear();
            if last {
                out.extend_from_slice(&crc.sum().to_le_bytes());
                out.extend_from_slice(&crc.amount().to_le_bytes());
            }
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
                file: 0,
                staging: Vec::new(),
                out: Vec::new(),
                crc: Crc::new(),
                started: false,
                dict: Vec::new(),
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

    /// Appends one line (a newline is added); a full staging block is compressed with an
    /// encoder from `pool`.
    pub fn append(&mut self, offset: i64, line: &[u8], now: Instant, pool: &mut EncoderPool) {
        match &mut self.enc {
            Encoder::Plain(v) => {
                v.extend_from_slice(line);
                v.push(b'\n');
            }
            Encoder::Gzip { staging, .. } => {
                // Compressed before it would outgrow the block (more only for a single longer
                // line). The buffer grows by doubling, so a file fed slowly (an older hour's
                // folder that gets a late event now and then) holds about what it staged; the
                // last step takes a whole block instead, mapped already if it is a spare.
                let need = line.len() + 1;
                if !staging.is_empty() && staging.len() + need > STAGE_BYTES {
                    self.enc.compress_staging(&mut self.hash, pool, false);
                }
                if let Encoder::Gzip { staging, .. } = &mut self.enc {
                    if staging.capacity() - staging.len() < need {
                        let want = (staging.capacity() * 2)
                            .min(STAGE_BYTES)
                            .max(staging.len() + need);
                        if want > STAGE_BYTES / 2 && want <= STAGE_BYTES {
                            let mut block = pool.block();
                            block.extend_from_slice(staging);
                            *staging = block;
                        } else {
                            staging.reserve_exact(want - staging.len());
                        }
                    }
                    staging.extend_from_slice(line);
                    staging.push(b'\n');
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
            Encoder::Gzip {
                staging, out, dict, ..
            } => staging.capacity() + out.capacity() + dict.capacity(),
        }
    }

    /// Takes the compressed bytes produced so far (for a multipart part).
    pub fn take_part(&mut self) -> Bytes {
        let buf = match &mut self.enc {
            Encoder::Plain(v) => {
                self.hash.update(v);
                v
            }
            Encoder::Gzip { out, .. } => out,
        };
        let cap = buf.capacity();
        let taken = std::mem::replace(buf, Vec::with_capacity(cap.min(1 << 20)));
        self.taken_bytes += taken.len() as u64;
        Bytes::from(taken)
    }

    /// Closes the stream and returns the remaining bytes and the content hash (xxh3-128 of
    /// every uncompressed byte of the file); the encoder goes back to `pool`.
    pub fn finish(mut self, pool: &mut EncoderPool) -> (Bytes, u128) {
        self.enc.compress_staging(&mut self.hash, pool, true);
        if let Encoder::Plain(v) = &self.enc {
            self.hash.update(v);
        }
        let hash = self.hash.digest128();
        let mut v = match self.enc {
            Encoder::Plain(v) => v,
            Encoder::Gzip { out, staging, .. } => {
                pool.give_back(staging);
                out
            }
        };
        // The body waits for upload counted by its length: give back what growth over-reserved.
        if v.capacity() - v.len() > v.len() / 8 {
            v.shrink_to_fit();
        }
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

    const GZ6: Compression = Compression::Gzip { level: 6 };

    fn pool() -> EncoderPool {
        EncoderPool::default()
    }

    fn gunzip(b: &[u8]) -> String {
        let mut s = String::new();
        MultiGzDecoder::new(b).read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn parts_and_tail_form_one_gzip_stream() {
        let mut p = pool();
        let now = Instant::now();
        let mut b = Batch::new(
            TopicPartition::new("t", 0),
            10,
            Compression::Gzip { level: 6 },
            now,
        );
        let mut all = Vec::new();
        for i in 0..1000 {
            b.append(10 + i, format!("{{\"i\":{i}}}").as_bytes(), now, &mut p);
            if i % 300 == 299 {
                all.extend_from_slice(&b.take_part());
            }
        }
        assert_eq!(b.records, 1000);
        assert_eq!(b.last_offset, 1009);
        let compressed = b.compressed_bytes();
        let (tail, hash) = b.finish(&mut p);
        all.extend_from_slice(&tail);
        assert!(all.len() as u64 >= compressed);
        let text = gunzip(&all);
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().nth(999), Some("{\"i\":999}"));
        assert_eq!(hash, xxhash_rust::xxh3::xxh3_128(text.as_bytes()));
    }

    #[test]
    fn content_hash_ignores_compression_and_part_boundaries() {
        let mut p = pool();
        let now = Instant::now();
        let tp = TopicPartition::new("t", 0);
        let mut fill = |compression, part_every: i64| {
            let mut b = Batch::new(tp.clone(), 0, compression, now);
            for i in 0..5000 {
                b.append(
                    i,
                    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)).as_bytes(),
                    now,
                    &mut p,
                );
                if i % part_every == part_every - 1 {
                    b.take_part();
                }
            }
            b.finish(&mut p).1
        };
        let gz = fill(Compression::Gzip { level: 6 }, 1700);
        assert_eq!(gz, fill(Compression::Gzip { level: 1 }, 900));
        assert_eq!(gz, fill(Compression::None, 1234));
        let mut p = pool();
        let mut other = Batch::new(tp.clone(), 0, Compression::None, now);
        other.append(0, b"{}", now, &mut p);
        assert_ne!(gz, other.finish(&mut p).1);
        // It is XXH3-128 (xxHash's reference values), so objects written by other versions
        // compare equal by content.
        let mut one = Batch::new(tp.clone(), 0, GZ6, now);
        one.append(0, br#"{"a":1}"#, now, &mut p);
        assert_eq!(
            one.finish(&mut p).1,
            0xde43_4053_3aee_6781_d69c_0a5c_48ed_9e2f
        );
        let empty = Batch::new(tp, 0, GZ6, now);
        assert_eq!(
            empty.finish(&mut p).1,
            0x99aa_06d3_0147_98d8_6001_c324_468d_497f
        );
    }

    #[test]
    fn plain_batches_are_raw_ndjson() {
        let mut p = pool();
        let now = Instant::now();
        let mut b = Batch::new(TopicPartition::new("t", 0), 0, Compression::None, now);
        b.append(0, b"{}", now, &mut p);
        b.append(1, b"{\"a\":1}", now, &mut p);
        assert_eq!(b.raw_bytes, 11);
        assert_eq!(&b.finish(&mut p).0[..], b"{}\n{\"a\":1}\n");
    }

    #[test]
    fn rotation_by_records_size_age_and_idle() {
        let mut p = pool();
        let t0 = Instant::now();
        let c = cfg();
        let mut b = Batch::new(TopicPartition::new("t", 0), 0, c.compression, t0);
        b.append(0, b"{}", t0, &mut p);
        assert_eq!(b.full(&c), None);
        b.append(1, b"{}", t0, &mut p);
        b.append(2, b"{}", t0, &mut p);
        assert_eq!(b.full(&c), Some(FlushReason::Records));

        let small = BatchConfig {
            max_bytes: 1024,
            max_records: u64::MAX,
            ..c
        };
        let mut b = Batch::new(TopicPartition::new("t", 0), 0, Compression::None, t0);
        b.append(0, &[b'x'; 1100], t0, &mut p);
        assert_eq!(b.full(&small), Some(FlushReason::Size));

        let mut b = Batch::new(TopicPartition::new("t", 0), 0, c.compression, t0);
        b.append(0, b"{}", t0, &mut p);
        assert_eq!(b.expired(&c, t0 + Duration::from_secs(9)), None);
        assert_eq!(
            b.expired(&c, t0 + Duration::from_secs(10)),
            Some(FlushReason::Idle)
        );
        b.append(1, b"{}", t0 + Duration::from_secs(55), &mut p);
        assert_eq!(b.expired(&c, t0 + Duration::from_secs(59)), None);
        assert_eq!(
            b.expired(&c, t0 + Duration::from_secs(60)),
            Some(FlushReason::Age)
        );
        assert_eq!(b.next_deadline(&c), t0 + Duration::from_secs(60));
    }

    #[test]
    fn memory_estimate_counts_what_a_file_holds_and_no_encoder() {
        let mut p = pool();
        let now = Instant::now();
        let tp = TopicPartition::new("t", 0);
        let mut b = Batch::new(tp.clone(), 0, Compression::Gzip { level: 6 }, now);
        b.append(0, b"{}", now, &mut p);
        assert!(
            b.memory_bytes() < 1024,
            "small files hold their raw lines only"
        );
        let line = vec![b'x'; 1000];
        for i in 1..=(2 * STAGE_BYTES / 1000) as i64 {
            b.append(i, &line, now, &mut p);
        }
        // Compressed blocks, the next block's dictionary and the staged lines; the deflate
        // state is the worker's, counted once in the pool.
        let m = b.memory_bytes();
        assert!(m >= b.buffered_bytes() + DICT_BYTES, "{m}");
        // (the output buffer is reserved a quarter of a block ahead)
        assert!(
            m <= STAGE_BYTES + DICT_BYTES + STAGE_BYTES / 4 + 4096,
            "{m}"
        );
        assert_eq!(p.memory_bytes(), GZIP_ENCODER_OVERHEAD_BYTES);
        let p = Batch::new(tp, 0, Compression::None, now);
        assert_eq!(p.memory_bytes(), 0);
    }

    #[test]
    fn interleaved_files_are_single_gzip_members_sharing_one_encoder() {
        let now = Instant::now();
        let mut p = pool();
        let line = |f: usize, i: i64| {
            format!(
                "{{\"file\":{f},\"i\":{i},\"pad\":\"{}\"}}",
                "y".repeat(200 + f)
            )
        };
        // Three files filled in turn, one record each, through one worker's encoder.
        let mut files: Vec<Batch> = (0..3)
            .map(|_| {
                Batch::new(
                    TopicPartition::new("t", 0),
                    0,
                    Compression::Gzip { level: 6 },
                    now,
                )
            })
            .collect();
        let n = 3 * STAGE_BYTES as i64 / 200;
        for i in 0..n {
            for (f, b) in files.iter_mut().enumerate() {
                b.append(i, line(f, i).as_bytes(), now, &mut p);
            }
        }
        assert_eq!(
            p.memory_bytes(),
            GZIP_ENCODER_OVERHEAD_BYTES,
            "one encoder per level"
        );
        for (f, b) in files.into_iter().enumerate() {
            let raw = b.raw_bytes;
            let (bytes, _) = b.finish(&mut p);
            // One member: a single-member decoder reads every byte and leaves nothing over.
            let mut d = flate2::read::GzDecoder::new(&bytes[..]);
            let mut text = String::new();
            d.read_to_string(&mut text).unwrap();
            assert!(
                d.into_inner().is_empty(),
                "file {f}: bytes after the first member"
            );
            assert_eq!(text.len() as u64, raw);
            assert_eq!(text.lines().count() as i64, n);
            assert_eq!(text.lines().last(), Some(line(f, n - 1).as_str()));
            // The preset dictionary keeps the ratio of one continuous stream (within 1 %).
            let mut whole = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            std::io::Write::write_all(&mut whole, text.as_bytes()).unwrap();
            let whole = whole.finish().unwrap().len();
            assert!(
                bytes.len() * 100 <= whole * 101,
                "{} vs {whole}",
                bytes.len()
            );
        }
        // Another level gets its own encoder.
        let mut b = Batch::new(
            TopicPartition::new("t", 0),
            0,
            Compression::Gzip { level: 1 },
            now,
        );
        b.append(0, b"{}", now, &mut p);
        assert_eq!(gunzip(&b.finish(&mut p).0), "{}\n");
        // (plus the three finished files' staging blocks, kept as spares)
        assert_eq!(
            p.memory_bytes(),
            2 * GZIP_ENCODER_OVERHEAD_BYTES + 3 * STAGE_BYTES
        );
    }

    /// Appends 1,000-byte lines to `batch` until it holds `bytes` more raw bytes.
    fn fill_to(p: &mut EncoderPool, batch: &mut Batch, byte: u8, bytes: usize) {
        let line = vec![byte; 999];
        let end = batch.raw_bytes + bytes as u64;
        while batch.raw_bytes < end {
            batch.append(batch.records as i64, &line, Instant::now(), p);
        }
    }

    #[test]
    fn a_slowly_fed_file_holds_about_what_it_staged() {
        let mut p = pool();
        let now = Instant::now();
        let mut b = Batch::new(TopicPartition::new("t", 0), 0, GZ6, now);
        fill_to(&mut p, &mut b, b'x', 40_000);
        // Doubling from the first line's size: under twice the lines, no whole block, no
        // block compressed yet.
        assert!(b.memory_bytes() < 80_000, "{}", b.memory_bytes());
        assert_eq!(p.blocks, 0);
        fill_to(&mut p, &mut b, b'x', 200_000);
        assert_eq!(b.memory_bytes(), STAGE_BYTES, "then a whole block");
        assert_eq!(gunzip(&b.finish(&mut p).0).len(), 240_000);
    }

    #[test]
    fn a_file_whose_blocks_follow_each_other_continues_one_stream() {
        let now = Instant::now();
        let mut p = pool();
        let tp = TopicPartition::new("t", 0);
        let (mut a, mut b) = (
            Batch::new(tp.clone(), 0, GZ6, now),
            Batch::new(tp, 0, GZ6, now),
        );
        // A's blocks back to back (the stream goes on), then B's (reset), then A's again: the
        // first after B's resets and takes A's dictionary, the next ones go on.
        fill_to(&mut p, &mut a, b'a', 600_000);
        let (b1, c1) = (p.blocks, p.continued);
        assert!(b1 >= 2, "{b1}");
        assert_eq!(c1, b1 - 1, "each of A's blocks after its first went on");
        fill_to(&mut p, &mut b, b'b', 300_000);
        let (b2, c2) = (p.blocks, p.continued);
        assert!(b2 - b1 >= 1, "{b2}");
        assert_eq!(c2 - c1, b2 - b1 - 1, "B's first block did not go on");
        fill_to(&mut p, &mut a, b'c', 600_000);
        let (b3, c3) = (p.blocks, p.continued);
        assert_eq!(c3 - c2, b3 - b2 - 1, "A's first block after B's did not");
        let want = |parts: &[(u8, u64)]| {
            let mut w = String::new();
            for &(c, n) in parts {
                for _ in 0..n {
                    w.push_str(&String::from_utf8(vec![c; 999]).unwrap());
                    w.push('\n');
                }
            }
            w
        };
        let (ab, _) = a.finish(&mut p);
        let (bb, _) = b.finish(&mut p);
        assert_eq!(gunzip(&ab), want(&[(b'a', 600), (b'c', 600)]));
        assert_eq!(gunzip(&bb), want(&[(b'b', 300)]));
        let mut d = flate2::read::GzDecoder::new(&ab[..]);
        std::io::Read::read_to_end(&mut d, &mut Vec::new()).unwrap();
        assert!(d.into_inner().is_empty(), "one member");
    }

    #[test]
    fn a_finished_files_block_is_taken_by_the_next_growing_file() {
        let now = Instant::now();
        let mut p = pool();
        let tp = TopicPartition::new("t", 0);
        let mut a = Batch::new(tp.clone(), 0, GZ6, now);
        fill_to(&mut p, &mut a, b'a', 600_000);
        assert!(
            a.memory_bytes() >= STAGE_BYTES,
            "past half a block a file stages a whole one"
        );
        let _ = a.finish(&mut p);
        assert_eq!(p.spare.len(), 1);
        assert_eq!(p.memory_bytes(), GZIP_ENCODER_OVERHEAD_BYTES + STAGE_BYTES);
        let mut b = Batch::new(tp.clone(), 0, GZ6, now);
        b.append(0, b"{}", now, &mut p);
        assert_eq!(p.spare.len(), 1, "a small file stays small");
        fill_to(&mut p, &mut b, b'b', 100_000);
        assert_eq!(p.spare.len(), 1, "so does one of 100 KB");
        fill_to(&mut p, &mut b, b'b', 500_000);
        assert_eq!(p.spare.len(), 0, "past half a block it takes the spare");
        assert_eq!(gunzip(&b.finish(&mut p).0).len(), 3 + 600_000);
        // At most SPARE_BLOCKS wait.
        let many: Vec<Batch> = (0..SPARE_BLOCKS + 2)
            .map(|_| {
                let mut f = Batch::new(tp.clone(), 0, GZ6, now);
                fill_to(&mut p, &mut f, b'c', 600_000);
                f
            })
            .collect();
        for f in many {
            let _ = f.finish(&mut p);
        }
        assert_eq!(p.spare.len(), SPARE_BLOCKS);
    }
}
