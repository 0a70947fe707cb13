//! The source seam: what the pipeline receives from Kafka and what it sends back.
//!
//! Records arrive in chunks on a bounded channel (its fullness is the backpressure signal: the
//! Kafka thread pauses its partitions). Assignment changes arrive on a separate control channel
//! that the pipeline always reads first. Commits go back as [`Command`]s. Only
//! [`kafka`] knows rdkafka; tests can drive the pipeline through these channels alone.

pub mod kafka;

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
    /// Commit these offsets synchronously, leave the group and stop; `done` answers afterwards.
    Shutdown {
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
