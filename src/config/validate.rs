//! Validation: raw structs → typed config, every field and cross-field rule checked once, each
//! failure a one-line [`ConfigError`] naming the key and the fix.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use super::*;
use crate::template::{FileTemplate, FolderTemplate};

const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
];

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
            0 => std::thread::available_parallelism().map_or(1, usize::from),
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
        let dest = validate_destination(&format!("destinations[{i}]"), d, &kafka.topics)?;
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
    })
}

/// The longest duration a `*_secs` key takes: 100 years. No age, deadline or time window is
/// meaningfully longer, and every sum of instants and dates stays far from overflow below it.
pub(crate) const MAX_SECS: u64 = 100 * 366 * 86_400;

fn positive_secs(key: &str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(ConfigError::new(key, "must be at least 1 (seconds)"));
    }
    bounded_secs(key, v)
}

/// `v` seconds, refused above [`MAX_SECS`].
fn bounded_secs(key: &str, v: u64) -> Result<Duration, ConfigError> {
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
    // Statistics feed the lag metrics; a smaller prefetch keeps memory near the budget.
    props.insert("statistics.interval.ms".into(), "5000".into());
    props.insert("queued.max.messages.kbytes".into(), "16384".into());
    // librdkafka waits 1 s before fetching again once that prefetch queue was full; with a
    // consumer that is slower than the broker that idled the worker 80 % of the time
    // (BENCHMARKS.md, with the channel wait: 13.4 MB/s before, 125 MB/s after).
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
    Ok(KafkaConfig {
        topics,
        group_id: k.group_id.clone(),
        properties: props,
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

fn split_path(key: &str, path: &str) -> Result<Vec<String>, ConfigError> {
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            key,
            format!("invalid field path {path:?}; use dotted names like context.sent_at"),
        ));
    }
    Ok(parts)
}

