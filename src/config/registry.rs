//! `[kafka.schema_registry]` and the destinations' `value_format`: where a Confluent-compatible
//! Schema Registry is, how to reach it, and which records are read through it
//! (docs/schema-registry.md).
//!
//! Invariants: a destination whose `value_format` is not `json` needs the registry; every URL is
//! http(s) with a host; basic auth needs both `username` and `password` and excludes
//! `bearer_token`; the files named are read at start-up (the error names the key and the path);
//! credentials are [`Secret`]s and never print.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

const KEY: &str = "kafka.schema_registry";

/// `[kafka.schema_registry]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSchemaRegistry {
    /// The registry's base URL, or several (tried in turn when one fails).
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// Basic-auth user name (Confluent Cloud: the API key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<Secret>,
    /// Basic-auth password (Confluent Cloud: the API secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A bearer token sent as `Authorization: Bearer …` (instead of basic auth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// CA certificates (PEM) to verify the registry with, besides the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate (PEM), for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client private key (PEM, unencrypted), for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Time one request may take (default 10,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// Bytes the parsed schemas may hold (default: a 32nd of `pipeline.memory_budget_bytes`,
    /// at least 1 MiB); charged to the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_bytes: Option<u64>,
    /// `/readyz` turns not-ready once the registry has been failing this long (default 120).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unready_after_secs: Option<u64>,
}

impl RawSchemaRegistry {
    /// True when no key is set (no registry).
    pub fn is_unset(&self) -> bool {
        self.url.is_empty()
            && self.username.is_none()
            && self.password.is_none()
            && self.bearer_token.is_none()
            && self.ca_file.is_none()
            && self.cert_file.is_none()
            && self.key_file.is_none()
            && self.request_timeout_ms.is_none()
            && self.cache_bytes.is_none()
            && self.unready_after_secs.is_none()
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// How the registry authenticates the connector.
#[derive(Debug, Clone, Default)]
pub enum RegistryAuth {
    /// No credentials.
    #[default]
    None,
    /// HTTP basic auth.
    Basic {
        /// User name.
        username: Secret,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

/// The validated registry settings.
#[derive(Debug, Clone)]
pub struct SchemaRegistryConfig {
    /// Base URLs without a trailing slash, in the order they are tried.
    pub urls: Vec<String>,
    /// Credentials.
    pub auth: RegistryAuth,
    /// Extra CA certificates (PEM), read at start-up.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM, concatenated), read at start-up.
    pub identity_pem: Option<Vec<u8>>,
    /// Time one request may take.
    pub request_timeout: Duration,
    /// Bytes the parsed schemas may hold.
    pub cache_bytes: usize,
    /// Failing time after which `/readyz` reports not ready.
    pub unready_after: Duration,
}

/// How a destination reads record values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// JSON text (no registry).
    #[default]
    Json,
    /// Avro in the Confluent wire format.
    Avro,
    /// Protobuf in the Confluent wire format.
    Protobuf,
    /// JSON in the Confluent wire format (JSON Schema serializers).
    JsonSchema,
    /// The Confluent wire format when the value starts with its magic byte, else JSON text.
    Auto,
}

impl ValueFormat {
    /// Whether records of this format are read through the registry.
    pub fn framed(self) -> bool {
        self != Self::Json
    }

    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Avro => "avro",
            Self::Protobuf => "protobuf",
            Self::JsonSchema => "json_schema",
            Self::Auto => "auto",
        }
    }
}

/// How a destination reads record keys (for the Kafka metadata's `key`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// The key's bytes as they are.
    #[default]
    Raw,
    /// Avro in the Confluent wire format.
    Avro,
    /// Protobuf in the Confluent wire format.
    Protobuf,
    /// JSON in the Confluent wire format.
    JsonSchema,
    /// The Confluent wire format when the key starts with its magic byte, else as it is.
    Auto,
}

impl KeyFormat {
    /// The value format that reads such a key, `None` for raw keys.
    pub fn decoded_as(self) -> Option<ValueFormat> {
        match self {
            Self::Raw => None,
            Self::Avro => Some(ValueFormat::Avro),
            Self::Protobuf => Some(ValueFormat::Protobuf),
            Self::JsonSchema => Some(ValueFormat::JsonSchema),
            Self::Auto => Some(ValueFormat::Auto),
        }
    }
}

fn err(k: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("{KEY}.{k}"), msg)
}

fn read(k: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        err(
            k,
            format!("cannot read {path}: {e}; mount the file there or fix the path"),
        )
    })
}

