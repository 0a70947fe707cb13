//! A short-lived client that asks the brokers for the subscribed topics' metadata, without
//! joining the group or consuming: the start-up topic check and `check-config --connect`.
//!
//! Invariant: it logs nothing itself; what it saw is returned (the caller logs one line).

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::ClientContext;
use std::sync::Mutex;
use std::time::Duration;

use super::super::msk_iam::{AuthContext, MskIamAuth};
use crate::config::KafkaConfig;

/// What the brokers said about the subscribed topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicsSeen {
    /// Brokers in the cluster's metadata.
    pub brokers: usize,
    /// Literal topics of `kafka.topics` found, with their partition counts.
    pub found: Vec<(String, usize)>,
    /// Literal topics of `kafka.topics` the brokers do not know.
    pub missing: Vec<String>,
}

/// Why the brokers could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

struct ProbeCtx {
    auth: AuthContext,
    last_error: Mutex<Option<String>>,
}

impl ClientContext for ProbeCtx {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.auth.generate_oauth_token(config)
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, _fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        ) {
            self.remember(message);
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.remember(reason);
        }
    }
}

impl ProbeCtx {
    fn remember(&self, message: &str) {
        let message = match message.strip_prefix("[thrd:") {
            Some(rest) => rest.split_once("]: ").map_or(message, |(_, m)| m),
            None => message,
        };
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(message.replace('\n', " "));
        }
    }
}

impl ConsumerContext for ProbeCtx {}

/// Asks the brokers for each literal topic of `cfg.topics` (patterns are matched by the
/// consumer as topics appear), within `wait`. Blocking: run it off the async threads.
pub fn probe_topics(cfg: &KafkaConfig, wait: Duration) -> Result<TopicsSeen, Unreachable> {
    let mut cc = ClientConfig::new();
    for (k, v) in &cfg.properties {
        // No statistics: the probe lives for one request.
        if k != "statistics.interval.ms" {
            cc.set(k, v);
        }
    }
    let auth = cfg
        .msk_iam
        .as_ref()
        .map(MskIamAuth::new)
        .transpose()
        .map_err(|e| Unreachable(format!("MSK IAM: {e}")))?;
    let with_iam = auth.is_some();
    let ctx = ProbeCtx {
        auth: AuthContext::new(auth),
        last_error: Mutex::new(None),
    };
    let consumer: BaseConsumer<ProbeCtx> = cc
        .create_with_context(ctx)
        .map_err(|e| Unreachable(format!("kafka client: {e}")))?;
    if with_iam {
        // The token is requested through the consumer's queue: serve it before asking.
        for _ in 0..20 {
            let _ = consumer.poll(Duration::from_millis(50));
        }
    }
    let why = |e: rdkafka::error::KafkaError, c: &BaseConsumer<ProbeCtx>| {
        // The callbacks that say why run as the queue is served.
        for _ in 0..5 {
            let _ = c.poll(Duration::from_millis(10));
        }
        let last = c.context().last_error.lock().ok().and_then(|l| l.clone());
        Unreachable(match last {
            Some(l) => l,
            None => e.to_string(),
        })
    };
    let all = consumer
        .fetch_metadata(None, wait)
        .map_err(|e| why(e, &consumer))?;
    let mut seen = TopicsSeen {
        brokers: all.brokers().len(),
        found: Vec::new(),
        missing: Vec::new(),
    };
    for t in cfg.topics.entries() {
        if t.starts_with('^') {
            continue;
        }
        let listed = all
            .topics()
            .iter()
            .find(|m| m.name() == t && m.error().is_none());
        match listed {
            Some(m) => seen.found.push((t.clone(), m.partitions().len())),
            None => seen.missing.push(t.clone()),
        }
    }
    Ok(seen)
}
