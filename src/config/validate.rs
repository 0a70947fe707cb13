//! Validation: raw structs → typed config, every field and cross-field rule checked once, each
//! failure a one-line [`ConfigError`] naming the key and the fix.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use super::*;

/// librdkafka properties the connector owns; setting them in `[kafka.properties]` is an error.
const MANAGED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("group.id", "kafka.group_id"),
    (
        "enable.auto.commit",
        "nothing: offsets are committed only after upload",
    ),
    (
        "enable.auto.offset.store",
        "nothing: offsets are committed only after upload",
    ),
    ("session.timeout.ms", "kafka.session_timeout_ms"),
    ("max.poll.interval.ms", "kafka.max_poll_interval_ms"),
    ("auto.offset.reset", "kafka.auto_offset_reset"),
    ("client.id", "kafka.client_id"),
];

/// The `[kafka]` key that sets a property the connector manages (`session.timeout.ms` →
/// `kafka.session_timeout_ms`), if it is one.
pub(super) fn managed_property_key(name: &str) -> Option<&'static str> {
    match name {
        "bootstrap.servers" => Some("kafka.brokers"),
        "group.id" => Some("kafka.group_id"),
        "session.timeout.ms" => Some("kafka.session_timeout_ms"),
        "max.poll.interval.ms" => Some("kafka.max_poll_interval_ms"),
        "auto.offset.reset" => Some("kafka.auto_offset_reset"),
        "client.id" => Some("kafka.client_id"),
        _ => None,
    }
}

