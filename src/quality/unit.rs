//! Running a unit test (`manifest::UnitTest`): each relation the model reads answers with the test's rows (typed by
//! the relation's planned columns; a column a row leaves out is null), the model's SQL runs on them in the session,
//! and its rows, on the columns the expectation names, must be the expected rows in any order. A failure lists the
//! rows expected but missing and the rows returned but not expected.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};

use crate::manifest::{PlannedColumn, UnitRows, UnitTest};
use crate::warehouse::results::TestStatus;

/// Runs `unit` in `ctx`: pass, or fail with the differing rows (their count is the failures).
pub(super) async fn run(ctx: &SessionContext, unit: &UnitTest) -> Result<(TestStatus, u64, Option<String>), String> {
    let mut inputs: Vec<(String, Arc<dyn TableProvider>)> = Vec::new();
    for input in &unit.inputs {
        let batch =
            rows_batch(ctx, &input.rows, &input.columns).await.map_err(|e| format!("`{}`: {e}", input.relation))?;
        let provider = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(|e| e.to_string())?;
        inputs.push((input.relation.clone(), Arc::new(provider)));
    }
    let session = crate::warehouse::with_overrides(ctx, &inputs).map_err(|e| e.to_string())?;
    let frame =
        crate::sql::duckdb::sql(&session, &unit.sql).await.map_err(|e| crate::sql::clean_message(&e.to_string()))?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(|e| crate::sql::clean_message(&e.to_string()))?;
    let actual = match batches.first() {
        Some(first) => {
            datafusion::arrow::compute::concat_batches(&first.schema(), &batches).map_err(|e| e.to_string())?
        }
        None => RecordBatch::new_empty(schema),
    };
    // The expectation is typed by the model's own columns.
    let columns: Vec<PlannedColumn> = PlannedColumn::from_schema(&actual.schema());
    let expected = rows_batch(&session, &unit.expect, &columns).await.map_err(|e| format!("expected rows: {e}"))?;
    let names: Vec<String> = match &unit.expect {
        UnitRows::Sql(_) => expected.schema().fields().iter().map(|f| f.name().clone()).collect(),
        UnitRows::Dict(rows) => named_columns(rows),
        UnitRows::Csv(text) => csv_header(text),
    };
    if let Some(missing) = names.iter().find(|n| actual.schema().index_of(n).is_err()) {
        return Err(format!(
            "the expected rows name column `{missing}`, which the model does not return (it returns {})",
            actual.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    // Shown in the model's column order.
    let mut names = names;
    names.sort_by_key(|n| actual.schema().index_of(n).unwrap_or(usize::MAX));
    let mut want = texts(&expected, &names)?;
    let mut got = texts(&actual, &names)?;
    want.sort();
    got.sort();
    if want == got {
        return Ok((TestStatus::Pass, 0, None));
    }
    let (missing, unexpected) = difference(&want, &got);
    let mut message =
        format!("the model's rows differ from the expected rows ({} expected, {} returned):", want.len(), got.len());
    for row in &missing {
        message.push_str(&format!("\n  - {} (expected, not returned)", show(&names, row)));
    }
    for row in &unexpected {
        message.push_str(&format!("\n  + {} (returned, not expected)", show(&names, row)));
    }
    Ok((TestStatus::Fail, (missing.len() + unexpected.len()) as u64, Some(message)))
}

/// The rows each side has that the other lacks (as multisets of sorted rows).
fn difference(want: &[Vec<String>], got: &[Vec<String>]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < got.len() {
        match (want.get(i), got.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                missing.push(a.clone());
                i += 1;
            }
            (Some(_), Some(b)) => {
                unexpected.push(b.clone());
                j += 1;
            }
            (Some(a), None) => {
                missing.push(a.clone());
                i += 1;
            }
            (None, Some(b)) => {
                unexpected.push(b.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (missing, unexpected)
}

fn show(names: &[String], row: &[String]) -> String {
    names.iter().zip(row).map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(", ")
}

/// The columns `names` of each row, as text.
fn texts(batch: &RecordBatch, names: &[String]) -> Result<Vec<Vec<String>>, String> {
    let options = FormatOptions::default().with_null("null");
    let formatters: Vec<(ArrayFormatter<'_>, &ArrayRef)> = names
        .iter()
        .map(|name| {
            let column = batch.column_by_name(name).ok_or_else(|| format!("no column `{name}`"))?;
            Ok((ArrayFormatter::try_new(column.as_ref(), &options).map_err(|e| e.to_string())?, column))
        })
        .collect::<Result<_, String>>()?;
    Ok((0..batch.num_rows()).map(|row| formatters.iter().map(|(f, _)| f.value(row).to_string()).collect()).collect())
}

/// The columns a list of `dict` rows names, in the order they first appear.
fn named_columns(rows: &[Map<String, Value>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for row in rows {
        for key in row.keys() {
            if !names.contains(key) {
                names.push(key.clone());
            }
        }
    }
    names
}

fn csv_header(text: &str) -> Vec<String> {
    parse_csv(text).map(|(header, _)| header).unwrap_or_default()
}

/// A CSV row's fields (`None`: empty, null).
type CsvRow = Vec<Option<String>>;

/// CSV text as its header and rows of fields (quoted fields may hold commas and doubled quotes; an empty field is
/// null).
fn parse_csv(text: &str) -> Result<(Vec<String>, Vec<CsvRow>), String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = split_csv_line(lines.next().unwrap_or_default())
        .into_iter()
        .map(|f| f.unwrap_or_default().trim().to_string())
        .collect();
    let rows = lines
        .map(|line| {
            let fields = split_csv_line(line);
            match fields.len() == header.len() {
                true => Ok(fields),
                false => Err(format!("the CSV row `{line}` has {} fields, its header {}", fields.len(), header.len())),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((header, rows))
}

fn split_csv_line(line: &str) -> Vec<Option<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut was_quoted) = (false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.trim().is_empty() => {
                quoted = true;
                was_quoted = true;
                field.clear();
            }
            (',', false) => {
                fields.push(if field.trim().is_empty() && !was_quoted {
                    None
                } else {
                    Some(std::mem::take(&mut field))
                });
                field.clear();
                was_quoted = false;
            }
            (c, _) => field.push(c),
        }
    }
    fields.push(if field.trim().is_empty() && !was_quoted { None } else { Some(field) });
    fields
}

/// A value of a `dict` row as the text it is cast from (`None`: null).
fn value_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// The type of a column no planned column types, from its values: integers, numbers, booleans, else text.
fn inferred_type(values: &[Option<&Value>]) -> DataType {
    let present: Vec<&Value> = values.iter().flatten().copied().filter(|v| !v.is_null()).collect();
    if !present.is_empty() && present.iter().all(|v| v.is_i64() || v.is_u64()) {
        DataType::Int64
    } else if !present.is_empty() && present.iter().all(|v| v.is_number()) {
        DataType::Float64
    } else if !present.is_empty() && present.iter().all(|v| v.is_boolean()) {
        DataType::Boolean
    } else {
        DataType::Utf8
    }
}

/// A batch of `rows`, with the planned `columns` (every column, those a row leaves out null) or, when none are
/// known, the columns the rows name.
async fn rows_batch(ctx: &SessionContext, rows: &UnitRows, columns: &[PlannedColumn]) -> Result<RecordBatch, String> {
    let (names, values): (Vec<String>, Vec<Vec<Option<String>>>) = match rows {
        UnitRows::Sql(sql) => {
            let frame =
                crate::sql::duckdb::sql(ctx, sql).await.map_err(|e| crate::sql::clean_message(&e.to_string()))?;
            let schema = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame.collect().await.map_err(|e| e.to_string())?;
            return match batches.first() {
                Some(first) => {
                    datafusion::arrow::compute::concat_batches(&first.schema(), &batches).map_err(|e| e.to_string())
                }
                None => Ok(RecordBatch::new_empty(schema)),
            };
        }
        UnitRows::Csv(text) => {
            let (header, fields) = parse_csv(text)?;
            let columns = (0..header.len()).map(|i| fields.iter().map(|row| row[i].clone()).collect()).collect();
            (header, columns)
        }
        UnitRows::Dict(dict) => {
            let names = named_columns(dict);
            let columns = names.iter().map(|n| dict.iter().map(|row| value_text(row.get(n))).collect()).collect();
            (names, columns)
        }
    };
    let count = values.first().map_or(
        match rows {
            UnitRows::Dict(dict) => dict.len(),
            _ => 0,
        },
        Vec::len,
    );
    let schema: SchemaRef = match columns.is_empty() {
        false => Arc::new(PlannedColumn::to_schema(columns)),
        true => {
            let fields: Vec<Field> = names
                .iter()
                .map(|name| {
                    let data_type = match rows {
                        UnitRows::Dict(dict) => inferred_type(&dict.iter().map(|r| r.get(name)).collect::<Vec<_>>()),
                        _ => DataType::Utf8,
                    };
                    Field::new(name, data_type, true)
                })
                .collect();
            Arc::new(Schema::new(fields))
        }
    };
    if let Some(unknown) = names.iter().find(|n| schema.index_of(n).is_err()) {
        return Err(format!(
            "the rows name column `{unknown}`, which it does not have (it has {})",
            schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let arrays = schema
        .fields()
        .iter()
        .map(|field| {
            let texts: StringArray = match names.iter().position(|n| n == field.name()) {
                Some(i) => values[i].iter().map(|v| v.as_deref()).collect(),
                None => (0..count).map(|_| None::<&str>).collect(),
            };
            let options = datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() };
            datafusion::arrow::compute::cast_with_options(&texts, field.data_type(), &options)
                .map_err(|e| format!("column `{}`: {e}", field.name()))
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    let nullable: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(nullable)), arrays).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_may_be_quoted_and_empty_is_null() {
        let (header, rows) = parse_csv("id,name,note\n1,\"a, b\",\n2,\"say \"\"hi\"\"\",x\n").unwrap();
        assert_eq!(header, ["id", "name", "note"]);
        assert_eq!(rows[0], [Some("1".into()), Some("a, b".into()), None]);
        assert_eq!(rows[1], [Some("2".into()), Some("say \"hi\"".into()), Some("x".into())]);
    }

    #[test]
    fn differences_are_multisets() {
        let row = |v: &str| vec![v.to_string()];
        let (missing, unexpected) = difference(&[row("a"), row("a"), row("b")], &[row("a"), row("c")]);
        assert_eq!(missing, [row("a"), row("b")]);
        assert_eq!(unexpected, [row("c")]);
    }
}
