//! The Kafka adapter: with `kafka/context.rs` (the callbacks' shared state and the callbacks)
//! and `fetch_queue.rs` (batch reads), the only code that imports rdkafka. One OS thread owns the consumer, polls
//! it, forwards record chunks to the worker that owns each partition, pauses partitions while a
//! worker's channel is full, runs commits, and answers rebalance callbacks.
//!
//! Messages are read in batches from `FetchQueue` (`fetch_queue.rs`), where every partition is
//! forwarded before it is assigned; the consumer queue keeps the events (rebalances, commit
//! results, statistics, errors), served by `BaseConsumer::poll` before each batch.
//!
//! Invariants: no async work in rdkafka callbacks: a revoke is handed to the owning workers
//! through channels and the callback waits (bounded) for the offsets to commit synchronously
//! before the partitions are released. Commits never move a partition's offset backwards and are
//! only sent for assigned partitions. The fetch queue is destroyed before the consumer.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::fetch_queue::{FetchQueue, Taken};
use super::headers_json;
use super::{channels, shard_of, Command, ConsumerError, Control, Offsets, SourceIo};
use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::model::TopicPartition;
use crate::source::ChunkBuilder;

mod check;
mod context;
mod probe;
use crate::lograte::RepeatLog;
pub use check::{check_client, check_properties, property_error, PropertyError};
use context::{merge_offsets, to_tpl, to_tps, CommitState, Ctx};
pub use probe::{probe_topics, TopicsSeen, Unreachable};

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// librdkafka refused a property (named, with librdkafka's reason; never its value).
    #[error(transparent)]
    Property(#[from] PropertyError),
    /// librdkafka refused the client or the subscription.
    #[error("kafka consumer: {0}")]
    Kafka(String),
    /// The thread could not be spawned.
    #[error("cannot start the kafka thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl From<rdkafka::error::KafkaError> for SourceError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        match property_error(&e) {
            Some(p) => Self::Property(p),
            None => Self::Kafka(e.to_string()),
        }
    }
}

/// Tuning of the source thread.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Workers the partitions are spread over.
    pub shards: usize,
    /// Chunks each worker's data channel holds before the thread pauses its partitions.
    pub channel_chunks: usize,
    /// Records per poll round at most.
    pub chunk_records: usize,
    /// How long a revoke callback waits for the workers (their drain deadline plus a margin).
    pub revoke_wait: Duration,
    /// Collect each record's headers (a destination writes Kafka metadata).
    pub headers: bool,
}

/// Starts the consumer thread; returns each worker's ends of the channels.
pub fn start(
    cfg: &KafkaConfig,
    opts: SourceOptions,
    metrics: Metrics,
) -> Result<(Vec<SourceIo>, JoinHandle<()>), SourceError> {
    let shards = opts.shards.max(1);
    let (senders, ios, commands) = channels(shards, opts.channel_chunks);
    let mut cc = ClientConfig::new();
    for (k, v) in &cfg.properties {
        cc.set(k, v);
    }
    let ctx = Ctx {
        shards: senders,
        commits: Mutex::new(CommitState::default()),
        leftover: Mutex::new(vec![Vec::new(); shards]),
        closing: AtomicBool::new(false),
        rebalanced: AtomicBool::new(false),
        revoke_wait: opts.revoke_wait,
        metrics,
        fetch: Mutex::new(None),
        client_errors: Mutex::new(RepeatLog::default()),
        msk_iam: cfg
            .msk_iam
            .as_ref()
            .map(super::msk_iam::MskIamAuth::new)
            .transpose()?,
    };
    let consumer: BaseConsumer<Ctx> = cc.create_with_context(ctx)?;
    let topics: Vec<&str> = cfg.topics.entries().iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let chunk_records = opts.chunk_records.max(1);
    let with_headers = opts.headers;
    let handle = std::thread::Builder::new()
        .name("kafka-source".into())
        .spawn(move || poll_loop(consumer, commands, chunk_records, with_headers))?;
    Ok((ios, handle))
}

/// Shutdown bookkeeping: which workers are done, and whom to answer once all are.
#[derive(Default)]
struct Stopping {
    done_shards: HashSet<usize>,
    answers: Vec<tokio::sync::oneshot::Sender<()>>,
}

