//! Which destination and topics a `verify` run covers, and the options it refuses before
//! reading anything (a destination it cannot audit, an empty range): each refusal is a usage
//! error naming the flag or key and the fix.

use super::{FromOffset, ToOffset, VerifyError, VerifyOptions};
use crate::config::{Config, DestinationConfig};

/// The destination and topics the options select.
pub fn select<'c>(
    config: &'c Config,
    opts: &VerifyOptions,
) -> Result<(&'c DestinationConfig, Vec<String>), VerifyError> {
    let names = || {
        config
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let d = match &opts.destination {
        None => config
            .destinations
            .first()
            .ok_or_else(|| VerifyError::usage("destinations", "no destination to verify"))?,
        Some(n) => config
            .destinations
            .iter()
            .find(|d| &d.name == n)
            .ok_or_else(|| {
                VerifyError::usage(
                    "--destination",
                    format!("no destination named `{n}`; use one of: {}", names()),
                )
            })?,
    };
    let topics = if opts.topics.is_empty() {
        d.topics.entries().to_vec()
    } else {
        for t in &opts.topics {
            if !d.topics.matches(t) {
                return Err(VerifyError::usage(
                    "--topic",
                    format!(
                        "destination `{}` is not fed by topic `{t}`; use one of: {}",
                        d.name,
                        d.topics.entries().join(", ")
                    ),
                ));
            }
        }
        opts.topics.clone()
    };
    if d.parquet
        .as_ref()
        .is_some_and(|p| p.metadata_prefix.is_none())
    {
        return Err(VerifyError::usage(
            "--destination",
            format!(
                "destination `{}` writes Parquet without Kafka metadata columns, so its rows cannot be matched to offsets; set its kafka_metadata_field (e.g. \"_kafka\") to write _kafka_topic, _kafka_partition and _kafka_offset, and verify the files written from then on (docs/configuration.md, section Parquet output)",
                d.name
            ),
        ));
    }
    if opts.max_memory_mb == 0 {
        return Err(VerifyError::usage("--max-memory-mb", "must be at least 1"));
    }
    if let (FromOffset::Offset(a), ToOffset::Offset(b)) = (opts.from, opts.to) {
        if a > b {
            return Err(VerifyError::usage(
                "--from",
                format!("{a} is past --to {b}; give a range with from ≤ to"),
            ));
        }
    }
    Ok((d, topics))
}
