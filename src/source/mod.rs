//! The source seam: what the pipeline workers receive from Kafka and what they send back.
//!
//! Partitions are sharded over workers ([`shard_of`]); each worker has its own channels.
//! Records arrive in chunks on a bounded channel (its fullness is the backpressure signal: the
//! Kafka thread pauses its partitions). Assignment changes arrive on a separate control channel
//! that the worker always reads first. Commits go back as [`Command`]s on one channel shared by
//! all workers. Only [`kafka`] (the consumer-group source, with `fetch_queue`, its batch reads
//! through librdkafka's C API) and [`reader`] (read-only range reads for `verify`) know rdkafka;
//! tests and benchmarks drive workers through these channels alone.

mod fetch_queue;
pub mod kafka;
pub mod msk_iam;
pub mod reader;
pub mod replay;

use std::sync::mpsc as std_mpsc;
use tokio::sync::oneshot;

use crate::model::json::{put_bytes, write_str};
use crate::model::{Record, TopicPartition};

/// Offsets to commit: (partition, next offset to read).
pub type Offsets = Vec<(TopicPartition, i64)>;

/// Assignment changes, sent by the Kafka thread.
#[derive(Debug)]
pub enum Control {
    /// Partitions were assigned; their records follow on the data channel.
    Assigned(Vec<TopicPartition>),
    /// Partitions are being revoked. The Kafka thread blocks until `reply` answers with the
    /// offsets to commit for them (synchronously) before it releases them.
    Revoke {
        /// The partitions.
        partitions: Vec<TopicPartition>,
        /// Where to send the final offsets of the revoked partitions.
        reply: std_mpsc::SyncSender<Offsets>,
    },
    /// The consumer failed in a way it cannot recover from.
    Fatal(ConsumerError),
}

/// Why the source failed for good.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsumerError {
    /// librdkafka gave no queue to read the consumer's messages from.
    #[error("librdkafka gave no queue for the consumer's messages")]
    NoQueue,
    /// A fatal consumer error (credentials, authorization, librdkafka's fatal state).
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Kafka thread stopped handing over records (it ended or panicked).
    #[error("the kafka thread stopped")]
    Stopped,
}

/// Requests from the pipeline to the Kafka thread.
#[derive(Debug)]
pub enum Command {
    /// Commit these offsets (asynchronously).
    Commit(Offsets),
    /// Worker `shard` is stopping: commit these offsets synchronously. Once every worker has
    /// sent this (or dropped its channels), the consumer leaves the group, stops, and every
    /// `done` is answered.
    Shutdown {
        /// The worker.
        shard: usize,
        /// Final offsets.
        offsets: Offsets,
        /// Answered once the consumer is closed.
        done: oneshot::Sender<()>,
    },
}

/// The pipeline's ends of the source channels.
pub struct SourceIo {
    /// Record chunks.
    pub data: tokio::sync::mpsc::Receiver<Vec<Record>>,
    /// Assignment changes.
    pub control: tokio::sync::mpsc::UnboundedReceiver<Control>,
    /// Commits and shutdown.
    pub commands: std_mpsc::Sender<Command>,
}

/// The source's ends of every worker's channels.
pub struct ShardSenders {
    /// Record chunks, per worker.
    pub data: Vec<tokio::sync::mpsc::Sender<Vec<Record>>>,
    /// Assignment changes, per worker.
    pub control: Vec<tokio::sync::mpsc::UnboundedSender<Control>>,
}

/// Channels for `shards` workers: the source's ends, the workers' ends, and the command
/// receiver the source reads. `capacity` is in chunks per worker.
pub fn channels(
    shards: usize,
    capacity: usize,
) -> (ShardSenders, Vec<SourceIo>, std_mpsc::Receiver<Command>) {
    let (cmd_tx, cmd_rx) = std_mpsc::channel();
    let mut senders = ShardSenders {
        data: Vec::new(),
        control: Vec::new(),
    };
    let mut ios = Vec::new();
    for _ in 0..shards.max(1) {
        let (data_tx, data) = tokio::sync::mpsc::channel(capacity.max(1));
        // Unbounded, yet it holds at most a few messages per rebalance: the Kafka thread sends
        // one `Assigned` per assignment and one `Revoke` per revocation, and then blocks until
        // the worker answers the revoke; `Fatal` is sent once before the thread stops. The
        // thread must never block on a full channel inside librdkafka's rebalance callback.
        let (control_tx, control) = tokio::sync::mpsc::unbounded_channel();
        senders.data.push(data_tx);
        senders.control.push(control_tx);
        ios.push(SourceIo {
            data,
            control,
            commands: cmd_tx.clone(),
        });
    }
    (senders, ios, cmd_rx)
}