/// Turns the raw config into typed values, checking every field and cross-field rule.
pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let kafka = validate_kafka(&raw.kafka)?;
    let p = &raw.pipeline;
    if p.memory_budget_bytes < 16 * 1024 * 1024 {
        return Err(ConfigError::new(
            "pipeline.memory_budget_bytes",
            "must be at least 16777216 (16 MiB)",
        ));
    }
    let pipeline = PipelineConfig {
        memory_budget_bytes: usize::try_from(p.memory_budget_bytes).map_err(|_| {
            ConfigError::new(
                "pipeline.memory_budget_bytes",
                "too large for this platform",
            )
        })?,
        drain_deadline: positive_secs("pipeline.drain_deadline_secs", p.drain_deadline_secs)?,
        workers: match p.workers {
            // One per core, as many as the budget gives an upload part of files each.
            0 => {
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                let budget = usize::try_from(p.memory_budget_bytes).unwrap_or(usize::MAX);
                let part = usize::try_from(raw.upload.part_size_bytes).unwrap_or(usize::MAX);
                let fit = crate::budget::plan(budget, 1).files_bytes / part.max(1);
                cores.min(fit).max(1)
            }
            n => n,
        },
        shutdown_deadline: positive_secs(
            "pipeline.shutdown_deadline_secs",
            p.shutdown_deadline_secs,
        )?,
        max_open_files: match p.max_open_files {
            n @ 1..=10_000_000 => n,
            _ => {
                return Err(ConfigError::new(
                    "pipeline.max_open_files",
                    "must be between 1 and 10000000",
                ))
            }
        },
    };
    if pipeline.workers > 256 || pipeline.memory_budget_bytes / pipeline.workers < 4 * 1024 * 1024 {
        return Err(ConfigError::new(
            "pipeline.workers",
            "each worker needs at least 4 MiB of memory_budget_bytes (and at most 256 workers); lower workers or raise the budget",
        ));
    }
    if pipeline.drain_deadline.as_millis() >= u128::from(raw.kafka.session_timeout_ms) {
        return Err(ConfigError::new(
            "pipeline.drain_deadline_secs",
            format!(
                "must be shorter than kafka.session_timeout_ms ({} ms), or the group evicts the worker while it drains; lower it or raise the session timeout",
                raw.kafka.session_timeout_ms
            ),
        ));
    }
    let upload = validate_upload(&raw.upload)?;
    let mut kafka = kafka;
    kafka.schema_registry =
        super::registry::validate(&raw.kafka.schema_registry, pipeline.memory_budget_bytes)?;
    let plan = crate::budget::plan(
        pipeline.memory_budget_bytes - schema_cache_bytes(&kafka),
        pipeline.workers,
    );
    for (name, value) in plan.kafka_defaults() {
        kafka.properties.entry(name.to_string()).or_insert(value);
    }
    if plan.per_worker_files(pipeline.workers) < upload.part_size_bytes {
        return Err(ConfigError::new(
            "pipeline.memory_budget_bytes",
            format!(
                "{} leaves each of {} workers {} MiB for files after the Kafka fetch share ({} MiB), less than one upload part (upload.part_size_bytes = {} MiB); raise the budget, or lower pipeline.workers or upload.part_size_bytes",
                pipeline.memory_budget_bytes,
                pipeline.workers,
                plan.per_worker_files(pipeline.workers) >> 20,
                plan.fetch_bytes >> 20,
                upload.part_size_bytes >> 20
            ),
        ));
    }
    let http = HttpConfig {
        listen: if raw.http.enabled {
            Some(raw.http.listen.parse().map_err(|_| {
                ConfigError::new(
                    "http.listen",
                    format!(
                        "{:?} is not an address; use host:port like 0.0.0.0:9464",
                        raw.http.listen
                    ),
                )
            })?)
        } else {
            None
        },
        unready_after: positive_secs(
            "http.unready_after_failing_secs",
            raw.http.unready_after_failing_secs,
        )?,
        max_connections: match raw.http.max_connections {
            n @ 1..=65_536 => n,
            _ => {
                return Err(ConfigError::new(
                    "http.max_connections",
                    "must be between 1 and 65536",
                ))
            }
        },
        header_read_timeout: match raw.http.header_read_timeout_ms {
            ms @ 100..=600_000 => Duration::from_millis(ms),
            _ => {
                return Err(ConfigError::new(
                    "http.header_read_timeout_ms",
                    "must be between 100 and 600000 (10 minutes)",
                ))
            }
        },
    };
    let log = LogConfig {
        level: raw.log.level.clone(),
        json: match raw.log.format.as_str() {
            "plain" => false,
            "json" => true,
            other => {
                return Err(ConfigError::new(
                    "log.format",
                    format!("unknown value {other:?}; use plain or json"),
                ))
            }
        },
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        return Err(ConfigError::new(
            "log.level",
            format!(
                "{:?} is not a log filter; use e.g. info or kafka_s3_sink=debug,info",
                log.level
            ),
        ));
    }
    if raw.destinations.is_empty() {
        return Err(ConfigError::new(
            "destinations",
            "at least one [[destinations]] entry is required",
        ));
    }
    let mut destinations = Vec::with_capacity(raw.destinations.len());
    for (i, d) in raw.destinations.iter().enumerate() {
        let dest = super::destination::validate_destination(
            &format!("destinations[{i}]"),
            d,
            &kafka.topics,
        )?;
        if dest.key_format.decoded_as().is_some() && kafka.schema_registry.is_none() {
            return Err(ConfigError::new(
                format!("destinations[{i}].key_format"),
                "reads keys through a Schema Registry; set [kafka.schema_registry] url (or key_format = \"raw\")",
            ));
        }
        if dest.value_format.framed() && kafka.schema_registry.is_none() {
            return Err(ConfigError::new(
                format!("destinations[{i}].value_format"),
                format!(
                    "{} reads records through a Schema Registry; set [kafka.schema_registry] url",
                    dest.value_format.as_str()
                ),
            ));
        }
        if destinations
            .iter()
            .any(|o: &DestinationConfig| o.name == dest.name)
        {
            return Err(ConfigError::new(
                format!("destinations[{i}].name"),
                format!(
                    "duplicate destination name {:?}; names must be unique",
                    dest.name
                ),
            ));
        }
        destinations.push(dest);
    }
    // A subscribed topic that feeds no destination would be read and committed without being
    // written anywhere.
    for (i, t) in kafka.topics.entries().iter().enumerate() {
        let fed = if t.starts_with('^') {
            destinations.iter().any(|d| d.topics.has_entry(t))
        } else {
            destinations.iter().any(|d| d.topics.matches(t))
        };
        if !fed {
            return Err(ConfigError::new(
                format!("kafka.topics[{i}]"),
                format!("{t:?} feeds no destination: its records would be committed without being written; list it in a destination's topics (a ^pattern verbatim) or remove it"),
            ));
        }
    }
    if let Some(age) = upload.orphan_min_age {
        let longest = destinations
            .iter()
            .map(|d| d.batch.max_age)
            .max()
            .unwrap_or_default();
        let floor = (longest + upload.request_timeout).max(Duration::from_secs(60));
        if age < floor {
            return Err(ConfigError::new(
                "upload.orphaned_upload_min_age_secs",
                format!(
                    "must be at least {} (the longest batch.max_age_secs plus upload.request_timeout_secs, and ≥ 60), or live uploads of other replicas get aborted; raise it or set abort_orphaned_uploads = false",
                    floor.as_secs()
                ),
            ));
        }
    }
    Ok(Config {
        kafka,
        pipeline,
        upload,
        destinations,
        http,
        log,
        raw,
        secrets: crate::redact::Secrets::default(),
    })
}

/// The longest duration a `*_secs` key takes: 100 years. No age, deadline or time window is
/// meaningfully longer, and every sum of instants and dates stays far from overflow below it.
pub(crate) const MAX_SECS: u64 = 100 * 366 * 86_400;

pub(super) fn positive_secs(key: &str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(ConfigError::new(key, "must be at least 1 (seconds)"));
    }
    bounded_secs(key, v)
}

/// `v` seconds, refused above [`MAX_SECS`].
pub(super) fn bounded_secs(key: &str, v: u64) -> Result<Duration, ConfigError> {
    if v > MAX_SECS {
        return Err(ConfigError::new(
            key,
            format!("must be at most {MAX_SECS} (100 years); lower it"),
        ));
    }
    Ok(Duration::from_secs(v))
}

