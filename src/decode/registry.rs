//! The Schema Registry client: a schema by its id (`GET /schemas/ids/{id}`, its references by
//! `GET /subjects/{subject}/versions/{version}`), parsed once ([`Parsed`]) and kept in a cache
//! bounded by bytes (`cache_bytes`, the memory budget's share for schemas), least recently used
//! first out. The URLs are tried in turn; credentials and TLS come from
//! `[kafka.schema_registry]`.
//!
//! Invariants: an id is fetched once while it stays cached, and one fetch at a time runs per
//! process (workers asking for the same id wait for the first one's answer); a 404 is
//! [`Lookup::Unknown`] and is remembered for [`UNKNOWN_TTL`]; an unreachable registry, a timeout,
//! a 5xx, a 429 or refused credentials is [`Lookup::Outage`], never mistaken for bad data (the
//! caller retries with backoff); a schema that does not parse is [`Lookup::Invalid`]; an answer
//! larger than [`MAX_ANSWER_BYTES`] is refused before it is held. Errors never carry the
//! credentials (they are headers, never part of a URL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Parsed, SchemaKind};
use crate::config::registry::{RegistryAuth, SchemaRegistryConfig};
use crate::metrics::Metrics;

/// How long a 404 is remembered before the id is asked for again.
pub const UNKNOWN_TTL: Duration = Duration::from_secs(60);
/// Largest registry answer read.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Most references one schema may pull in (transitively).
const MAX_REFERENCES: usize = 256;
/// The least cap on a length apache-avro reads (`decode::limit_avro_lengths`).
const AVRO_LENGTH_MIN: usize = 16 << 20;
/// Unknown ids remembered at most.
const MAX_UNKNOWN: usize = 10_000;

/// Why a schema is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lookup {
    /// The registry answered 404 for the id.
    #[error("the Schema Registry has no schema with id {0}")]
    Unknown(u32),
    /// The schema (or a reference) does not parse.
    #[error("schema {id} does not parse: {message}")]
    Invalid {
        /// The schema id.
        id: u32,
        /// The parser's message.
        message: String,
    },
    /// The registry could not answer (unreachable, timeout, 5xx, 429, refused credentials).
    #[error("the Schema Registry did not answer: {0}")]
    Outage(String),
}

/// A registry answer for a schema (by id or by subject version).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Debug, Clone, Deserialize)]
struct Reference {
    name: String,
    subject: String,
    version: i64,
}

#[derive(Default)]
struct Cache {
    schemas: HashMap<u32, (Arc<Parsed>, usize, u64)>,
    unknown: HashMap<u32, Instant>,
    bytes: usize,
    clock: u64,
}

