//! The schema registry: every persisted model's and source's columns, versioned, in the warehouse
//! (`_pipe/schemas/<relation>.json`). Before a build runs, each selected model's planned columns are compared with
//! its latest registered schema under the model's `schema_compatibility` (`backward` by default, `forward`, `full`,
//! `none`); a breaking change stops the build unless the model's `version` config changed or `--allow-breaking` is
//! given. A source whose columns drifted is reported even when the change is compatible.

use crate::project::settings::SchemaCompatibility;
use crate::warehouse::{RunError, Warehouse};

use datafusion::arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

use crate::manifest::PlannedColumn;

/// One registered version of a relation's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub version: u32,
    /// The model's `version` config when it was registered.
    pub model_version: Option<String>,
    pub run_id: String,
    pub registered_at: String,
    pub columns: Vec<PlannedColumn>,
}

/// A change between two schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added { name: String, data_type: String, nullable: bool },
    Removed { name: String, data_type: String },
    Widened { name: String, from: String, to: String },
    Retyped { name: String, from: String, to: String },
    NullableNow { name: String },
    NotNullNow { name: String },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added { name, data_type, nullable } => {
                write!(f, "+ `{name}` {data_type}{}", if *nullable { "" } else { " not null" })
            }
            Change::Removed { name, data_type } => write!(f, "- `{name}` {data_type}"),
            Change::Widened { name, from, to } => write!(f, "~ `{name}` {from} -> {to} (widened)"),
            Change::Retyped { name, from, to } => write!(f, "~ `{name}` {from} -> {to} (narrowed or changed)"),
            Change::NullableNow { name } => write!(f, "~ `{name}` may now be null"),
            Change::NotNullNow { name } => write!(f, "~ `{name}` is now not null"),
        }
    }
}

/// Whether a value of `from` always fits in `to`.
fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let rank = |t: &DataType| match t {
        Int8 => Some((0, 1)),
        Int16 => Some((0, 2)),
        Int32 => Some((0, 3)),
        Int64 => Some((0, 4)),
        Float32 => Some((1, 1)),
        Float64 => Some((1, 2)),
        _ => None,
    };
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    match (rank(from), rank(to)) {
        (Some((a, x)), Some((b, y))) => (a == b && x <= y) || (a == 0 && b == 1 && x <= 3 && y == 2),
        _ => text(from) && text(to),
    }
}

/// The changes from `old` to `new`, by column name.
pub fn changes(old: &[PlannedColumn], new: &[PlannedColumn]) -> Vec<Change> {
    let mut out = Vec::new();
    for column in new {
        match old.iter().find(|c| c.name == column.name) {
            None => out.push(Change::Added {
                name: column.name.clone(),
                data_type: column.data_type.clone(),
                nullable: column.nullable,
            }),
            Some(before) => {
                if before.data_type != column.data_type {
                    let parse = |t: &str| t.parse::<DataType>().ok();
                    let change = match (parse(&before.data_type), parse(&column.data_type)) {
                        (Some(a), Some(b)) if widens(&a, &b) => Change::Widened {
                            name: column.name.clone(),
                            from: before.data_type.clone(),
                            to: column.data_type.clone(),
                        },
                        _ => Change::Retyped {
                            name: column.name.clone(),
                            from: before.data_type.clone(),
                            to: column.data_type.clone(),
                        },
                    };
                    out.push(change);
                }
                if before.nullable != column.nullable {
                    out.push(if column.nullable {
                        Change::NullableNow { name: column.name.clone() }
                    } else {
                        Change::NotNullNow { name: column.name.clone() }
                    });
                }
            }
        }
    }
    for column in old {
        if !new.iter().any(|c| c.name == column.name) {
            out.push(Change::Removed { name: column.name.clone(), data_type: column.data_type.clone() });
        }
    }
    out
}

/// The changes `mode` does not allow. `backward`: readers of the table keep working: no column removed or
/// retyped, no not-null column added, no column that may now be null. `forward`: rows written under the old schema
/// still fit the new one: no not-null column added, no type changed or widened, no column becoming not-null.
/// `full`: both. `none`: anything goes.
pub fn breaking(mode: SchemaCompatibility, changes: &[Change]) -> Vec<Change> {
    let backward = |c: &Change| {
        matches!(
            c,
            Change::Removed { .. }
                | Change::Retyped { .. }
                | Change::Added { nullable: false, .. }
                | Change::NullableNow { .. }
        )
    };
    let forward = |c: &Change| {
        matches!(
            c,
            Change::Added { nullable: false, .. }
                | Change::Retyped { .. }
                | Change::NotNullNow { .. }
                | Change::Widened { .. }
        )
    };
    changes
        .iter()
        .filter(|c| match mode {
            SchemaCompatibility::None => false,
            SchemaCompatibility::Forward => forward(c),
            SchemaCompatibility::Full => backward(c) || forward(c),
            SchemaCompatibility::Backward => backward(c),
        })
        .cloned()
        .collect()
}

/// The registry's folder under the warehouse.
const FOLDER: [&str; 2] = ["_pipe", "schemas"];

/// Every registered version of `relation`, oldest first.
pub async fn versions(warehouse: &Warehouse, relation: &str) -> Vec<SchemaVersion> {
    let name = format!("{relation}.json");
    let bytes = warehouse.read_document(&[FOLDER[0], FOLDER[1], &name]).await;
    bytes.and_then(|b| serde_json::from_slice::<Vec<SchemaVersion>>(&b).ok()).unwrap_or_default()
}

