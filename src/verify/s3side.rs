//! The S3 side of `verify`: lists every object under the destination's prefix (error folder
//! included), streams each one (gunzipped by its `.gz` suffix or gzip magic), and emits one
//! [`Entry`] per data line (topic/partition from the object's metadata, else from a default
//! template key), per error envelope (topic/partition from the envelope) and, for a Parquet
//! destination, per row of its data files (topic/partition/offset from the row's Kafka metadata
//! columns, see [`parquet`]).
//!
//! Invariants: only the [`ObjectSink`] trait is used (no SDK here); memory per object is a few
//! 64 KiB buffers whatever its size (the body is pumped through a bounded channel into a
//! blocking reader); every request has a timeout and a bounded number of attempts, and a body
//! that stalls fails the verification instead of hanging. Objects are numbered in listing order;
//! their keys are sent in that order so the collector can resolve indexes later.

use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::extsort::Entry;
use super::identity::{line_hash, parse_default_key, row_hash, Identifier};
use super::join::s3_aux;
use super::VerifyError;
use crate::sink::{meta_keys, ObjectBody, ObjectSink};

mod parquet;
mod retry;
mod tally;
pub use parquet::{read_rows, Row, RowColumns};
use retry::retry;
pub use tally::S3Tally;
use tally::{Kind, LineCounts, Outcome};

/// Topics being verified, by index.
#[derive(Debug, Clone, Default)]
pub struct TopicIndex {
    names: Vec<String>,
    by_name: HashMap<String, u32>,
}

impl TopicIndex {
    /// Index of the given topics, in order.
    pub fn new(topics: &[String]) -> Self {
        let mut t = Self::default();
        for name in topics {
            if !t.by_name.contains_key(name) {
                t.by_name.insert(name.clone(), t.names.len() as u32);
                t.names.push(name.clone());
            }
        }
        t
    }

    /// Index of `topic`, if verified.
    pub fn get(&self, topic: &str) -> Option<u32> {
        self.by_name.get(topic).copied()
    }

    /// Name of index `i`.
    pub fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("?", String::as_str)
    }

    /// Every topic, in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Where to read and how patiently.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Destination prefix (listed).
    pub prefix: String,
    /// Full error-folder prefix (`prefix + error_prefix`).
    pub error_prefix: String,
    /// Objects read at once.
    pub concurrency: usize,
    /// Per-request timeout, and longest wait for the next bytes of a body.
    pub request_timeout: Duration,
    /// Attempts per request.
    pub attempts: u32,
    /// How much of one object is read at most.
    pub limits: ReadLimits,
    /// For a Parquet destination: the columns that place its data files' rows.
    pub parquet: Option<RowColumns>,
    /// The data objects to read instead of listing `prefix` (an Iceberg table's data files of
    /// its current snapshot: files no snapshot references are not the table's); the error
    /// folder is listed either way.
    pub data_keys: Option<Vec<String>>,
}

/// What the collector receives, in order.
#[derive(Debug)]
pub enum Collected {
    /// The key of the next object index.
    Key(String),
    /// Entries of some object.
    Entries(Vec<Entry>),
}

const CHUNK_ENTRIES: usize = 4096;
const BODY_CHUNK: usize = 64 * 1024;