fn poll_loop(
    consumer: BaseConsumer<Ctx>,
    commands: std_mpsc::Receiver<Command>,
    chunk_records: usize,
    with_headers: bool,
) {
    let n = consumer.context().n();
    // SAFETY: the consumer is live; `close` destroys the queue before dropping it.
    match unsafe { FetchQueue::new(consumer.client().native_ptr()) } {
        Some(f) => {
            if let Ok(mut slot) = consumer.context().fetch.lock() {
                *slot = Some(f);
            }
        }
        None => {
            let e = ConsumerError::NoQueue;
            tracing::error!("{e}");
            for c in &consumer.context().shards.control {
                let _ = c.send(Control::Fatal(e.clone()));
            }
        }
    }
    let mut topics: Vec<Arc<str>> = Vec::new();
    let mut taken = Taken::default();
    let mut paused = false;
    let mut last_retry = Instant::now();
    let mut stopping = Stopping::default();
    // Kept across polls, so a chunk's buffer is reused once the workers are done with it.
    let mut chunks: Vec<ChunkBuilder> = (0..n).map(|_| ChunkBuilder::new()).collect();
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Commit(offsets)) => commit(&consumer, offsets, CommitMode::Async),
                Ok(Command::Shutdown {
                    shard,
                    offsets,
                    done,
                }) => {
                    commit(&consumer, offsets, CommitMode::Sync);
                    stopping.done_shards.insert(shard);
                    stopping.answers.push(done);
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    drop(taken); // (empty: cleared after every batch) no message outlives the consumer
                    close(consumer, stopping);
                    return;
                }
            }
        }
        if last_retry.elapsed() >= Duration::from_secs(1) {
            last_retry = Instant::now();
            // A fetch stop clears a partition's forward; forwarding again is cheap and moves
            // whatever its own queue holds.
            if let Ok(a) = consumer.assignment() {
                consumer.context().forward(&a);
            }
            let assigned = assigned(&consumer);
            let again = consumer.context().unconfirmed(&assigned);
            if !again.is_empty() {
                tracing::debug!(?again, "re-sending unconfirmed commits");
                commit(&consumer, again, CommitMode::Async);
            }
        }
        let ctx = consumer.context();
        let all_done =
            (0..n).all(|i| stopping.done_shards.contains(&i) || ctx.shards.data[i].is_closed());
        if all_done {
            // Workers no longer answer revokes: callbacks must not wait for them.
            consumer.context().closing.store(true, Ordering::SeqCst);
            finish_commits(&consumer, FINAL_COMMIT_WAIT);
            drop(taken); // (empty: cleared after every batch) no message outlives the consumer
            close(consumer, stopping);
            return;
        }
        if !stopping.done_shards.is_empty() && !paused {
            // Some worker is draining: fetch nothing more.
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.pause(&a);
            }
            paused = true;
        }
        backpressure(&consumer, &mut paused, stopping.done_shards.is_empty());
        // Events first: rebalances run their callbacks here, on this thread.
        let mut events = 0;
        while events < MAX_EVENTS_PER_ROUND && events_waiting(&consumer) {
            events += 1;
            match consumer.poll(Duration::ZERO) {
                None => {}
                // Only a partition fetched before it was forwarded would land here.
                Some(Ok(m)) => {
                    let topic = m.topic().as_bytes();
                    let tp = topic_partition(&mut topics, topic, m.partition());
                    let shard = shard_of(&tp, n);
                    let ts = m.timestamp().to_millis();
                    let headers = with_headers.then(|| {
                        use rdkafka::message::Headers;
                        m.headers().map_or_else(
                            || headers_json([]),
                            |h| headers_json(h.iter().map(|h| (h.key, h.value))),
                        )
                    });
                    chunks[shard].push_with_headers(
                        tp,
                        m.offset(),
                        ts,
                        m.key(),
                        m.payload(),
                        headers.as_deref(),
                    );
                }
                Some(Err(e)) => consume_error(&consumer, &e),
            }
        }
        let have_queue = match consumer.context().fetch.lock() {
            Ok(fetch) => match fetch.as_ref() {
                Some(f) => {
                    f.take(chunk_records, FETCH_WAIT, &mut taken);
                    true
                }
                None => false,
            },
            Err(_) => false,
        };
        if !have_queue {
            // No fetch queue (the workers were told it is fatal): wait for them, do not spin.
            std::thread::sleep(Duration::from_millis(100));
        }
        for m in taken.iter() {
            if let Some(e) = m.error() {
                consume_error(&consumer, &e);
                continue;
            }
            let tp = topic_partition(&mut topics, m.topic(), m.partition());
            let shard = shard_of(&tp, n);
            let headers = with_headers.then(|| {
                let h = m.headers();
                headers_json(h.iter().map(|(k, v)| (k.as_ref(), *v)))
            });
            chunks[shard].push_with_headers(
                tp,
                m.offset(),
                m.timestamp_ms(),
                m.key(),
                m.payload(),
                headers.as_deref(),
            );
        }
        // The records are copied into the chunks: give librdkafka its buffers back.
        taken.clear();
        let ctx = consumer.context();
        for (shard, chunk) in chunks.iter_mut().enumerate() {
            if chunk.is_empty() {
                continue;
            }
            let chunk = chunk.finish();
            if let Err(mpsc::error::TrySendError::Full(c)) = ctx.shards.data[shard].try_send(chunk)
            {
                if let Ok(mut l) = ctx.leftover.lock() {
                    l[shard].extend(c);
                }
            }
        }
    }
}

