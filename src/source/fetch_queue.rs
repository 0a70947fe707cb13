//! The consumer's message queue: every assigned partition's fetch queue is forwarded into one
//! librdkafka queue of our own, which the Kafka thread reads in batches
//! (`rd_kafka_consume_batch_queue`). Rebalances, commit results, statistics and client errors
//! stay on the consumer queue, served one event at a time by rust-rdkafka's `BaseConsumer::poll`.
//!
//! Why: `BaseConsumer::poll` returns one message per call, each a queue pop with its own poll
//! bookkeeping and clock reads, an event object and an `Arc` around it. A batch read takes up to a
//! chunk of messages per call, and the Kafka thread spends far less CPU per record
//! (BENCHMARKS.md). rust-rdkafka has no batch read, so this is the one file besides the
//! consumer's that speaks librdkafka's C API directly.
//!
//! Invariants:
//! - A partition is forwarded here *before* it is assigned (from the pre-rebalance callback), so
//!   librdkafka never routes its messages to the consumer queue (it does so only for a fetch
//!   queue the application did not forward), and again after every assignment and once a
//!   second, because librdkafka clears the forward when it stops fetching a partition. A forward
//!   moves whatever the partition's own queue holds, in order, so a cleared forward only delays.
//! - The queue is destroyed before the consumer ([`FetchQueue::destroy`]); while it lives, its
//!   owner holds the consumer.
//! - Every message taken is destroyed exactly once: [`Taken`] owns them and destroys them when
//!   dropped.

use rdkafka::bindings as rdsys;
use std::ffi::{CStr, CString};
use std::time::Duration;

/// The queue all assigned partitions' messages are forwarded to, and a handle on the consumer
/// queue (to see whether events wait there).
pub(crate) struct FetchQueue {
    rk: *mut rdsys::rd_kafka_t,
    queue: *mut rdsys::rd_kafka_queue_t,
    events: *mut rdsys::rd_kafka_queue_t,
}

// SAFETY: librdkafka's queue and handle functions are thread-safe (each queue has its own lock);
// the pointers stay valid until `destroy`, which takes the queue by value.
unsafe impl Send for FetchQueue {}
// SAFETY: as above; `&FetchQueue` only forwards partitions and reads messages, both locked
// inside librdkafka.
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// A new queue on the client `rk`.
    ///
    /// # Safety
    /// `rk` must be a live consumer handle that outlives the queue (until [`Self::destroy`]).
    /// `rk` must be a consumer with a group (it has a consumer queue). None if librdkafka
    /// gives no queue.
    pub(crate) unsafe fn new(rk: *mut rdsys::rd_kafka_t) -> Option<Self> {
        // SAFETY: the caller guarantees `rk` is live.
        let (queue, events) = unsafe {
            (
                rdsys::rd_kafka_queue_new(rk),
                rdsys::rd_kafka_queue_get_consumer(rk),
            )
        };
        if queue.is_null() || events.is_null() {
            // SAFETY: each non-null handle is live and released once.
            unsafe {
                for q in [queue, events] {
                    if !q.is_null() {
                        rdsys::rd_kafka_queue_destroy(q);
                    }
                }
            }
            return None;
        }
        Some(Self { rk, queue, events })
    }

    /// Whether rebalances, commit results, statistics or errors wait on the consumer queue.
    pub(crate) fn events_waiting(&self) -> bool {
        // SAFETY: the handle is live (type invariant).
        unsafe { rdsys::rd_kafka_queue_length(self.events) > 0 }
    }

    /// Routes the messages of each `(topic, partition)` here. Idempotent.
    pub(crate) fn forward<'a>(&self, partitions: impl IntoIterator<Item = (&'a str, i32)>) {
        for (topic, partition) in partitions {
            let Ok(name) = CString::new(topic) else {
                continue; // a topic name never holds a NUL byte
            };
            // SAFETY: `rk` and `queue` are live (type invariant); the partition queue handle is
            // released right after the forward, which librdkafka keeps on the partition.
            unsafe {
                let pq = rdsys::rd_kafka_queue_get_partition(self.rk, name.as_ptr(), partition);
                if pq.is_null() {
                    continue;
                }
                rdsys::rd_kafka_queue_forward(pq, self.queue);
                rdsys::rd_kafka_queue_destroy(pq);
            }
        }
    }

    /// Takes up to `max` messages: at once what is queued, or, if nothing is, waits up to `wait`
    /// for the first and then takes what is queued behind it.
    pub(crate) fn take(&self, max: usize, wait: Duration, into: &mut Taken) {
        into.clear();
        self.consume(max, 0, into);
        if into.msgs.is_empty() && !wait.is_zero() {
            let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
            self.consume(1, ms, into);
            if !into.msgs.is_empty() {
                self.consume(max.saturating_sub(1), 0, into);
            }
        }
    }

    /// One `rd_kafka_consume_batch_queue` call appending at most `max` messages to `into`.
    fn consume(&self, max: usize, timeout_ms: i32, into: &mut Taken) {
        if max == 0 {
            return;
        }
        into.msgs.reserve(max);
        let len = into.msgs.len();
        // SAFETY: the spare capacity holds at least `max` pointers; librdkafka writes `n ≤ max`
        // of them and returns `n` (or -1 on error, writing none), so `len + n` are initialised.
        unsafe {
            let spare = into.msgs.as_mut_ptr().add(len);
            let n = rdsys::rd_kafka_consume_batch_queue(self.queue, timeout_ms, spare, max);
            if let Ok(n) = usize::try_from(n) {
                into.msgs.set_len(len + n.min(max));
            }
        }
    }

    /// Releases the queue. Call before the consumer is dropped.
    pub(crate) fn destroy(self) {
        // SAFETY: the queue is live and, taken by value, is never used again. Partitions that
        // still forward here hold their own reference; librdkafka drops what they send after this.
        unsafe {
            rdsys::rd_kafka_queue_destroy(self.queue);
            rdsys::rd_kafka_queue_destroy(self.events);
        }
    }
}