fn validate_destination(
    at: &str,
    d: &RawDestination,
    kafka_topics: &TopicSet,
) -> Result<DestinationConfig, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    if d.name.trim().is_empty() {
        return Err(ConfigError::new(key("name"), "must not be empty"));
    }
    if d.bucket.trim().is_empty() || d.bucket.contains('/') {
        return Err(ConfigError::new(
            key("bucket"),
            "set a bucket name (no slashes; put folders in `prefix`)",
        ));
    }
    let topics = if d.topics.is_empty() {
        kafka_topics.clone()
    } else {
        for t in &d.topics {
            let subscribed =
                kafka_topics.has_entry(t) || (!t.starts_with('^') && kafka_topics.matches(t));
            if !subscribed {
                return Err(ConfigError::new(
                    key("topics"),
                    format!("topic {t:?} is not in kafka.topics (as a name, or a name one of its ^patterns matches); subscribe to it there too"),
                ));
            }
        }
        TopicSet::parse(&key("topics"), &d.topics)?
    };
    if let Some(ep) = &d.endpoint {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return Err(ConfigError::new(
                key("endpoint"),
                format!("{ep:?} must start with http:// or https://"),
            ));
        }
    }
    let payload_signing = match d.payload_signing.as_str() {
        "auto" => PayloadSigning::Auto,
        "signed" => PayloadSigning::Signed,
        "unsigned" => PayloadSigning::Unsigned,
        other => {
            return Err(ConfigError::new(
                key("payload_signing"),
                format!("unknown value {other:?}; use auto, signed or unsigned"),
            ))
        }
    };
    if payload_signing == PayloadSigning::Unsigned
        && d.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
    {
        return Err(ConfigError::new(
            key("payload_signing"),
            "\"unsigned\" over a plain http:// endpoint would leave the body with no tamper-proof check; use auto or signed, or an https:// endpoint",
        ));
    }
    if let Some(sc) = &d.storage_class {
        if !STORAGE_CLASSES.contains(&sc.as_str()) {
            return Err(ConfigError::new(
                key("storage_class"),
                format!(
                    "unknown storage class {sc:?}; use one of {}",
                    STORAGE_CLASSES.join(", ")
                ),
            ));
        }
    }
    let encryption = match d.encryption.mode.as_str() {
        "none" | "" => Encryption::None,
        "AES256" | "AES-256" => Encryption::Aes256,
        "aws:kms" => Encryption::Kms {
            key_id: d.encryption.kms_key_id.clone(),
            bucket_key: d.encryption.bucket_key,
            context: (!d.encryption.context.is_empty()).then(|| {
                use base64::Engine;
                let json = serde_json::to_vec(&d.encryption.context)
                    .expect("invariant: a map of strings serializes");
                base64::engine::general_purpose::STANDARD.encode(json)
            }),
        },
        other => {
            return Err(ConfigError::new(
                key("encryption.mode"),
                format!("unknown value {other:?}; use none, AES256 or aws:kms"),
            ))
        }
    };
    if !matches!(encryption, Encryption::Kms { .. }) {
        for (k, set) in [
            ("kms_key_id", d.encryption.kms_key_id.is_some()),
            ("bucket_key", d.encryption.bucket_key),
            ("context", !d.encryption.context.is_empty()),
        ] {
            if set {
                return Err(ConfigError::new(
                    key(&format!("encryption.{k}")),
                    "is only used with mode = \"aws:kms\"; set the mode or remove it",
                ));
            }
        }
    }
    if let Some(owner) = &d.expected_bucket_owner {
        if owner.len() != 12 || !owner.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::new(
                key("expected_bucket_owner"),
                format!("{owner:?} is not an AWS account id; use the 12 digits of the account that owns the bucket"),
            ));
        }
    }
    let role_session_name = match &d.credentials.role_session_name {
        Some(n) => {
            let valid = (2..=64).contains(&n.len())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
            if !valid {
                return Err(ConfigError::new(
                    key("credentials.role_session_name"),
                    "must be 2–64 characters of letters, digits and +=,.@_-",
                ));
            }
            n.clone()
        }
        None => default_session_name(),
    };
    let c = &d.credentials;
    let static_keys = match (&c.access_key_id, &c.secret_access_key) {
        (Some(a), Some(s)) => Some((a.clone(), s.clone(), c.session_token.clone())),
        (None, None) => None,
        _ => {
            return Err(ConfigError::new(
                key("credentials"),
                "set both access_key_id and secret_access_key, or neither (default AWS chain)",
            ))
        }
    };
    let credentials = Credentials {
        static_keys,
        role_arn: c.role_arn.clone(),
        external_id: c.external_id.clone(),
        role_session_name,
    };
    let routing = validate_routing(at, &d.routing)?;
    let batch = validate_batch(at, &d.batch)?;
    if batch.deterministic {
        let why = match routing.time_source {
            TimeSource::UploadTime | TimeSource::EventTimeOrUploadTime { .. } => {
                Some(("routing.time_source", "folders from the upload time differ on a replay; use event_time, kafka_timestamp or none"))
            }
            _ if !routing.file.is_deterministic() => Some(("routing.file_template", "{upload_time} and {random5} differ on a replay; remove them")),
            _ => None,
        };
        if let Some((k, msg)) = why {
            return Err(ConfigError::new(
                key(k),
                format!(
                    "batch.deterministic = true needs the same names for the same records: {msg}"
                ),
            ));
        }
    }
    let filter = FilterConfig {
        field: d
            .filter
            .field
            .as_deref()
            .map(|f| split_path(&key("filter.field"), f))
            .transpose()?,
        include: d.filter.include.clone(),
        exclude: d.filter.exclude.clone(),
        drop_fields: d
            .filter
            .drop_fields
            .iter()
            .map(|f| split_path(&key("filter.drop_fields"), f))
            .collect::<Result<_, _>>()?,
    };
    if filter.field.is_none() && !(filter.include.is_empty() && filter.exclude.is_empty()) {
        return Err(ConfigError::new(
            key("filter.field"),
            "include/exclude need the event-type field; set field = \"type\" (or \"event\")",
        ));
    }
    Ok(DestinationConfig {
        name: d.name.clone(),
        topics,
        bucket: d.bucket.clone(),
        region: d.region.clone(),
        endpoint: d.endpoint.clone(),
        force_path_style: d.force_path_style,
        payload_signing,
        prefix: normalize_folder(&d.prefix),
        error_prefix: normalize_folder(&d.error_prefix),
        storage_class: d.storage_class.clone(),
        app_name: d.app_name.clone(),
        source_id: d.source_id.clone(),
        content_type: d.content_type.clone(),
        content_encoding_header: d.content_encoding_header,
        conditional_writes: d.conditional_writes,
        expected_bucket_owner: d.expected_bucket_owner.clone(),
        kafka_metadata_field: match d.kafka_metadata_field.as_deref() {
            None => None,
            Some(f) if !f.is_empty() && f.len() <= 128 && !f.chars().any(char::is_control) => {
                Some(f.to_string())
            }
            Some(_) => {
                return Err(ConfigError::new(
                    key("kafka_metadata_field"),
                    "must be 1–128 characters without control characters, e.g. \"_kafka\"",
                ))
            }
        },
        credentials,
        encryption,
        routing,
        batch,
        filter,
    })
}

/// `kafka-s3-sink-<hostname>` (on Kubernetes the hostname is the pod name), cut to the 64
/// characters STS allows, other characters than STS takes replaced by `-`.
fn default_session_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = if host.is_empty() {
        "kafka-s3-sink".to_string()
    } else {
        format!("kafka-s3-sink-{host}")
    };
    name.truncate(64);
    name
}

