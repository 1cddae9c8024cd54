//! A snapshot's settings (dbt's snapshot configs), parsed once from its config: the strategy and its columns,
//! `hard_deletes`, `dbt_valid_to_current` and the names of the columns a snapshot adds.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::columns_of;
use crate::project::{ConfigExt, ConfigMap};

/// A snapshot's settings (dbt's snapshot configs; `unique_key` is `ModelSettings::unique_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSettings {
    pub strategy: SnapshotStrategy,
    pub hard_deletes: HardDeletes,
    /// `dbt_valid_to_current`: the SQL expression current rows hold in `dbt_valid_to` instead of null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to_current: Option<String>,
    /// The names of the columns the snapshot adds (`snapshot_meta_column_names`).
    pub columns: SnapshotColumns,
}

/// How a snapshot tells that a row changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SnapshotStrategy {
    /// A row changed when its `updated_at` is later than the snapshot's.
    Timestamp { updated_at: String },
    /// A row changed when one of the columns differs (`None`: every column, `check_cols: all`).
    Check { columns: Option<Vec<String>> },
}

/// What a snapshot does with a row whose key is gone from the query's result (`hard_deletes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HardDeletes {
    /// Keep the row current.
    Ignore,
    /// End the row's validity (`dbt_valid_to` set).
    Invalidate,
    /// End it and add a row marking the deletion (`dbt_is_deleted` is `True`).
    NewRecord,
}

/// The columns a snapshot adds, named as `snapshot_meta_column_names` says (dbt's names by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotColumns {
    pub scd_id: String,
    pub updated_at: String,
    pub valid_from: String,
    pub valid_to: String,
    pub is_deleted: String,
}

impl Default for SnapshotColumns {
    fn default() -> SnapshotColumns {
        SnapshotColumns {
            scd_id: "dbt_scd_id".into(),
            updated_at: "dbt_updated_at".into(),
            valid_from: "dbt_valid_from".into(),
            valid_to: "dbt_valid_to".into(),
            is_deleted: "dbt_is_deleted".into(),
        }
    }
}

/// A snapshot's settings, or `None` with a problem for each missing or unparsable key.
pub(super) fn snapshot(
    name: &str,
    config: &ConfigMap,
    unique_key: &[String],
    problem: &mut impl FnMut(&'static str, String, &str),
) -> Option<SnapshotSettings> {
    let mut ok = true;
    if unique_key.is_empty() {
        problem(
            "unique_key",
            format!("snapshot `{name}` needs `unique_key`: the column(s) that identify a row"),
            "add `unique_key='id'` (or a list of columns) to its config",
        );
        ok = false;
    }
    let strategy = match config.str_value("strategy") {
        Some("timestamp") => match config.str_value("updated_at") {
            Some(updated_at) => Some(SnapshotStrategy::Timestamp { updated_at: updated_at.to_string() }),
            None => {
                problem(
                    "updated_at",
                    format!("snapshot `{name}` uses the `timestamp` strategy but has no `updated_at`"),
                    "add `updated_at='updated_at'`: the column that says when a row last changed",
                );
                None
            }
        },
        Some("check") => match config.get("check_cols") {
            Some(Value::String(all)) if all == "all" => Some(SnapshotStrategy::Check { columns: None }),
            Some(value) => match columns_of(Some(value), true) {
                Ok(columns) if !columns.is_empty() => Some(SnapshotStrategy::Check { columns: Some(columns) }),
                _ => {
                    problem(
                        "check_cols",
                        format!("`check_cols` of snapshot `{name}` is {value}, not `all` or a list of columns"),
                        "write `check_cols=['status', 'amount']` or `check_cols='all'`",
                    );
                    None
                }
            },
            None => {
                problem(
                    "check_cols",
                    format!("snapshot `{name}` uses the `check` strategy but has no `check_cols`"),
                    "add `check_cols=['status', 'amount']` (the columns compared) or `check_cols='all'`",
                );
                None
            }
        },
        Some(other) => {
            problem(
                "strategy",
                format!("unknown snapshot strategy `{other}` on snapshot `{name}`"),
                "use `timestamp` (with `updated_at`) or `check` (with `check_cols`)",
            );
            None
        }
        None => {
            problem(
                "strategy",
                format!("snapshot `{name}` has no `strategy`"),
                "add `strategy='timestamp'` with `updated_at`, or `strategy='check'` with `check_cols`",
            );
            None
        }
    };
    let invalidate = config.get("invalidate_hard_deletes").and_then(Value::as_bool).unwrap_or(false);
    let hard_deletes = match config.str_value("hard_deletes") {
        Some("ignore") => HardDeletes::Ignore,
        Some("invalidate") => HardDeletes::Invalidate,
        Some("new_record") => HardDeletes::NewRecord,
        Some(other) => {
            problem(
                "hard_deletes",
                format!("unknown `hard_deletes: {other}` on snapshot `{name}`"),
                "use one of `ignore` (the default), `invalidate`, `new_record`",
            );
            ok = false;
            HardDeletes::Ignore
        }
        None if invalidate => HardDeletes::Invalidate,
        None => HardDeletes::Ignore,
    };
    let mut columns = SnapshotColumns::default();
    if let Some(names) = config.get("snapshot_meta_column_names") {
        let Some(names) = names.as_object() else {
            problem(
                "snapshot_meta_column_names",
                format!("`snapshot_meta_column_names` of snapshot `{name}` is not a mapping"),
                "write it like `{dbt_valid_from: valid_from, dbt_valid_to: valid_to}`",
            );
            return None;
        };
        for (key, value) in names {
            let slot = match key.as_str() {
                "dbt_scd_id" => &mut columns.scd_id,
                "dbt_updated_at" => &mut columns.updated_at,
                "dbt_valid_from" => &mut columns.valid_from,
                "dbt_valid_to" => &mut columns.valid_to,
                "dbt_is_deleted" => &mut columns.is_deleted,
                other => {
                    problem(
                        "snapshot_meta_column_names",
                        format!(
                            "`snapshot_meta_column_names` of snapshot `{name}` names `{other}`, not a snapshot column"
                        ),
                        "rename `dbt_scd_id`, `dbt_updated_at`, `dbt_valid_from`, `dbt_valid_to` or `dbt_is_deleted`",
                    );
                    ok = false;
                    continue;
                }
            };
            match value.as_str() {
                Some(text) => *slot = text.to_string(),
                None => ok = false,
            }
        }
    }
    let valid_to_current = config.str_value("dbt_valid_to_current").map(str::to_string);
    let strategy = strategy?;
    ok.then_some(SnapshotSettings { strategy, hard_deletes, valid_to_current, columns })
}