/// Validates `[kafka.schema_registry]` (`None` when it is not set); `budget` is
/// `pipeline.memory_budget_bytes`, which the default cache size follows.
pub fn validate(
    r: &RawSchemaRegistry,
    budget: usize,
) -> Result<Option<SchemaRegistryConfig>, ConfigError> {
    if r.is_unset() {
        return Ok(None);
    }
    if r.url.is_empty() {
        return Err(err(
            "url",
            "is missing; set the registry's URL, e.g. url = \"https://registry:8081\"",
        ));
    }
    let mut urls = Vec::with_capacity(r.url.len());
    for u in &r.url {
        let parsed = reqwest::Url::parse(u).ok().filter(|p| {
            matches!(p.scheme(), "http" | "https")
                && p.host_str().is_some_and(|h| !h.is_empty())
                && p.query().is_none()
                && p.username().is_empty()
                && p.password().is_none()
        });
        if parsed.is_none() {
            return Err(err(
                "url",
                format!(
                    "{:?} is not an http(s) URL with a host (and no credentials or query); e.g. https://registry:8081",
                    super::clip(u, 100)
                ),
            ));
        }
        urls.push(u.trim_end_matches('/').to_string());
    }
    let auth = match (&r.username, &r.password, &r.bearer_token) {
        (None, None, None) => RegistryAuth::None,
        (Some(u), Some(p), None) => RegistryAuth::Basic {
            username: u.clone(),
            password: p.clone(),
        },
        (None, None, Some(t)) => RegistryAuth::Bearer(t.clone()),
        (_, _, Some(_)) => {
            return Err(err(
                "bearer_token",
                "cannot be set with username/password; keep one way to authenticate",
            ))
        }
        _ => {
            return Err(err(
                "username",
                "basic auth needs both username and password",
            ))
        }
    };
    if r.cert_file.is_some() != r.key_file.is_some() {
        return Err(err(
            "cert_file",
            "mutual TLS needs both cert_file and key_file",
        ));
    }
    let ca_pem = r
        .ca_file
        .as_deref()
        .map(|p| read("ca_file", p))
        .transpose()?;
    if let Some(pem) = &ca_pem {
        reqwest::Certificate::from_pem_bundle(pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| err("ca_file", "holds no PEM certificate; give a PEM CA bundle"))?;
    }
    let identity_pem = match (&r.cert_file, &r.key_file) {
        (Some(c), Some(k)) => {
            let mut pem = read("cert_file", c)?;
            pem.push(b'\n');
            pem.extend(read("key_file", k)?);
            reqwest::Identity::from_pem(&pem).map_err(|_| {
                err(
                    "key_file",
                    "cert_file and key_file must be a PEM certificate and its unencrypted PEM key",
                )
            })?;
            Some(pem)
        }
        _ => None,
    };
    let request_timeout = match r.request_timeout_ms.unwrap_or(10_000) {
        ms @ 1..=600_000 => Duration::from_millis(ms),
        _ => {
            return Err(err(
                "request_timeout_ms",
                "must be between 1 and 600000 (10 minutes)",
            ))
        }
    };
    let cache_bytes = match r.cache_bytes {
        None => (budget / 32).max(1 << 20),
        Some(b) if b >= 64 * 1024 && (b as usize) <= budget / 4 => b as usize,
        Some(_) => {
            return Err(err(
                "cache_bytes",
                "must be at least 65536 and at most a quarter of pipeline.memory_budget_bytes",
            ))
        }
    };
    let unready_after = match r.unready_after_secs.unwrap_or(120) {
        s @ 1..=86_400 => Duration::from_secs(s),
        _ => {
            return Err(err(
                "unready_after_secs",
                "must be between 1 and 86400 (a day)",
            ))
        }
    };
    Ok(Some(SchemaRegistryConfig {
        urls,
        auth,
        ca_pem,
        identity_pem,
        request_timeout,
        cache_bytes,
        unready_after,
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Config, ConfigError};

    /// A config with `registry` as `[kafka.schema_registry]` and `dest` in its destination.
    fn text(registry: &str, dest: &str) -> String {
        format!(
            "[kafka]\nbrokers = \"localhost:9092\"\ngroup_id = \"g\"\ntopics = [\"events\"]\n\
             [kafka.schema_registry]\n{registry}\n\
             [[destinations]]\nname = \"s3\"\nbucket = \"b\"\n{dest}\n"
        )
    }

    fn ok(registry: &str, dest: &str) -> Config {
        parse(&text(registry, dest), &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(registry: &str, dest: &str) -> ConfigError {
        parse(&text(registry, dest), &|_| None).expect_err("refused")
    }

    #[test]
    fn columns_from_the_schema() {
        let pq = "kafka_metadata_field = \"_kafka\"\n[destinations.batch]\nformat = \"parquet\"\n[destinations.parquet]\ncolumns = \"from_schema\"\n";
        let c = ok(
            "url = \"http://sr:8081\"",
            &format!("value_format = \"avro\"\n{pq}"),
        );
        let p = c.destinations[0].parquet.as_ref().unwrap();
        assert!(p.from_schema && p.columns.is_empty());
        assert_eq!(p.fixed_names().count(), 6, "the metadata columns");
        let refused = [
            ("value_format = \"json\"\n", pq.to_string(), "destinations[0].parquet.columns"),
            ("value_format = \"auto\"\n", pq.to_string(), "destinations[0].parquet.columns"),
            (
                "value_format = \"avro\"\n",
                pq.replace("kafka_metadata_field = \"_kafka\"\n", ""),
                "destinations[0].kafka_metadata_field",
            ),
            (
                "value_format = \"avro\"\n",
                pq.replace("from_schema", "schema"),
                "destinations[0].parquet.columns",
            ),
            (
                "value_format = \"avro\"\n",
                pq.replace("[destinations.batch]\n", "[destinations.batch]\ndeterministic = true\n"),
                "destinations[0].parquet.columns",
            ),
            (
                "value_format = \"avro\"\n",
                format!("{pq}[destinations.iceberg]\nnamespace = \"n\"\ntable = \"t\"\npartition_time = \"none\"\npartition_fields = [\"type\"]\n[destinations.iceberg.catalog]\nkind = \"sql\"\nuri = \"sqlite://x.db\"\nwarehouse = \"s3://b/w\"\n"),
                "destinations[0].iceberg.partition_fields[0]",
            ),
            (
                "value_format = \"avro\"\n",
                format!("{pq}[destinations.iceberg]\nnamespace = \"n\"\ntable = \"t\"\npartition_time = \"hour\"\n[destinations.iceberg.catalog]\nkind = \"sql\"\nuri = \"sqlite://x.db\"\nwarehouse = \"s3://b/w\"\n"),
                "destinations[0].iceberg.partition_time",
            ),
        ];
        for (format, rest, key) in refused {
            let e = err("url = \"http://sr:8081\"", &format!("{format}{rest}"));
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn urls_auth_and_defaults() {
        let c = ok(
            "url = [\"https://sr-1:8081/\", \"http://sr-2:8081\"]\nusername = \"key\"\npassword = \"s3cret\"",
            "value_format = \"avro\"\nkey_format = \"auto\"",
        );
        let r = c.kafka.schema_registry.as_ref().unwrap();
        assert_eq!(r.urls, ["https://sr-1:8081", "http://sr-2:8081"]);
        assert!(matches!(r.auth, super::RegistryAuth::Basic { .. }));
        assert_eq!(r.request_timeout, std::time::Duration::from_secs(10));
        // A 32nd of the default budget, taken from it before it is shared out.
        assert_eq!(r.cache_bytes, (256 << 20) / 32);
        assert_eq!(
            c.plan(),
            crate::budget::plan((256 << 20) - r.cache_bytes, c.pipeline.workers)
        );
        assert_eq!(c.destinations[0].value_format, super::ValueFormat::Avro);
        assert!(c.destinations[0].reads_registry());
        // The password is a secret: scrubbed, never printed.
        assert_eq!(c.secrets.scrub("auth s3cret"), "auth <redacted>");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!toml::to_string(&c.raw).unwrap().contains("s3cret"));
        // One URL may be a plain string.
        let c = ok("url = \"http://sr:8081\"", "value_format = \"protobuf\"");
        assert_eq!(c.kafka.schema_registry.unwrap().urls, ["http://sr:8081"]);
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases = [
            ("username = \"u\"", "", "kafka.schema_registry.url"),
            ("url = \"ftp://sr\"", "", "kafka.schema_registry.url"),
            ("url = \"https://u:p@sr\"", "", "kafka.schema_registry.url"),
            (
                "url = \"http://sr\"\nusername = \"u\"",
                "",
                "kafka.schema_registry.username",
            ),
            (
                "url = \"http://sr\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"",
                "",
                "kafka.schema_registry.bearer_token",
            ),
            (
                "url = \"http://sr\"\ncert_file = \"/c.pem\"",
                "",
                "kafka.schema_registry.cert_file",
            ),
            (
                "url = \"http://sr\"\nca_file = \"/nonexistent/ca.pem\"",
                "",
                "kafka.schema_registry.ca_file",
            ),
            (
                "url = \"http://sr\"\nrequest_timeout_ms = 0",
                "",
                "kafka.schema_registry.request_timeout_ms",
            ),
            (
                "url = \"http://sr\"\ncache_bytes = 100",
                "",
                "kafka.schema_registry.cache_bytes",
            ),
            (
                "url = \"http://sr\"\nunready_after_secs = 0",
                "",
                "kafka.schema_registry.unready_after_secs",
            ),
        ];
        for (registry, dest, key) in cases {
            assert_eq!(err(registry, dest).key, key, "{registry}");
        }
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let e = err(&format!("url = \"https://sr\"\nca_file = {:?}", ca), "");
        assert_eq!(e.key, "kafka.schema_registry.ca_file");
    }

    #[test]
    fn framed_formats_need_the_registry() {
        let no_registry =
            "[kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"events\"]\n\
            [[destinations]]\nname = \"s3\"\nbucket = \"b\"\n";
        for (key, value) in [
            ("value_format", "avro"),
            ("value_format", "auto"),
            ("key_format", "protobuf"),
        ] {
            let e = parse(&format!("{no_registry}{key} = \"{value}\"\n"), &|_| None).unwrap_err();
            assert_eq!(e.key, format!("destinations[0].{key}"));
            assert!(e.message.contains("schema_registry"), "{}", e.message);
        }
        let c = parse(
            &format!("{no_registry}value_format = \"json\"\nkey_format = \"raw\"\n"),
            &|_| None,
        )
        .unwrap();
        assert!(!c.destinations[0].reads_registry());
        assert!(c.kafka.schema_registry.is_none());
    }
}
