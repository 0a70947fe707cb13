//! The Kafka adapter: the only file that imports rdkafka. One OS thread owns the consumer, polls
//! it, forwards record chunks, pauses partitions while the pipeline's channel is full, runs
//! commits, and answers rebalance callbacks.
//!
//! Invariants: no async work in rdkafka callbacks: a revoke is handed to the pipeline through
//! a channel and the callback waits (bounded) for the offsets to commit synchronously before the
//! partitions are released. Commits never move a partition's offset backwards and are only sent
//! for assigned partitions.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

use super::{Command, Control, Offsets, SourceIo};
use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::model::{Record, TopicPartition};

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// librdkafka refused the configuration or subscription.
    #[error("kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The thread could not be spawned.
    #[error("cannot start the kafka thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Tuning of the source thread.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Chunks the data channel holds before the thread pauses its partitions.
    pub channel_chunks: usize,
    /// Records per chunk at most.
    pub chunk_records: usize,
    /// How long a revoke callback waits for the pipeline (its drain deadline plus a margin).
    pub revoke_wait: Duration,
}

struct Ctx {
    control: mpsc::UnboundedSender<Control>,
    /// Records polled but not yet accepted by the data channel.
    leftover: Mutex<Vec<Record>>,
    /// Set while closing: callbacks then return at once.
    closing: AtomicBool,
    /// Set by a rebalance, so the poll loop re-applies a pause to new partitions.
    rebalanced: AtomicBool,
    revoke_wait: Duration,
    metrics: Metrics,
}

impl ClientContext for Ctx {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                // Partition -1 is the internal "unassigned" bucket; `desired` means assigned.
                if *id < 0 || !p.desired {
                    continue;
                }
                let tp = TopicPartition::new(name.as_str(), *id);
                self.metrics
                    .partition_stats(&tp, p.hi_offset, p.app_offset, p.committed_offset);
            }
        }
    }
}

fn to_tps(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

fn to_tpl(offsets: &Offsets) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, off) in offsets {
        // Adding an offset to a fresh list cannot fail for a non-negative offset.
        let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*off));
    }
    tpl
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions = to_tps(tpl);
        if partitions.is_empty() {
            return;
        }
        self.metrics.rebalance(false, &partitions);
        let revoked: HashSet<&TopicPartition> = partitions.iter().collect();
        // Records of revoked partitions that the pipeline never saw: the next owner reads them.
        if let Ok(mut left) = self.leftover.lock() {
            left.retain(|r| !revoked.contains(&r.tp));
        }
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        let (reply, answer) = std_mpsc::sync_channel(1);
        if self
            .control
            .send(Control::Revoke {
                partitions: partitions.clone(),
                reply,
            })
            .is_err()
        {
            return;
        }
        match answer.recv_timeout(self.revoke_wait) {
            Ok(offsets) if !offsets.is_empty() => {
                match consumer.commit(&to_tpl(&offsets), CommitMode::Sync) {
                    Ok(()) => {
                        self.metrics.committed(&offsets);
                        tracing::info!(?offsets, "committed revoked partitions");
                    }
                    Err(e) => {
                        self.metrics.commit_failed();
                        tracing::warn!(error = %e, "commit on revoke failed; the next owner re-reads from the previous commit");
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tracing::warn!(
                "pipeline did not answer the revoke in time; releasing without a commit"
            ),
        }
        self.rebalanced.store(true, Ordering::SeqCst);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.metrics.health().group_joined();
                let partitions = to_tps(tpl);
                if partitions.is_empty() {
                    return;
                }
                self.metrics.rebalance(true, &partitions);
                tracing::info!(partitions = ?partitions, "partitions assigned");
                self.rebalanced.store(true, Ordering::SeqCst);
                let _ = self.control.send(Control::Assigned(partitions));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.metrics.commit_failed();
            tracing::warn!(error = %e, "offset commit failed; it is retried with the next commit");
        }
    }
}

/// Starts the consumer thread; returns the pipeline's ends of the channels.
pub fn start(
    cfg: &KafkaConfig,
    opts: SourceOptions,
    metrics: Metrics,
) -> Result<(SourceIo, JoinHandle<()>), SourceError> {
    let (data_tx, data_rx) = mpsc::channel(opts.channel_chunks.max(1));
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = std_mpsc::channel();
    let mut cc = ClientConfig::new();
    for (k, v) in &cfg.properties {
        cc.set(k, v);
    }
    let ctx = Ctx {
        control: control_tx.clone(),
        leftover: Mutex::new(Vec::new()),
        closing: AtomicBool::new(false),
        rebalanced: AtomicBool::new(false),
        revoke_wait: opts.revoke_wait,
        metrics: metrics.clone(),
    };
    let consumer: BaseConsumer<Ctx> = cc.create_with_context(ctx)?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let handle = std::thread::Builder::new()
        .name("kafka-source".into())
        .spawn(move || {
            poll_loop(
                consumer,
                data_tx,
                control_tx,
                cmd_rx,
                opts.chunk_records.max(1),
            )
        })?;
    Ok((
        SourceIo {
            data: data_rx,
            control: control_rx,
            commands: cmd_tx,
        },
        handle,
    ))
}

