//! How `pipeline.memory_budget_bytes` is shared out, so that the process's memory is the budget
//! plus a fixed overhead (docs/operations.md, "Memory"): a share for the Kafka fetch path
//! (librdkafka's prefetch queue, the fetch response in flight, and the record chunks on their
//! way to the workers), the rest for the workers' open and uploading files.
//!
//! Invariants: the two shares add up to the budget; librdkafka's prefetch properties are derived
//! from the fetch share unless `[kafka.properties]` sets them (a value set there is the user's
//! to account for); a budget that leaves a worker less than one upload part for its files is
//! refused at start-up, in one line.

/// Smallest share of the budget the Kafka fetch path gets.
const FETCH_SHARE_MIN: usize = 4 << 20;
/// Largest share of the budget the Kafka fetch path gets (enough to keep a worker busy).
const FETCH_SHARE_MAX: usize = 64 << 20;
/// Smallest `fetch.max.bytes`: librdkafka wants at least `message.max.bytes` (1,000,000).
const FETCH_MAX_BYTES_MIN: usize = 1 << 20;
/// Most records per chunk the Kafka thread hands a worker.
const CHUNK_RECORDS_MAX: usize = 2000;
/// Fewest records per chunk (smaller chunks cost the Kafka thread more sends).
const CHUNK_RECORDS_MIN: usize = 200;
/// Chunks each worker's data channel holds.
const CHANNEL_CHUNKS: usize = 4;
/// Chunk buffers a worker's share of the chunk path is divided by: those queued in its
/// channel, the one it works on, the one being filled and the up to 4 spare buffers the Kafka
/// thread keeps (`source::BufferPool`).
const CHUNK_BUFFERS: usize = CHANNEL_CHUNKS + 2 + 4;
/// Bytes a record takes in a chunk, with its bookkeeping (an ordinary `gen-events` record is
/// about 570 bytes): what the chunk size is derived from.
const RECORD_BYTES: usize = 640;

/// The budget, shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The Kafka fetch path's share: librdkafka's queue and fetch, and the queued chunks.
    pub fetch_bytes: usize,
    /// The workers' files (open, closing and uploading); each worker gets an even part.
    pub files_bytes: usize,
    /// librdkafka's `queued.max.messages.kbytes` (KiB), unless the user sets it.
    pub queued_max_kbytes: usize,
    /// librdkafka's `fetch.max.bytes`, unless the user sets it.
    pub fetch_max_bytes: usize,
    /// Chunks each worker's data channel holds before the Kafka thread pauses its partitions.
    pub channel_chunks: usize,
    /// Records per chunk the Kafka thread hands a worker.
    pub chunk_records: usize,
}

/// Shares out `budget` over `workers` workers: a quarter for the fetch path (between 4 and
/// 64 MiB), the rest for files. Half the fetch path's share is librdkafka's: its prefetch queue
/// and its fetch response get an eighth of the share each, because librdkafka holds about
/// twice the payload it counts (a heap profile of the bench drain: 16.7 MiB held for 8 MiB
/// set). The other half is the record chunks: each worker's part of it divided by the chunk
/// buffers a worker can have (queued, in work, being filled, spare) sets the chunk size.
pub fn plan(budget: usize, workers: usize) -> Plan {
    let workers = workers.max(1);
    let fetch_bytes = (budget / 4)
        .clamp(FETCH_SHARE_MIN, FETCH_SHARE_MAX)
        .min(budget / 2);
    let eighth = fetch_bytes / 8;
    let per_chunk = fetch_bytes / 2 / workers / CHUNK_BUFFERS;
    Plan {
        fetch_bytes,
        files_bytes: budget - fetch_bytes,
        queued_max_kbytes: (eighth / 1024).max(1024),
        fetch_max_bytes: eighth.max(FETCH_MAX_BYTES_MIN),
        channel_chunks: CHANNEL_CHUNKS,
        chunk_records: (per_chunk / RECORD_BYTES).clamp(CHUNK_RECORDS_MIN, CHUNK_RECORDS_MAX),
    }
}

