//! Configuration: one TOML file → `${VAR}` interpolation → raw serde structs (unknown keys
//! rejected, defaults filled) → [`Config`], validated once into typed values.
//!
//! Invariant: every mistake is reported as one [`ConfigError`] line naming the key and the fix,
//! and nothing downstream re-validates. Secrets are wrapped in [`Secret`], which never prints.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod raw;
mod typed;
mod validate;

pub use raw::*;
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

/// A secret string: deserializes normally, never shows its value in Debug, Display or Serialize.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

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
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "--config",
            format!(
                "cannot read {}: {e}; pass an existing TOML file",
                path.display()
            ),
        )
    })?;
    parse(&text, &|name| std::env::var(name).ok())
}

/// Parses config text; `env` resolves `${VAR}` references (injected so tests stay pure).
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
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
    crate::interpolate::interpolate_table(&mut table, "", env)?;
    let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
        |e: serde_path_to_error::Error<toml::de::Error>| {
            let key = e.path().to_string();
            let msg = e.inner().message().replace('\n', " ");
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
        },
    )?;
    validate(raw)
}

/// The resolved config as TOML with every secret redacted (for `check-config`).
pub fn render_redacted(raw: &RawConfig) -> String {
    let mut raw = raw.clone();
    for (k, v) in raw.kafka.properties.iter_mut() {
        let lk = k.to_ascii_lowercase();
        if ["password", "secret", "token", "key"]
            .iter()
            .any(|s| lk.contains(s) && !lk.ends_with(".location"))
        {
            *v = toml::Value::String("<redacted>".into());
        }
    }
    toml::to_string_pretty(&raw).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

#[cfg(test)]
mod tests;