fn poll_loop(
    consumer: BaseConsumer<Ctx>,
    data: mpsc::Sender<Vec<Record>>,
    control: mpsc::UnboundedSender<Control>,
    commands: std_mpsc::Receiver<Command>,
    chunk_records: usize,
) {
    let mut topics: Vec<Arc<str>> = Vec::new();
    let mut committed: HashMap<TopicPartition, i64> = HashMap::new();
    let mut paused = false;
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Commit(offsets)) => {
                    commit(&consumer, &mut committed, offsets, CommitMode::Async)
                }
                Ok(Command::Shutdown { offsets, done }) => {
                    commit(&consumer, &mut committed, offsets, CommitMode::Sync);
                    close(consumer);
                    let _ = done.send(());
                    return;
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    close(consumer);
                    return;
                }
            }
        }
        let ctx = consumer.context();
        // Backpressure: pause every assigned partition while the pipeline's channel is full.
        let leftover_waiting = ctx.leftover.lock().map(|l| !l.is_empty()).unwrap_or(false);
        let room = data.capacity() > 0;
        let rebalanced = ctx.rebalanced.swap(false, Ordering::SeqCst);
        if (!room || leftover_waiting) && (!paused || rebalanced) {
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.pause(&a);
            }
            paused = true;
        }
        if leftover_waiting && room {
            let chunk = ctx
                .leftover
                .lock()
                .map(|mut l| std::mem::take(&mut *l))
                .unwrap_or_default();
            if !chunk.is_empty() {
                if let Err(mpsc::error::TrySendError::Full(c)) = data.try_send(chunk) {
                    if let Ok(mut l) = ctx.leftover.lock() {
                        *l = c;
                    }
                }
            }
        }
        let leftover_waiting = ctx.leftover.lock().map(|l| !l.is_empty()).unwrap_or(false);
        if paused && data.capacity() > 0 && !leftover_waiting {
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.resume(&a);
            }
            paused = false;
        }
        let mut chunk = Vec::new();
        let mut timeout = Duration::from_millis(100);
        while chunk.len() < chunk_records {
            match consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    let topic = match topics.iter().find(|t| t.as_ref() == m.topic()) {
                        Some(t) => t.clone(),
                        None => {
                            let t: Arc<str> = Arc::from(m.topic());
                            topics.push(t.clone());
                            t
                        }
                    };
                    chunk.push(Record {
                        tp: TopicPartition {
                            topic,
                            partition: m.partition(),
                        },
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                    });
                    timeout = Duration::ZERO;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consume error");
                    if is_fatal(&e) {
                        let _ = control.send(Control::Fatal(e.to_string()));
                    }
                    break;
                }
            }
        }
        if chunk.is_empty() {
            if data.is_closed() {
                close(consumer);
                return;
            }
            continue;
        }
        match data.try_send(chunk) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(c)) => {
                if let Ok(mut l) = consumer.context().leftover.lock() {
                    l.extend(c);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                close(consumer);
                return;
            }
        }
    }
}

fn is_fatal(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::Fatal
                | C::Authentication
                | C::GroupAuthorizationFailed
                | C::TopicAuthorizationFailed
        )
    )
}

fn commit(
    consumer: &BaseConsumer<Ctx>,
    committed: &mut HashMap<TopicPartition, i64>,
    offsets: Offsets,
    mode: CommitMode,
) {
    let assigned: HashSet<TopicPartition> = consumer
        .assignment()
        .map(|a| to_tps(&a).into_iter().collect())
        .unwrap_or_default();
    let offsets: Offsets = offsets
        .into_iter()
        .filter(|(tp, off)| assigned.contains(tp) && committed.get(tp).is_none_or(|c| off > c))
        .collect();
    if offsets.is_empty() {
        return;
    }
    match consumer.commit(&to_tpl(&offsets), mode) {
        Ok(()) => {
            for (tp, off) in &offsets {
                committed.insert(tp.clone(), *off);
            }
            consumer.context().metrics.committed(&offsets);
            tracing::debug!(?offsets, "committed");
        }
        Err(e) => {
            consumer.context().metrics.commit_failed();
            tracing::warn!(error = %e, "offset commit failed; it is retried with the next commit");
        }
    }
}

fn close(consumer: BaseConsumer<Ctx>) {
    consumer.context().closing.store(true, Ordering::SeqCst);
    consumer.unsubscribe();
    // Serve the revoke that unsubscribing triggers, then drop (which closes the consumer).
    for _ in 0..20 {
        if consumer.poll(Duration::from_millis(50)).is_none()
            && consumer
                .assignment()
                .map(|a| a.count() == 0)
                .unwrap_or(true)
        {
            break;
        }
    }
    drop(consumer);
}
