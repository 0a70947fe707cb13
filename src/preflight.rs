//! Start-up checks that need more than the config module: librdkafka's own verdict on the
//! Kafka properties, and the longest key each destination can produce against S3's limit. Run
//! by `check-config`, `run` and `verify` ([`crate::app::load`]) and before every pipeline start.
//!
//! Invariant: a config that passes cannot make librdkafka refuse a property or S3 refuse a key
//! for its length; every failure is one [`ConfigError`] line naming the key, never a value.

use crate::config::{
    clip, property_key, Config, ConfigError, DestinationConfig, MAX_ECHOED_KEY_CHARS,
};
use crate::model::QuarantineReason;
use crate::source::kafka;
use crate::template::{FileTemplate, ERROR_FILE_TEMPLATE};

/// S3's longest object key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// What an object moved aside adds to its key: `~` and a 16-digit writer id.
pub const ASIDE_TAG_BYTES: usize = 17;

/// Every start-up check.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    check_kafka_properties(config)?;
    for (i, d) in config.destinations.iter().enumerate() {
        check_key_length(i, d)?;
    }
    Ok(())
}

/// The librdkafka properties of `config`, checked by librdkafka: each property on its own,
/// then the client `run` creates, created and dropped without connecting (SASL mechanism, TLS
/// files and PEM data). The error names the config key and librdkafka's reason, never a
/// secret value.
pub fn check_kafka_properties(config: &Config) -> Result<(), ConfigError> {
    kafka::check_properties(&config.kafka.properties).map_err(|e| {
        // A misspelt name is echoed at most MAX_ECHOED_KEY_CHARS long.
        let short = clip(&e.name, MAX_ECHOED_KEY_CHARS);
        ConfigError::new(
            config_key(config, &short),
            e.reason.replace(&e.name, &short),
        )
    })?;
    kafka::check_client(&config.kafka.properties).map_err(|reason| {
        let reason = config
            .secrets
            .scrub(&reason.replace('\n', " "))
            .into_owned();
        ConfigError::new(
            client_error_key(config, &reason),
            format!("librdkafka refuses the client: {reason}; fix this setting"),
        )
    })
}

/// The config key that set librdkafka property `name`: `[kafka.security]`'s key for the
/// properties it maps (unless `[kafka.properties]` sets it), else [`property_key`].
fn config_key(config: &Config, name: &str) -> String {
    const SECURITY: &[(&str, &str)] = &[
        ("security.protocol", "protocol"),
        ("ssl.ca.location", "ca_file"),
        ("ssl.certificate.location", "cert_file"),
        ("ssl.key.location", "key_file"),
        ("ssl.key.password", "key_password"),
        ("sasl.mechanism", "sasl_mechanism"),
        ("sasl.mechanisms", "sasl_mechanism"),
        ("sasl.username", "username"),
        ("sasl.password", "password"),
    ];
    if !config.raw.kafka.properties.contains_key(name) {
        if let Some((_, k)) = SECURITY.iter().find(|(p, _)| *p == name) {
            return format!("kafka.security.{k}");
        }
    }
    property_key(name)
}

/// The key a client-creation error concerns: the longest property name it mentions
/// (`sasl.mechanism` for "Unsupported SASL mechanism"), else the property whose value it
/// quotes, else `kafka.properties`.
fn client_error_key(config: &Config, reason: &str) -> String {
    if reason.contains("SASL mechanism") {
        return config_key(config, "sasl.mechanism");
    }
    let props = &config.kafka.properties;
    props
        .keys()
        .filter(|name| reason.contains(name.as_str()))
        .max_by_key(|name| name.len())
        .or_else(|| {
            props
                .iter()
                .filter(|(_, v)| v.len() >= 3 && reason.contains(v.as_str()))
                .max_by_key(|(_, v)| v.len())
                .map(|(k, _)| k)
        })
        .map_or_else(
            || "kafka.properties".to_string(),
            |name| config_key(config, name),
        )
}

/// The longest data and error keys of destination `i` (an object moved aside included) fit in
/// [`MAX_KEY_BYTES`].
pub fn check_key_length(i: usize, d: &DestinationConfig) -> Result<(), ConfigError> {
    let (data, error) = longest_keys(d);
    let at = |k: &str| format!("destinations[{i}].{k}");
    if data + ASIDE_TAG_BYTES > MAX_KEY_BYTES {
        return Err(ConfigError::new(
            at("routing.file_template"),
            format!(
                "the longest key this destination can write is {} bytes (prefix, folder_template and file_template at their longest, plus {ASIDE_TAG_BYTES} for a copy moved aside), over S3's {MAX_KEY_BYTES}; shorten the prefix or the templates",
                data + ASIDE_TAG_BYTES
            ),
        ));
    }
    if error > MAX_KEY_BYTES {
        return Err(ConfigError::new(
            at("error_prefix"),
            format!(
                "the longest quarantine key is {error} bytes, over S3's {MAX_KEY_BYTES}; shorten prefix or error_prefix"
            ),
        ));
    }
    Ok(())
}

