//! A `columns = "from_schema"` table gains the columns a new schema brings: the missing ones
//! are added as optional columns in one schema update, before any data file holding them is
//! written, so each file carries the field ids the table gave them.
//!
//! Invariants: a column is only ever added, never changed or dropped; an update that lost to a
//! concurrent one (another worker adding the same columns) is judged again on the refreshed
//! table, so workers converge on one schema; a column the table already has with another type
//! is refused (the records that need it are quarantined), never altered.

use std::sync::Arc;

use iceberg::spec::{PrimitiveType, Type};
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};

use super::schema::{iceberg_type, writer_schema};
use crate::config::ParquetConfig;
use crate::destination::Evolved;

/// Attempts at an update that keeps losing to concurrent ones before the failure is returned
/// (and retried with backoff by the caller).
const ATTEMPTS: usize = 4;

/// Adds the columns of `parquet` missing from the table `ident` as optional columns (in one
/// schema update), then returns the writer schema of `parquet` over the table's schema.
/// `Err` is a catalog failure (retry later); a type conflict is [`Evolved::Refused`].
pub async fn add_columns(
    catalog: Arc<dyn Catalog>,
    ident: TableIdent,
    parquet: ParquetConfig,
) -> Result<Evolved, String> {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let table = catalog
            .load_table(&ident)
            .await
            .map_err(|e| format!("loading the table: {e}"))?;
        let schema = table.metadata().current_schema().clone();
        // A Glue table holds zoneless timestamps (see `schema::zoneless`): new ones follow the
        // table's own timestamp metadata column.
        let zoneless = schema.as_struct().fields().iter().any(|f| {
            *f.field_type == Type::Primitive(PrimitiveType::Timestamp)
                && parquet.fixed_names().any(|n| n == f.name)
        });
        let missing: Vec<AddColumn> = parquet
            .schema
            .fields()
            .iter()
            .filter(|f| schema.field_by_name(f.name()).is_none())
            .filter_map(|f| {
                let t = match iceberg_type(f.data_type())? {
                    PrimitiveType::Timestamptz if zoneless => PrimitiveType::Timestamp,
                    t => t,
                };
                Some(AddColumn::optional(f.name(), Type::Primitive(t)))
            })
            .collect();
        if missing.is_empty() {
            return Ok(match writer_schema(&parquet, &schema) {
                Ok(ws) => Evolved::Schema(ws),
                Err(e) => Evolved::Refused(e.message),
            });
        }
        let tx = Transaction::new(&table);
        let action = missing
            .into_iter()
            .fold(tx.update_schema(), |a, c| a.add_column(c));
        let tx = action
            .apply(tx)
            .map_err(|e| format!("adding columns: {e}"))?;
        match tx.commit(&*catalog).await {
            Ok(t) => {
                tracing::info!(
                    table = %ident,
                    schema_id = t.metadata().current_schema_id(),
                    "the table gained the columns of a new schema"
                );
                let schema = t.metadata().current_schema();
                return Ok(match writer_schema(&parquet, schema) {
                    Ok(ws) => Evolved::Schema(ws),
                    Err(e) => Evolved::Refused(e.message),
                });
            }
            // Another writer changed the schema meanwhile: judged again on the refreshed table.
            Err(e) => last = format!("adding columns: {e}"),
        }
    }
    Err(last)
}
