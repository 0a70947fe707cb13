//! The consumer's context: the state the Kafka thread shares with librdkafka's callbacks, and
//! those callbacks (statistics, rebalances, commit results).
//!
//! Invariants: no async work here. A revoke is handed to the owning workers through channels
//! and the callback waits, bounded by `revoke_wait`, for their offsets, commits them
//! synchronously and only then lets librdkafka release the partitions. A confirmed offset only
//! moves forward.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::super::fetch_queue::FetchQueue;
use super::super::msk_iam::MskIamAuth;
use super::super::{by_shard, Control, Offsets, ShardSenders};
use crate::lograte::{without_numbers, RepeatLog};
use crate::metrics::Metrics;
use crate::model::{Record, TopicPartition};

/// Offsets asked for and offsets Kafka confirmed, per partition. An async commit can fail (e.g.
/// during a rebalance) after `commit()` returned; whatever is wanted but unconfirmed is sent
/// again, and always with the synchronous commits on revoke and shutdown.
#[derive(Default)]
pub(super) struct CommitState {
    pub(super) wanted: HashMap<TopicPartition, i64>,
    pub(super) confirmed: HashMap<TopicPartition, i64>,
}

impl CommitState {
    /// Wanted offsets not confirmed yet, limited to `only`.
    fn unconfirmed(&self, only: &HashSet<TopicPartition>) -> Offsets {
        self.wanted
            .iter()
            .filter(|(tp, off)| {
                only.contains(*tp) && self.confirmed.get(*tp).is_none_or(|c| *off > c)
            })
            .map(|(tp, off)| (tp.clone(), *off))
            .collect()
    }
}

pub(super) struct Ctx {
    pub(super) shards: ShardSenders,
    pub(super) commits: Mutex<CommitState>,
    /// Records polled but not yet accepted by their worker's channel, per worker.
    pub(super) leftover: Mutex<Vec<Vec<Record>>>,
    /// Set while closing: callbacks then return at once.
    pub(super) closing: AtomicBool,
    /// Set by a rebalance, so the poll loop re-applies a pause to new partitions.
    pub(super) rebalanced: AtomicBool,
    pub(super) revoke_wait: Duration,
    pub(super) metrics: Metrics,
    /// Where assigned partitions' messages go; set by the Kafka thread before its first poll,
    /// taken (and destroyed) before the consumer is dropped.
    pub(super) fetch: Mutex<Option<FetchQueue>>,
    /// librdkafka's client errors and log lines already logged (see [`RepeatLog`]): one
    /// table for both, so a failure librdkafka reports twice is logged once.
    pub(super) client_errors: Mutex<RepeatLog>,
    /// Builds the OAUTHBEARER tokens of `AWS_MSK_IAM`.
    pub(super) msk_iam: Option<MskIamAuth>,
}

/// A librdkafka log line without its `[thrd:…]: ` prefix.
fn strip_thread(message: &str) -> &str {
    match message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(message, |(_, m)| m),
        None => message,
    }
}

/// What makes two librdkafka reports the same failure: the text without numbers and without
/// librdkafka's own "N identical error(s) suppressed".
fn cause_of(text: &str) -> String {
    without_numbers(text).replace(", # identical error(s) suppressed", "")
}

impl Ctx {
    /// `Some(repeats not shown)` when a report of this failure is to be logged now.
    pub(super) fn admit(&self, text: &str) -> Option<u64> {
        let cause = cause_of(text);
        self.client_errors
            .lock()
            .ok()
            .and_then(|mut l| l.admit(&cause))
    }

    pub(super) fn n(&self) -> usize {
        self.shards.data.len()
    }

    pub(super) fn unconfirmed(&self, only: &HashSet<TopicPartition>) -> Offsets {
        self.commits
            .lock()
            .map(|c| c.unconfirmed(only))
            .unwrap_or_default()
    }

    /// Routes the partitions' messages to the fetch queue (idempotent).
    pub(super) fn forward(&self, tpl: &TopicPartitionList) {
        if let Ok(f) = self.fetch.lock() {
            if let Some(f) = f.as_ref() {
                f.forward(tpl.elements().iter().map(|e| (e.topic(), e.partition())));
            }
        }
    }
}

/// Union of two offset lists, keeping the highest offset per partition.
pub(super) fn merge_offsets(a: Offsets, b: Offsets) -> Offsets {
    let mut m: HashMap<TopicPartition, i64> = HashMap::new();
    for (tp, off) in a.into_iter().chain(b) {
        let e = m.entry(tp).or_insert(off);
        *e = (*e).max(off);
    }
    let mut out: Offsets = m.into_iter().collect();
    out.sort();
    out
}