/// Lists and reads every object under `opts.prefix`, sending keys and entries to `out`.
pub async fn scan(
    sink: Arc<dyn ObjectSink>,
    opts: S3Options,
    ident: Arc<Identifier>,
    topics: Arc<TopicIndex>,
    out: mpsc::Sender<Collected>,
) -> Result<S3Tally, VerifyError> {
    let mut tally = S3Tally::default();
    let mut index = 0u64;
    let listed = match &opts.data_keys {
        None => opts.prefix.clone(),
        Some(keys) => {
            for page in keys.chunks(1000) {
                let page = page.to_vec();
                read_page(
                    &*sink, &opts, &ident, &topics, &out, &mut index, page, &mut tally,
                )
                .await?;
            }
            opts.error_prefix.clone()
        }
    };
    let mut token: Option<String> = None;
    loop {
        let page = retry(&opts, "ListObjectsV2", &listed, || {
            sink.list(&listed, token.clone())
        })
        .await?;
        let keys = page.objects.into_iter().map(|o| o.key).collect();
        read_page(
            &*sink, &opts, &ident, &topics, &out, &mut index, keys, &mut tally,
        )
        .await?;
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    Ok(tally)
}

/// Reads the objects `keys` (numbered from `index` on), adding them to `tally`.
#[allow(clippy::too_many_arguments)]
async fn read_page(
    sink: &dyn ObjectSink,
    opts: &S3Options,
    ident: &Arc<Identifier>,
    topics: &Arc<TopicIndex>,
    out: &mpsc::Sender<Collected>,
    index: &mut u64,
    keys: Vec<String>,
    tally: &mut S3Tally,
) -> Result<(), VerifyError> {
    use futures::stream::{StreamExt, TryStreamExt};
    let mut jobs = Vec::with_capacity(keys.len());
    for key in keys {
        out.send(Collected::Key(key.clone()))
            .await
            .map_err(|_| VerifyError::Task("the S3 collector stopped".into()))?;
        jobs.push((*index, key));
        *index += 1;
    }
    tally.listed += jobs.len() as u64;
    let outcomes: Vec<Outcome> = futures::stream::iter(jobs)
        .map(|(i, key)| read_object(sink, opts, ident, topics, out, i, key))
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect()
        .await?;
    for o in outcomes {
        o.add_to(tally);
    }
    Ok(())
}

/// How the lines of an object are identified.
#[derive(Debug, Clone, Copy)]
enum Lines {
    /// Data lines of (topic index, partition).
    Data(u32, i32),
    /// Error envelopes.
    Envelopes,
    /// Rows of a Parquet file (each placed by its own columns).
    Rows,
}

async fn read_object(
    sink: &dyn ObjectSink,
    opts: &S3Options,
    ident: &Arc<Identifier>,
    topics: &Arc<TopicIndex>,
    out: &mpsc::Sender<Collected>,
    index: u64,
    key: String,
) -> Result<Outcome, VerifyError> {
    let mut outcome = Outcome {
        key: key.clone(),
        ..Outcome::default()
    };
    let Some(ObjectBody { head, body }) = retry(opts, "GetObject", &key, || sink.get(&key)).await?
    else {
        outcome.kind = Kind::Vanished;
        return Ok(outcome);
    };
    let lines = if key.starts_with(&opts.error_prefix) {
        Lines::Envelopes
    } else if opts.parquet.is_some() {
        Lines::Rows
    } else {
        let from_meta = match (
            head.user.get(meta_keys::TOPIC),
            head.user
                .get(meta_keys::PARTITION)
                .and_then(|p| p.parse().ok()),
        ) {
            (Some(t), Some(p)) => Some((t.clone(), p)),
            _ => None,
        };
        match from_meta.or_else(|| parse_default_key(&key)) {
            None => {
                outcome.kind = Kind::Unattributed;
                return Ok(outcome);
            }
            Some((topic, partition)) => match topics.get(&topic) {
                Some(t) => Lines::Data(t, partition),
                None => {
                    outcome.kind = Kind::OtherTopic;
                    return Ok(outcome);
                }
            },
        }
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let suffix = Suffix::of(&key);
    let limits = opts.limits;
    let row_columns = opts.parquet.clone();
    let (ident, topics, out) = (ident.clone(), topics.clone(), out.clone());
    let reader = tokio::task::spawn_blocking(move || {
        let mut emit = Emitter::new(index, lines, &ident, &topics, &out);
        let body = ChannelReader {
            rx,
            cur: Bytes::new(),
        };
        let r = match (lines, &row_columns) {
            (Lines::Rows, Some(cols)) => read_rows(body, limits.max_total, cols, |r| emit.row(r)),
            _ => read_lines(body, suffix, limits, |l| emit.line(l)),
        };
        let flushed = emit.flush();
        (r, flushed, emit.counts, emit.failed)
    });
    let pumped = pump(body, tx, opts.request_timeout, &key).await;
    let (read, flushed, counts, failed) = reader
        .await
        .map_err(|e| VerifyError::Task(format!("reading {key}: {e}")))?;
    // An envelope whose record could not be identified (the Schema Registry did not answer)
    // fails the run: its record would otherwise count as missing.
    if let Some(e) = failed {
        return Err(e);
    }
    // A transport failure fails the run (its lines were partly counted); a decoding failure
    // marks the object unreadable.
    pumped?;
    if !flushed {
        return Err(VerifyError::Task("the S3 collector stopped".into()));
    }
    outcome.lines = counts;
    if let Err(e) = read {
        outcome.unreadable = Some(e.to_string());
    }
    Ok(outcome)
}

/// Copies a body into the channel, failing if no bytes arrive for `stall`.
async fn pump(
    mut body: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    stall: Duration,
    key: &str,
) -> Result<(), VerifyError> {
    loop {
        let mut buf = BytesMut::with_capacity(BODY_CHUNK);
        let err = match tokio::time::timeout(stall, body.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {
                if tx.send(Ok(buf.freeze())).await.is_err() {
                    // The reader stopped (undecodable content): nothing more to read.
                    return Ok(());
                }
                continue;
            }
            Ok(Err(e)) => VerifyError::S3Body {
                key: key.to_string(),
                message: e.to_string(),
            },
            Err(_) => VerifyError::S3Body {
                key: key.to_string(),
                message: format!("no bytes for {} s", stall.as_secs()),
            },
        };
        let _ = tx.send(Err(io::Error::other("the S3 body failed"))).await;
        return Err(err);
    }
}

/// `Read` over the chunks the pump sends.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// How much of an object `verify` reads: what the destination's own objects can hold (see
/// `BatchConfig::max_object_raw_bytes` and `max_line_bytes`). Past it the object is reported
/// unreadable: a decompression bomb costs neither memory nor an endless read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Longest line, in uncompressed bytes.
    pub max_line: u64,
    /// Most uncompressed bytes of one object.
    pub max_total: u64,
}

impl ReadLimits {
    /// No limit (tests of well-formed data).
    pub const NONE: Self = Self {
        max_line: u64::MAX,
        max_total: u64::MAX,
    };
}

/// What an object's name says of its compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suffix {
    /// `.gz`.
    Gzip,
    /// `.zst`.
    Zstd,
    /// Anything else.
    Other,
}