/// Builds chunks of records whose keys and values share one buffer: the source copies each
/// payload once into it, and a worker drops a record with an atomic decrement instead of a
/// `free` of memory another thread allocated. When the last record of a chunk is dropped, its
/// buffer goes back to the builder's [`BufferPool`] and the next chunk is written into it, so
/// the pages stay mapped: a fresh buffer per chunk cost the Kafka thread a page fault (mapping
/// and zeroing) per 4 KiB of records, and the workers an unmap.
#[derive(Debug, Default)]
pub struct ChunkBuilder {
    buf: Vec<u8>,
    metas: Vec<Meta>,
    /// Bytes of the last chunk: how much to reserve for the next.
    last_bytes: usize,
    pool: BufferPool,
}

#[derive(Debug)]
struct Meta {
    tp: TopicPartition,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
    headers: Option<(usize, usize)>,
}

/// Chunk buffers whose records were all dropped, waiting to be written again. Bounded: at most
/// [`BufferPool::KEEP`] buffers of at most [`BufferPool::MAX_KEPT_BYTES`] wait (others are freed),
/// so an idle source holds a few MiB at most.
#[derive(Debug, Clone, Default)]
pub struct BufferPool {
    free: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl BufferPool {
    /// Buffers kept for reuse at most.
    pub const KEEP: usize = 4;
    /// Largest buffer kept (a chunk of unusually large records is freed, not kept).
    pub const MAX_KEPT_BYTES: usize = 8 << 20;

    /// An empty buffer of at least `capacity` bytes, reused if one is free.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        let mut v = reused.unwrap_or_default();
        v.clear();
        v.reserve(capacity);
        v
    }

    fn give_back(&self, v: Vec<u8>) {
        if v.capacity() == 0 || v.capacity() > Self::MAX_KEPT_BYTES {
            return;
        }
        if let Ok(mut f) = self.free.lock() {
            if f.len() < Self::KEEP {
                f.push(v);
            }
        }
    }

    /// Buffers waiting for reuse.
    pub fn free_buffers(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

/// A chunk's buffer, shared by its records' `Bytes`; back to its pool when the last is dropped.
struct PooledBuffer {
    data: Vec<u8>,
    pool: BufferPool,
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.data));
    }
}

impl ChunkBuilder {
    /// An empty chunk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// The pool this builder's buffers return to.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn copy(&mut self, bytes: Option<&[u8]>) -> Option<(usize, usize)> {
        bytes.map(|b| {
            if self.buf.capacity() == 0 {
                self.buf = self.pool.take(b.len().max(self.last_bytes));
            }
            let start = self.buf.len();
            self.buf.extend_from_slice(b);
            (start, self.buf.len())
        })
    }

    /// Adds a record, copying its key and value.
    pub fn push(
        &mut self,
        tp: TopicPartition,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) {
        self.push_with_headers(tp, offset, timestamp_ms, key, value, None);
    }

    /// Adds a record with its headers (a JSON array, see [`Record::headers`]), copying them.
    pub fn push_with_headers(
        &mut self,
        tp: TopicPartition,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<&[u8]>,
    ) {
        let key = self.copy(key);
        let value = self.copy(value);
        let headers = self.copy(headers);
        self.metas.push(Meta {
            tp,
            offset,
            timestamp_ms,
            key,
            value,
            headers,
        });
    }

    /// The records so far, their keys and values slices of one shared buffer; the builder is
    /// empty again.
    pub fn finish(&mut self) -> Vec<Record> {
        self.last_bytes = self.buf.len();
        let buf = bytes::Bytes::from_owner(PooledBuffer {
            data: std::mem::take(&mut self.buf),
            pool: self.pool.clone(),
        });
        self.metas
            .drain(..)
            .map(|m| Record {
                tp: m.tp,
                offset: m.offset,
                timestamp_ms: m.timestamp_ms,
                key: m.key.map(|(a, b)| buf.slice(a..b)),
                value: m.value.map(|(a, b)| buf.slice(a..b)),
                headers: m.headers.map(|(a, b)| buf.slice(a..b)),
            })
            .collect()
    }
}

