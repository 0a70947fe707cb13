//! librdkafka's verdict on a configuration without connecting: each property set on a native
//! configuration object ([`check_properties`]) and the client created and dropped with no broker
//! ([`check_client`]). Invariant: a refused property is reported by name and reason, never with
//! its value (it may be a password).

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;

/// A librdkafka property that librdkafka refuses: its name and librdkafka's reason. The value
/// is never part of it (librdkafka's own message, and rust-rdkafka's, print it: it may be a
/// password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("librdkafka property `{name}`: {reason}")]
pub struct PropertyError {
    /// The property's name.
    pub name: String,
    /// librdkafka's reason, with the value cut out.
    pub reason: String,
}

/// The property error inside a librdkafka error, if it is one, with the value cut out.
pub fn property_error(e: &rdkafka::error::KafkaError) -> Option<PropertyError> {
    use rdkafka::types::RDKafkaConfRes;
    let rdkafka::error::KafkaError::ClientConfig(code, desc, name, value) = e else {
        return None;
    };
    let said = cut_value(&desc.replace('\n', " "), value);
    let reason = match code {
        RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN => {
            format!("no such property ({said}); check its spelling against librdkafka's CONFIGURATION.md")
        }
        RDKafkaConfRes::RD_KAFKA_CONF_INVALID => format!("invalid value ({said})"),
        _ => said,
    };
    Some(PropertyError {
        name: name.clone(),
        reason,
    })
}

/// `text` with each occurrence of `value` that stands as a word of its own (no letter or digit
/// on either side) replaced by `<value>`: `0` is cut from "value 0 is outside" but not from
/// "range 1..86400000".
fn cut_value(text: &str, value: &str) -> String {
    if value.is_empty() {
        return text.to_string();
    }
    let word_char = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(value) {
        let before = rest[..i].chars().next_back().or(out.chars().next_back());
        let after = rest[i + value.len()..].chars().next();
        out.push_str(&rest[..i]);
        if word_char(before) || word_char(after) {
            out.push_str(value);
        } else {
            out.push_str("<value>");
        }
        rest = &rest[i + value.len()..];
    }
    out.push_str(rest);
    out
}

/// Creates the consumer `run` creates, with no broker to reach and no subscription, and drops
/// it: librdkafka's checks at client creation run (SASL mechanism, TLS files and PEM data,
/// properties that contradict each other) and nothing connects. `Err` holds librdkafka's
/// reason, which the caller scrubs of secrets (it may quote a value).
pub fn check_client(properties: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    let mut cc = ClientConfig::new();
    for (k, v) in properties {
        if k != "bootstrap.servers" && k != "metadata.broker.list" {
            cc.set(k, v);
        }
    }
    cc.set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg);
    match cc.create::<BaseConsumer>() {
        Ok(consumer) => {
            drop(consumer);
            Ok(())
        }
        Err(rdkafka::error::KafkaError::ClientCreation(reason)) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
}

/// Checks every property as librdkafka will when the consumer starts: each is set on a native
/// configuration object, nothing connects. Run by `check-config` and before every start.
pub fn check_properties(
    properties: &std::collections::BTreeMap<String, String>,
) -> Result<(), PropertyError> {
    let mut cc = ClientConfig::new();
    for (k, v) in properties {
        cc.set(k, v);
    }
    match cc.create_native_config() {
        Ok(_) => Ok(()),
        Err(e) => Err(property_error(&e).unwrap_or_else(|| PropertyError {
            name: "(client)".into(),
            reason: e.to_string(),
        })),
    }
}