impl Suffix {
    /// The suffix of `key`.
    pub fn of(key: &str) -> Self {
        if key.ends_with(".gz") {
            Self::Gzip
        } else if key.ends_with(".zst") {
            Self::Zstd
        } else {
            Self::Other
        }
    }
}

/// Calls `f` for every non-empty line of `r` (without its newline; a last line without one
/// counts too), gunzipping every member when the content starts with the gzip magic or the
/// suffix says gzip, and decoding every zstd frame when it starts with the zstd magic or the
/// suffix says zstd. Fails (the object is unreadable) past `limits`.
pub fn read_lines(
    r: impl Read,
    suffix: Suffix,
    limits: ReadLimits,
    mut f: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut r = BufReader::with_capacity(BODY_CHUNK, r);
    let head = r.fill_buf()?;
    let gzip = head.starts_with(&[0x1f, 0x8b]) || (suffix == Suffix::Gzip && !head.is_empty());
    let zstd =
        head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || (suffix == Suffix::Zstd && !head.is_empty());
    let mut lines: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::with_capacity(
            BODY_CHUNK,
            flate2::read::MultiGzDecoder::new(r),
        ))
    } else if zstd {
        Box::new(BufReader::with_capacity(
            BODY_CHUNK,
            zstd::stream::read::Decoder::with_buffer(r)?,
        ))
    } else {
        Box::new(r)
    };
    let mut line = Vec::new();
    let mut total: u64 = 0;
    loop {
        let buf = lines.fill_buf()?;
        if buf.is_empty() {
            if !line.is_empty() {
                f(&line);
            }
            return Ok(());
        }
        let (take, end) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        total += take as u64;
        if total > limits.max_total {
            return Err(io::Error::other(format!(
                "more than {} uncompressed bytes: not an object of this destination",
                limits.max_total
            )));
        }
        let content = &buf[..take - usize::from(end)];
        if (line.len() + content.len()) as u64 > limits.max_line {
            return Err(io::Error::other(format!(
                "a line longer than {} bytes: not an object of this destination",
                limits.max_line
            )));
        }
        line.extend_from_slice(content);
        lines.consume(take);
        if end {
            if !line.is_empty() {
                f(&line);
            }
            line.clear();
        }
    }
}