/// `a/b` → `a/b/`, `/x/` → `x/`, empty stays empty.
fn normalize_folder(p: &str) -> String {
    let t = p.trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}/")
    }
}

fn validate_routing(at: &str, r: &RawRouting) -> Result<RoutingConfig, ConfigError> {
    let key = |k: &str| format!("{at}.routing.{k}");
    let format = match r.time_format.as_str() {
        "auto" => TimeFormat::Auto,
        "rfc3339" => TimeFormat::Rfc3339,
        "epoch_seconds" => TimeFormat::EpochSeconds,
        "epoch_millis" => TimeFormat::EpochMillis,
        other => {
            return Err(ConfigError::new(
                key("time_format"),
                format!(
                    "unknown value {other:?}; use auto, rfc3339, epoch_seconds or epoch_millis"
                ),
            ))
        }
    };
    let path = || split_path(&key("time_field"), &r.time_field);
    let time_source = match r.time_source.as_str() {
        "event_time" => TimeSource::EventTime {
            path: path()?,
            format,
        },
        "event_time_or_upload_time" => TimeSource::EventTimeOrUploadTime {
            path: path()?,
            format,
        },
        "kafka_timestamp" => TimeSource::KafkaTimestamp,
        "upload_time" => TimeSource::UploadTime,
        "none" => TimeSource::None,
        other => return Err(ConfigError::new(
            key("time_source"),
            format!("unknown value {other:?}; use event_time, kafka_timestamp, upload_time, event_time_or_upload_time or none"),
        )),
    };
    let granularity = match r.granularity.as_str() {
        "record" => Granularity::Record,
        "first_event" => Granularity::FirstEvent,
        other => {
            return Err(ConfigError::new(
                key("granularity"),
                format!("unknown value {other:?}; use record or first_event"),
            ))
        }
    };
    let timezone: chrono_tz::Tz = r.timezone.parse().map_err(|_| {
        ConfigError::new(
            key("timezone"),
            format!(
                "unknown timezone {:?}; use an IANA name like UTC or Europe/Berlin",
                r.timezone
            ),
        )
    })?;
    let folder = FolderTemplate::parse(&r.folder_template)
        .map_err(|m| ConfigError::new(key("folder_template"), m))?;
    if time_source == TimeSource::None && folder.uses_time() {
        return Err(ConfigError::new(
            key("folder_template"),
            "uses date directives but time_source is none; remove the % directives or pick a time source",
        ));
    }
    let file = FileTemplate::parse(&r.file_template)
        .map_err(|m| ConfigError::new(key("file_template"), m))?;
    Ok(RoutingConfig {
        time_source,
        granularity,
        timezone,
        folder,
        file,
        max_future: match r.max_future_secs {
            0 => None,
            s => Some(bounded_secs(&key("max_future_secs"), s)?),
        },
        max_past: match r.max_past_secs {
            0 => None,
            s => Some(bounded_secs(&key("max_past_secs"), s)?),
        },
    })
}

fn validate_batch(at: &str, b: &RawBatch) -> Result<BatchConfig, ConfigError> {
    let key = |k: &str| format!("{at}.batch.{k}");
    let compression = match (b.compression.as_str(), b.compression_level) {
        ("none", None) => Compression::None,
        ("none", Some(_)) => {
            return Err(ConfigError::new(
                key("compression_level"),
                "is only used with compression = \"gzip\" or \"zstd\"; remove it",
            ))
        }
        ("gzip", level) => match level.unwrap_or(6) {
            level @ 0..=9 => Compression::Gzip { level },
            _ => {
                return Err(ConfigError::new(
                    key("compression_level"),
                    "gzip level must be 0–9",
                ))
            }
        },
        ("zstd", level) => match level.unwrap_or(3) {
            level @ 1..=19 => Compression::Zstd {
                level: level as i32,
            },
            _ => {
                return Err(ConfigError::new(
                    key("compression_level"),
                    "zstd level must be 1–19",
                ))
            }
        },
        (other, _) => {
            return Err(ConfigError::new(
                key("compression"),
                format!("unknown value {other:?}; use gzip, zstd or none"),
            ))
        }
    };
    if b.max_bytes < 1024 {
        return Err(ConfigError::new(key("max_bytes"), "must be at least 1024"));
    }
    if b.max_records == 0 {
        return Err(ConfigError::new(key("max_records"), "must be at least 1"));
    }
    Ok(BatchConfig {
        compression,
        max_bytes: b.max_bytes,
        max_records: b.max_records,
        max_age: positive_secs(&key("max_age_secs"), b.max_age_secs)?,
        idle: positive_secs(&key("idle_secs"), b.idle_secs)?,
        max_record_bytes: (b.max_record_bytes > 0).then_some(b.max_record_bytes),
        deterministic: b.deterministic,
    })
}
