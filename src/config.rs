//! Configuration: one TOML file → `${VAR}` interpolation → raw serde structs (unknown keys
//! rejected, defaults filled) → [`Config`], validated once into typed values.
//!
//! Invariant: every mistake is reported as one [`ConfigError`] line naming the key and the fix,
//! and nothing downstream re-validates. Secrets are wrapped in [`Secret`], which never prints.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod destination;
pub mod iceberg;
pub(crate) mod parquet;
mod raw;
pub mod registry;
mod security;
mod typed;
mod validate;

pub use destination::read_ca_bundle;
pub use parquet::{Column, ColumnType, ParquetCodec, ParquetConfig, RawColumn, RawParquet};
pub use raw::*;
pub use security::RawSecurity;
pub use typed::*;
pub use validate::validate;

/// A start-up configuration mistake: the key it concerns and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error at `{key}`: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `destinations[0].encryption.mode`.
    pub key: String,
    /// What is wrong and how to fix it, on one line.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl From<crate::interpolate::InterpolateError> for ConfigError {
    fn from(e: crate::interpolate::InterpolateError) -> Self {
        Self::new(e.key, e.message)
    }
}

/// A secret string: never shows its value in Debug, Display or Serialize, nor in the error of a
/// value of the wrong type (serde's own message quotes it).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Other("a boolean"),
                    &self,
                ))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Other("an integer"),
                    &self,
                ))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Other("an integer"),
                    &self,
                ))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Other("a float"),
                    &self,
                ))
            }
        }
        d.deserialize_string(V)
    }
}

impl Secret {
    /// The secret value, for the one place that needs it (the SDK credential provider).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Reads, interpolates and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(&read_text(path)?, &|name| std::env::var(name).ok())
}

/// The config file's text, or the one-line error naming `--config`.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "--config",
            format!(
                "cannot read {}: {e}; pass an existing TOML file",
                path.display()
            ),
        )
    })
}

/// Longest part of an unknown key a config error echoes, in characters.
pub const MAX_ECHOED_KEY_CHARS: usize = 100;

/// `s` cut to `max` characters, `…` marking a cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// serde's message about an unknown field, with the field's name cut to
/// [`MAX_ECHOED_KEY_CHARS`] (a key is whatever the file holds, a megabyte of it included).
fn clip_unknown_field(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    // The name ends at the last "`, expected" (the name itself may hold backticks).
    let (name, tail) = match rest.rfind("`, expected") {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest.strip_suffix('`').unwrap_or(rest), "`"),
    };
    format!("unknown field `{}{tail}", clip(name, MAX_ECHOED_KEY_CHARS))
}

/// A serde path as a dotted key, each name cut to [`MAX_ECHOED_KEY_CHARS`].
fn path_key(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&clip(key, MAX_ECHOED_KEY_CHARS));
            }
            Segment::Unknown => out.push_str(if out.is_empty() { "?" } else { ".?" }),
        }
    }
    if out.is_empty() {
        ".".into()
    } else {
        out
    }
}

/// The values of the keys that hold secrets, as the interpolated file gives them:
/// `kafka.security`'s `username`, `password` and `key_password`, each destination's
/// `credentials.secret_access_key`, `session_token` and `external_id`, and every sensitive
/// librdkafka property ([`is_sensitive_property`]).
fn secret_key_values(table: &toml::Table) -> Vec<String> {
    fn scalar(v: &toml::Value) -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                Some(v.to_string())
            }
            _ => None,
        }
    }
    let mut out = Vec::new();
    let kafka = table.get("kafka").and_then(toml::Value::as_table);
    if let Some(props) = kafka
        .and_then(|k| k.get("properties"))
        .and_then(toml::Value::as_table)
    {
        out.extend(
            props
                .iter()
                .filter(|(k, _)| is_sensitive_property(k))
                .filter_map(|(_, v)| scalar(v)),
        );
    }
    let mut pick = |t: Option<&toml::Table>, keys: &[&str]| {
        if let Some(t) = t {
            out.extend(keys.iter().filter_map(|k| t.get(*k)).filter_map(scalar));
        }
    };
    pick(
        kafka
            .and_then(|k| k.get("security"))
            .and_then(toml::Value::as_table),
        &["username", "password", "key_password"],
    );
    pick(
        kafka
            .and_then(|k| k.get("schema_registry"))
            .and_then(toml::Value::as_table),
        &["username", "password", "bearer_token"],
    );
    for d in table
        .get("destinations")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
    {
        pick(
            d.get("credentials").and_then(toml::Value::as_table),
            &["secret_access_key", "session_token", "external_id"],
        );
    }
    out
}

