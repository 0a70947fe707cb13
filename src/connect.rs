//! Checks that connect: the start-up checks of `run` (credentials and bucket through the
//! bucket check, topics through the brokers' metadata) and `check-config --connect`.
//!
//! Invariant: a failure only a change of settings can mend (no credentials, no such bucket,
//! access denied, an unknown topic) is one line naming the fix, and stops `run` at start-up
//! (exit 2); anything that may pass by itself (timeouts, 5xx, a broker down) is left to the
//! retries, as once the connector has run.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, DestinationConfig, KafkaConfig};
use crate::sink::s3::S3Sink;
use crate::sink::{ObjectSink, SinkError};
use crate::source::kafka::{probe_topics, TopicsSeen};

/// How long one start-up check may take.
pub const CHECK_WAIT: Duration = Duration::from_secs(10);

/// The fix for an S3 failure that only a change of settings can mend, if it is one; `i` is
/// the destination's index in the config.
pub fn settings_fix(i: usize, d: &DestinationConfig, e: &SinkError) -> Option<String> {
    let at = format!("destinations[{i}] (`{}`)", d.name);
    let rid = e
        .answer
        .request_id
        .as_deref()
        .map(|r| format!(", request id {r}"))
        .unwrap_or_default();
    if e.answer.no_credentials {
        return Some(format!(
            "{at}: no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a web identity (IRSA, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN) or an instance role, or destinations[{i}].credentials.access_key_id and secret_access_key"
        ));
    }
    let store = match &d.endpoint {
        Some(ep) => format!("{} at {ep}", d.region),
        None => d.region.clone(),
    };
    let fix = match e.answer.code.as_deref()? {
        "NoSuchBucket" => format!(
            "{at}: bucket `{}` does not exist in {store}: create it, or fix destinations[{i}].bucket or region",
            d.bucket
        ),
        "AccessDenied" | "AllAccessDisabled" => format!(
            "{at}: access denied to bucket `{}` ({} under prefix `{}`{rid}): grant the credentials deploy/iam-policy.json's permissions on this bucket and prefix, or check expected_bucket_owner",
            d.bucket, e.op, d.prefix
        ),
        "InvalidAccessKeyId" => format!(
            "{at}: the store does not know the access key id (bucket `{}` in {store}{rid}): check the credentials",
            d.bucket
        ),
        "SignatureDoesNotMatch" => format!(
            "{at}: the secret access key does not match the access key id (bucket `{}`{rid}): check the credentials",
            d.bucket
        ),
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
            format!(
                "{at}: bucket `{}` is not in {} ({}{rid}): set destinations[{i}].region to the bucket's region",
                d.bucket,
                d.region,
                e.answer.code.as_deref().unwrap_or_default()
            )
        }
        _ => return None,
    };
    Some(fix)
}

/// A setting the start-up checks refuse; displayed as the one-line fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SettingsError {
    /// A destination's bucket cannot be used as configured (no credentials, no such bucket,
    /// access denied).
    #[error("{fix}")]
    Bucket {
        /// The destination.
        destination: String,
        /// The fix ([`settings_fix`]).
        fix: String,
    },
    /// Named topics the brokers do not know (and the consumer may not create).
    #[error("{}", missing_fix(.missing))]
    MissingTopics {
        /// The topics.
        missing: Vec<String>,
    },
}

/// The start-up bucket check of every destination (a one-key listing under its prefix, which
/// also resolves the credentials): `Err` for a setting to change; a failure that may pass is
/// logged once and left to the uploads' retries.
pub async fn check_buckets(
    config: &Config,
    sinks: &[Arc<dyn ObjectSink>],
) -> Result<(), SettingsError> {
    for (i, (d, sink)) in config.destinations.iter().zip(sinks).enumerate() {
        match tokio::time::timeout(CHECK_WAIT, sink.check()).await {
            Ok(Ok(())) => {
                tracing::info!(destination = %d.name, bucket = %d.bucket, "bucket reachable")
            }
            Ok(Err(e)) => {
                if let Some(fix) = settings_fix(i, d, &e) {
                    return Err(SettingsError::Bucket {
                        destination: d.name.clone(),
                        fix,
                    });
                }
                tracing::warn!(destination = %d.name, error = %e, "bucket check failed; uploads will retry")
            }
            Err(_) => {
                tracing::warn!(destination = %d.name, "bucket check timed out; uploads will retry")
            }
        }
    }
    Ok(())
}