/// The client, shared by every worker.
pub struct Registry {
    http: reqwest::Client,
    urls: Vec<String>,
    auth: RegistryAuth,
    limit: usize,
    cache: Mutex<Cache>,
    fetching: tokio::sync::Mutex<()>,
    metrics: Metrics,
    /// The runtime the requests run on (the workers' own runtimes have no I/O driver).
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

/// The registry client of `config`, when a destination reads the Confluent wire format; a
/// client that cannot be built (a bad certificate) is a config error naming the key.
pub fn for_config(
    config: &crate::config::Config,
    metrics: &Metrics,
) -> Result<Option<Arc<Registry>>, crate::config::ConfigError> {
    let Some(cfg) = &config.kafka.schema_registry else {
        return Ok(None);
    };
    if !config.destinations.iter().any(|d| d.reads_registry()) {
        return Ok(None);
    }
    // apache-avro's own cap on a length it reads (a corrupt count would otherwise reserve up
    // to 512 Mi items before failing): twice the largest record a destination accepts.
    let largest = config
        .destinations
        .iter()
        .filter_map(|d| d.batch.max_record_bytes)
        .max()
        .map_or(0, |b| usize::try_from(b).unwrap_or(usize::MAX));
    super::limit_avro_lengths(largest.saturating_mul(2).max(AVRO_LENGTH_MIN));
    Registry::new(cfg, metrics.clone())
        .map(|r| Some(Arc::new(r)))
        .map_err(|e| crate::config::ConfigError::new("kafka.schema_registry", e.to_string()))
}

impl Registry {
    /// A client for `cfg` (nothing is requested yet); call it on the runtime that has the I/O
    /// driver.
    pub fn new(cfg: &SchemaRegistryConfig, metrics: Metrics) -> Result<Self, Lookup> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout)
            .user_agent(concat!("kafka-s3-sink/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(2);
        if let Some(pem) = &cfg.ca_pem {
            for c in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Lookup::Outage(format!("ca_file: {e}")))?
            {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(pem) = &cfg.identity_pem {
            let id = reqwest::Identity::from_pem(pem)
                .map_err(|e| Lookup::Outage(format!("cert_file/key_file: {e}")))?;
            b = b.identity(id);
        }
        let http = b
            .build()
            .map_err(|e| Lookup::Outage(format!("HTTP client: {e}")))?;
        metrics.init_registry();
        metrics.health().registry_answered();
        metrics
            .health()
            .set_registry_unready_after(cfg.unready_after);
        Ok(Self {
            http,
            urls: cfg.urls.clone(),
            auth: cfg.auth.clone(),
            limit: cfg.cache_bytes,
            cache: Mutex::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
            metrics,
            rt: tokio::runtime::Handle::current(),
        })
    }

    /// The schema of `id` if it is cached (`Some(Err)`: a recent 404); `None` when it must be
    /// fetched.
    pub fn cached(&self, id: u32) -> Option<Result<Arc<Parsed>, Lookup>> {
        let mut c = lock(&self.cache);
        c.clock += 1;
        let now = c.clock;
        if let Some((p, _, used)) = c.schemas.get_mut(&id) {
            *used = now;
            return Some(Ok(p.clone()));
        }
        match c.unknown.get(&id) {
            Some(at) if at.elapsed() < UNKNOWN_TTL => Some(Err(Lookup::Unknown(id))),
            _ => None,
        }
    }

    /// The schema of `id`, fetched (and cached) unless it is cached. The request runs on the
    /// runtime the client was made on, whichever runtime awaits it.
    pub async fn schema(self: &Arc<Self>, id: u32) -> Result<Arc<Parsed>, Lookup> {
        if let Some(r) = self.cached(id) {
            return r;
        }
        let me = self.clone();
        self.rt
            .spawn(async move { me.fetch_and_cache(id).await })
            .await
            .map_err(|e| Lookup::Outage(format!("the registry request stopped: {e}")))?
    }

    async fn fetch_and_cache(&self, id: u32) -> Result<Arc<Parsed>, Lookup> {
        let _one = self.fetching.lock().await;
        // Another worker may have fetched it while this one waited.
        if let Some(r) = self.cached(id) {
            return r;
        }
        let result = self.fetch(id).await;
        match &result {
            Ok(p) => self.insert(id, p.clone()),
            Err(Lookup::Unknown(_)) => {
                let mut c = lock(&self.cache);
                if c.unknown.len() >= MAX_UNKNOWN {
                    c.unknown.clear();
                }
                c.unknown.insert(id, Instant::now());
            }
            Err(_) => {}
        }
        result
    }

    /// Bytes the cached schemas hold.
    pub fn cached_bytes(&self) -> usize {
        lock(&self.cache).bytes
    }

    /// Start-up check: the registry answers `GET /subjects` (any URL), in one line otherwise.
    pub async fn check(&self) -> Result<(), Lookup> {
        self.get("/subjects").await.map(|_| ())
    }

    fn insert(&self, id: u32, p: Arc<Parsed>) {
        let size = p.memory_bytes() + ENTRY_BYTES;
        let mut c = lock(&self.cache);
        c.clock += 1;
        let now = c.clock;
        // The least recently used leave until the new one fits; one larger than the whole
        // cache is used by the caller and not kept.
        while c.bytes + size > self.limit && !c.schemas.is_empty() {
            let oldest = c
                .schemas
                .iter()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(id, _)| *id);
            if let Some((_, bytes, _)) = oldest.and_then(|o| c.schemas.remove(&o)) {
                c.bytes -= bytes;
            }
        }
        if size <= self.limit {
            c.bytes += size;
            c.schemas.insert(id, (p, size, now));
        }
        self.metrics.schema_cache(c.bytes, c.schemas.len());
    }

    async fn fetch(&self, id: u32) -> Result<Arc<Parsed>, Lookup> {
        let answer: Answer = self.get_json(&format!("/schemas/ids/{id}"), id).await?;
        let kind = kind_of(answer.schema_type.as_deref(), id)?;
        let mut refs = Vec::new();
        self.references(&answer.references, id, &mut refs, 0)
            .await?;
        let text = answer.schema;
        // Parsing a large Protobuf or Avro schema takes a while: off the async threads.
        tokio::task::spawn_blocking(move || Parsed::parse(kind, &text, &refs))
            .await
            .map_err(|e| Lookup::Invalid {
                id,
                message: e.to_string(),
            })?
            .map(Arc::new)
            .map_err(|e| Lookup::Invalid {
                id,
                message: e.to_string(),
            })
    }

    /// Appends the referenced schemas' (name, text) to `out`, each after its own references.
    fn references<'a>(
        &'a self,
        refs: &'a [Reference],
        id: u32,
        out: &'a mut Vec<(String, String)>,
        depth: usize,
    ) -> futures::future::BoxFuture<'a, Result<(), Lookup>> {
        Box::pin(async move {
            for r in refs {
                if out.iter().any(|(n, _)| *n == r.name) {
                    continue;
                }
                if depth > 32 || out.len() >= MAX_REFERENCES {
                    return Err(Lookup::Invalid {
                        id,
                        message: format!(
                            "more than {MAX_REFERENCES} references, or nested deeper than 32"
                        ),
                    });
                }
                let path = format!(
                    "/subjects/{}/versions/{}",
                    urlencoding(&r.subject),
                    r.version
                );
                let a: Answer = match self.get_json(&path, id).await {
                    Err(Lookup::Unknown(_)) => {
                        return Err(Lookup::Invalid {
                            id,
                            message: format!(
                                "reference {:?} (subject {:?} version {}) is not in the registry",
                                r.name, r.subject, r.version
                            ),
                        })
                    }
                    other => other?,
                };
                self.references(&a.references, id, out, depth + 1).await?;
                if !out.iter().any(|(n, _)| *n == r.name) {
                    out.push((r.name.clone(), a.schema));
                }
            }
            Ok(())
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        id: u32,
    ) -> Result<T, Lookup> {
        let body = match self.get(path).await {
            Err(Lookup::Unknown(_)) => return Err(Lookup::Unknown(id)),
            other => other?,
        };
        serde_json::from_slice(&body).map_err(|e| Lookup::Invalid {
            id,
            message: format!("the registry's answer to {path} is not a schema: {e}"),
        })
    }

    /// GET `path` from the first URL that answers; a 404 is [`Lookup::Unknown`] (id 0: the
    /// caller names it).
    async fn get(&self, path: &str) -> Result<Vec<u8>, Lookup> {
        let mut last = String::new();
        for base in &self.urls {
            match self.get_from(base, path).await {
                Ok(body) => {
                    self.metrics.registry_request("ok");
                    self.metrics.health().registry_answered();
                    return Ok(body);
                }
                Err(Lookup::Unknown(id)) => {
                    self.metrics.registry_request("not_found");
                    self.metrics.health().registry_answered();
                    return Err(Lookup::Unknown(id));
                }
                Err(Lookup::Outage(e)) | Err(Lookup::Invalid { message: e, .. }) => {
                    self.metrics.registry_request("failed");
                    last = e;
                }
            }
        }
        self.metrics.health().registry_failed(&last);
        Err(Lookup::Outage(last))
    }

    async fn get_from(&self, base: &str, path: &str) -> Result<Vec<u8>, Lookup> {
        let url = format!("{base}{path}");
        let mut req = self
            .http
            .get(&url)
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        req = match &self.auth {
            RegistryAuth::None => req,
            RegistryAuth::Basic { username, password } => {
                req.basic_auth(username.expose(), Some(password.expose()))
            }
            RegistryAuth::Bearer(t) => req.bearer_auth(t.expose()),
        };
        // The error's own text names the URL, never a header.
        let mut resp = req
            .send()
            .await
            .map_err(|e| Lookup::Outage(format!("GET {url}: {}", error_chain(&e))))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Lookup::Unknown(0));
        }
        if !status.is_success() {
            return Err(Lookup::Outage(format!("GET {url}: HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Lookup::Outage(format!("GET {url}: {}", error_chain(&e))))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Lookup::Invalid {
                    id: 0,
                    message: format!(
                        "GET {url}: the answer is larger than {MAX_ANSWER_BYTES} bytes"
                    ),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Bookkeeping of one cache entry besides the parsed schema.
const ENTRY_BYTES: usize = 128;

fn kind_of(t: Option<&str>, id: u32) -> Result<SchemaKind, Lookup> {
    match t.unwrap_or("AVRO") {
        "AVRO" => Ok(SchemaKind::Avro),
        "PROTOBUF" => Ok(SchemaKind::Protobuf),
        "JSON" => Ok(SchemaKind::Json),
        other => Err(Lookup::Invalid {
            id,
            message: format!("unknown schemaType {:?}", crate::config::clip(other, 40)),
        }),
    }
}

/// A subject as one path segment: RFC 3986's unreserved characters kept, every other byte
/// percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn urlencoding(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// An error and its sources on one line (reqwest's own text omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_one_path_segment() {
        assert_eq!(urlencoding("orders-value"), "orders-value");
        assert_eq!(urlencoding("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn schema_types_default_to_avro() {
        assert_eq!(kind_of(None, 1), Ok(SchemaKind::Avro));
        assert_eq!(kind_of(Some("PROTOBUF"), 1), Ok(SchemaKind::Protobuf));
        assert!(matches!(
            kind_of(Some("XML"), 1),
            Err(Lookup::Invalid { .. })
        ));
    }
}