/// Turns lines into entries and sends them in chunks.
struct Emitter<'a> {
    index: u64,
    lines: Lines,
    ident: &'a Identifier,
    topics: &'a TopicIndex,
    out: &'a mpsc::Sender<Collected>,
    chunk: Vec<Entry>,
    counts: LineCounts,
    closed: bool,
    /// Why an envelope could not be identified; the lines after it are skipped.
    failed: Option<VerifyError>,
}

impl<'a> Emitter<'a> {
    fn new(
        index: u64,
        lines: Lines,
        ident: &'a Identifier,
        topics: &'a TopicIndex,
        out: &'a mpsc::Sender<Collected>,
    ) -> Self {
        Self {
            index,
            lines,
            ident,
            topics,
            out,
            chunk: Vec::new(),
            counts: LineCounts::default(),
            closed: false,
            failed: None,
        }
    }

    fn row(&mut self, row: Row<'_>) {
        let Some(topic) = self.topics.get(row.topic) else {
            self.counts.other_topic += 1;
            return;
        };
        self.counts.data += 1;
        self.push(Entry {
            topic,
            partition: row.partition,
            hash: row_hash(row.offset, row.raw),
            aux: s3_aux(self.index, false),
        });
    }

    fn line(&mut self, line: &[u8]) {
        let entry = match self.lines {
            Lines::Data(topic, partition) => {
                self.counts.data += 1;
                Entry {
                    topic,
                    partition,
                    hash: line_hash(line),
                    aux: s3_aux(self.index, false),
                }
            }
            Lines::Envelopes => {
                if self.failed.is_some() {
                    return;
                }
                let env = match self.ident.of_envelope(line) {
                    Ok(Some(env)) => env,
                    Ok(None) => {
                        self.counts.bad_envelopes += 1;
                        return;
                    }
                    Err(e) => {
                        self.failed = Some(e);
                        return;
                    }
                };
                let Some(topic) = self.topics.get(&env.tp.topic) else {
                    self.counts.other_topic += 1;
                    return;
                };
                self.counts.envelopes += 1;
                Entry {
                    topic,
                    partition: env.tp.partition,
                    hash: env.hash,
                    aux: s3_aux(self.index, true),
                }
            }
            Lines::Rows => return,
        };
        self.push(entry);
    }

    fn push(&mut self, entry: Entry) {
        self.chunk.push(entry);
        if self.chunk.len() >= CHUNK_ENTRIES {
            self.flush();
        }
    }

    /// Sends the pending chunk; false once the collector is gone.
    fn flush(&mut self) -> bool {
        if !self.chunk.is_empty() && !self.closed {
            let chunk = std::mem::take(&mut self.chunk);
            self.closed = self.out.blocking_send(Collected::Entries(chunk)).is_err();
        }
        !self.closed
    }
}

#[cfg(test)]
mod tests;
