//! A record's values for the declared Parquet columns: each value found by the router's scan
//! is checked against its column's type, so a record that does not fit goes to quarantine
//! (`schema_mismatch`) before it reaches a file.
//!
//! Invariant: a row has one [`Cell`] per declared column, in order, and each cell fits its
//! column's Arrow type (so the file writer cannot fail on it).

use std::borrow::Cow;
use std::ops::Range;

use crate::config::{Column, ColumnType, TimeFormat};
use crate::model::Cell;
use crate::scan::Scalar;

/// Why a value does not fit its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The column.
    pub column: String,
    /// Its type.
    pub kind: ColumnType,
    /// What was found there.
    pub found: &'static str,
}

impl Mismatch {
    /// One line for the quarantine envelope's `detail`, e.g. ``column `n` (int64) does not
    /// take a string``.
    pub fn detail(&self) -> String {
        match self.found {
            "nothing" => format!("column `{}` is required and missing", self.column),
            "null" => format!("column `{}` is required and null", self.column),
            found => format!(
                "column `{}` ({}) does not take {found}",
                self.column,
                self.kind.name()
            ),
        }
    }
}

/// What kind of JSON a value's text is (for mismatch messages and bool/null checks).
fn kind_of(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a bool",
        Some(b'n') => "null",
        Some(_) => "a number",
        None => "nothing",
    }
}