/// Parses config text; `env` resolves `${VAR}` references (injected so tests stay pure).
///
/// The config's [`Config::secrets`] are the values of the secret keys however they were
/// written, every `${file:}`'s content, and every `${VAR}` whose name reads as a secret
/// ([`is_sensitive_property`]: `PASSWORD`, `SECRET`, `TOKEN`, `KEY`…). An error is scrubbed of
/// them before it is returned.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    parse_with(text, env, false)
}

/// Reads and validates a config file for a command that uses only its destinations (`ddl`):
/// a `${…}` reference under `[kafka]` that cannot be resolved (a variable not set, a secret file
/// not mounted here) becomes the placeholder [`UNRESOLVED`] instead of failing. Everything
/// else is resolved and validated as by [`load`]; `check-config` and `run` use [`load`].
pub fn load_destinations_only(path: &Path) -> Result<Config, ConfigError> {
    parse_with(&read_text(path)?, &|name| std::env::var(name).ok(), true)
}

/// What an unresolvable `[kafka]` reference becomes in [`load_destinations_only`].
pub const UNRESOLVED: &str = "unresolved";

/// Replaces every string of `v` whose `${…}` references cannot be resolved by [`UNRESOLVED`].
fn blank_unresolved(v: &mut toml::Value, env: &dyn Fn(&str) -> Option<String>) {
    match v {
        toml::Value::String(s)
            if s.contains('$') && crate::interpolate::interpolate_str(s, "", env).is_err() =>
        {
            *s = UNRESOLVED.into();
        }
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| blank_unresolved(v, env)),
        toml::Value::Array(a) => a.iter_mut().for_each(|v| blank_unresolved(v, env)),
        _ => {}
    }
}

/// [`parse`], with `[kafka]`'s unresolvable references blanked when `lenient_kafka`.
fn parse_with(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    lenient_kafka: bool,
) -> Result<Config, ConfigError> {
    let mut found = Vec::new();
    let result = parse_into(text, env, &mut found, lenient_kafka);
    let (secrets, result) = match result {
        Ok((table, r)) => {
            let mut values = secret_key_values(&table);
            values.extend(secret_interpolations(found));
            (crate::redact::Secrets::new(values), r)
        }
        Err(e) => (
            crate::redact::Secrets::new(secret_interpolations(found)),
            Err(e),
        ),
    };
    match result {
        Ok(mut c) => {
            c.secrets = secrets;
            Ok(c)
        }
        Err(e) => Err(ConfigError::new(
            secrets.scrub(&e.key),
            secrets.scrub(&e.message),
        )),
    }
}

/// The interpolated values that are secrets: every `${file:}`, and each `${VAR}` whose name
/// reads as one.
fn secret_interpolations(found: Vec<crate::interpolate::Interpolated>) -> Vec<String> {
    found
        .into_iter()
        .filter(|i| i.variable.as_deref().is_none_or(is_sensitive_property))
        .map(|i| i.value)
        .collect()
}

