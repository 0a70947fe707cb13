//! `[destinations.iceberg]`: the catalog, namespace and table of an Iceberg destination, its
//! partitioning and commit interval, validated into an [`IcebergConfig`].
//!
//! Invariant: every key a catalog kind does not use is refused (one line naming the key), so a
//! typo or a key meant for another kind never passes silently; secrets (REST token and OAuth2
//! credential, a SQL URI that may carry a password) stay in [`Secret`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

mod applies;
mod partition;
pub use applies::refuse_inapplicable;
pub use partition::{event_time_column, partition_sources, PartitionSource};

use super::parquet::plain_identifier;
use crate::config::{ConfigError, ParquetConfig, Secret, TimeSource};

/// Default `commit_interval_secs`: one snapshot per worker per minute.
pub const DEFAULT_COMMIT_INTERVAL_SECS: u64 = 60;

/// Longest accepted `commit_interval_secs` (a day): offsets wait for the table commit.
pub const MAX_COMMIT_INTERVAL_SECS: u64 = 86_400;

/// `[destinations.iceberg]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIceberg {
    /// `[destinations.iceberg.catalog]`.
    pub catalog: RawCatalog,
    /// Namespace, dotted for nested levels (`analytics.raw`).
    pub namespace: String,
    /// Table name.
    pub table: String,
    /// Create the namespace and table at start-up when missing (off: a missing table is a
    /// start-up error).
    #[serde(default = "d_true")]
    pub create_if_missing: bool,
    /// Seconds between two table commits of one worker.
    #[serde(default = "d_commit_interval_secs")]
    pub commit_interval_secs: u64,
    /// Time transform of the event-time column: hour | day | month | none.
    #[serde(default = "d_partition_time")]
    pub partition_time: String,
    /// Dotted JSON paths partitioned by value (`identity`); each must be a declared column's
    /// path.
    #[serde(default)]
    pub partition_fields: Vec<String>,
}

fn d_true() -> bool {
    true
}
fn d_commit_interval_secs() -> u64 {
    DEFAULT_COMMIT_INTERVAL_SECS
}
fn d_partition_time() -> String {
    "day".into()
}

/// `[destinations.iceberg.catalog]`: one flat table whose `kind` says which keys apply.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    /// sql | rest | glue | s3tables.
    pub kind: String,
    /// sql: `sqlite:` URI of the catalog database; rest: the catalog's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<Secret>,
    /// sql, glue: where new tables' files go (`s3://bucket/prefix`); rest: the warehouse
    /// name or location the server expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// rest: a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// rest: an OAuth2 client credential, `client_id:client_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Secret>,
    /// rest: the OAuth2 token endpoint (default: the server's `v1/oauth/tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_server_uri: Option<String>,
    /// rest: the OAuth2 scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// glue, s3tables: AWS region (default: the destination's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// glue: the Data Catalog's account id (default: the caller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_id: Option<String>,
    /// glue, s3tables: endpoint of a compatible service (tests, private endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// s3tables: `arn:aws:s3tables:<region>:<account>:bucket/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_bucket_arn: Option<String>,
}

/// A validated catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogConfig {
    /// The SQL catalog (iceberg-catalog-sql) on a sqlite database.
    Sql {
        /// `sqlite:` URI.
        uri: Secret,
        /// Warehouse location of new tables.
        warehouse: String,
    },
    /// An Iceberg REST catalog.
    Rest {
        /// Base URL.
        uri: String,
        /// Warehouse the server expects, if any.
        warehouse: Option<String>,
        /// Bearer token or OAuth2 client credential (at most one).
        auth: RestAuth,
        /// OAuth2 token endpoint override.
        oauth2_server_uri: Option<String>,
        /// OAuth2 scope.
        scope: Option<String>,
    },
    /// AWS Glue Data Catalog.
    Glue {
        /// Region (None: the destination's).
        region: Option<String>,
        /// Catalog account id.
        catalog_id: Option<String>,
        /// Warehouse location of new tables.
        warehouse: String,
        /// Endpoint override.
        endpoint: Option<String>,
    },
    /// Amazon S3 Tables.
    S3Tables {
        /// Table bucket ARN.
        table_bucket_arn: String,
        /// Region (None: the ARN's).
        region: Option<String>,
        /// Endpoint override.
        endpoint: Option<String>,
    },
}

/// How a REST catalog authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestAuth {
    /// No credentials.
    None,
    /// A bearer token.
    Token(Secret),
    /// An OAuth2 client credential (`client_id:client_secret`).
    Credential(Secret),
}

/// The time transform of the event-time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeTransform {
    /// `hour(col)`.
    Hour,
    /// `day(col)`.
    Day,
    /// `month(col)`.
    Month,
}