/// Messages taken from a [`FetchQueue`], destroyed when dropped or cleared.
#[derive(Default)]
pub(crate) struct Taken {
    msgs: Vec<*mut rdsys::rd_kafka_message_t>,
}

/// One message taken: a view of librdkafka's message, valid while its [`Taken`] is.
pub(crate) struct Msg<'a> {
    raw: &'a rdsys::rd_kafka_message_t,
}

impl Taken {
    /// The messages, in queue order (per partition: offset order).
    pub(crate) fn iter(&self) -> impl Iterator<Item = Msg<'_>> {
        // SAFETY: every pointer came from `rd_kafka_consume_batch_queue` and is not destroyed
        // before `clear`, which needs `&mut self`.
        self.msgs.iter().map(|p| Msg {
            raw: unsafe { &**p },
        })
    }

    /// Destroys every message.
    pub(crate) fn clear(&mut self) {
        for p in self.msgs.drain(..) {
            // SAFETY: each pointer is destroyed once: `drain` removes it.
            unsafe { rdsys::rd_kafka_message_destroy(p) };
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.clear();
    }
}

impl<'a> Msg<'a> {
    /// The error librdkafka delivered in place of a message (e.g. a partition's fetch failed).
    pub(crate) fn error(&self) -> Option<rdkafka::error::KafkaError> {
        use rdkafka::error::KafkaError;
        match self.raw.err {
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => None,
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                Some(KafkaError::PartitionEOF(self.raw.partition))
            }
            e => Some(KafkaError::MessageConsumption(e.into())),
        }
    }

    /// The topic name's bytes (librdkafka's own copy: no allocation).
    pub(crate) fn topic(&self) -> &'a [u8] {
        if self.raw.rkt.is_null() {
            return b"";
        }
        // SAFETY: a consumed message holds a reference to its topic, whose name is a
        // NUL-terminated string living as long as the topic.
        unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(self.raw.rkt)).to_bytes() }
    }

    /// The partition.
    pub(crate) fn partition(&self) -> i32 {
        self.raw.partition
    }

    /// The offset.
    pub(crate) fn offset(&self) -> i64 {
        self.raw.offset
    }

    /// The Kafka timestamp in ms, if the record has one.
    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live; `kind` is a valid out-pointer.
        let ts = unsafe { rdsys::rd_kafka_message_timestamp(self.raw, &mut kind) };
        let none =
            ts == -1 || kind == rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        (!none).then_some(ts)
    }

    /// The key (None: no key).
    pub(crate) fn key(&self) -> Option<&'a [u8]> {
        bytes(self.raw.key, self.raw.key_len)
    }

    /// The value (None: a tombstone).
    pub(crate) fn payload(&self) -> Option<&'a [u8]> {
        bytes(self.raw.payload, self.raw.len)
    }

    /// The headers as (name, value) pairs in their order; empty when there are none.
    pub(crate) fn headers(&self) -> Vec<(std::borrow::Cow<'a, str>, Option<&'a [u8]>)> {
        let mut hdrs: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: the message is live; `hdrs` is a valid out-pointer. The headers belong to
        // the message and live as long as it.
        let err = unsafe { rdsys::rd_kafka_message_headers(self.raw, &mut hdrs) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for idx in 0.. {
            let mut name: *const std::ffi::c_char = std::ptr::null();
            let mut value: *const std::ffi::c_void = std::ptr::null();
            let mut size = 0usize;
            // SAFETY: `hdrs` is the message's header list; the out-pointers are valid.
            let e = unsafe {
                rdsys::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size)
            };
            if e != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                break;
            }
            // SAFETY: a header name is a NUL-terminated string owned by the header list.
            let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
            out.push((name, bytes(value.cast_mut(), size)));
        }
        out
    }
}

fn bytes<'a>(ptr: *mut std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: librdkafka's key/payload pointer and length describe one buffer that lives as long
    // as the message (the caller's lifetime `'a` is the `Taken`'s borrow).
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}
