//! Start-up checks that need more than the config module: librdkafka's own verdict on the
//! Kafka properties, and the longest key each destination can produce against S3's limit. Run
//! by `check-config`, `run` and `verify` ([`crate::app::load`]) and before every pipeline start.
//!
//! Invariant: a config that passes cannot make librdkafka refuse a property or S3 refuse a key
//! for its length; every failure is one [`ConfigError`] line naming the key, never a value.

use crate::config::{property_key, Config, ConfigError, DestinationConfig};
use crate::router::QuarantineReason;
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

/// The librdkafka properties of `config`, checked by librdkafka; the error names the config
/// key and librdkafka's reason, never the value.
pub fn check_kafka_properties(config: &Config) -> Result<(), ConfigError> {
    kafka::check_properties(&config.kafka.properties)
        .map_err(|e| ConfigError::new(property_key(&e.name), e.reason))
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