/// The cell of `column` for the value the scan found (`value`, and its JSON text at `span` of
/// `text`), or why it does not fit.
pub fn cell<'a>(
    column: &Column,
    text: &'a str,
    value: Option<&Scalar<'a>>,
    span: Option<&Range<usize>>,
) -> Result<Cell<'a>, Mismatch> {
    let raw = span.map_or("", |s| &text[s.clone()]);
    let mismatch = |found| Mismatch {
        column: column.name.clone(),
        kind: column.kind,
        found,
    };
    let kind = kind_of(raw);
    if value.is_none() || kind == "null" {
        return if column.required {
            Err(mismatch(if value.is_none() { "nothing" } else { "null" }))
        } else {
            Ok(Cell::Null)
        };
    }
    let value = value.expect("invariant: checked above");
    let cell = match (column.kind, value) {
        (ColumnType::String, Scalar::Str(s)) => Cell::Str(s.clone()),
        (ColumnType::String, Scalar::Int(_) | Scalar::Float(_)) => Cell::Str(Cow::Borrowed(raw)),
        (ColumnType::String, Scalar::Other) if kind == "a bool" => Cell::Str(Cow::Borrowed(raw)),
        (ColumnType::Int64, Scalar::Int(i)) => Cell::Int(*i),
        (ColumnType::Double, Scalar::Int(i)) => Cell::Float(*i as f64),
        (ColumnType::Double, Scalar::Float(f)) => Cell::Float(*f),
        (ColumnType::Bool, Scalar::Other) if kind == "a bool" => Cell::Bool(raw == "true"),
        (ColumnType::Timestamp, v @ (Scalar::Str(_) | Scalar::Int(_) | Scalar::Float(_))) => {
            match crate::router::parse_time(v, TimeFormat::Auto) {
                Some(t) => Cell::Micros(t.timestamp_micros()),
                None => return Err(mismatch("a value that is not a time")),
            }
        }
        (ColumnType::Json, _) => Cell::Str(Cow::Borrowed(raw)),
        // A decoded payload's spellings: Protobuf's 64-bit integers, Avro's and Protobuf's
        // non-finite floats.
        (ColumnType::Int64, Scalar::Str(s)) if column.decoded => match s.parse::<i64>() {
            Ok(i) => Cell::Int(i),
            Err(_) => return Err(mismatch("a string that is not an integer")),
        },
        (ColumnType::Double, Scalar::Str(s)) if column.decoded => match s.as_ref() {
            "NaN" => Cell::Float(f64::NAN),
            "Infinity" => Cell::Float(f64::INFINITY),
            "-Infinity" => Cell::Float(f64::NEG_INFINITY),
            _ => return Err(mismatch("a string that is not a number")),
        },
        (ColumnType::Int64, Scalar::Float(_)) => return Err(mismatch("a non-integer number")),
        _ => return Err(mismatch(kind)),
    };
    Ok(cell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::scan_fields_with_spans;

    fn column(kind: ColumnType, required: bool) -> Column {
        Column {
            name: "c".into(),
            path: vec!["v".into()],
            kind,
            required,
            decoded: false,
        }
    }

    /// The cell for `{"v": <json>}` (`None` json: no `v` at all).
    fn of(kind: ColumnType, required: bool, json: Option<&str>) -> Result<Cell<'static>, String> {
        of_detail(kind, required, json).map_err(|m| m.found.to_string())
    }

    fn of_detail(
        kind: ColumnType,
        required: bool,
        json: Option<&str>,
    ) -> Result<Cell<'static>, Mismatch> {
        let doc = match json {
            Some(j) => format!("{{\"v\":{j}}}"),
            None => "{}".to_string(),
        };
        let doc: &'static str = Box::leak(doc.into_boxed_str());
        let paths = vec![vec!["v".to_string()]];
        let mut out = [None];
        let mut spans = [None];
        scan_fields_with_spans(doc, &paths, &mut out, &mut spans).unwrap();
        cell(
            &column(kind, required),
            doc,
            out[0].as_ref(),
            spans[0].as_ref(),
        )
    }

    #[test]
    fn values_that_fit_become_cells() {
        use ColumnType::*;
        assert_eq!(
            of(String, false, Some(r#""a\nb""#)),
            Ok(Cell::Str("a\nb".into()))
        );
        assert_eq!(
            of(String, false, Some("12.50")),
            Ok(Cell::Str("12.50".into()))
        );
        assert_eq!(
            of(String, false, Some("true")),
            Ok(Cell::Str("true".into()))
        );
        assert_eq!(of(Int64, false, Some("-7")), Ok(Cell::Int(-7)));
        assert_eq!(of(Double, false, Some("3")), Ok(Cell::Float(3.0)));
        assert_eq!(of(Double, false, Some("2.5e3")), Ok(Cell::Float(2500.0)));
        assert_eq!(of(Bool, false, Some("false")), Ok(Cell::Bool(false)));
        assert_eq!(
            of(Timestamp, false, Some(r#""2024-03-05T06:07:08.5Z""#)),
            Ok(Cell::Micros(1_709_618_828_500_000))
        );
        assert_eq!(
            of(Timestamp, false, Some("1709618828500")),
            Ok(Cell::Micros(1_709_618_828_500_000))
        );
        assert_eq!(
            of(Json, false, Some(r#"{"a": [1, 2]}"#)),
            Ok(Cell::Str(r#"{"a": [1, 2]}"#.into()))
        );
        assert_eq!(of(Int64, false, None), Ok(Cell::Null));
        assert_eq!(of(Bool, false, Some("null")), Ok(Cell::Null));
    }

    #[test]
    fn decoded_columns_take_the_decoders_spellings() {
        let decoded = |kind, json: &str| {
            let doc: &'static str = Box::leak(format!("{{\"v\":{json}}}").into_boxed_str());
            let paths = vec![vec!["v".to_string()]];
            let (mut out, mut spans) = ([None], [None]);
            scan_fields_with_spans(doc, &paths, &mut out, &mut spans).unwrap();
            let c = Column {
                decoded: true,
                ..column(kind, false)
            };
            cell(&c, doc, out[0].as_ref(), spans[0].as_ref()).map_err(|m| m.found)
        };
        assert_eq!(
            decoded(ColumnType::Int64, r#""-9007199254740993""#),
            Ok(Cell::Int(-9_007_199_254_740_993))
        );
        assert_eq!(
            decoded(ColumnType::Int64, r#""x""#),
            Err("a string that is not an integer")
        );
        assert!(
            matches!(decoded(ColumnType::Double, r#""NaN""#), Ok(Cell::Float(f)) if f.is_nan())
        );
        assert_eq!(
            decoded(ColumnType::Double, r#""-Infinity""#),
            Ok(Cell::Float(f64::NEG_INFINITY))
        );
        assert_eq!(
            decoded(ColumnType::Double, r#""1""#),
            Err("a string that is not a number")
        );
        assert_eq!(
            of(ColumnType::Double, false, Some(r#""NaN""#)),
            Err("a string".into()),
            "declared columns keep JSON's types"
        );
    }

    #[test]
    fn values_that_do_not_fit_are_mismatches() {
        use ColumnType::*;
        assert_eq!(
            of(Int64, false, Some("1.5")),
            Err("a non-integer number".into())
        );
        assert_eq!(of(Int64, false, Some(r#""12""#)), Err("a string".into()));
        assert_eq!(
            of(Int64, false, Some("18446744073709551615")),
            Err("a non-integer number".into())
        );
        assert_eq!(of(Double, false, Some("[1]")), Err("an array".into()));
        assert_eq!(of(Bool, false, Some("1")), Err("a number".into()));
        assert_eq!(of(String, false, Some("{}")), Err("an object".into()));
        assert_eq!(
            of(Timestamp, false, Some(r#""yesterday""#)),
            Err("a value that is not a time".into())
        );
        assert_eq!(of(String, true, None), Err("nothing".into()));
        assert_eq!(of(Json, true, Some("null")), Err("null".into()));
        let detail = |j| of_detail(Int64, true, j).unwrap_err().detail();
        assert_eq!(
            detail(Some("true")),
            "column `c` (int64) does not take a bool"
        );
        assert_eq!(detail(None), "column `c` is required and missing");
        assert_eq!(detail(Some("null")), "column `c` is required and null");
    }
}