/// The registry's verdict on a model about to be built: the breaking changes from its latest registered schema
/// under its `schema_compatibility`, unless its `version` config changed since.
pub async fn check_model(warehouse: &Warehouse, node: &crate::manifest::Node) -> Option<(String, Vec<Change>)> {
    let columns = node.planned_columns.as_ref()?;
    let latest = versions(warehouse, &node.relation).await.pop()?;
    let model_version = model_version(node);
    if latest.model_version != model_version {
        return None;
    }
    let mode = node.settings.schema_compatibility;
    let breaking = breaking(mode, &changes(&latest.columns, columns));
    (!breaking.is_empty()).then_some((mode.as_str().to_string(), breaking))
}

/// A model's `version` config, as text.
pub fn model_version(node: &crate::manifest::Node) -> Option<String> {
    node.settings.version.clone()
}

/// One column of one registered version, a row of `pipe.schemas`.
struct ColumnRow {
    relation: String,
    version: i64,
    model_version: Option<String>,
    registered_at: String,
    column: PlannedColumn,
}

/// Every registered version of every relation, one row per column, for `select * from pipe.schemas`.
pub async fn as_table(warehouse: &Warehouse) -> Option<std::sync::Arc<dyn datafusion::catalog::TableProvider>> {
    use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
    let mut rows: Vec<ColumnRow> = Vec::new();
    for name in warehouse.list_documents(&FOLDER).await {
        let Some(relation) = name.strip_suffix(".json") else { continue };
        for version in versions(warehouse, relation).await {
            for column in &version.columns {
                rows.push(ColumnRow {
                    relation: relation.to_string(),
                    version: version.version.into(),
                    model_version: version.model_version.clone(),
                    registered_at: version.registered_at.clone(),
                    column: column.clone(),
                });
            }
        }
    }
    rows.sort_by(|a, b| (&a.relation, a.version).cmp(&(&b.relation, b.version)));
    let text = |f: &dyn Fn(&ColumnRow) -> Option<String>| -> ArrayRef {
        std::sync::Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let versions = std::sync::Arc::new(Int64Array::from(rows.iter().map(|r| r.version).collect::<Vec<_>>()));
    let nullable = std::sync::Arc::new(BooleanArray::from(rows.iter().map(|r| r.column.nullable).collect::<Vec<_>>()));
    let batch = RecordBatch::try_from_iter_with_nullable(vec![
        ("relation", text(&|r| Some(r.relation.clone())), true),
        ("version", versions as ArrayRef, true),
        ("model_version", text(&|r| r.model_version.clone()), true),
        ("registered_at", text(&|r| Some(r.registered_at.clone())), true),
        ("column_name", text(&|r| Some(r.column.name.clone())), true),
        ("data_type", text(&|r| Some(r.column.data_type.clone())), true),
        ("nullable", nullable as ArrayRef, true),
    ])
    .ok()?;
    let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]]).ok()?;
    Some(std::sync::Arc::new(table))
}

/// Registers `columns` as the next version of `relation` when they differ from the latest; returns the new
/// version number, if any. Readers see the old or the new registry (`Warehouse::write_document`).
pub async fn register(
    warehouse: &Warehouse,
    relation: &str,
    columns: &[PlannedColumn],
    model_version: Option<String>,
    run_id: &str,
) -> Result<Option<u32>, RunError> {
    let mut all = versions(warehouse, relation).await;
    if all.last().is_some_and(|last| last.columns == columns && last.model_version == model_version) {
        return Ok(None);
    }
    let version = all.last().map_or(1, |last| last.version + 1);
    all.push(SchemaVersion {
        version,
        model_version,
        run_id: run_id.to_string(),
        registered_at: chrono::Utc::now().to_rfc3339(),
        columns: columns.to_vec(),
    });
    let text = serde_json::to_string_pretty(&all).map_err(|e| RunError::Internal(e.to_string()))?;
    let name = format!("{relation}.json");
    warehouse.write_document(&[FOLDER[0], FOLDER[1], &name], text.into_bytes()).await?;
    Ok(Some(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, data_type: &str, nullable: bool) -> PlannedColumn {
        PlannedColumn { name: name.into(), data_type: data_type.into(), nullable }
    }

    /// The compatibility rules, as a table: (change, backward, forward).
    #[test]
    fn compatibility_rules() {
        let base = vec![col("id", "Int32", false), col("name", "Utf8View", true)];
        let cases: Vec<(&str, Vec<PlannedColumn>, bool, bool)> = vec![
            (
                "add a nullable column",
                vec![base[0].clone(), base[1].clone(), col("email", "Utf8View", true)],
                true,
                true,
            ),
            (
                "add a not-null column",
                vec![base[0].clone(), base[1].clone(), col("tier", "Int64", false)],
                false,
                false,
            ),
            ("remove a column", vec![base[0].clone()], false, true),
            ("rename a column", vec![base[0].clone(), col("full_name", "Utf8View", true)], false, true),
            ("widen int to bigint", vec![col("id", "Int64", false), base[1].clone()], true, false),
            ("narrow to int16", vec![col("id", "Int16", false), base[1].clone()], false, false),
            ("text to int", vec![base[0].clone(), col("name", "Int64", true)], false, false),
            ("allow nulls", vec![col("id", "Int32", true), base[1].clone()], false, true),
        ];
        for (case, new, backward_ok, forward_ok) in cases {
            let changes = changes(&base, &new);
            assert_eq!(
                breaking(SchemaCompatibility::Backward, &changes).is_empty(),
                backward_ok,
                "backward: {case}: {changes:?}"
            );
            assert_eq!(
                breaking(SchemaCompatibility::Forward, &changes).is_empty(),
                forward_ok,
                "forward: {case}: {changes:?}"
            );
            assert_eq!(
                breaking(SchemaCompatibility::Full, &changes).is_empty(),
                backward_ok && forward_ok,
                "full: {case}"
            );
            assert!(breaking(SchemaCompatibility::None, &changes).is_empty());
        }
    }
}