/// Whether the consumer may create the topics it subscribes to (then none can be unknown).
fn auto_creates(kafka: &KafkaConfig) -> bool {
    kafka
        .properties
        .get("allow.auto.create.topics")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The fix for topics the brokers do not know.
fn missing_fix(missing: &[String]) -> String {
    let names: Vec<String> = missing.iter().map(|t| format!("`{t}`")).collect();
    format!(
        "kafka.topics: topic {} does not exist on the brokers: create it, fix the name, or set kafka.properties.\"allow.auto.create.topics\" = \"true\"",
        names.join(", ")
    )
}

/// The start-up topic check: `Err` when a named topic does not exist (unless the consumer may
/// create it); brokers that cannot be reached are logged once and left to the consumer, which
/// keeps trying.
pub async fn check_topics(kafka: &KafkaConfig) -> Result<(), SettingsError> {
    if auto_creates(kafka) || kafka.topics.entries().iter().all(|t| t.starts_with('^')) {
        return Ok(());
    }
    let k = kafka.clone();
    let seen = tokio::task::spawn_blocking(move || probe_topics(&k, CHECK_WAIT)).await;
    match seen {
        Ok(Ok(TopicsSeen { missing, .. })) if !missing.is_empty() => {
            Err(SettingsError::MissingTopics { missing })
        }
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(reason = %e, "could not read the topics' metadata at start-up; the consumer keeps trying");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "topic check did not run");
            Ok(())
        }
    }
}

/// One check of `check-config --connect`: its name and `Ok(what was seen)` or `Err(the fix)`.
pub type Outcome = (String, Result<String, String>);

