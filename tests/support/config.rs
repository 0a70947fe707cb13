//! The connector's config for the scenario tests: a TOML table with test defaults, edited by
//! dotted paths and parsed by the connector's own parser.

use kafka_s3_sink::config::{self, Config};

use super::{ACCESS_KEY, BUCKET, SECRET_KEY};

/// A connector config as a TOML table, with test defaults, edited by dotted paths.
///
/// Destination keys: [`dest`](Self::dest). Defaults: one destination `test` writing to
/// [`BUCKET`] on the local S3 server with static keys and path style; `session_timeout_ms = 6000`, `drain_deadline_secs = 5`,
/// `shutdown_deadline_secs = 20`; gzip, `max_records = 500`, `max_age_secs = 60`,
/// `idle_secs = 1`; retry backoff 50–500 ms; `%Y/%m/%d/%H/` folders on the `timestamp` field.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// The whole file.
    pub table: toml::Table,
}

impl TestConfig {
    /// Defaults for `topics` on `brokers`, group `group`, S3 at `endpoint`.
    pub fn new(brokers: &str, group: &str, topics: &[&str], endpoint: &str) -> Self {
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = {topics:?}
session_timeout_ms = 6000

[pipeline]
drain_deadline_secs = 5
shutdown_deadline_secs = 20

[upload]
retry_initial_backoff_ms = 50
retry_max_backoff_ms = 500

[[destinations]]
name = "test"
bucket = "{BUCKET}"
endpoint = "{endpoint}"
force_path_style = true

[destinations.credentials]
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"

[destinations.routing]
time_source = "event_time"
time_field = "timestamp"
folder_template = "%Y/%m/%d/%H/"

[destinations.batch]
compression = "gzip"
max_records = 500
max_age_secs = 60
idle_secs = 1
"#
        );
        let table: toml::Table = text.parse().expect("invariant: the default config is TOML");
        Self { table }
    }

    /// Sets a key outside the destinations (`set("upload.part_size_bytes", 5242880)`),
    /// creating tables on the way; use [`dest`](Self::dest) for destination keys.
    pub fn set(&mut self, path: &str, value: impl Into<toml::Value>) -> &mut Self {
        let segments: Vec<&str> = path.split('.').collect();
        let (last, parents) = segments.split_last().expect("non-empty path");
        let mut cur = &mut self.table;
        for seg in parents {
            let next = cur
                .entry((*seg).to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = match next {
                toml::Value::Table(t) => t,
                other => panic!("{path}: {seg} is {other:?}, not a table"),
            };
        }
        cur.insert((*last).to_owned(), value.into());
        self
    }

    /// Removes a top-level section key (`remove("upload", "concurrency")`); no-op if absent.
    pub fn remove(&mut self, section: &str, key: &str) -> &mut Self {
        if let Some(toml::Value::Table(t)) = self.table.get_mut(section) {
            t.remove(key);
        }
        self
    }

    /// Sets a key of destination `i` (`dest(0, "batch.max_records", 100)`).
    pub fn dest(&mut self, i: usize, path: &str, value: impl Into<toml::Value>) -> &mut Self {
        let (parent, last) = match path.rsplit_once('.') {
            Some((p, l)) => (Some(p), l),
            None => (None, path),
        };
        let d = self.destination(i);
        let mut cur = d;
        if let Some(parent) = parent {
            for seg in parent.split('.') {
                let next = cur
                    .entry(seg.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                cur = match next {
                    toml::Value::Table(t) => t,
                    other => panic!("destinations[{i}].{path}: {seg} is {other:?}, not a table"),
                };
            }
        }
        cur.insert(last.to_owned(), value.into());
        self
    }

    /// Destination `i` as a table (panics if absent).
    pub fn destination(&mut self, i: usize) -> &mut toml::Table {
        match self.table.get_mut("destinations") {
            Some(toml::Value::Array(a)) => match a.get_mut(i) {
                Some(toml::Value::Table(t)) => t,
                _ => panic!("no destination {i}"),
            },
            _ => panic!("no destinations"),
        }
    }

    /// Appends a copy of destination 0 named `name` writing to `bucket`; returns its index.
    pub fn add_destination(&mut self, name: &str, bucket: &str) -> usize {
        let mut copy = self.destination(0).clone();
        copy.insert("name".into(), name.into());
        copy.insert("bucket".into(), bucket.into());
        match self.table.get_mut("destinations") {
            Some(toml::Value::Array(a)) => {
                a.push(toml::Value::Table(copy));
                a.len() - 1
            }
            _ => panic!("no destinations"),
        }
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        toml::to_string(&self.table).expect("invariant: a table serializes")
    }

    /// Parses and validates through the connector's own parser (no environment).
    pub fn build(&self) -> Config {
        let text = self.toml();
        config::parse(&text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }
}