/// The longest data key and the longest quarantine key of a destination, in bytes.
pub fn longest_keys(d: &DestinationConfig) -> (usize, usize) {
    let shape = d.key_shape();
    let suffix = d.batch.compression.suffix();
    let data = d.prefix.len()
        + d.routing.folder.max_len(&shape)
        + d.routing.file.max_len(&shape, d.data_suffix());
    let reason = QuarantineReason::ALL
        .iter()
        .map(|r| r.as_str().len())
        .max()
        .unwrap_or(0);
    let error_file = FileTemplate::parse(ERROR_FILE_TEMPLATE)
        .expect("invariant: the built-in error file template parses");
    let error =
        d.prefix.len() + d.error_prefix.len() + reason + 1 + error_file.max_len(&shape, suffix);
    (data, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(extra: &str) -> DestinationConfig {
        crate::config::test_destination(extra)
    }

    fn kafka_config(extra: &str) -> Config {
        let toml = format!("[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n{extra}\n[[destinations]]\nname = \"d\"\nbucket = \"b\"\n");
        crate::config::parse(&toml, &|_| None).unwrap()
    }

    /// A valid Iceberg table passes the start-up checks (`check-config` and `run` agree).
    #[test]
    fn an_iceberg_destination_passes() {
        let toml = "[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\
            [[destinations]]\nname = \"d\"\nbucket = \"b\"\nkafka_metadata_field = \"_kafka\"\n\
            [destinations.batch]\nformat = \"parquet\"\n\
            [[destinations.parquet.columns]]\nname = \"event\"\npath = \"type\"\ntype = \"string\"\n\
            [destinations.iceberg]\nnamespace = \"a\"\ntable = \"e\"\npartition_time = \"none\"\n\
            [destinations.iceberg.catalog]\nkind = \"sql\"\nuri = \"sqlite::memory:\"\nwarehouse = \"s3://b/w\"\n";
        let config = crate::config::parse(toml, &|_| None).unwrap();
        check(&config).unwrap();
    }

    /// librdkafka's reason keeps its text: the value is cut where it stands as a word only
    /// (`0` used to become `range 1..864<value><value>…`).
    #[test]
    fn a_refused_value_does_not_garble_the_reason() {
        let e = check(&kafka_config("max_poll_interval_ms = 0")).unwrap_err();
        assert_eq!(e.key, "kafka.max_poll_interval_ms");
        assert!(e.message.contains("value <value> is outside"), "{e}");
        assert!(e.message.contains("1..86400000"), "{e}");
        assert!(!e.message.contains("<value><value>"), "{e}");
    }

    /// What librdkafka only refuses when it creates the client is refused by the check too
    /// (it used to pass `check-config` and fail `run`): one line naming the key.
    #[test]
    fn the_client_is_created_at_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        for (extra, key, says) in [
            (
                "[kafka.properties]\n\"security.protocol\" = \"sasl_plaintext\"\n\"sasl.mechanism\" = \"FOO\"".to_string(),
                "kafka.properties.\"sasl.mechanism\"",
                "Unsupported SASL mechanism",
            ),
            (
                "[kafka.properties]\n\"security.protocol\" = \"ssl\"\n\"ssl.ca.pem\" = \"garbage-pem-9f1c\"".to_string(),
                "kafka.properties.\"ssl.ca.pem\"",
                "ssl.ca.pem",
            ),
            (
                format!("[kafka.security]\nprotocol = \"ssl\"\nca_file = {:?}", garbage.display().to_string()),
                "kafka.security.ca_file",
                "ssl.ca.location",
            ),
        ] {
            let e = check(&kafka_config(&extra)).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(says), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert!(check(&kafka_config("")).is_ok());
    }

    #[test]
    fn default_keys_are_short_and_long_prefixes_are_refused() {
        let d = dest("");
        let (data, error) = longest_keys(&d);
        // 2026/11/01/13/t+2147483647+<20 digits>.ndjson.gz, years up to chrono's range.
        assert!(data < 80 && error < 100, "{data} {error}");
        assert!(check_key_length(0, &d).is_ok());
        let long = "p/".repeat(480);
        let e = check_key_length(0, &dest(&format!("prefix = \"{long}\"\n"))).unwrap_err();
        assert_eq!(e.key, "destinations[0].routing.file_template");
        assert!(e.message.contains("over S3's 1024"), "{e}");
        // A pattern admits topic names up to Kafka's 249 characters.
        let toml = "[kafka]\nbrokers = \"x:9092\"\ngroup_id = \"g\"\ntopics = [\"^ev-.*\"]\n\n[[destinations]]\nname = \"d\"\nbucket = \"b\"\n[destinations.routing]\nfolder_template = \"{topic}/%Y/{topic}/\"\nfile_template = \"{topic}+{topic}+{start_offset}\"\n";
        let d = crate::config::parse(toml, &|_| None)
            .unwrap()
            .destinations
            .remove(0);
        assert!(check_key_length(0, &d).is_err(), "4 × 249 bytes of topic");
    }
}