/// How long the thread waits for a message when none is queued. Neither a worker's commit
/// request nor a rebalance event wakes that wait (they arrive on other queues), so this is also
/// the longest either waits while the topics are idle: short, unlike the 100 ms poll before
/// batch reads, which any librdkafka event woke. An idle thread wakes 100 times a second.
const FETCH_WAIT: Duration = Duration::from_millis(10);

/// Events served before each batch of messages at most (commit results can pile up).
const MAX_EVENTS_PER_ROUND: usize = 1000;

fn events_waiting(consumer: &BaseConsumer<Ctx>) -> bool {
    match consumer.context().fetch.lock() {
        Ok(f) => f.as_ref().is_none_or(FetchQueue::events_waiting),
        Err(_) => true,
    }
}

/// The partition of a message, its topic name shared with every record of that topic.
fn topic_partition(topics: &mut Vec<Arc<str>>, topic: &[u8], partition: i32) -> TopicPartition {
    let topic = match topics.iter().find(|t| t.as_bytes() == topic) {
        Some(t) => t.clone(),
        None => {
            let t: Arc<str> = Arc::from(String::from_utf8_lossy(topic).as_ref());
            topics.push(t.clone());
            t
        }
    };
    TopicPartition { topic, partition }
}

/// A consume error: logged (repeats rate-limited, in the table of the client errors); a fatal
/// one stops every worker. A broker that cannot be reached is reported by librdkafka's own
/// line and the client error already: its consume errors go to debug.
fn consume_error(consumer: &BaseConsumer<Ctx>, e: &rdkafka::error::KafkaError) {
    use rdkafka::types::RDKafkaErrorCode as C;
    let unreachable = matches!(
        e.rdkafka_error_code(),
        Some(C::BrokerTransportFailure | C::AllBrokersDown | C::Resolve | C::BrokerNotAvailable)
    );
    if unreachable {
        tracing::debug!(error = %e, "kafka consume error");
    } else if let Some(repeats) = consumer.context().admit(&e.to_string()) {
        tracing::warn!(error = %e, repeats_not_shown = repeats, "kafka consume error");
    }
    if is_fatal(e) {
        for c in &consumer.context().shards.control {
            let _ = c.send(Control::Fatal(ConsumerError::Kafka(e.clone())));
        }
    }
}

/// How long the thread waits for room in a full worker channel before pausing its partitions.
/// A worker that is only slower than Kafka frees room within milliseconds, and pausing would
/// throw away librdkafka's prefetched messages and cost a fetch round trip (pausing at once left
/// the binary idle most of the time: BENCHMARKS.md, "Measured and kept"). Pausing is kept for real stalls: S3 down or
/// the memory budget spent, when the thread must keep polling to serve rebalances.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// Hands waiting records to their workers where there is room; true while some worker's
/// channel is full or records still wait.
fn hand_over(ctx: &Ctx) -> bool {
    let Ok(mut left) = ctx.leftover.lock() else {
        return false;
    };
    for (shard, l) in left.iter_mut().enumerate() {
        if l.is_empty() || ctx.shards.data[shard].capacity() == 0 {
            continue;
        }
        if let Err(mpsc::error::TrySendError::Full(c)) =
            ctx.shards.data[shard].try_send(std::mem::take(l))
        {
            *l = c;
        }
    }
    left.iter().any(|v| !v.is_empty())
        || ctx
            .shards
            .data
            .iter()
            .any(|d| d.capacity() == 0 && !d.is_closed())
}

