//! `ddl`: the Athena `CREATE EXTERNAL TABLE` (Hive DDL, Trino engine) of a destination's NDJSON
//! objects (JSON SerDe) or Parquet objects (`STORED AS PARQUET`, its declared columns), with
//! partition projection derived from its folder template, so a query reads only
//! the folders it names and never lists the bucket.
//!
//! Each `/`-separated segment of the folder template becomes part of the projection's
//! `storage.location.template`: literal text stays; `name=<date directives>` (Hive style, e.g.
//! `dt=%Y-%m-%d`, `hr=%H`) and bare date directives (`%Y`, `%m`, `%d`, `%H` as `year`, `month`,
//! `day`, `hour`; `%Y-%m-%d` as `day`) become partition columns with `date` or `integer`
//! projections; `name={field:…}` and `{topic}` become columns whose values are given in queries
//! (`injected`), or an `enum` of the destination's topics. A segment that cannot be projected
//! (e.g. `%Y%m` glued to text) is an error naming it.
//!
//! Invariant: every folder the template can render is a location the projection can produce
//! for some value in its ranges (dates from `--since` to NOW, hours 0–23, …), so every object
//! the destination writes under its prefix is in the table.

mod iceberg;
use chrono::NaiveDate;
use std::fmt::Write as _;

use arrow_schema::DataType;

use crate::config::{DestinationConfig, ParquetConfig, TimeSource};

/// Why no DDL could be made.
#[derive(Debug, thiserror::Error)]
#[error("ddl: {0}")]
pub struct DdlError(String);

/// What the table looks like besides the destination.
#[derive(Debug, Clone)]
pub struct DdlOptions {
    /// Table name.
    pub table: String,
    /// Data columns as `name type` pairs (Hive types: string, bigint, double, boolean,
    /// struct<…>, …); the partition columns come from the folder template.
    pub columns: Vec<(String, String)>,
    /// First day of date projections.
    pub since: NaiveDate,
}

/// A partition column and its projection properties.
struct Partition {
    name: String,
    props: Vec<(String, String)>,
}

/// Java date format of a run of strftime directives (`%Y-%m-%d` → `yyyy-MM-dd`), if it holds
/// only numeric date and hour directives and separators.
fn java_date_format(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            if c.is_ascii_alphanumeric() {
                return None;
            }
            out.push(c);
            continue;
        }
        out.push_str(match chars.next()? {
            'Y' => "yyyy",
            'm' => "MM",
            'd' => "dd",
            'H' => "HH",
            _ => return None,
        });
    }
    Some(out)
}

/// The projection of a date-directive value (`%Y-%m-%d`, `%H`, …) for column `name`.
fn date_projection(name: &str, value: &str, since: NaiveDate) -> Option<Partition> {
    let p = |k: &str, v: &str| (format!("projection.{name}.{k}"), v.to_string());
    let int = |lo: i32, hi: i32, digits: usize| Partition {
        name: name.to_string(),
        props: vec![
            p("type", "integer"),
            p("range", &format!("{lo},{hi}")),
            p("digits", &digits.to_string()),
        ],
    };
    match value {
        "%Y" => return Some(int(chrono::Datelike::year(&since), 2100, 4)),
        "%m" => return Some(int(1, 12, 2)),
        "%d" => return Some(int(1, 31, 2)),
        "%H" => return Some(int(0, 23, 2)),
        _ => {}
    }
    let format = java_date_format(value)?;
    if !(format.contains("yyyy") && format.contains("MM") && format.contains("dd")) {
        return None;
    }
    let hourly = format.contains("HH");
    let start = if hourly {
        since.format("%Y-%m-%d 00").to_string()
    } else {
        since.format("%Y-%m-%d").to_string()
    };
    let start = java_start(&format, since).unwrap_or(start);
    Some(Partition {
        name: name.to_string(),
        props: vec![
            p("type", "date"),
            p("format", &format),
            p("range", &format!("{start},NOW")),
            p("interval", "1"),
            p("interval.unit", if hourly { "HOURS" } else { "DAYS" }),
        ],
    })
}

/// `since` written in a Java date format (only yyyy, MM, dd, HH and separators).
fn java_start(format: &str, since: NaiveDate) -> Option<String> {
    let strftime = format
        .replace("yyyy", "%Y")
        .replace("MM", "%m")
        .replace("dd", "%d")
        .replace("HH", "00");
    Some(since.format(&strftime).to_string())
}

