//! What of a destination's settings applies to an Iceberg table: the object layout (strftime
//! folders, file templates, the presets built on them) does not, and neither does anything that
//! would put one file's records in two partitions. Each is refused in one line naming the key.
//!
//! Invariant: a destination that passes writes Parquet files with the Kafka metadata columns,
//! dates every record by itself in UTC (Iceberg's time transforms are UTC), and leaves file
//! naming and commit cadence to the table protocol.

use crate::config::{ConfigError, RawBatch, RawDestination, RawRouting};

/// Refuses the settings of the destination at `at` (e.g. `destinations[0]`) that do not apply
/// to an Iceberg table.
pub fn refuse_inapplicable(at: &str, d: &RawDestination) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    let routing = RawRouting::default();
    let batch = RawBatch::default();
    let not_for_tables = |k: &str, why: &str| {
        Err(ConfigError::new(
            key(k),
            format!("does not apply to an Iceberg table ({why}); remove it"),
        ))
    };
    if d.routing.folder_template != routing.folder_template {
        return not_for_tables(
            "routing.folder_template",
            "partitions come from iceberg.partition_time and iceberg.partition_fields",
        );
    }
    if d.routing.file_template != routing.file_template {
        return not_for_tables(
            "routing.file_template",
            "data files are named <topic>-<partition>-<first offset>-<writer>.parquet",
        );
    }
    if d.routing.granularity != "record" {
        return Err(ConfigError::new(
            key("routing.granularity"),
            "an Iceberg table dates every record by itself (a file's rows must share their partition); set granularity = \"record\"",
        ));
    }
    if d.routing.timezone != "UTC" {
        return Err(ConfigError::new(
            key("routing.timezone"),
            "Iceberg's hour/day/month partitions are UTC; set timezone = \"UTC\"",
        ));
    }
    if d.batch.format != "parquet" || d.parquet.is_none() {
        return Err(ConfigError::new(
            key("batch.format"),
            "an Iceberg table's data files are Parquet: set format = \"parquet\" and declare [destinations.parquet] columns",
        ));
    }
    if d.batch.deterministic != batch.deterministic {
        return not_for_tables(
            "batch.deterministic",
            "the table commit itself rules out duplicates",
        );
    }
    if d.kafka_metadata_field.is_none() {
        return Err(ConfigError::new(
            key("kafka_metadata_field"),
            "an Iceberg table keeps each row's Kafka coordinates (verify reads them); set kafka_metadata_field = \"_kafka\"",
        ));
    }
    if d.source_id.is_some() {
        return not_for_tables("source_id", "it only names objects");
    }
    if !d.app_name.is_empty() {
        return not_for_tables("app_name", "it only names objects");
    }
    if d.content_encoding_header {
        return not_for_tables(
            "content_encoding_header",
            "Parquet files are not gzip streams",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(extra: &str) -> RawDestination {
        let text = format!(
            "name = \"t\"\nbucket = \"b\"\nkafka_metadata_field = \"_kafka\"\n{extra}\n\
             [batch]\nformat = \"parquet\"\n\
             [[parquet.columns]]\nname = \"event\"\npath = \"type\"\ntype = \"string\"\n"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn a_table_destination_passes() {
        refuse_inapplicable("destinations[0]", &destination("")).unwrap();
    }

    #[test]
    fn each_object_layout_setting_is_refused_naming_its_key() {
        let cases = [
            (
                "[routing]\nfolder_template = \"%Y/\"",
                "routing.folder_template",
            ),
            (
                "[routing]\nfile_template = \"{topic}.json\"",
                "routing.file_template",
            ),
            (
                "[routing]\ngranularity = \"first_event\"",
                "routing.granularity",
            ),
            ("[routing]\ntimezone = \"Europe/Paris\"", "routing.timezone"),
            ("source_id = \"s\"", "source_id"),
            ("app_name = \"a\"", "app_name"),
            ("content_encoding_header = true", "content_encoding_header"),
        ];
        for (extra, k) in cases {
            let e = refuse_inapplicable("destinations[0]", &destination(extra)).unwrap_err();
            assert_eq!(e.key, format!("destinations[0].{k}"), "{extra}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
        let mut d = destination("");
        d.batch.format = "ndjson".into();
        let e = refuse_inapplicable("destinations[0]", &d).unwrap_err();
        assert_eq!(e.key, "destinations[0].batch.format");
        let mut d = destination("");
        d.batch.deterministic = true;
        let e = refuse_inapplicable("destinations[0]", &d).unwrap_err();
        assert_eq!(e.key, "destinations[0].batch.deterministic");
        let mut d = destination("");
        d.kafka_metadata_field = None;
        let e = refuse_inapplicable("destinations[0]", &d).unwrap_err();
        assert_eq!(e.key, "destinations[0].kafka_metadata_field");
    }
}