/// Parses config text, reporting what `${…}` put in; the table is that after interpolation.
fn parse_into(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    found: &mut Vec<crate::interpolate::Interpolated>,
    lenient_kafka: bool,
) -> Result<(toml::Table, Result<Config, ConfigError>), ConfigError> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let msg = e.message().replace('\n', " ");
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(0);
        ConfigError::new(
            format!("line {line}"),
            format!("invalid TOML: {msg}; fix the syntax"),
        )
    })?;
    if lenient_kafka {
        if let Some(kafka) = table.get_mut("kafka") {
            blank_unresolved(kafka, env);
        }
    }
    crate::interpolate::interpolate_table(&mut table, "", env, found)?;
    let raw: Result<RawConfig, ConfigError> = serde_path_to_error::deserialize(toml::Value::Table(
        table.clone(),
    ))
    .map_err(|e: serde_path_to_error::Error<toml::de::Error>| {
        let key = path_key(e.path());
        let msg = clip_unknown_field(&e.inner().message().replace('\n', " "));
        let fix = if msg.starts_with("unknown field") {
            "; remove it or fix its spelling (see docs/configuration.md)"
        } else if msg.starts_with("missing field") {
            "; add it (see docs/configuration.md)"
        } else {
            "; see docs/configuration.md"
        };
        ConfigError::new(
            if key == "." {
                "(top level)".into()
            } else {
                key
            },
            format!("{msg}{fix}"),
        )
    });
    Ok((table, raw.and_then(validate)))
}

/// The properties librdkafka itself marks sensitive (`_RK_SENSITIVE` in its `rdkafka_conf.c`,
/// version 2.12): it redacts them in its own dumps, and so do we.
pub const LIBRDKAFKA_SENSITIVE: &[&str] = &[
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.ca.pem",
    "ssl.keystore.password",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
];

/// Whether a librdkafka property's value must never be shown: librdkafka's own list, plus any
/// name that speaks of a password, secret, token, key, passphrase, credential, JAAS config or
/// PEM data (over-redacting a harmless value costs nothing).
pub fn is_sensitive_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    LIBRDKAFKA_SENSITIVE.contains(&n.as_str())
        || [
            "password",
            "secret",
            "token",
            "key",
            "passphrase",
            "credential",
            "jaas",
            ".pem",
        ]
        .iter()
        .any(|s| n.contains(s))
}

/// A librdkafka property map as `Debug` shows it: sensitive values replaced by `<redacted>`.
pub(crate) struct RedactedProperties<'a, V>(pub &'a BTreeMap<String, V>);

impl<V: fmt::Debug> fmt::Debug for RedactedProperties<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.0 {
            if is_sensitive_property(k) {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// The config key a librdkafka property is set by: one of `[kafka]`'s own keys for the
/// properties the connector manages, else `kafka.properties."<name>"`.
pub fn property_key(name: &str) -> String {
    validate::managed_property_key(name)
        .map_or_else(|| format!("kafka.properties.\"{name}\""), str::to_string)
}

/// What `check-config` prints: [`render_redacted`] with each destination's topics resolved
/// (its own list, or every entry of `kafka.topics` when it names none).
pub fn render_resolved(config: &Config) -> String {
    let mut raw = config.raw.clone();
    for (r, d) in raw.destinations.iter_mut().zip(&config.destinations) {
        r.topics = d.topics.entries().to_vec();
    }
    render_redacted(&raw)
}

/// The resolved config as TOML with every secret redacted (for `check-config`).
pub fn render_redacted(raw: &RawConfig) -> String {
    let mut raw = raw.clone();
    for (k, v) in raw.kafka.properties.iter_mut() {
        if is_sensitive_property(k) {
            *v = toml::Value::String("<redacted>".into());
        }
    }
    toml::to_string_pretty(&raw).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

/// The first destination of a minimal config (topic `t`) with `extra` lines in its
/// `[[destinations]]` table (unit tests of the modules that take a destination).
#[cfg(test)]
pub(crate) fn test_destination(extra: &str) -> DestinationConfig {
    let toml = format!(
        "[kafka]\nbrokers = \"x:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\n[[destinations]]\nname = \"d\"\nbucket = \"b\"\n{extra}"
    );
    parse(&toml, &|_| None)
        .expect("valid test config")
        .destinations
        .remove(0)
}

#[cfg(test)]
mod tests;
