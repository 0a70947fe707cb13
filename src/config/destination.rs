//! Validation of one `[[destinations]]` entry: bucket, endpoint, signing, storage class,
//! encryption, credentials, routing (time source, templates, time window) and batch
//! (compression, rotation) into a typed [`DestinationConfig`], each failure a one-line
//! [`ConfigError`] naming the key and the fix.

use super::registry::ValueFormat;
use super::validate::{bounded_secs, positive_secs};
use super::*;
use crate::template::{check_path, FileTemplate, FileValues, FolderTemplate, KeyContext};

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

pub(super) fn validate_destination(
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
    if let Some(path) = &d.ca_file {
        if d.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            return Err(ConfigError::new(
                key("ca_file"),
                "is for TLS, but the endpoint is http://; use an https:// endpoint or drop ca_file",
            ));
        }
        read_ca_bundle(path).map_err(|e| ConfigError::new(key("ca_file"), e))?;
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
    let mut routing = validate_routing(at, &d.routing)?;
    check_key_parts(at, d, &routing)?;
    let batch = validate_batch(at, &d.batch)?;
    let parquet = match (d.batch.format.as_str(), &d.parquet) {
        ("ndjson", None) => None,
        ("ndjson", Some(_)) => {
            return Err(ConfigError::new(
                format!("{at}.parquet"),
                "is only used with batch.format = \"parquet\"; set that or remove the table",
            ))
        }
        ("parquet", p) => Some(std::sync::Arc::new(super::parquet::validate(
            at,
            &p.clone().unwrap_or_default(),
            d.kafka_metadata_field.as_deref(),
        )?)),
        (other, _) => {
            return Err(ConfigError::new(
                format!("{at}.batch.format"),
                format!("unknown value {other:?}; use ndjson or parquet"),
            ))
        }
    };
    if parquet.as_deref().is_some_and(|p| p.from_schema)
        && !matches!(
            d.value_format,
            ValueFormat::Avro | ValueFormat::Protobuf | ValueFormat::JsonSchema
        )
    {
        return Err(ConfigError::new(
            format!("{at}.parquet.columns"),
            format!(
                "\"from_schema\" takes the columns from each record's Schema Registry schema, but value_format = \"{}\" gives records without one; set value_format to avro, protobuf or json_schema, or declare the columns",
                d.value_format.as_str()
            ),
        ));
    }
    let iceberg = match (&d.iceberg, parquet.as_deref()) {
        (None, _) => None,
        (Some(raw), p) => {
            super::iceberg::refuse_inapplicable(at, d)?;
            let p = p.ok_or_else(|| {
                ConfigError::new(
                    format!("{at}.batch.format"),
                    "an Iceberg table needs batch.format = \"parquet\"",
                )
            })?;
            let table = super::iceberg::validate_for(at, raw, p, &routing.time_source)?;
            // A file's rows share their partition: files are grouped by the partition's time
            // slot (and, in the router, by the identity columns' values).
            routing.folder = FolderTemplate::parse(table.folder_template())
                .map_err(|m| ConfigError::new(format!("{at}.iceberg.partition_time"), m))?;
            Some(std::sync::Arc::new(table))
        }
    };
    if parquet.is_some() && d.routing.file_template == RawRouting::default().file_template {
        routing.file = FileTemplate::parse(crate::template::PARQUET_FILE_TEMPLATE)
            .map_err(|m| ConfigError::new(format!("{at}.routing.file_template"), m))?;
    }
    if batch.deterministic {
        let why = match routing.time_source {
            TimeSource::UploadTime | TimeSource::EventTimeOrUploadTime { .. } => {
                Some(("routing.time_source", "folders from the upload time differ on a replay; use event_time, kafka_timestamp or none"))
            }
            _ if !routing.file.is_deterministic() => Some(("routing.file_template", "{upload_time} and {random5} differ on a replay; remove them")),
            _ if parquet.as_deref().is_some_and(|p| p.from_schema) => Some(("parquet.columns", "\"from_schema\" closes files where a schema first brings columns, which a replay does not repeat; declare the columns")),
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
    // A dropped field must not come back as a column (drop_fields is how PII is kept out).
    for (i, c) in parquet.iter().flat_map(|p| p.columns.iter()).enumerate() {
        if let Some(dropped) = filter
            .drop_fields
            .iter()
            .find(|f| c.path.starts_with(f.as_slice()))
        {
            return Err(ConfigError::new(
                format!("{at}.parquet.columns[{i}].path"),
                format!(
                    "reads {:?}, which filter.drop_fields removes; drop the column or keep the field",
                    dropped.join(".")
                ),
            ));
        }
    }
    if filter.field.is_none() && !(filter.include.is_empty() && filter.exclude.is_empty()) {
        return Err(ConfigError::new(
            key("filter.field"),
            "include/exclude need the event-type field; set field = \"type\" (or \"event\")",
        ));
    }
    Ok(DestinationConfig {
        name: d.name.clone(),
        topics,
        value_format: d.value_format,
        key_format: d.key_format,
        bucket: d.bucket.clone(),
        region: d.region.clone(),
        endpoint: d.endpoint.clone(),
        ca_file: d.ca_file.clone(),
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
        parquet,
        iceberg,
    })
}

/// `kafka-s3-sink-<hostname>` (on Kubernetes the hostname is the pod name), cut to the 64
/// characters STS allows, other characters than STS takes replaced by `-`.
pub(super) fn default_session_name() -> String {
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

/// The PEM bytes of a CA bundle, once every certificate in it parses as a trust anchor (the
/// HTTP client would otherwise panic on it at the first connection).
pub fn read_ca_bundle(path: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read {path}: {e}; mount the file there or fix the path"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{path} is not valid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{path}: a certificate cannot be a trust anchor: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(pem)
}

/// Prefixes and templates can neither leave the destination's tree nor hide in it (see
/// [`check_path`]): checked as written, then rendered with this destination's own
/// `{destination}`, `{app}` and `{source}` values (a name of `..` would otherwise move data).
fn check_key_parts(
    at: &str,
    d: &RawDestination,
    routing: &RoutingConfig,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    check_path("the prefix", &d.prefix).map_err(|m| ConfigError::new(key("prefix"), m))?;
    check_path("the error prefix", &d.error_prefix)
        .map_err(|m| ConfigError::new(key("error_prefix"), m))?;
    let ctx = KeyContext {
        topic: "topic",
        partition: 0,
        source: d.source_id.as_deref().unwrap_or("topic"),
        destination: &d.name,
        app: &d.app_name,
    };
    let now = chrono::Utc::now();
    let fields = vec!["field".to_string(); routing.folder.field_paths().len()];
    let folder = routing
        .folder
        .render(routing.folder.slot(&now), &ctx, &fields);
    check_path(
        "the folder template, with this destination's name, app_name and source_id,",
        &folder,
    )
    .map_err(|m| ConfigError::new(key("routing.folder_template"), m))?;
    let values = FileValues {
        start_offset: 0,
        end_offset: 0,
        record_count: 0,
        upload_time: now,
    };
    let file = routing.file.render(&ctx, &values, "");
    let file_key = || key("routing.file_template");
    if file.contains('/') {
        return Err(ConfigError::new(
            file_key(),
            "renders a '/' from the destination's name, app_name or source_id; remove the '/' there",
        ));
    }
    check_path(
        "the file name, with this destination's name, app_name and source_id,",
        &file,
    )
    .map_err(|m| ConfigError::new(file_key(), m))
}

/// `a/b` → `a/b/`, `a/b/` stays, empty stays empty (a leading `/` is refused before).
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
        ("gzip", level) => match level.unwrap_or(DEFAULT_GZIP_LEVEL) {
            level @ 0..=9 => Compression::Gzip { level },
            _ => {
                return Err(ConfigError::new(
                    key("compression_level"),
                    "gzip level must be 0–9",
                ))
            }
        },
        ("zstd", level) => match level.unwrap_or(DEFAULT_ZSTD_LEVEL as u32) {
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
