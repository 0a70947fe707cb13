//! `columns = "from_schema"`: a destination's columns grow with the schemas of the records it
//! takes in. Before a chunk is taken in, each schema id not judged yet is judged against the
//! columns in force: it fits; it brings new columns (the destination's open files close and
//! later ones hold them; a table gains them first, see [`DestinationKind::evolve`], while the
//! chunk waits as for a schema fetch); or it conflicts (a field's type differs from its
//! column's, or the columns would pass the bound), and its records are quarantined as
//! `schema_mismatch` with the field named.
//!
//! Invariants: columns are only added, never changed or dropped; a record is routed only with
//! columns that hold every field of its schema; an open file never takes a row of other
//! columns than its own (the files close when the columns change).
//!
//! [`DestinationKind::evolve`]: crate::destination::DestinationKind::evolve

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::Pipeline;
use crate::config::parquet::MAX_COLUMNS;
use crate::config::{Column, ParquetConfig};
use crate::decode::value::schema_id;
use crate::destination::{Evolved, FileKind};
use crate::model::{FlushReason, Record};
use crate::router::Router;

/// Most schemas judged per destination before the verdicts are forgotten (and judged again
/// as their records come): each holds at most a line of detail.
const MAX_VERDICTS: usize = 1024;

/// A schema id and which of its column sets a payload has ([`crate::decode::Parsed::columns_of`]).
type Shape = (u32, u32);

/// A `from_schema` destination's judged schemas.
#[derive(Debug, Default)]
pub(super) struct Judged {
    /// Per schema id and column set (a Protobuf file's message): why its records do not fit
    /// (`None`: they fit).
    verdicts: HashMap<Shape, Option<String>>,
    /// Columns in force whose kind no schema has named yet (read from a table at start-up: a
    /// `string` column there may hold a schema's nested value as `json`).
    unsettled: Vec<String>,
}

impl Judged {
    /// The judgement of a destination starting with `parquet`'s columns.
    pub(super) fn new(parquet: &ParquetConfig) -> Self {
        Judged {
            verdicts: HashMap::new(),
            unsettled: parquet.columns.iter().map(|c| c.name.clone()).collect(),
        }
    }
}

/// The columns in force after taking in schema `id`'s columns, or why its records cannot be
/// written with them. `fixed` are the names of the raw and metadata columns; `unsettled` the
/// columns whose kind the first schema naming them decides (among the same stored type).
pub(super) fn fit(
    columns: &[Column],
    fixed: &[&str],
    unsettled: &[String],
    id: u32,
    schema: &[Column],
) -> Result<Vec<Column>, String> {
    let mut out = columns.to_vec();
    for s in schema {
        if let Some(f) = fixed.iter().find(|f| f.eq_ignore_ascii_case(&s.name)) {
            return Err(format!(
                "field `{}` of schema {id} has the name of the column `{f}`, which the connector writes itself; rename the field or the kafka_metadata_field / raw_column",
                s.name
            ));
        }
        let count = out.len();
        match out.iter_mut().find(|c| c.name.eq_ignore_ascii_case(&s.name)) {
            Some(c) if c.name != s.name => {
                return Err(format!(
                    "field `{}` of schema {id} differs from the column `{}` only in case (engines do not tell them apart)",
                    s.name, c.name
                ))
            }
            Some(c) if c.kind == s.kind => {}
            Some(c) if unsettled.contains(&c.name) && c.kind.arrow() == s.kind.arrow() => {
                c.kind = s.kind;
            }
            Some(c) => {
                return Err(format!(
                    "field `{}` is {} in schema {id}, but its column is {}; an incompatible change (write such records to another destination or table)",
                    s.name,
                    s.kind.name(),
                    c.kind.name()
                ))
            }
            None if count >= MAX_COLUMNS => {
                return Err(format!(
                    "field `{}` of schema {id} would be column {} of at most {MAX_COLUMNS}; keep such records whole with raw_column in another destination",
                    s.name,
                    count + 1
                ))
            }
            None => out.push(s.clone()),
        }
    }
    Ok(out)
}

/// New columns a chunk brings to destination `dest`: the configuration with them, the schema
/// ids that brought them, and the destination kind's work making them known (a table's
/// schema update) when it has any.
pub(super) struct Growth {
    pub(super) dest: usize,
    pub(super) parquet: ParquetConfig,
    pub(super) ids: Vec<Shape>,
    pub(super) work: Option<BoxFuture<'static, Result<Evolved, String>>>,
}

