//! One open file: NDJSON lines of one destination, partition and folder, compressed as they
//! arrive, with the rotation policy (size, records, age, idle) and a memory estimate.
//!
//! Invariants: a batch holds records of exactly one topic-partition in offset order; its bytes
//! can be taken out in parts while it fills (the parts concatenated with the final bytes are one
//! gzip member); a file holds no deflate state (see [`EncoderPool`]); `memory_bytes` never under-counts what it holds; `content_hash` is the
//! xxh3-128 of the uncompressed bytes, so two files with the same lines have the same hash
//! whatever their compression (the uploader compares it when a key is already taken).

use bytes::Bytes;
use std::sync::Arc;

use ::parquet::file::metadata::ParquetMetaData;
use flate2::{Compress, Crc, FlushCompress, Status};
use tokio::time::Instant;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{BatchConfig, Compression};
pub use crate::model::FlushReason;
use crate::model::TopicPartition;

pub(crate) mod parquet;
mod zstd;
use self::parquet::ParquetFile;
use self::zstd::{SharedZstd, ZstdFile};

/// Fixed memory a gzip encoder holds (deflate window, hash chains, pending buffer), measured for
/// zlib-rs at level 6 plus slack. Charged to the memory budget once per worker and level
/// ([`EncoderPool::memory_bytes`]).
pub const GZIP_ENCODER_OVERHEAD_BYTES: usize = 300 * 1024;

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
/// partition; with live traffic most of them go into its current folder), the stream simply
/// goes on: no reset, no preset dictionary, the block compressed exactly as in one continuous
/// stream. With hundreds of files filling at once nearly every block pays the reset and the
/// 32 KiB dictionary, which costs instructions but no measurable time; several encoders per
/// level would let too few blocks go on to pay for themselves, so the pool keeps one
/// (BENCHMARKS.md, "Measured and kept" and "Measured and not kept").
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
    /// The one-shot zstd contexts (see `batch/zstd.rs`).
    zstd: SharedZstd,
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
        self.encoders.len() * GZIP_ENCODER_OVERHEAD_BYTES
            + self.spare.len() * STAGE_BYTES
            + self.zstd.memory_bytes()
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
    Zstd {
        /// Raw lines not compressed yet.
        staging: Vec<u8>,
        /// The frame so far.
        out: Vec<u8>,
        /// Its compression state.
        file: ZstdFile,
    },
    /// A Parquet file (boxed: its writer is large).
    Parquet(Box<ParquetFile>),
}

impl Encoder {
    /// Compressed (or, for plain files, final) bytes ready to be taken.
    fn out(&self) -> &[u8] {
        match self {
            Encoder::Plain(v) | Encoder::Gzip { out: v, .. } | Encoder::Zstd { out: v, .. } => v,
            Encoder::Parquet(p) => p.out(),
        }
    }