impl ClientContext for Ctx {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        super::super::msk_iam::oauth_token(self.msk_iam.as_ref())
    }

    /// librdkafka's global errors (e.g. a broker refusing connections, a TLS handshake
    /// refused), repeats rate-limited; librdkafka retries by itself. A failure librdkafka also
    /// logged (its `FAIL` line) is not logged again, and "all brokers are down" only follows
    /// each broker's own failure, so it is left to debug. Until the group is joined, the last
    /// error is the reason `/readyz` gives.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as C;
        let code = error.rdkafka_error_code();
        if code != Some(C::AllBrokersDown) {
            self.metrics.health().kafka_failed(reason);
        }
        if code == Some(C::AllBrokersDown) {
            tracing::debug!(error = %error, reason, "kafka client error");
            return;
        }
        let text = format!("{error}: {reason}");
        if let Some(repeats) = self.admit(reason) {
            tracing::error!(error = %text, repeats_not_shown = repeats, "kafka client error");
        }
    }

    /// librdkafka's own log lines: warnings and worse go through the same rate limit as the
    /// client errors (a broker that is down logs `FAIL` on every reconnect).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        let message = strip_thread(log_message);
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                if let Some(repeats) = self.admit(message) {
                    if matches!(level, L::Warning) {
                        tracing::warn!(target: "librdkafka", facility = fac, repeats_not_shown = repeats, "{message}");
                    } else {
                        tracing::error!(target: "librdkafka", facility = fac, repeats_not_shown = repeats, "{message}");
                    }
                }
            }
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{message}")
            }
            L::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                // Partition -1 is the internal "unassigned" bucket; `desired` means assigned.
                if *id < 0 || !p.desired {
                    continue;
                }
                let tp = TopicPartition::new(name.as_str(), *id);
                self.metrics.partition_stats(
                    &tp,
                    p.hi_offset,
                    p.app_offset,
                    p.committed_offset,
                    p.lo_offset,
                );
            }
        }
    }
}

pub(super) fn to_tps(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

pub(super) fn to_tpl(offsets: &Offsets) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, off) in offsets {
        // Adding an offset to a fresh list cannot fail for a non-negative offset.
        let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*off));
    }
    tpl
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let tpl = match rebalance {
            Rebalance::Revoke(tpl) => tpl,
            Rebalance::Assign(tpl) => {
                // Before librdkafka starts fetching them: none of their messages reaches the
                // consumer queue.
                self.forward(tpl);
                return;
            }
            Rebalance::Error(_) => return,
        };
        let partitions = to_tps(tpl);
        if partitions.is_empty() {
            return;
        }
        self.metrics.rebalance(false, &partitions);
        self.rebalanced.store(true, Ordering::SeqCst);
        let revoked: HashSet<&TopicPartition> = partitions.iter().collect();
        // Records of revoked partitions that no worker saw: the next owner reads them.
        if let Ok(mut left) = self.leftover.lock() {
            for l in left.iter_mut() {
                l.retain(|r| !revoked.contains(&r.tp));
            }
        }
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        let revoked_set: HashSet<TopicPartition> = partitions.iter().cloned().collect();
        let (reply, answers) = std_mpsc::sync_channel(self.n());
        let mut asked = 0;
        for (shard, parts) in by_shard(&partitions, self.n()).into_iter().enumerate() {
            if parts.is_empty() {
                continue;
            }
            let msg = Control::Revoke {
                partitions: parts,
                reply: reply.clone(),
            };
            if self.shards.control[shard].send(msg).is_ok() {
                asked += 1;
            }
        }
        drop(reply);
        let deadline = Instant::now() + self.revoke_wait;
        let mut offsets = Offsets::new();
        for _ in 0..asked {
            let left = deadline.saturating_duration_since(Instant::now());
            match answers.recv_timeout(left) {
                Ok(o) => offsets.extend(o),
                Err(_) => {
                    tracing::warn!("a worker did not answer the revoke in time; its partitions are released without a commit");
                    break;
                }
            }
        }
        let offsets = merge_offsets(offsets, self.unconfirmed(&revoked_set));
        if !offsets.is_empty() {
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
        // The partitions are no longer ours: forget their commit state.
        if let Ok(mut c) = self.commits.lock() {
            c.wanted.retain(|tp, _| !revoked_set.contains(tp));
            c.confirmed.retain(|tp, _| !revoked_set.contains(tp));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Again: a fetch stop of an earlier revoke of these partitions clears a forward.
                self.forward(tpl);
                self.metrics.health().group_joined();
                let partitions = to_tps(tpl);
                if partitions.is_empty() {
                    return;
                }
                self.metrics.rebalance(true, &partitions);
                tracing::info!(partitions = ?partitions, "partitions assigned");
                self.rebalanced.store(true, Ordering::SeqCst);
                for (shard, parts) in by_shard(&partitions, self.n()).into_iter().enumerate() {
                    if !parts.is_empty() {
                        let _ = self.shards.control[shard].send(Control::Assigned(parts));
                    }
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = &result {
            self.metrics.commit_failed();
            tracing::warn!(error = %e, "offset commit failed; it is sent again");
            return;
        }
        let Ok(mut c) = self.commits.lock() else {
            return;
        };
        for e in offsets.elements() {
            if let (Offset::Offset(off), Ok(())) = (e.offset(), e.error()) {
                let tp = TopicPartition::new(e.topic(), e.partition());
                let conf = c.confirmed.entry(tp).or_insert(off);
                *conf = (*conf).max(off);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_failure_is_one_cause_whatever_its_numbers() {
        let log = "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)";
        let again = "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 1ms in state CONNECT, 1 identical error(s) suppressed)";
        let reason = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)";
        assert_eq!(cause_of(strip_thread(log)), cause_of(reason));
        assert_eq!(cause_of(strip_thread(again)), cause_of(reason));
    }
}