impl Pipeline {
    /// Judges the schemas of `records` for every `from_schema` destination (all at hand).
    /// Columns that need no outside work are put in force here; the first growth that needs
    /// a table's update is returned, for the chunk to wait for.
    pub(super) fn grow_columns(&mut self, records: &[Record]) -> Option<Growth> {
        for d in 0..self.dests.len() {
            let dest = &self.dests[d];
            let Some(p) = dest.cfg.parquet.clone().filter(|p| p.from_schema) else {
                continue;
            };
            let Some(judged) = dest.judged.as_ref() else {
                continue;
            };
            let Some(dec) = self.decoding.as_ref() else {
                continue;
            };
            let fixed: Vec<&str> = p.fixed_names().collect();
            let mut columns = p.columns.clone();
            let mut unsettled = judged.unsettled.clone();
            let mut grew = Vec::new();
            let mut verdicts: Vec<(Shape, Option<String>)> = Vec::new();
            for rec in records {
                let fed = self
                    .topic_dests
                    .get(&rec.tp.topic)
                    .is_some_and(|ds| ds.contains(&d));
                // An unknown schema or another kind is quarantined by the decoding itself.
                let Some((shape, of)) = fed
                    .then(|| shape_of(dec, dest.cfg.value_format, rec))
                    .flatten()
                else {
                    continue;
                };
                let known = |v: &[(Shape, Option<String>)]| v.iter().any(|(s, _)| *s == shape);
                if judged.verdicts.contains_key(&shape) || known(&verdicts) || grew.contains(&shape)
                {
                    continue;
                }
                match fit(&columns, &fixed, &unsettled, shape.0, of) {
                    Ok(next) => {
                        unsettled.retain(|n| !of.iter().any(|c| &c.name == n));
                        if next == columns {
                            verdicts.push((shape, None));
                        } else {
                            columns = next;
                            grew.push(shape);
                        }
                    }
                    Err(why) => verdicts.push((shape, Some(why))),
                }
            }
            if verdicts.is_empty() && grew.is_empty() {
                continue;
            }
            let judged = self.dests[d]
                .judged
                .as_mut()
                .expect("invariant: checked above");
            if judged.verdicts.len() + verdicts.len() > MAX_VERDICTS {
                judged.verdicts.clear();
            }
            judged.verdicts.extend(verdicts);
            judged.unsettled = unsettled;
            if grew.is_empty() {
                continue;
            }
            // Also when only kinds settled: a table's writer schema is made again (field ids).
            let parquet = p.with_columns(columns);
            match self.dests[d].kind.evolve(&parquet) {
                None => self.put_in_force(d, parquet, &grew),
                Some(work) => {
                    return Some(Growth {
                        dest: d,
                        parquet,
                        ids: grew,
                        work: Some(work),
                    })
                }
            }
        }
        None
    }

    /// What the destination's kind answered to a growth: its columns are put in force, or the
    /// schemas that brought them are refused.
    pub(super) fn evolved(&mut self, growth: Growth, answer: Evolved) {
        let Growth {
            dest, parquet, ids, ..
        } = growth;
        match answer {
            Evolved::Schema(schema) => {
                let parquet = ParquetConfig { schema, ..parquet };
                self.put_in_force(dest, parquet, &ids);
            }
            Evolved::Refused(why) => {
                let schemas: Vec<u32> = ids.iter().map(|s| s.0).collect();
                tracing::warn!(destination = %self.dests[dest].cfg.name, schemas = ?schemas, why = %why, "records of these schemas go to quarantine (schema_mismatch)");
                if let Some(j) = self.dests[dest].judged.as_mut() {
                    j.verdicts
                        .extend(ids.into_iter().map(|id| (id, Some(why.clone()))));
                }
            }
        }
    }

    /// Writes destination `d`'s later records with `parquet`'s columns: its open data files
    /// close (their rows have the old columns), the router reads the new ones.
    fn put_in_force(&mut self, d: usize, parquet: ParquetConfig, ids: &[Shape]) {
        let added: Vec<&str> = parquet
            .columns
            .iter()
            .skip(
                self.dests[d]
                    .cfg
                    .parquet
                    .as_ref()
                    .map_or(0, |p| p.columns.len()),
            )
            .map(|c| c.name.as_str())
            .collect();
        let schemas: Vec<u32> = ids.iter().map(|s| s.0).collect();
        tracing::info!(destination = %self.dests[d].cfg.name, schemas = ?schemas, added = ?added, "columns from a new schema");
        let dest = &mut self.dests[d];
        dest.cfg.parquet = Some(Arc::new(parquet));
        dest.router = Router::new(&dest.cfg);
        if let Some(j) = dest.judged.as_mut() {
            j.verdicts.extend(ids.iter().map(|&id| (id, None)));
        }
        let open: Vec<_> = self
            .files
            .keys()
            .filter(|k| k.dest == d && matches!(k.kind, FileKind::Data(_)))
            .cloned()
            .collect();
        for key in open {
            self.seal(&key, FlushReason::Schema);
        }
    }