impl TimeTransform {
    /// Its name in config files and in the partition field's name (`<col>_<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// A validated `[destinations.iceberg]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcebergConfig {
    /// Catalog.
    pub catalog: CatalogConfig,
    /// Namespace levels.
    pub namespace: Vec<String>,
    /// Table name.
    pub table: String,
    /// Create the namespace and table when missing.
    pub create_if_missing: bool,
    /// Interval between two commits of one worker.
    pub commit_interval: Duration,
    /// Time transform of the event-time column (None: not partitioned by time).
    pub partition_time: Option<TimeTransform>,
    /// JSON paths partitioned by value, split at dots.
    pub partition_fields: Vec<Vec<String>>,
    /// The partition fields, in spec order, with the columns they read (set by
    /// [`validate_for`], which checks them against the destination's columns).
    pub partition: Vec<PartitionSource>,
}

impl IcebergConfig {
    /// The folder template that groups a destination's files by partition time (the routing
    /// of a table; identity values are grouped by the router from the rows).
    pub fn folder_template(&self) -> &'static str {
        match self.partition_time {
            Some(TimeTransform::Hour) => "%Y/%m/%d/%H/",
            Some(TimeTransform::Day) => "%Y/%m/%d/",
            Some(TimeTransform::Month) => "%Y/%m/",
            None => "",
        }
    }
}

/// Validates the `[destinations.iceberg]` of the destination at `at` against its Parquet
/// columns and time source: every partition field must read a column the data files hold.
pub fn validate_for(
    at: &str,
    r: &RawIceberg,
    parquet: &ParquetConfig,
    time: &TimeSource,
) -> Result<IcebergConfig, ConfigError> {
    let mut cfg = validate(at, r)?;
    let time_column = event_time_column(parquet, time);
    cfg.partition = partition_sources(at, &cfg, parquet, time_column.as_deref())?;
    Ok(cfg)
}

/// Validates the `[destinations.iceberg]` of the destination at `at` (e.g. `destinations[0]`).
pub fn validate(at: &str, r: &RawIceberg) -> Result<IcebergConfig, ConfigError> {
    let key = |k: &str| format!("{at}.iceberg.{k}");
    let namespace: Vec<String> = r.namespace.split('.').map(str::to_string).collect();
    if let Some(bad) = namespace.iter().find(|n| !plain_identifier(n)) {
        return Err(ConfigError::new(
            key("namespace"),
            format!(
                "{bad:?} is not a namespace name: use letters, digits and _ (dots separate levels)"
            ),
        ));
    }
    if !plain_identifier(&r.table) {
        return Err(ConfigError::new(
            key("table"),
            format!(
                "{:?} is not a table name: use letters, digits and _ (not first a digit), at most 128",
                r.table
            ),
        ));
    }
    if !(1..=MAX_COMMIT_INTERVAL_SECS).contains(&r.commit_interval_secs) {
        return Err(ConfigError::new(
            key("commit_interval_secs"),
            format!("must be 1–{MAX_COMMIT_INTERVAL_SECS} seconds (default {DEFAULT_COMMIT_INTERVAL_SECS})"),
        ));
    }
    let partition_time = match r.partition_time.as_str() {
        "hour" => Some(TimeTransform::Hour),
        "day" => Some(TimeTransform::Day),
        "month" => Some(TimeTransform::Month),
        "none" => None,
        other => {
            return Err(ConfigError::new(
                key("partition_time"),
                format!("unknown value {other:?}; use hour, day, month or none"),
            ))
        }
    };
    let mut partition_fields: Vec<Vec<String>> = Vec::new();
    for (i, f) in r.partition_fields.iter().enumerate() {
        let path: Vec<String> = f.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                format!("{at}.iceberg.partition_fields[{i}]"),
                format!(
                    "{f:?} has an empty segment; write a dotted path such as \"context.country\""
                ),
            ));
        }
        if partition_fields.contains(&path) {
            return Err(ConfigError::new(
                format!("{at}.iceberg.partition_fields[{i}]"),
                format!("{f:?} is listed twice; remove one"),
            ));
        }
        partition_fields.push(path);
    }
    Ok(IcebergConfig {
        catalog: catalog(&format!("{at}.iceberg.catalog"), &r.catalog)?,
        namespace,
        table: r.table.clone(),
        create_if_missing: r.create_if_missing,
        commit_interval: Duration::from_secs(r.commit_interval_secs),
        partition_time,
        partition_fields,
        partition: Vec::new(),
    })
}

/// The keys each kind uses besides `kind`.
fn allowed_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "sql" => &["uri", "warehouse"],
        "rest" => &[
            "uri",
            "warehouse",
            "token",
            "credential",
            "oauth2_server_uri",
            "scope",
        ],
        "glue" => &["region", "catalog_id", "warehouse", "endpoint"],
        "s3tables" => &["table_bucket_arn", "region", "endpoint"],
        _ => return None,
    })
}

/// The keys `c` sets besides `kind`.
fn set_keys(c: &RawCatalog) -> Vec<&'static str> {
    let set = [
        ("uri", c.uri.is_some()),
        ("warehouse", c.warehouse.is_some()),
        ("token", c.token.is_some()),
        ("credential", c.credential.is_some()),
        ("oauth2_server_uri", c.oauth2_server_uri.is_some()),
        ("scope", c.scope.is_some()),
        ("region", c.region.is_some()),
        ("catalog_id", c.catalog_id.is_some()),
        ("endpoint", c.endpoint.is_some()),
        ("table_bucket_arn", c.table_bucket_arn.is_some()),
    ];
    set.into_iter()
        .filter(|(_, s)| *s)
        .map(|(k, _)| k)
        .collect()
}