/// The column of a `{…}` placeholder segment value, if it is one.
fn placeholder_projection(
    name: &str,
    value: &str,
    d: &DestinationConfig,
) -> Option<Result<Partition, DdlError>> {
    let p = |k: &str, v: &str| (format!("projection.{name}.{k}"), v.to_string());
    let inner = value.strip_prefix('{')?.strip_suffix('}')?;
    let injected = Partition {
        name: name.to_string(),
        props: vec![p("type", "injected")],
    };
    Some(Ok(match inner {
        "topic" | "source" if inner == "topic" || d.source_id.is_none() => match d.topics.exact() {
            Some(names) if !names.is_empty() => Partition {
                name: name.to_string(),
                props: vec![p("type", "enum"), p("values", &names.join(","))],
            },
            _ => injected,
        },
        f if f.starts_with("field:") => injected,
        _ => return None,
    }))
}

/// Substitutes the placeholders known per destination in a literal segment.
fn literal(segment: &str, d: &DestinationConfig) -> Option<String> {
    let s = segment
        .replace("{destination}", &d.name)
        .replace("{source}", d.source_id.as_deref().unwrap_or("{source}"));
    (!s.contains('{') && !s.contains('%')).then_some(s)
}

/// The Athena DDL of destination `d`.
pub fn athena_ddl(d: &DestinationConfig, opts: &DdlOptions) -> Result<String, DdlError> {
    if d.iceberg.is_some() {
        return iceberg::create_table(d);
    }
    let mut partitions: Vec<Partition> = Vec::new();
    let mut location = format!("s3://{}/{}", d.bucket, d.prefix);
    for segment in d
        .routing
        .folder
        .as_str()
        .split('/')
        .filter(|s| !s.is_empty())
    {
        let (name, value) = match segment.split_once('=') {
            Some((n, v))
                if !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
            {
                (Some(n.to_string()), v)
            }
            _ => (None, segment),
        };
        if let Some(text) = literal(segment, d) {
            location.push_str(&text);
            location.push('/');
            continue;
        }
        let bare = |v: &str| match v {
            "%Y" => Some("year"),
            "%m" => Some("month"),
            "%d" => Some("day"),
            "%H" => Some("hour"),
            "%Y-%m-%d" | "%Y%m%d" => Some("day"),
            "{topic}" => Some("topic"),
            "{source}" => Some("source"),
            _ => None,
        };
        let column = match &name {
            Some(n) => n.clone(),
            None => match bare(value) {
                Some(c) => c.to_string(),
                None => {
                    return Err(DdlError(format!(
                        "folder segment {segment:?} cannot be projected; use name=%Y-%m-%d, name=%H, %Y, %m, %d, %H, {{topic}} or name={{field:path}} segments"
                    )))
                }
            },
        };
        if partitions.iter().any(|p| p.name == column) {
            return Err(DdlError(format!(
                "folder segment {segment:?} repeats partition column `{column}`; name the segments (name=…)"
            )));
        }
        let partition = match placeholder_projection(&column, value, d) {
            Some(p) => p?,
            None => date_projection(&column, value, opts.since).ok_or_else(|| {
                DdlError(format!(
                    "folder segment {segment:?}: {value:?} cannot be projected; use %Y-%m-%d (or with %H), %Y, %m, %d or %H alone, or {{field:path}}"
                ))
            })?,
        };
        let prefix = name.map(|n| format!("{n}=")).unwrap_or_default();
        let _ = write!(location, "{prefix}${{{column}}}/");
        partitions.push(partition);
    }
    if let Some(p) = partitions.iter().find(|p| {
        opts.columns
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(&p.name))
    }) {
        return Err(DdlError(format!(
            "partition column `{}` is also a data column; rename the column or the folder segment (name=…)",
            p.name
        )));
    }
    let parquet = d.parquet.is_some();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- Athena table of the {} objects of destination `{}` (kafka-s3-sink ddl).",
        if parquet { "Parquet" } else { "NDJSON" },
        d.name
    );
    let _ = writeln!(
        out,
        "-- {}; the quarantine folder `{}` is not in it.",
        if parquet {
            "The columns are the destination's Parquet columns"
        } else {
            "Add the event fields you query to the column list"
        },
        d.error_prefix.trim_end_matches('/')
    );
    if d.parquet.as_ref().is_some_and(|p| p.from_schema) {
        let _ = writeln!(
            out,
            "-- Its columns come from the records' schemas (columns = \"from_schema\") as they are read: list them with --columns \"name type, ...\", or add them later with ALTER TABLE ADD COLUMNS."
        );
    }
    let _ = writeln!(
        out,
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{}` (",
        opts.table
    );
    let cols: Vec<String> = opts
        .columns
        .iter()
        .map(|(n, t)| format!("  `{n}` {t}"))
        .collect();
    let _ = writeln!(out, "{}", cols.join(",\n"));
    let _ = write!(out, ")");
    if !partitions.is_empty() {
        let parts: Vec<String> = partitions
            .iter()
            .map(|p| format!("`{}` string", p.name))
            .collect();
        let _ = write!(out, "\nPARTITIONED BY ({})", parts.join(", "));
    }
    if parquet {
        let _ = write!(out, "\nSTORED AS PARQUET");
    } else {
        let _ = write!(
            out,
            "\nROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n\
             WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')"
        );
    }
    let _ = write!(out, "\nLOCATION 's3://{}/{}'", d.bucket, d.prefix);
    let mut props = vec![("projection.enabled".to_string(), "true".to_string())];
    for p in &partitions {
        props.extend(p.props.iter().cloned());
    }
    if !partitions.is_empty() {
        props.push(("storage.location.template".into(), location));
    } else {
        props[0].1 = "false".into();
    }
    let props: Vec<String> = props
        .iter()
        .map(|(k, v)| format!("  '{k}' = '{}'", v.replace('\'', "''")))
        .collect();
    let _ = writeln!(out, "\nTBLPROPERTIES (\n{}\n);", props.join(",\n"));
    Ok(out)
}

/// The default data columns of a destination: the top-level field of its event time (when the
/// time comes from the records) as a string, and its Kafka metadata member when it writes one.
pub fn default_columns(d: &DestinationConfig) -> Vec<(String, String)> {
    if let Some(p) = &d.parquet {
        return parquet_columns(p);
    }
    let mut out = Vec::new();
    if let TimeSource::EventTime { path, .. } | TimeSource::EventTimeOrUploadTime { path, .. } =
        &d.routing.time_source
    {
        // A nested time field's top-level member is declared as a string (its JSON text).
        if let Some(first) = path.first() {
            out.push((first.clone(), "string".into()));
        }
    }
    if let Some(field) = &d.kafka_metadata_field {
        out.push((
            field.clone(),
            "struct<topic:string,partition:int,offset:bigint,timestamp:bigint,key:string>".into(),
        ));
    }
    if out.is_empty() {
        out.push(("type".into(), "string".into()));
    }
    out
}

/// The columns of a Parquet destination's files, in file order, with their Athena types (read
/// off the file schema, so the table cannot drift from the files).
fn parquet_columns(p: &ParquetConfig) -> Vec<(String, String)> {
    p.schema
        .fields()
        .iter()
        .map(|f| {
            let kind = match f.data_type() {
                DataType::Int64 => "bigint",
                DataType::Int32 => "int",
                DataType::Float64 => "double",
                DataType::Boolean => "boolean",
                DataType::Timestamp(..) => "timestamp",
                DataType::Binary => "binary",
                _ => "string",
            };
            (f.name().clone(), kind.to_string())
        })
        .collect()
}

/// `name type, name type` → pairs.
pub fn parse_columns(s: &str) -> Result<Vec<(String, String)>, DdlError> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let bytes = s.as_bytes();
    let mut push = |part: &str| -> Result<(), DdlError> {
        let part = part.trim();
        if part.is_empty() {
            return Ok(());
        }
        let (n, t) = part
            .split_once(char::is_whitespace)
            .ok_or_else(|| DdlError(format!("column {part:?} needs a name and a type")))?;
        out.push((n.trim_matches('`').to_string(), t.trim().to_string()));
        Ok(())
    };
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'<' | b'(' => depth += 1,
            b'>' | b')' => depth -= 1,
            b',' if depth == 0 => {
                push(&s[start..i])?;
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&s[start..])?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DdlOptions {
        DdlOptions {
            table: "events".into(),
            columns: vec![("timestamp".into(), "string".into())],
            since: NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
        }
    }

    fn ddl(extra: &str) -> Result<String, DdlError> {
        let d = crate::config::test_destination(&format!("prefix = \"logs\"\n{extra}"));
        athena_ddl(&d, &opts())
    }

    #[test]
    fn hive_folders_project_as_date_and_hour() {
        let s = ddl("[destinations.routing]\nfolder_template = \"dt=%Y-%m-%d/hr=%H/\"\n").unwrap();
        assert!(
            s.contains("PARTITIONED BY (`dt` string, `hr` string)"),
            "{s}"
        );
        assert!(s.contains("'projection.dt.type' = 'date'"), "{s}");
        assert!(s.contains("'projection.dt.format' = 'yyyy-MM-dd'"), "{s}");
        assert!(
            s.contains("'projection.dt.range' = '2020-01-01,NOW'"),
            "{s}"
        );
        assert!(s.contains("'projection.hr.range' = '0,23'"), "{s}");
        assert!(
            s.contains("'storage.location.template' = 's3://b/logs/dt=${dt}/hr=${hr}/'"),
            "{s}"
        );
    }

    #[test]
    fn parquet_tables_are_stored_as_parquet_with_the_declared_columns() {
        let d = crate::config::test_destination(
            "prefix = \"pq\"\nkafka_metadata_field = \"_kafka\"\n\
             [destinations.routing]\nfolder_template = \"dt=%Y-%m-%d/hr=%H/\"\n\
             [destinations.batch]\nformat = \"parquet\"\n\
             [destinations.parquet]\nraw_column = \"raw\"\ncolumns = [\n\
             { name = \"event_type\", path = \"type\", type = \"string\" },\n\
             { name = \"n\", type = \"int64\" },\n\
             { name = \"ts\", path = \"timestamp\", type = \"timestamp\" },\n\
             { name = \"props\", path = \"properties\", type = \"json\" }]\n",
        );
        let opts = DdlOptions {
            columns: default_columns(&d),
            ..opts()
        };
        let s = athena_ddl(&d, &opts).unwrap();
        assert!(s.contains("STORED AS PARQUET"), "{s}");
        assert!(!s.contains("JsonSerDe"), "{s}");
        for col in [
            "`event_type` string",
            "`n` bigint",
            "`ts` timestamp",
            "`props` string",
            "`raw` string",
            "`_kafka_partition` int",
            "`_kafka_offset` bigint",
            "`_kafka_timestamp` timestamp",
            "`_kafka_key` binary",
        ] {
            assert!(s.contains(col), "{col} in {s}");
        }
        assert!(
            s.contains("PARTITIONED BY (`dt` string, `hr` string)"),
            "{s}"
        );
        // A data column named like a partition column is refused.
        let clash = DdlOptions {
            columns: vec![("dt".into(), "string".into())],
            ..opts
        };
        assert!(athena_ddl(&d, &clash)
            .unwrap_err()
            .to_string()
            .contains("`dt`"));
    }

    #[test]
    fn default_and_field_folders() {
        let s = ddl("").unwrap();
        assert!(
            s.contains(
                "'storage.location.template' = 's3://b/logs/${year}/${month}/${day}/${hour}/'"
            ),
            "{s}"
        );
        assert!(s.contains("'projection.month.digits' = '2'"), "{s}");
        let s = ddl(
            "[destinations.routing]\nfolder_template = \"raw/{topic}/event={field:event}/%Y-%m-%d/\"\n",
        )
        .unwrap();
        assert!(s.contains("'projection.topic.type' = 'enum'"), "{s}");
        assert!(s.contains("'projection.topic.values' = 't'"), "{s}");
        assert!(s.contains("'projection.event.type' = 'injected'"), "{s}");
        assert!(
            s.contains("'s3://b/logs/raw/${topic}/event=${event}/${day}/'"),
            "{s}"
        );
        let e = ddl("[destinations.routing]\nfolder_template = \"%Y%m-x/\"\n").unwrap_err();
        assert!(e.to_string().contains("cannot be projected"), "{e}");
    }

    #[test]
    fn columns_parse_with_nested_types() {
        let c = parse_columns("type string, props struct<a:int,b:string>, n bigint").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[1], ("props".into(), "struct<a:int,b:string>".into()));
        assert!(parse_columns("lonely").is_err());
    }
}