/// Waits (up to [`PAUSE_AFTER`]) for room in the workers' channels; pauses every assigned
/// partition if there is still none, and resumes once everything is handed over.
fn backpressure(consumer: &BaseConsumer<Ctx>, paused: &mut bool, may_resume: bool) {
    let ctx = consumer.context();
    let rebalanced = ctx.rebalanced.swap(false, Ordering::SeqCst);
    let deadline = Instant::now() + PAUSE_AFTER;
    let blocked = loop {
        let blocked = hand_over(ctx);
        if !blocked || *paused || !may_resume || Instant::now() >= deadline {
            break blocked;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if (blocked || !may_resume) && (!*paused || rebalanced) {
        if let Ok(a) = consumer.assignment() {
            let _ = consumer.pause(&a);
        }
        *paused = true;
    } else if *paused && !blocked && may_resume {
        if let Ok(a) = consumer.assignment() {
            let _ = consumer.resume(&a);
        }
        *paused = false;
    }
}

/// Errors no retry can mend (bad credentials or permissions, librdkafka's fatal state).
pub(crate) fn is_fatal(e: &rdkafka::error::KafkaError) -> bool {
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

fn assigned(consumer: &BaseConsumer<Ctx>) -> HashSet<TopicPartition> {
    consumer
        .assignment()
        .map(|a| to_tps(&a).into_iter().collect())
        .unwrap_or_default()
}

/// Commits offsets of assigned partitions that move forward past what Kafka confirmed. A sync
/// commit also carries every wanted-but-unconfirmed offset.
fn commit(consumer: &BaseConsumer<Ctx>, offsets: Offsets, mode: CommitMode) {
    let assigned = assigned(consumer);
    let ctx = consumer.context();
    let sync = matches!(mode, CommitMode::Sync);
    let offsets = if sync {
        merge_offsets(offsets, ctx.unconfirmed(&assigned))
    } else {
        offsets
    };
    let offsets: Offsets = {
        let Ok(mut c) = ctx.commits.lock() else {
            return;
        };
        let offsets: Offsets = offsets
            .into_iter()
            .filter(|(tp, off)| {
                assigned.contains(tp) && c.confirmed.get(tp).is_none_or(|conf| off > conf)
            })
            .collect();
        for (tp, off) in &offsets {
            let w = c.wanted.entry(tp.clone()).or_insert(*off);
            *w = (*w).max(*off);
        }
        offsets
    };
    if offsets.is_empty() {
        return;
    }
    match consumer.commit(&to_tpl(&offsets), mode) {
        Ok(()) => {
            if sync {
                if let Ok(mut c) = ctx.commits.lock() {
                    for (tp, off) in &offsets {
                        let conf = c.confirmed.entry(tp.clone()).or_insert(*off);
                        *conf = (*conf).max(*off);
                    }
                }
            }
            ctx.metrics.committed(&offsets);
            tracing::debug!(?offsets, "committed");
        }
        Err(e) => {
            consumer.context().metrics.commit_failed();
            tracing::warn!(error = %e, "offset commit failed; it is retried with the next commit");
        }
    }
}

/// How long the last commits may keep being retried before the consumer leaves the group.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Before leaving the group, retries commits Kafka has not confirmed (e.g. refused with
/// REBALANCE_IN_PROGRESS because another member is leaving at the same moment), polling in
/// between so the group can settle, until they are confirmed or `wait` runs out.
fn finish_commits(consumer: &BaseConsumer<Ctx>, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let pending = consumer.context().unconfirmed(&assigned(consumer));
        if pending.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                ?pending,
                "final commits not confirmed; the next owner re-reads from the previous commit"
            );
            return;
        }
        commit(consumer, pending, CommitMode::Sync);
        let _ = consumer.poll(Duration::from_millis(200));
    }
}

fn close(consumer: BaseConsumer<Ctx>, stopping: Stopping) {
    consumer.context().closing.store(true, Ordering::SeqCst);
    consumer.unsubscribe();
    // Serve the revoke that unsubscribing triggers, then drop (which closes the consumer).
    for _ in 0..20 {
        let idle = consumer.poll(Duration::from_millis(50)).is_none();
        if idle
            && consumer
                .assignment()
                .map(|a| a.count() == 0)
                .unwrap_or(true)
        {
            break;
        }
    }
    let fetch = consumer
        .context()
        .fetch
        .lock()
        .ok()
        .and_then(|mut f| f.take());
    if let Some(f) = fetch {
        f.destroy();
    }
    drop(consumer);
    for done in stopping.answers {
        let _ = done.send(());
    }
}