impl Plan {
    /// librdkafka properties derived from the plan, each set unless `[kafka.properties]` sets it.
    pub fn kafka_defaults(&self) -> [(&'static str, String); 2] {
        [
            (
                "queued.max.messages.kbytes",
                self.queued_max_kbytes.to_string(),
            ),
            ("fetch.max.bytes", self.fetch_max_bytes.to_string()),
        ]
    }

    /// The files' share of one of `workers` workers.
    pub fn per_worker_files(&self, workers: usize) -> usize {
        self.files_bytes / workers.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIB: usize = 1 << 20;

    #[test]
    fn the_shares_add_up_to_the_budget() {
        for budget in [16 * MIB, 32 * MIB, 64 * MIB, 256 * MIB, 4096 * MIB] {
            for workers in [1, 2, 8] {
                let p = plan(budget, workers);
                assert_eq!(p.fetch_bytes + p.files_bytes, budget);
                assert!(p.fetch_bytes >= 4 * MIB && p.fetch_bytes <= 64 * MIB);
                assert!(p.fetch_max_bytes >= 1_000_000);
                assert!((200..=2000).contains(&p.chunk_records));
            }
        }
        let p = plan(32 * MIB, 2);
        assert_eq!((p.fetch_bytes, p.files_bytes), (8 * MIB, 24 * MIB));
        assert_eq!((p.queued_max_kbytes, p.fetch_max_bytes), (1024, MIB));
        assert_eq!(p.chunk_records, 327);
        let p = plan(256 * MIB, 2);
        assert_eq!((p.fetch_bytes, p.chunk_records), (64 * MIB, 2000));
        assert_eq!((p.queued_max_kbytes, p.fetch_max_bytes), (8192, 8 * MIB));
    }

    fn parse(extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let text = format!(
            "[kafka]\nbrokers = \"localhost:9092\"\ngroup_id = \"g\"\ntopics = [\"events\"]\n{extra}\n[[destinations]]\nname = \"s3\"\nbucket = \"b\"\n"
        );
        crate::config::parse(&text, &|_| None)
    }

    /// librdkafka's prefetch follows the budget unless `[kafka.properties]` sets it.
    #[test]
    fn the_fetch_properties_follow_the_budget_unless_set() {
        let c = parse("[pipeline]\nmemory_budget_bytes = 33554432\nworkers = 2").unwrap();
        assert_eq!(c.kafka.properties["queued.max.messages.kbytes"], "1024");
        assert_eq!(c.kafka.properties["fetch.max.bytes"], "1048576");
        let c =
            parse("[kafka.properties]\n\"fetch.max.bytes\" = 52428800\n[pipeline]\nworkers = 2")
                .unwrap();
        assert_eq!(c.kafka.properties["fetch.max.bytes"], "52428800");
        assert_eq!(c.kafka.properties["queued.max.messages.kbytes"], "8192");
    }

    /// A budget that leaves a worker less than one upload part fails at start-up, in one line
    /// naming the budget and the fix; with `workers = 0` the worker count fits the budget.
    #[test]
    fn a_budget_too_small_for_the_workers_and_part_size_is_refused() {
        let e = parse("[pipeline]\nmemory_budget_bytes = 33554432\nworkers = 4")
            .expect_err("4 workers x 8 MiB parts do not fit in 24 MiB");
        let text = e.to_string();
        assert!(text.contains("pipeline.memory_budget_bytes"), "{text}");
        assert!(text.contains("upload.part_size_bytes"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        parse("[pipeline]\nmemory_budget_bytes = 33554432\nworkers = 4\n[upload]\npart_size_bytes = 5242880")
            .expect("4 workers x 5 MiB parts fit in 24 MiB");
        let c = parse("[pipeline]\nmemory_budget_bytes = 16777216\nworkers = 0").unwrap();
        assert_eq!(c.pipeline.workers, 1, "12 MiB of files hold one 8 MiB part");
    }
}
