//! The catalog of a validated [`CatalogConfig`]: sql (sqlite), rest, glue or s3tables, each
//! built with the table's storage (the destination's S3 sink, [`super::storage`]), so every
//! kind writes table files the same way.
//!
//! Invariant: secrets (SQL URI, REST token or credential) leave their [`crate::config::Secret`]
//! only into the catalog builder's properties, never into logs or errors; Glue and S3 Tables
//! authenticate with the AWS default credential chain.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::io::StorageFactory;
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_glue::GlueCatalogBuilder;
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_s3tables::S3TablesCatalogBuilder;
use iceberg_catalog_sql::SqlCatalogBuilder;

use super::TableError;
use crate::config::iceberg::{CatalogConfig, RestAuth};

/// Its kind's name.
pub fn kind(cfg: &CatalogConfig) -> &'static str {
    match cfg {
        CatalogConfig::Sql { .. } => "sql",
        CatalogConfig::Rest { .. } => "rest",
        CatalogConfig::Glue { .. } => "glue",
        CatalogConfig::S3Tables { .. } => "s3tables",
    }
}

/// The builder properties of `cfg`; `region` is the destination's (the default of Glue and S3
/// Tables).
pub fn properties(cfg: &CatalogConfig, region: &str) -> HashMap<String, String> {
    let mut p = HashMap::new();
    let mut set = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            p.insert(k.to_string(), v.to_string());
        }
    };
    match cfg {
        CatalogConfig::Sql { uri, warehouse } => {
            set("uri", Some(uri.expose()));
            set("warehouse", Some(warehouse));
        }
        CatalogConfig::Rest {
            uri,
            warehouse,
            auth,
            oauth2_server_uri,
            scope,
        } => {
            set("uri", Some(uri));
            set("warehouse", warehouse.as_deref());
            match auth {
                RestAuth::None => {}
                RestAuth::Token(t) => set("token", Some(t.expose())),
                RestAuth::Credential(c) => set("credential", Some(c.expose())),
            }
            set("oauth2-server-uri", oauth2_server_uri.as_deref());
            set("scope", scope.as_deref());
        }
        CatalogConfig::Glue {
            region: r,
            catalog_id,
            warehouse,
            endpoint,
        } => {
            set("region_name", Some(r.as_deref().unwrap_or(region)));
            set("catalog_id", catalog_id.as_deref());
            set("warehouse", Some(warehouse));
            set("uri", endpoint.as_deref());
        }
        CatalogConfig::S3Tables {
            table_bucket_arn,
            region: r,
            endpoint,
        } => {
            // The ARN's region unless overridden: arn:aws:s3tables:<region>:…
            let arn_region = table_bucket_arn.split(':').nth(3);
            set(
                "region_name",
                Some(r.as_deref().or(arn_region).unwrap_or(region)),
            );
            set("table_bucket_arn", Some(table_bucket_arn));
            set("endpoint_url", endpoint.as_deref());
        }
    }
    p
}

/// Connects the catalog `cfg` (named `name` in the catalog, e.g. the destination's name).
pub async fn connect(
    name: &str,
    cfg: &CatalogConfig,
    storage: Arc<dyn StorageFactory>,
    region: &str,
) -> Result<Arc<dyn Catalog>, TableError> {
    let props = properties(cfg, region);
    let err = |source| TableError::Iceberg {
        table: format!("(catalog {name}, kind {})", kind(cfg)),
        source: Box::new(source),
    };
    Ok(match cfg {
        CatalogConfig::Sql { .. } => Arc::new(
            SqlCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(name, props)
                .await
                .map_err(err)?,
        ),
        CatalogConfig::Rest { .. } => Arc::new(
            RestCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(name, props)
                .await
                .map_err(err)?,
        ),
        CatalogConfig::Glue { .. } => Arc::new(
            GlueCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(name, props)
                .await
                .map_err(err)?,
        ),
        CatalogConfig::S3Tables { .. } => Arc::new(
            S3TablesCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(name, props)
                .await
                .map_err(err)?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::iceberg::{validate, RawIceberg};

    fn cfg(catalog: &str) -> CatalogConfig {
        let raw: RawIceberg = toml::from_str(&format!(
            "namespace = \"n\"\ntable = \"t\"\n[catalog]\n{catalog}"
        ))
        .unwrap();
        validate("d", &raw).unwrap().catalog
    }

    #[test]
    fn each_kind_maps_to_its_builder_properties() {
        let p = properties(
            &cfg("kind = \"rest\"\nuri = \"http://c\"\ntoken = \"tk\"\nscope = \"s\""),
            "eu-west-1",
        );
        assert_eq!(p["uri"], "http://c");
        assert_eq!(p["token"], "tk");
        assert_eq!(p["scope"], "s");
        let p = properties(
            &cfg("kind = \"glue\"\nwarehouse = \"s3://b/w\"\ncatalog_id = \"123456789012\""),
            "eu-west-1",
        );
        assert_eq!(p["region_name"], "eu-west-1");
        assert_eq!(p["catalog_id"], "123456789012");
        let p = properties(
            &cfg("kind = \"s3tables\"\ntable_bucket_arn = \"arn:aws:s3tables:us-east-2:123456789012:bucket/t\"\nendpoint = \"http://127.0.0.1:9\""),
            "eu-west-1",
        );
        assert_eq!(p["region_name"], "us-east-2", "the ARN's region");
        assert_eq!(p["endpoint_url"], "http://127.0.0.1:9");
    }

    #[tokio::test]
    async fn a_sql_catalog_connects() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(&format!(
            "kind = \"sql\"\nuri = \"sqlite://{}/c.db?mode=rwc\"\nwarehouse = \"{}\"",
            dir.path().display(),
            dir.path().display()
        ));
        let cat = connect(
            "d",
            &c,
            Arc::new(iceberg::io::LocalFsStorageFactory),
            "us-east-1",
        )
        .await
        .unwrap();
        assert!(cat.list_namespaces(None).await.unwrap().is_empty());
    }
}