/// `check-config --connect`: credentials, bucket (listing, then a conditional-write probe),
/// brokers and topics, without joining the group or consuming. The probe writes one empty
/// object, `<prefix>_kafka-s3-sink-probe` (Athena and Hive skip names starting with `_`).
pub async fn connect_checks(config: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (i, d) in config.destinations.iter().enumerate() {
        let sink = S3Sink::connect(d, config.upload.request_timeout).await;
        let name = |what: &str| format!("destinations[{i}] `{}` {what}", d.name);
        let fix = |e: &SinkError| settings_fix(i, d, e).unwrap_or_else(|| e.to_string());
        let creds = match tokio::time::timeout(CHECK_WAIT, sink.credentials()).await {
            Ok(Ok(temporary)) => Ok(if temporary {
                "ok (temporary credentials)".to_string()
            } else {
                "ok (long-term keys)".to_string()
            }),
            Ok(Err(e)) => Err(fix(&e)),
            Err(_) => Err("timed out resolving credentials".to_string()),
        };
        let creds_ok = creds.is_ok();
        out.push((name("credentials"), creds));
        if !creds_ok {
            continue;
        }
        let bucket = match tokio::time::timeout(CHECK_WAIT, sink.check()).await {
            Ok(Ok(())) => Ok(format!(
                "ok (bucket `{}`, listed under `{}`)",
                d.bucket, d.prefix
            )),
            Ok(Err(e)) => Err(fix(&e)),
            Err(_) => Err(format!(
                "bucket `{}` did not answer within {}s",
                d.bucket,
                CHECK_WAIT.as_secs()
            )),
        };
        let bucket_ok = bucket.is_ok();
        out.push((name("bucket"), bucket));
        if !bucket_ok {
            continue;
        }
        let key = format!("{}_kafka-s3-sink-probe", d.prefix);
        let probe = match tokio::time::timeout(CHECK_WAIT, sink.probe_conditional_write(&key)).await {
            Ok(Ok(true)) if d.conditional_writes => {
                Ok(format!("ok (wrote `{key}`; If-None-Match honoured)"))
            }
            Ok(Ok(true)) => Ok(format!(
                "ok (wrote `{key}`; the store honours If-None-Match: conditional_writes = true would protect objects)"
            )),
            Ok(Ok(false)) if d.conditional_writes => Err(format!(
                "the store accepted a second write of `{key}` with If-None-Match: *: it does not honour conditional writes; set destinations[{i}].conditional_writes = false"
            )),
            Ok(Ok(false)) => Ok(format!("ok (wrote `{key}`; no conditional writes)")),
            Ok(Err(e)) if e.answer.status == Some(501) && d.conditional_writes => Err(format!(
                "the store does not implement conditional writes ({e}); set destinations[{i}].conditional_writes = false"
            )),
            Ok(Err(e)) => Err(fix(&e)),
            Err(_) => Err(format!("the write probe did not finish within {}s", CHECK_WAIT.as_secs())),
        };
        out.push((name("write"), probe));
    }
    let k = config.kafka.clone();
    let seen = tokio::task::spawn_blocking(move || probe_topics(&k, CHECK_WAIT)).await;
    match seen {
        Ok(Ok(seen)) => {
            out.push((
                "kafka brokers".to_string(),
                Ok(format!("ok ({} in the cluster's metadata)", seen.brokers)),
            ));
            let found: Vec<String> = seen
                .found
                .iter()
                .map(|(t, p)| format!("`{t}` ({p} partitions)"))
                .collect();
            let topics = if !seen.missing.is_empty() && !auto_creates(&config.kafka) {
                Err(missing_fix(&seen.missing))
            } else if found.is_empty() {
                Ok("ok (patterns only: matched as topics appear)".to_string())
            } else {
                Ok(format!("ok ({})", found.join(", ")))
            };
            out.push(("kafka topics".to_string(), topics));
        }
        Ok(Err(e)) => out.push((
            "kafka brokers".to_string(),
            Err(format!(
                "cannot read the cluster's metadata: {e}; check kafka.brokers, TLS and SASL settings"
            )),
        )),
        Err(e) => out.push(("kafka brokers".to_string(), Err(e.to_string()))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{ErrorKind, S3Answer};

    fn dest() -> DestinationConfig {
        let text = r#"
[kafka]
brokers = "127.0.0.1:9092"
group_id = "g"
topics = ["t"]

[[destinations]]
name = "events"
bucket = "my-bucket"
prefix = "events/"
"#;
        crate::config::parse(text, &|_| None)
            .expect("config")
            .destinations
            .remove(0)
    }

    fn failed(code: Option<&str>, no_credentials: bool) -> SinkError {
        SinkError {
            op: "ListObjectsV2",
            bucket: "my-bucket".into(),
            key: "events/".into(),
            kind: ErrorKind::Other,
            message: String::new(),
            answer: Box::new(S3Answer {
                status: code.map(|_| 403),
                code: code.map(str::to_string),
                request_id: code.map(|_| "RID1".to_string()),
                no_credentials,
            }),
        }
    }

    #[test]
    fn settings_failures_name_their_fix_and_transient_ones_none() {
        let d = dest();
        let fix = |e| settings_fix(0, &d, &e);
        assert!(fix(failed(None, true))
            .unwrap()
            .contains("no AWS credentials found: set AWS_ACCESS_KEY_ID"));
        assert!(fix(failed(Some("NoSuchBucket"), false))
            .unwrap()
            .contains("bucket `my-bucket` does not exist in us-east-1"));
        let denied = fix(failed(Some("AccessDenied"), false)).unwrap();
        assert!(
            denied.contains("access denied") && denied.contains("RID1"),
            "{denied}"
        );
        assert!(fix(failed(Some("PermanentRedirect"), false))
            .unwrap()
            .contains("region"));
        assert_eq!(fix(failed(Some("SlowDown"), false)), None);
        assert_eq!(fix(failed(None, false)), None);
    }

    #[test]
    fn unknown_topics_are_named_with_the_fix() {
        let line = missing_fix(&["a".into(), "b".into()]);
        assert!(line.contains("topic `a`, `b` does not exist"), "{line}");
        assert!(line.contains("allow.auto.create.topics"), "{line}");
    }
}