fn validate_kafka(k: &RawKafka) -> Result<KafkaConfig, ConfigError> {
    if k.brokers.trim().is_empty() {
        return Err(ConfigError::new(
            "kafka.brokers",
            "must not be empty; set host:port[,host:port]",
        ));
    }
    if k.group_id.trim().is_empty() {
        return Err(ConfigError::new("kafka.group_id", "must not be empty"));
    }
    if k.topics.is_empty() {
        return Err(ConfigError::new(
            "kafka.topics",
            "list at least one topic name or ^pattern",
        ));
    }
    let topics = TopicSet::parse("kafka.topics", &k.topics)?;
    if !matches!(k.auto_offset_reset.as_str(), "earliest" | "latest") {
        return Err(ConfigError::new(
            "kafka.auto_offset_reset",
            format!(
                "unknown value {:?}; use earliest or latest",
                k.auto_offset_reset
            ),
        ));
    }
    let mut props = BTreeMap::new();
    props.insert("bootstrap.servers".to_string(), k.brokers.clone());
    props.insert("group.id".into(), k.group_id.clone());
    props.insert("client.id".into(), k.client_id.clone());
    props.insert("enable.auto.commit".into(), "false".into());
    props.insert("enable.auto.offset.store".into(), "false".into());
    props.insert("auto.offset.reset".into(), k.auto_offset_reset.clone());
    props.insert(
        "session.timeout.ms".into(),
        k.session_timeout_ms.to_string(),
    );
    props.insert(
        "max.poll.interval.ms".into(),
        k.max_poll_interval_ms.to_string(),
    );
    props.insert(
        "partition.assignment.strategy".into(),
        "cooperative-sticky".into(),
    );
    props.insert("enable.partition.eof".into(), "false".into());
    // Statistics feed the lag metrics. The prefetch (`queued.max.messages.kbytes`,
    // `fetch.max.bytes`) follows the memory budget (`budget.rs`, set in `validate`).
    props.insert("statistics.interval.ms".into(), "5000".into());
    // librdkafka waits 1 s before fetching again once that prefetch queue was full; with a
    // consumer that is slower than the broker that idled the worker most of the time
    // (BENCHMARKS.md, "Measured and kept").
    props.insert("fetch.queue.backoff.ms".into(), "10".into());
    for (name, value) in &k.properties {
        let key = format!("kafka.properties.\"{name}\"");
        if let Some((_, instead)) = MANAGED_PROPERTIES.iter().find(|(p, _)| p == name) {
            return Err(ConfigError::new(
                key,
                format!("is managed by the connector; set {instead} instead"),
            ));
        }
        let v = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(ConfigError::new(key, "must be a string, number or boolean")),
        };
        props.insert(name.clone(), v);
    }
    let mut warnings = Vec::new();
    let msk_iam = super::security::apply(&k.security, &k.properties, &mut props, &mut warnings)?;
    Ok(KafkaConfig {
        topics,
        group_id: k.group_id.clone(),
        properties: props,
        warnings,
        msk_iam,
        schema_registry: None,
    })
}

fn validate_upload(u: &RawUpload) -> Result<UploadConfig, ConfigError> {
    const MIN_PART: u64 = 5 * 1024 * 1024;
    const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
    if !(MIN_PART..=MAX_PART).contains(&u.part_size_bytes) {
        return Err(ConfigError::new(
            "upload.part_size_bytes",
            "must be between 5242880 (5 MiB, S3's minimum part) and 5368709120 (5 GiB)",
        ));
    }
    let concurrency = NonZeroUsize::new(u.concurrency)
        .filter(|c| c.get() <= 4096)
        .ok_or_else(|| ConfigError::new("upload.concurrency", "must be between 1 and 4096"))?;
    if u.retry_initial_backoff_ms == 0 || u.retry_max_backoff_ms < u.retry_initial_backoff_ms {
        return Err(ConfigError::new(
            "upload.retry_max_backoff_ms",
            "retry_initial_backoff_ms must be ≥ 1 and ≤ retry_max_backoff_ms",
        ));
    }
    if u.retry_max_backoff_ms > 86_400_000 {
        return Err(ConfigError::new(
            "upload.retry_max_backoff_ms",
            "must be at most 86400000 (a day); lower it",
        ));
    }
    Ok(UploadConfig {
        part_size_bytes: u.part_size_bytes as usize,
        concurrency,
        request_timeout: positive_secs("upload.request_timeout_secs", u.request_timeout_secs)?,
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(u.retry_initial_backoff_ms),
            max_backoff: Duration::from_millis(u.retry_max_backoff_ms),
            max_attempts: (u.retry_max_attempts > 0).then_some(u.retry_max_attempts),
        },
        orphan_min_age: match u.abort_orphaned_uploads {
            true => Some(bounded_secs(
                "upload.orphaned_upload_min_age_secs",
                u.orphaned_upload_min_age_secs,
            )?),
            false => None,
        },
    })
}

/// The budget's share for parsed schemas (none without a registry).
pub(super) fn schema_cache_bytes(k: &KafkaConfig) -> usize {
    k.schema_registry.as_ref().map_or(0, |r| r.cache_bytes)
}