    /// The raw lines waiting for compression (none for plain files).
    fn staging(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            Encoder::Plain(_) | Encoder::Parquet(_) => None,
            Encoder::Gzip { staging, .. } | Encoder::Zstd { staging, .. } => Some(staging),
        }
    }

    /// Compresses the staged lines as one block, hashing them; `last` ends the gzip member.
    fn compress_staging(&mut self, hash: &mut Xxh3, pool: &mut EncoderPool, last: bool) {
        if let Encoder::Zstd { staging, out, file } = self {
            if staging.is_empty() && !last {
                return;
            }
            hash.update(staging);
            file.compress(&mut pool.zstd, staging, out, last);
            staging.clear();
            return;
        }
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
    /// The sanitised values of the folder template's `{field:…}` placeholders (every record of
    /// the file has the same).
    pub folder_values: Vec<String>,
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
            Compression::Zstd { level } => Encoder::Zstd {
                staging: Vec::new(),
                out: Vec::new(),
                file: ZstdFile::new(level),
            },
        };
        Self {
            tp,
            first_offset,
            last_offset: first_offset,
            records: 0,
            raw_bytes: 0,
            first_time: None,
            folder_values: Vec::new(),
            taken_bytes: 0,
            created: now,
            last_write: now,
            enc,
            hash: Xxh3::new(),
        }
    }

    /// Opens a Parquet file of `cfg`'s schema with its first record's position.
    pub fn new_parquet(
        tp: TopicPartition,
        first_offset: i64,
        cfg: std::sync::Arc<crate::config::ParquetConfig>,
        now: Instant,
    ) -> Self {
        let mut b = Self::new(tp, first_offset, Compression::None, now);
        b.enc = Encoder::Parquet(Box::new(ParquetFile::new(cfg)));
        b
    }

    /// Appends one record's row to a Parquet file: its declared cells, its line (the raw
    /// column) and its Kafka metadata. (An NDJSON file takes the line, as [`Batch::append`].)
    pub fn append_row(
        &mut self,
        rec: &crate::model::Record,
        line: &[u8],
        row: &[crate::model::Cell<'_>],
        now: Instant,
        pool: &mut EncoderPool,
    ) {
        match &mut self.enc {
            Encoder::Parquet(p) => {
                p.append(rec, line, row);
                self.counted(rec.offset, line.len(), now);
            }
            _ => self.append(rec.offset, line, now, pool),
        }
    }

    fn counted(&mut self, offset: i64, line_len: usize, now: Instant) {
        self.last_offset = offset;
        self.records += 1;
        self.raw_bytes += line_len as u64 + 1;
        self.last_write = now;
    }

    /// Appends one line (a newline is added); a full staging block is compressed with an
    /// encoder from `pool`.
    pub fn append(&mut self, offset: i64, line: &[u8], now: Instant, pool: &mut EncoderPool) {
        match &mut self.enc {
            Encoder::Parquet(_) => {
                // The pipeline appends rows (`append_row`); a bare line has no cells.
                debug_assert!(false, "a Parquet file takes rows (append_row)");
                tracing::error!(
                    offset,
                    "a line without its row was appended to a Parquet file; not written"
                );
                return;
            }
            Encoder::Plain(v) => {
                v.extend_from_slice(line);
                v.push(b'\n');
            }
            Encoder::Gzip { staging, .. } | Encoder::Zstd { staging, .. } => {
                // Compressed before it would outgrow the block (more only for a single longer
                // line). The buffer grows by doubling, so a file fed slowly (an older hour's
                // folder that gets a late event now and then) holds about what it staged; the
                // last step takes a whole block instead, mapped already if it is a spare.
                let need = line.len() + 1;
                if !staging.is_empty() && staging.len() + need > STAGE_BYTES {
                    self.enc.compress_staging(&mut self.hash, pool, false);
                }
                if let Some(staging) = self.enc.staging() {
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
        self.counted(offset, line.len(), now);
    }

    /// Compressed bytes produced so far (taken parts included; staged lines not yet). For
    /// Parquet, the estimated file size (with the open row group and buffered rows).
    pub fn compressed_bytes(&self) -> u64 {
        match &self.enc {
            Encoder::Parquet(p) => p.estimated_bytes(),
            _ => self.taken_bytes + self.enc.out().len() as u64,
        }
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
            Encoder::Zstd { staging, out, file } => {
                staging.capacity() + out.capacity() + file.memory_bytes()
            }
            Encoder::Parquet(p) => p.memory_bytes(),
        }
    }

    /// Takes the compressed bytes produced so far (for a multipart part).
    pub fn take_part(&mut self) -> Bytes {
        let buf = match &mut self.enc {
            Encoder::Plain(v) => {
                self.hash.update(v);
                v
            }
            Encoder::Gzip { out, .. } | Encoder::Zstd { out, .. } => out,
            Encoder::Parquet(p) => {
                // The content hash of a Parquet file covers its bytes (see `finish`).
                let taken = p.take();
                self.hash.update(&taken);
                self.taken_bytes += taken.len() as u64;
                return Bytes::from(taken);
            }
        };
        let cap = buf.capacity();
        let taken = std::mem::replace(buf, Vec::with_capacity(cap.min(1 << 20)));
        self.taken_bytes += taken.len() as u64;
        Bytes::from(taken)
    }

    /// Closes the stream and returns the remaining bytes and the content hash (xxh3-128 of
    /// every uncompressed byte of the file; of a Parquet file, of its bytes, which its rows
    /// determine); the encoder goes back to `pool`.
    pub fn finish(self, pool: &mut EncoderPool) -> (Bytes, u128) {
        let (body, hash, _) = self.finish_with_footer(pool);
        (body, hash)
    }

    /// [`Self::finish`], with a Parquet file's footer as its writer produced it (None for
    /// NDJSON).
    pub fn finish_with_footer(
        mut self,
        pool: &mut EncoderPool,
    ) -> (Bytes, u128, Option<Arc<ParquetMetaData>>) {
        if let Encoder::Parquet(p) = self.enc {
            let (rest, footer) = p.finish();
            self.hash.update(&rest);
            return (
                Bytes::from(rest),
                self.hash.digest128(),
                Some(Arc::new(footer)),
            );
        }
        self.enc.compress_staging(&mut self.hash, pool, true);
        if let Encoder::Plain(v) = &self.enc {
            self.hash.update(v);
        }
        let hash = self.hash.digest128();
        let mut v = match self.enc {
            Encoder::Plain(v) => v,
            Encoder::Gzip { out, staging, .. } | Encoder::Zstd { out, staging, .. } => {
                pool.give_back(staging);
                out
            }
            Encoder::Parquet(_) => Vec::new(), // finished above
        };
        // The body waits for upload counted by its length: give back what growth over-reserved.
        if v.capacity() - v.len() > v.len() / 8 {
            v.shrink_to_fit();
        }
        (Bytes::from(v), hash, None)
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

    /// Whether this is a Parquet file.
    pub fn is_parquet(&self) -> bool {
        matches!(self.enc, Encoder::Parquet(_))
    }

    /// When the batch was opened.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// When the last record was appended.
    pub fn last_write(&self) -> Instant {
        self.last_write
    }
}

#[cfg(test)]
mod tests;