/// The worker that owns a partition: stable for the life of the process, and spreading the
/// partitions of one topic evenly.
pub fn shard_of(tp: &TopicPartition, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    // FNV-1a of the topic name: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tp.topic.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h.wrapping_add(tp.partition as u64) % shards as u64) as usize
}

/// Groups partitions by the worker that owns them.
pub fn by_shard(parts: &[TopicPartition], shards: usize) -> Vec<Vec<TopicPartition>> {
    let mut out = vec![Vec::new(); shards.max(1)];
    for tp in parts {
        out[shard_of(tp, shards)].push(tp.clone());
    }
    out
}

/// A record's headers as a JSON array, `[{"key":"name","value":"text"}]`, in their order (a
/// name may repeat); a value is a string when it is valid UTF-8 and escaping does not grow it
/// past base64, `value_base64` otherwise, `null` for a null header (as in `envelope::error_line`).
pub fn headers_json<'a>(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Vec<u8> {
    let mut out = Vec::from(&b"["[..]);
    for (i, (name, value)) in headers.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"key\":");
        write_str(&mut out, name);
        put_bytes(&mut out, "value", value);
        out.push(b'}');
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_shares_one_buffer() {
        let mut c = ChunkBuilder::new();
        let tp = TopicPartition::new("t", 0);
        c.push(tp.clone(), 5, Some(1), Some(b"k"), Some(b"{\"a\":1}"));
        c.push(tp.clone(), 6, None, None, None);
        c.push(tp, 7, None, None, Some(b""));
        assert_eq!(c.len(), 3);
        let r = c.finish();
        assert!(c.is_empty());
        assert_eq!(r[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r[0].value.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(
            (r[1].offset, r[1].value.is_none(), r[1].key.is_none()),
            (6, true, true)
        );
        assert_eq!(
            r[2].value.as_deref(),
            Some(&b""[..]),
            "empty, not a tombstone"
        );
        assert_eq!(r[0].value_len(), 7);
    }

    #[test]
    fn a_chunk_buffer_is_reused_once_its_records_are_dropped() {
        let mut c = ChunkBuilder::new();
        let tp = TopicPartition::new("t", 0);
        c.push(tp.clone(), 0, None, None, Some(&[b'x'; 1000]));
        let first = c.finish();
        let first_ptr = first[0].value.as_ref().unwrap().as_ptr();
        assert_eq!(c.pool().free_buffers(), 0, "in use while a record lives");
        let kept = first[0].value.clone().unwrap();
        drop(first);
        assert_eq!(c.pool().free_buffers(), 0, "a slice still holds it");
        drop(kept);
        assert_eq!(c.pool().free_buffers(), 1);
        c.push(tp, 1, None, None, Some(&[b'y'; 1000]));
        let second = c.finish();
        assert_eq!(second[0].value.as_ref().unwrap().as_ptr(), first_ptr);
        assert_eq!(second[0].value.as_deref(), Some(&[b'y'; 1000][..]));
        drop(second);
        // The pool is bounded.
        let many: Vec<_> = (0..BufferPool::KEEP + 3)
            .map(|i| {
                c.push(
                    TopicPartition::new("t", 0),
                    i as i64,
                    None,
                    None,
                    Some(b"z"),
                );
                c.finish()
            })
            .collect();
        drop(many);
        assert_eq!(c.pool().free_buffers(), BufferPool::KEEP);
        // Nothing to keep from a chunk without bytes, nor from an outsized one.
        let pool = BufferPool::default();
        pool.give_back(Vec::new());
        pool.give_back(Vec::with_capacity(BufferPool::MAX_KEPT_BYTES + 1));
        assert_eq!(pool.free_buffers(), 0);
    }

    #[test]
    fn partitions_of_a_topic_spread_evenly_and_stably() {
        let parts: Vec<TopicPartition> = (0..8).map(|p| TopicPartition::new("events", p)).collect();
        let groups = by_shard(&parts, 2);
        assert_eq!(groups[0].len(), 4);
        assert_eq!(groups[1].len(), 4);
        assert_eq!(
            shard_of(&parts[3], 2),
            shard_of(&TopicPartition::new("events", 3), 2)
        );
        assert!(parts.iter().all(|tp| shard_of(tp, 1) == 0));
    }
}
