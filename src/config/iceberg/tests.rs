use super::*;

fn parse(text: &str) -> Result<IcebergConfig, ConfigError> {
    let raw: RawIceberg =
        toml::from_str(text).map_err(|e| ConfigError::new("toml", e.to_string()))?;
    validate("destinations[0]", &raw)
}

const SQL: &str = r#"
    namespace = "analytics.raw"
    table = "events"
    [catalog]
    kind = "sql"
    uri = "sqlite:///tmp/c.db?mode=rwc"
    warehouse = "s3://bucket/warehouse"
"#;

#[test]
fn a_sql_catalog_with_the_defaults() {
    let c = parse(SQL).unwrap();
    assert_eq!(c.namespace, ["analytics", "raw"]);
    assert_eq!(c.table, "events");
    assert!(c.create_if_missing);
    assert_eq!(c.commit_interval, Duration::from_secs(60));
    assert_eq!(c.partition_time, Some(TimeTransform::Day));
    assert!(c.partition_fields.is_empty());
    match c.catalog {
        CatalogConfig::Sql { uri, warehouse } => {
            assert_eq!(uri.expose(), "sqlite:///tmp/c.db?mode=rwc");
            assert_eq!(warehouse, "s3://bucket/warehouse");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_kind_parses() {
    let rest = parse(
        r#"
        namespace = "n"
        table = "t"
        partition_time = "hour"
        partition_fields = ["type", "context.country"]
        commit_interval_secs = 30
        [catalog]
        kind = "rest"
        uri = "https://catalog.example.com/api"
        warehouse = "wh"
        credential = "id:s3cret"
        scope = "PRINCIPAL_ROLE:ALL"
        "#,
    )
    .unwrap();
    assert_eq!(
        rest.partition_fields,
        [
            vec!["type".to_string()],
            vec!["context".into(), "country".into()]
        ]
    );
    assert_eq!(rest.commit_interval, Duration::from_secs(30));
    assert!(matches!(
        rest.catalog,
        CatalogConfig::Rest {
            auth: RestAuth::Credential(_),
            ..
        }
    ));
    assert!(
        !format!("{rest:?}").contains("s3cret"),
        "the credential never prints"
    );
    let glue = parse(
        r#"
        namespace = "n"
        table = "t"
        [catalog]
        kind = "glue"
        region = "eu-west-1"
        catalog_id = "123456789012"
        warehouse = "s3://b/wh"
        "#,
    )
    .unwrap();
    assert!(matches!(glue.catalog, CatalogConfig::Glue { .. }));
    let s3t = parse(
        r#"
        namespace = "n"
        table = "t"
        partition_time = "none"
        [catalog]
        kind = "s3tables"
        table_bucket_arn = "arn:aws:s3tables:us-east-1:123456789012:bucket/tables"
        endpoint = "http://127.0.0.1:5000"
        "#,
    )
    .unwrap();
    assert_eq!(s3t.partition_time, None);
    assert!(matches!(s3t.catalog, CatalogConfig::S3Tables { .. }));
}

#[test]
fn each_mistake_names_its_key() {
    let with = |extra: &str, catalog: &str| {
        format!("namespace = \"n\"\ntable = \"t\"\n{extra}\n[catalog]\n{catalog}\n")
    };
    let sql = "kind = \"sql\"\nuri = \"sqlite://c.db\"\nwarehouse = \"s3://b/w\"";
    let cases = [
        (with("", "kind = \"hive\""), "destinations[0].iceberg.catalog.kind"),
        (with("", "kind = \"sql\"\nwarehouse = \"s3://b/w\""), "destinations[0].iceberg.catalog.uri"),
        (with("", "kind = \"sql\"\nuri = \"postgres://u:p@h/db\"\nwarehouse = \"s3://b/w\""), "destinations[0].iceberg.catalog.uri"),
        (with("", "kind = \"sql\"\nuri = \"sqlite://c.db\""), "destinations[0].iceberg.catalog.warehouse"),
        (with("", &format!("{sql}\ntoken = \"x\"")), "destinations[0].iceberg.catalog.token"),
        (with("", "kind = \"rest\"\nuri = \"catalog:8181\""), "destinations[0].iceberg.catalog.uri"),
        (with("", "kind = \"rest\"\nuri = \"http://c\"\ntoken = \"a\"\ncredential = \"b:c\""), "destinations[0].iceberg.catalog.credential"),
        (with("", "kind = \"rest\"\nuri = \"http://c\"\ncredential = \"nocolon\""), "destinations[0].iceberg.catalog.credential"),
        (with("", "kind = \"glue\"\nwarehouse = \"s3://b/w\"\ncatalog_id = \"12\""), "destinations[0].iceberg.catalog.catalog_id"),
        (with("", "kind = \"glue\"\nregion = \"eu-west-1\""), "destinations[0].iceberg.catalog.warehouse"),
        (with("", "kind = \"s3tables\"\ntable_bucket_arn = \"arn:aws:s3:::b\""), "destinations[0].iceberg.catalog.table_bucket_arn"),
        (with("", "kind = \"s3tables\"\ntable_bucket_arn = \"arn:aws:s3tables:r:1:bucket/b\"\nwarehouse = \"w\""), "destinations[0].iceberg.catalog.warehouse"),
        (with("commit_interval_secs = 0", sql), "destinations[0].iceberg.commit_interval_secs"),
        (with("partition_time = \"week\"", sql), "destinations[0].iceberg.partition_time"),
        (with("partition_fields = [\"a..b\"]", sql), "destinations[0].iceberg.partition_fields[0]"),
        (with("partition_fields = [\"a\", \"a\"]", sql), "destinations[0].iceberg.partition_fields[1]"),
        (format!("namespace = \"n-1\"\ntable = \"t\"\n[catalog]\n{sql}\n"), "destinations[0].iceberg.namespace"),
        (format!("namespace = \"n\"\ntable = \"9t\"\n[catalog]\n{sql}\n"), "destinations[0].iceberg.table"),
    ];
    for (text, want) in cases {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, want, "{text}\n→ {e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

#[test]
fn an_unknown_key_is_refused_by_serde() {
    let e = parse(&format!("{SQL}\nbogus = 1")).unwrap_err();
    assert!(e.message.contains("bogus"), "{e}");
}

/// A `[[destinations]]` with an Iceberg table: Parquet columns, Kafka metadata, and `extra`
/// lines in `[destinations.iceberg]`.
fn table_destination(extra: &str) -> Result<crate::config::DestinationConfig, ConfigError> {
    let toml = format!(
        "[kafka]\nbrokers = \"x:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\n\
         [[destinations]]\nname = \"d\"\nbucket = \"b\"\nkafka_metadata_field = \"_kafka\"\n\
         [destinations.routing]\ntime_field = \"ts\"\n\
         [destinations.batch]\nformat = \"parquet\"\n\
         [[destinations.parquet.columns]]\nname = \"event\"\npath = \"type\"\ntype = \"string\"\n\
         [[destinations.parquet.columns]]\nname = \"ts\"\npath = \"ts\"\ntype = \"timestamp\"\n\
         [[destinations.parquet.columns]]\nname = \"ratio\"\npath = \"ratio\"\ntype = \"double\"\n\
         [destinations.iceberg]\nnamespace = \"analytics\"\ntable = \"events\"\n{extra}\n\
         [destinations.iceberg.catalog]\nkind = \"sql\"\nuri = \"sqlite:///tmp/c.db?mode=rwc\"\n\
         warehouse = \"s3://b/warehouse\"\n"
    );
    crate::config::parse(&toml, &|_| None).map(|mut c| c.destinations.remove(0))
}

#[test]
fn a_table_destination_is_accepted_with_its_partitions_checked_against_the_columns() {
    let d = table_destination("partition_time = \"hour\"\npartition_fields = [\"type\"]").unwrap();
    let t = d.iceberg.as_deref().unwrap();
    assert_eq!(
        t.partition,
        vec![
            PartitionSource::Time {
                column: "ts".into(),
                transform: TimeTransform::Hour
            },
            PartitionSource::Identity {
                column: "event".into()
            },
        ]
    );
    // Files are grouped by the partition's hour (the router adds the identity values).
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap();
    assert_eq!(
        d.routing.folder.slot(&t0).unwrap().to_string(),
        "2026-01-02 03:00:00"
    );
    let d = table_destination("partition_time = \"none\"").unwrap();
    assert!(d.routing.folder.slot(&t0).is_none());
    assert!(d.iceberg.unwrap().partition.is_empty());

    for (extra, key) in [
        (
            "partition_fields = [\"nope\"]",
            "destinations[0].iceberg.partition_fields[0]",
        ),
        (
            "partition_fields = [\"ratio\"]",
            "destinations[0].iceberg.partition_fields[0]",
        ),
        (
            "partition_time = \"week\"",
            "destinations[0].iceberg.partition_time",
        ),
    ] {
        let e = table_destination(extra).unwrap_err();
        assert_eq!(e.key, key, "{extra}: {e}");
        assert!(!e.to_string().contains('\n'));
    }
}

#[test]
fn a_table_destination_refuses_ndjson() {
    let e = crate::config::parse(
        "[kafka]\nbrokers = \"x:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\n\
         [[destinations]]\nname = \"d\"\nbucket = \"b\"\nkafka_metadata_field = \"_kafka\"\n\
         [destinations.iceberg]\nnamespace = \"a\"\ntable = \"e\"\n\
         [destinations.iceberg.catalog]\nkind = \"sql\"\nuri = \"sqlite::memory:\"\n\
         warehouse = \"s3://b/w\"\n",
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(e.key, "destinations[0].batch.format", "{e}");
}