    /// Why destination `d` cannot write `rec` with its columns (its schema conflicts), if so.
    pub(super) fn conflict(&self, d: usize, rec: &Record) -> Option<&str> {
        let dest = &self.dests[d];
        let judged = dest.judged.as_ref()?;
        let (shape, _) = shape_of(self.decoding.as_ref()?, dest.cfg.value_format, rec)?;
        judged.verdicts.get(&shape)?.as_deref()
    }
}

/// The shape of `rec`'s value under `format` and the columns it gives, when its schema is at
/// hand and of the kind `format` reads (other records are quarantined by the decoding).
fn shape_of<'a>(
    dec: &'a super::decoding::Decoding,
    format: crate::config::registry::ValueFormat,
    rec: &Record,
) -> Option<(Shape, &'a [Column])> {
    let id = schema_id(format, rec.value.as_deref())?;
    let (_, payload) = crate::decode::split_frame(rec.value.as_deref()?).ok()?;
    let schema = dec
        .schema_at_hand(id)
        .filter(|s| crate::decode::value::takes(format, s.kind()))?;
    let (set, columns) = schema.columns_of(payload)?;
    Some(((id, set), columns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ColumnType;

    fn col(name: &str, kind: ColumnType) -> Column {
        Column {
            name: name.into(),
            path: vec![name.into()],
            kind,
            required: false,
            decoded: true,
        }
    }

    #[test]
    fn a_schema_adds_its_new_fields_and_keeps_the_old_ones() {
        let v1 = [
            col("id", ColumnType::Int64),
            col("name", ColumnType::String),
        ];
        let v2 = [
            col("id", ColumnType::Int64),
            col("email", ColumnType::String),
        ];
        let now = fit(&[], &["_kafka_topic"], &[], 1, &v1).unwrap();
        assert_eq!(now, v1);
        let next = fit(&now, &["_kafka_topic"], &[], 2, &v2).unwrap();
        let names: Vec<&str> = next.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "name", "email"]);
        assert_eq!(fit(&next, &[], &[], 1, &v1).unwrap(), next, "v1 fits");
    }

    #[test]
    fn conflicts_name_the_field() {
        let now = [col("id", ColumnType::Int64)];
        let e = fit(&now, &[], &[], 7, &[col("id", ColumnType::String)]).unwrap_err();
        assert!(
            e.starts_with("field `id` is string in schema 7, but its column is int64"),
            "{e}"
        );
        let e = fit(&now, &[], &[], 7, &[col("ID", ColumnType::Int64)]).unwrap_err();
        assert!(e.contains("only in case"), "{e}");
        let e = fit(
            &[],
            &["_kafka_offset"],
            &[],
            7,
            &[col("_kafka_offset", ColumnType::Int64)],
        )
        .unwrap_err();
        assert!(
            e.contains("`_kafka_offset`, which the connector writes"),
            "{e}"
        );
        let many: Vec<Column> = (0..MAX_COLUMNS)
            .map(|i| col(&format!("c{i}"), ColumnType::Int64))
            .collect();
        let e = fit(&many, &[], &[], 7, &[col("more", ColumnType::Int64)]).unwrap_err();
        assert!(e.contains("`more`") && e.contains("at most 48"), "{e}");
    }

    #[test]
    fn an_unsettled_string_column_takes_the_first_schemas_kind() {
        let now = [col("addr", ColumnType::String)];
        let unsettled = ["addr".to_string()];
        let next = fit(&now, &[], &unsettled, 3, &[col("addr", ColumnType::Json)]).unwrap();
        assert_eq!(next[0].kind, ColumnType::Json);
        assert!(fit(&now, &[], &[], 3, &[col("addr", ColumnType::Json)]).is_err());
        assert!(
            fit(&now, &[], &unsettled, 3, &[col("addr", ColumnType::Int64)]).is_err(),
            "another stored type is a conflict"
        );
    }
}
