//! The source seam: what the pipeline workers receive from Kafka and what they send back.
//!
//! Partitions are sharded over workers ([`shard_of`]); each worker has its own channels.
//! Records arrive in chunks on a bounded channel (its fullness is the backpressure signal: the
//! Kafka thread pauses its partitions). Assignment changes arrive on a separate control channel
//! that the worker always reads first. Commits go back as [`Command`]s on one channel shared by
//! all workers. Only [`kafka`] (the consumer-group source) and [`reader`] (read-only range reads
//! for `verify`) know rdkafka; tests and benchmarks drive workers through these channels alone.

pub mod kafka;
pub mod reader;
pub mod replay;

use bytes::BytesMut;
use std::sync::mpsc as std_mpsc;
use tokio::sync::oneshot;

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
    Fatal(String),
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
/// `free` of memory another thread allocated. The builder is kept from chunk to chunk: once the
/// workers have dropped every record of an earlier chunk, its buffer is written again instead of
/// a fresh allocation (whose pages the kernel would map, zero and later unmap each time).
#[derive(Debug, Default)]
pub struct ChunkBuilder {
    buf: BytesMut,
    metas: Vec<Meta>,
    /// Bytes of the last chunk: how much to reserve when the buffer runs out.
    last_bytes: usize,
}

#[derive(Debug)]
struct Meta {
    tp: TopicPartition,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
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

    fn copy(&mut self, bytes: Option<&[u8]>) -> Option<(usize, usize)> {
        bytes.map(|b| {
            if self.buf.capacity() - self.buf.len() < b.len() {
                // Reclaims the buffer of earlier chunks if no record of theirs is alive.
                self.buf.reserve(b.len().max(self.last_bytes));
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
        let key = self.copy(key);
        let value = self.copy(value);
        self.metas.push(Meta {
            tp,
            offset,
            timestamp_ms,
            key,
            value,
        });
    }

    /// The records so far, their keys and values slices of one shared buffer; the builder is
    /// empty again.
    pub fn finish(&mut self) -> Vec<Record> {
        let buf = self.buf.split().freeze();
        self.last_bytes = buf.len();
        self.metas
            .drain(..)
            .map(|m| Record {
                tp: m.tp,
                offset: m.offset,
                timestamp_ms: m.timestamp_ms,
                key: m.key.map(|(a, b)| buf.slice(a..b)),
                value: m.value.map(|(a, b)| buf.slice(a..b)),
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