fn catalog(at: &str, c: &RawCatalog) -> Result<CatalogConfig, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    let Some(allowed) = allowed_keys(&c.kind) else {
        return Err(ConfigError::new(
            key("kind"),
            format!(
                "unknown catalog kind {:?}; use sql, rest, glue or s3tables",
                c.kind
            ),
        ));
    };
    if let Some(extra) = set_keys(c).into_iter().find(|k| !allowed.contains(k)) {
        return Err(ConfigError::new(
            key(extra),
            format!(
                "is not used by kind = {:?} (it takes {}); remove it",
                c.kind,
                allowed.join(", ")
            ),
        ));
    }
    let required = |k: &str, v: &Option<String>| -> Result<String, ConfigError> {
        match v.as_deref() {
            Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
            _ => Err(ConfigError::new(
                key(k),
                format!("kind = {:?} needs {k}", c.kind),
            )),
        }
    };
    let http = |k: &str, v: &str| -> Result<(), ConfigError> {
        if v.starts_with("http://") || v.starts_with("https://") {
            Ok(())
        } else {
            Err(ConfigError::new(
                key(k),
                "must be an http:// or https:// URL",
            ))
        }
    };
    let endpoint = |v: &Option<String>| -> Result<Option<String>, ConfigError> {
        if let Some(e) = v {
            http("endpoint", e)?;
        }
        Ok(v.clone())
    };
    match c.kind.as_str() {
        "sql" => {
            let uri = c
                .uri
                .clone()
                .filter(|u| !u.expose().trim().is_empty())
                .ok_or_else(|| ConfigError::new(key("uri"), "kind = \"sql\" needs uri, e.g. \"sqlite:///var/lib/kafka-s3-sink/catalog.db?mode=rwc\""))?;
            if !uri.expose().starts_with("sqlite:") {
                return Err(ConfigError::new(
                    key("uri"),
                    "this build's SQL catalog takes sqlite: URIs only (e.g. \"sqlite:///path/catalog.db?mode=rwc\"); use kind = \"rest\" or \"glue\" for a shared catalog",
                ));
            }
            let warehouse = required("warehouse", &c.warehouse)?;
            Ok(CatalogConfig::Sql { uri, warehouse })
        }
        "rest" => {
            let uri = c
                .uri
                .as_ref()
                .map(|u| u.expose().to_string())
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| {
                    ConfigError::new(
                        key("uri"),
                        "kind = \"rest\" needs uri, the catalog's base URL",
                    )
                })?;
            http("uri", &uri)?;
            let auth = match (&c.token, &c.credential) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        key("credential"),
                        "set token or credential, not both",
                    ))
                }
                (Some(t), None) => RestAuth::Token(t.clone()),
                (None, Some(cred)) => {
                    if !cred
                        .expose()
                        .split_once(':')
                        .is_some_and(|(id, secret)| !id.is_empty() && !secret.is_empty())
                    {
                        return Err(ConfigError::new(
                            key("credential"),
                            "must be client_id:client_secret",
                        ));
                    }
                    RestAuth::Credential(cred.clone())
                }
                (None, None) => RestAuth::None,
            };
            if let Some(o) = &c.oauth2_server_uri {
                http("oauth2_server_uri", o)?;
            }
            Ok(CatalogConfig::Rest {
                uri,
                warehouse: c.warehouse.clone(),
                auth,
                oauth2_server_uri: c.oauth2_server_uri.clone(),
                scope: c.scope.clone(),
            })
        }
        "glue" => {
            if let Some(id) = &c.catalog_id {
                if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ConfigError::new(
                        key("catalog_id"),
                        "must be a 12-digit AWS account id",
                    ));
                }
            }
            Ok(CatalogConfig::Glue {
                region: c.region.clone(),
                catalog_id: c.catalog_id.clone(),
                warehouse: required("warehouse", &c.warehouse)?,
                endpoint: endpoint(&c.endpoint)?,
            })
        }
        _ => {
            let arn = required("table_bucket_arn", &c.table_bucket_arn)?;
            let parts: Vec<&str> = arn.split(':').collect();
            let ok = parts.len() == 6
                && parts[0] == "arn"
                && parts[2] == "s3tables"
                && !parts[3].is_empty()
                && parts[5]
                    .strip_prefix("bucket/")
                    .is_some_and(|b| !b.is_empty());
            if !ok {
                return Err(ConfigError::new(
                    key("table_bucket_arn"),
                    format!("{arn:?} is not a table bucket ARN; write arn:aws:s3tables:<region>:<account>:bucket/<name>"),
                ));
            }
            Ok(CatalogConfig::S3Tables {
                table_bucket_arn: arn,
                region: c.region.clone(),
                endpoint: endpoint(&c.endpoint)?,
            })
        }
    }
}

#[cfg(test)]
mod tests;
