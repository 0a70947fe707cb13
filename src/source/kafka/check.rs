//! librdkafka's verdict on a configuration without connecting: each property set on a native
//! configuration object ([`check_properties`]) and the client created and dropped with no broker
//! ([`check_client`]). Invariant: a refused property is reported by name and reason, never with
//! its value (it may be a password).

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

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
/// properties that contradict each other) and nothing connects. With librdkafka's unsecured
/// OAUTHBEARER tokens ([`unsecured_jwt`]) the client also builds its first token from
/// `sasl.oauthbearer.config` before it is dropped, which needs no broker either: a config
/// librdkafka cannot parse is refused here, not by the broker's first authentication after
/// `run` has started. `Err` holds librdkafka's reason, which the caller scrubs of secrets (it
/// may quote a value).
pub fn check_client(properties: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    let mut cc = ClientConfig::new();
    for (k, v) in properties {
        if k != "bootstrap.servers" && k != "metadata.broker.list" {
            cc.set(k, v);
        }
    }
    cc.set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg);
    match cc.create_with_context::<_, BaseConsumer<CheckContext>>(CheckContext::default()) {
        Ok(consumer) if unsecured_jwt(properties) => first_token(&consumer),
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientCreation(reason)) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `properties` have librdkafka build OAUTHBEARER tokens itself from
/// `sasl.oauthbearer.config` (`enable.sasl.oauthbearer.unsecure.jwt`, a development setting;
/// librdkafka reads a boolean as `true`, `t` or `1`).
fn unsecured_jwt(properties: &std::collections::BTreeMap<String, String>) -> bool {
    let on = properties
        .get("enable.sasl.oauthbearer.unsecure.jwt")
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("t") || v == "1"
        });
    let mechanism = properties
        .get("sasl.mechanism")
        .or_else(|| properties.get("sasl.mechanisms"));
    on && mechanism.is_some_and(|m| m.trim().eq_ignore_ascii_case("OAUTHBEARER"))
}

/// Longest wait for librdkafka's first unsecured token: it is built when the client is first
/// polled, and a failure comes back on the next poll.
const FIRST_TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What librdkafka's unsecured token config consists of, for the refusal's fix.
const TOKEN_CONFIG_FORM: &str = "sasl.oauthbearer.config takes `principal=<name>` and optionally `principalClaimName=`, `scope=`, `scopeClaimName=`, `lifeSeconds=` and `extension_<name>=` words";

/// Polls `consumer` until librdkafka has built its first unsecured token: `Err` with its reason
/// when it could not, `Ok` when a poll comes back with nothing after the token was asked for.
fn first_token(consumer: &BaseConsumer<CheckContext>) -> Result<(), String> {
    let deadline = std::time::Instant::now() + FIRST_TOKEN_WAIT;
    let mut quiet = 0;
    while std::time::Instant::now() < deadline && quiet < 2 {
        let failed = matches!(
            consumer.poll(std::time::Duration::from_millis(50)),
            Some(Err(_))
        );
        let reason = consumer.context().error.lock().unwrap().take();
        if reason.is_some() || failed {
            let reason = reason.unwrap_or_else(|| "no OAUTHBEARER token".into());
            return Err(format!("{reason} ({TOKEN_CONFIG_FORM})"));
        }
        quiet += 1;
    }
    Ok(())
}

/// The check client's context: the first error librdkafka reports, with its reason.
#[derive(Default)]
struct CheckContext {
    error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for CheckContext {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}

    fn error(&self, _: rdkafka::error::KafkaError, reason: &str) {
        self.error
            .lock()
            .unwrap()
            .get_or_insert_with(|| reason.to_string());
    }
}

impl rdkafka::consumer::ConsumerContext for CheckContext {}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn unsecured(config: &str) -> BTreeMap<String, String> {
        props(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
            ("sasl.oauthbearer.config", config),
        ])
    }

    #[test]
    fn unsecured_tokens_are_built_when_librdkafka_would_build_them() {
        for on in ["true", "TRUE", "t", "1"] {
            let p = props(&[
                ("sasl.mechanisms", "oauthbearer"),
                ("enable.sasl.oauthbearer.unsecure.jwt", on),
            ]);
            assert!(unsecured_jwt(&p), "{on}");
        }
        for (mechanism, on) in [
            ("OAUTHBEARER", "false"),
            ("OAUTHBEARER", "0"),
            ("PLAIN", "true"),
        ] {
            let p = props(&[
                ("sasl.mechanism", mechanism),
                ("enable.sasl.oauthbearer.unsecure.jwt", on),
            ]);
            assert!(!unsecured_jwt(&p), "{mechanism} {on}");
        }
        assert!(!unsecured_jwt(&props(&[("sasl.mechanism", "OAUTHBEARER")])));
    }

    #[test]
    fn an_unsecured_token_config_librdkafka_cannot_parse_is_refused() {
        assert_eq!(
            check_client(&unsecured("principal=admin lifeSeconds=60")),
            Ok(())
        );
        for (config, said) in [
            (
                "principal=admin bogus=1",
                "Unrecognized sasl.oauthbearer.config",
            ),
            ("scope=read", "no principal=<value>"),
            ("principal=admin lifeSeconds=soon", "non-integral"),
        ] {
            let err = check_client(&unsecured(config)).unwrap_err();
            assert!(err.contains(said), "{config}: {err}");
            assert!(err.contains("takes `principal=<name>`"), "{err}");
        }
    }
}
