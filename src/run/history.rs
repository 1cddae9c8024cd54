//! Versions and time travel: a table's history with the run and logic that wrote each version, a table read as of
//! a version or a time (`VERSION AS OF` / `TIMESTAMP AS OF` in `pipe query`), and the rows that differ between two
//! versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, TableFactor, TableVersion, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::DatabricksDialect;
use datafusion::sql::sqlparser::parser::Parser;
use deltalake::DeltaTable;
use futures::TryStreamExt;

use super::RunError;
use crate::warehouse::{Warehouse, META_CHECKSUM, META_MODEL, META_RUN_ID};

/// A point in a table's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    Version(i64),
    Timestamp(DateTime<Utc>),
}

impl AsOf {
    /// A version number (`3`) or a UTC time (`2026-11-26`, `2026-11-26 10:00:00`, RFC 3339).
    pub fn parse(text: &str) -> Result<AsOf, String> {
        let text = text.trim().trim_matches('\'');
        if let Ok(version) = text.parse::<i64>() {
            return Ok(AsOf::Version(version));
        }
        crate::project::parse_utc_time(text)
            .map(AsOf::Timestamp)
            .map_err(|_| format!("`{text}` is neither a version number nor a time like `2026-11-26 10:00:00`"))
    }

    fn label(&self) -> String {
        match self {
            AsOf::Version(v) => format!("v{v}"),
            AsOf::Timestamp(t) => t.format("t%Y%m%d%H%M%S").to_string(),
        }
    }
}

impl Warehouse {
    /// The table for `relation` as it was at `as_of`: that version, or the latest version committed at or before
    /// that time. A version past the last one, or a time before the table's first commit, is an error naming the
    /// versions (and their times) that exist; it is checked against the log before any version is loaded.
    pub async fn load_as_of(&self, relation: &str, as_of: &AsOf) -> Result<DeltaTable, RunError> {
        let Some(latest) = self.load(relation).await? else {
            return Err(RunError::NotATable { relation: relation.to_string() });
        };
        let last = latest.version().map_or(0, |v| v as i64);
        let version = match as_of {
            AsOf::Version(version) if (0..=last).contains(version) => *version,
            AsOf::Version(version) => {
                return Err(RunError::History {
                    relation: relation.to_string(),
                    message: format!(
                        "`{relation}` has no version {version}: its versions are 0 to {last} (see `pipe history {}`)",
                        relation.rsplit('.').next().unwrap_or(relation)
                    ),
                })
            }
            AsOf::Timestamp(time) => {
                // Commit times, newest first: the version is the newest committed at or before `time`.
                let infos: Vec<_> = latest.history(None).try_collect().await?;
                let times: Vec<(i64, Option<i64>)> =
                    infos.iter().enumerate().map(|(offset, info)| (last - offset as i64, info.timestamp)).collect();
                let wanted = time.timestamp_millis();
                match times.iter().find(|(_, at)| at.is_some_and(|at| at <= wanted)) {
                    Some((version, _)) => *version,
                    None => {
                        let show = |at: Option<i64>| {
                            at.and_then(DateTime::from_timestamp_millis)
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
                                .unwrap_or_else(|| "an unknown time".into())
                        };
                        let first = times.last().and_then(|(_, at)| *at);
                        let newest = times.first().and_then(|(_, at)| *at);
                        return Err(RunError::History {
                            relation: relation.to_string(),
                            message: format!(
                                "`{relation}` did not exist at {}: its first version (0) was committed at {}, its last ({last}) at {}",
                                time.format("%Y-%m-%d %H:%M:%S UTC"),
                                show(first),
                                show(newest)
                            ),
                        });
                    }
                }
            }
        };
        if version == last {
            return Ok(latest);
        }
        self.table_builder(relation)?.with_version(version as u64).load().await.map_err(|e| RunError::History {
            relation: relation.to_string(),
            message: format!("`{relation}` as of {}: {e}", as_of.label()),
        })
    }
}

/// One version of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub version: i64,
    pub timestamp: String,
    pub operation: String,
    /// Rows in the table at this version.
    pub rows: u64,
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    pub run_id: Option<String>,
    pub model: Option<String>,
    pub checksum: Option<String>,
}

/// The latest `limit` versions of `relation`, newest first.
pub async fn history(warehouse: &Warehouse, relation: &str, limit: usize) -> Result<Vec<VersionInfo>, RunError> {
    let Some(table) = warehouse.load(relation).await? else {
        return Err(RunError::NotATable { relation: relation.to_string() });
    };
    let latest = table.version().map_or(-1, |v| v as i64);
    let infos: Vec<_> = table.history(Some(limit)).try_collect().await?;
    let mut versions = Vec::new();
    // Row counts per version from the file statistics; the version before the oldest shown gives its removals.
    let mut rows: BTreeMap<i64, u64> = BTreeMap::new();
    for version in (latest + 1 - infos.len() as i64 - 1).max(0)..=latest {
        let at = warehouse.load_as_of(relation, &AsOf::Version(version)).await?;
        rows.insert(version, Warehouse::row_count(&at)?);
    }
    for (offset, info) in infos.iter().enumerate() {
        let version = latest - offset as i64;
        let metric = |key: &str| crate::warehouse::operation_metric(info, key);
        let text = |key: &str| info.info.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let now = rows.get(&version).copied().unwrap_or(0);
        let before = if version == 0 { 0 } else { rows.get(&(version - 1)).copied().unwrap_or(0) };
        // delta-rs names metrics in snake case, Spark in camel case.
        let either = |snake: &str, camel: &str| metric(snake).or_else(|| metric(camel));
        let (added, updated, removed) = match either("num_target_rows_inserted", "numTargetRowsInserted") {
            // A merge reports its own counts.
            Some(inserted) => (
                inserted,
                either("num_target_rows_updated", "numTargetRowsUpdated").unwrap_or(0),
                either("num_target_rows_deleted", "numTargetRowsDeleted").unwrap_or(0),
            ),
            None => {
                let added = metric("num_added_rows").unwrap_or(now.saturating_sub(before));
                (added, 0, (before + added).saturating_sub(now))
            }
        };
        versions.push(VersionInfo {
            version,
            timestamp: info
                .timestamp
                .and_then(DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                .unwrap_or_default(),
            operation: info.operation.clone().unwrap_or_default(),
            rows: now,
            added,
            updated,
            removed,
            run_id: text(META_RUN_ID),
            model: text(META_MODEL),
            checksum: text(META_CHECKSUM),
        });
    }
    Ok(versions)
}

/// The schema time-travelled tables are registered in for a query.
pub const AS_OF_SCHEMA: &str = "__pipe_as_of";

/// Rewrites `t VERSION AS OF 3` / `t TIMESTAMP AS OF '2026-11-26'` (Delta's syntax) in `sql` into reads of tables
/// registered in `ctx` at those versions, and returns the SQL to run. SQL without `AS OF` is returned unchanged.
pub async fn resolve_time_travel(sql: &str, ctx: &SessionContext, warehouse: &Warehouse) -> Result<String, RunError> {
    if !sql.to_ascii_lowercase().contains(" as of ") {
        return Ok(sql.to_string());
    }
    let mut statements = Parser::parse_sql(&DatabricksDialect {}, sql)
        .map_err(|e| RunError::Query { model: "query".into(), message: e.to_string() })?;
    let mut versions: Vec<(String, AsOf)> = Vec::new();
    let mut failure = None;
    let mut visitor = TimeTravel { versions: &mut versions, failure: &mut failure };
    let _ = statements.visit(&mut visitor);
    if let Some(message) = failure {
        return Err(RunError::Query { model: "query".into(), message });
    }
    if ctx.catalog("datafusion").and_then(|c| c.schema(AS_OF_SCHEMA)).is_none() {
        if let Some(catalog) = ctx.catalog("datafusion") {
            catalog.register_schema(AS_OF_SCHEMA, Arc::new(datafusion::catalog::MemorySchemaProvider::new()))?;
        }
    }
    for (relation, as_of) in versions {
        let table = warehouse.load_as_of(&relation, &as_of).await?;
        let name = format!("{AS_OF_SCHEMA}.{}", as_of_name(&relation, &as_of));
        if !ctx.table_exist(name.as_str())? {
            ctx.register_table(name.as_str(), warehouse.provider(&table).await?)?;
        }
    }
    Ok(statements.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(";\n"))
}

fn as_of_name(relation: &str, as_of: &AsOf) -> String {
    format!("{}__{}", relation.replace('.', "__"), as_of.label())
}

struct TimeTravel<'a> {
    versions: &'a mut Vec<(String, AsOf)>,
    failure: &'a mut Option<String>,
}

impl VisitorMut for TimeTravel<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> std::ops::ControlFlow<()> {
        let TableFactor::Table { name, version, .. } = factor else { return std::ops::ControlFlow::Continue(()) };
        let Some(spec) = version.take() else { return std::ops::ControlFlow::Continue(()) };
        let relation = name.0.iter().map(|p| p.to_string().trim_matches('`').trim_matches('"').to_string());
        let relation = relation.collect::<Vec<_>>().join(".");
        let text = match &spec {
            TableVersion::VersionAsOf(expr)
            | TableVersion::TimestampAsOf(expr)
            | TableVersion::ForSystemTimeAsOf(expr) => match expr {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => n.clone(),
                    Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                other => other.to_string(),
            },
            other => {
                *self.failure =
                    Some(format!("unsupported time travel `{other}`: use VERSION AS OF n or TIMESTAMP AS OF '...'"));
                return std::ops::ControlFlow::Break(());
            }
        };
        match AsOf::parse(&text) {
            Ok(as_of) => {
                *name = ObjectName(vec![
                    ObjectNamePart::Identifier(AS_OF_SCHEMA.into()),
                    ObjectNamePart::Identifier(as_of_name(&relation, &as_of).as_str().into()),
                ]);
                self.versions.push((relation, as_of));
                std::ops::ControlFlow::Continue(())
            }
            Err(message) => {
                *self.failure = Some(message);
                std::ops::ControlFlow::Break(())
            }
        }
    }
}

/// What changed between two versions of a table.
pub struct TableDiff {
    pub added: u64,
    pub removed: u64,
    /// Rows whose key is in both versions with other values (only with a `unique_key`).
    pub changed: u64,
    /// Up to `limit` differing rows, with a leading `_change` column: `added`, `removed`, `changed (new)`,
    /// `changed (old)`.
    pub rows: Vec<datafusion::arrow::record_batch::RecordBatch>,
}

/// Compares `relation` at `from` and at `to` as multisets of rows; with `unique_key`, a key present on both sides
/// with different values counts as changed rather than as one removal and one addition.
pub async fn diff(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    relation: &str,
    from: &AsOf,
    to: &AsOf,
    unique_key: &[String],
    limit: usize,
) -> Result<TableDiff, RunError> {
    let query = |e: datafusion::error::DataFusionError| RunError::Query {
        model: relation.to_string(),
        message: super::clean_datafusion_message(&e),
    };
    // The newer version first: a `--to` past the log is the error to report, not the version before it.
    for (name, as_of) in [("__pipe_diff_to", to), ("__pipe_diff_from", from)] {
        let table = warehouse.load_as_of(relation, as_of).await?;
        let _ = ctx.deregister_table(name);
        ctx.register_table(name, warehouse.provider(&table).await?)?;
    }
    // Row multisets: EXCEPT ALL keeps duplicates, so a row written twice and once differs by one.
    let sides =
        "create view __pipe_diff_added as select * from __pipe_diff_to except all select * from __pipe_diff_from";
    ctx.sql(sides).await.map_err(query)?;
    let sides =
        "create view __pipe_diff_removed as select * from __pipe_diff_from except all select * from __pipe_diff_to";
    ctx.sql(sides).await.map_err(query)?;
    let count = |sql: String| async move { crate::warehouse::count_rows(ctx, &sql).await.map_err(query) };
    // A row of one side whose key is on the other side changed: each side is joined with the other side's keys.
    let keys: Vec<String> = unique_key.iter().map(|k| format!("\"{k}\"")).collect();
    let side = |name: &str, other: &str| -> (String, &'static str) {
        if keys.is_empty() {
            return (format!("{name} s"), "false");
        }
        let on: Vec<String> = keys.iter().map(|k| format!("s.{k} is not distinct from o.{k}")).collect();
        let from = format!(
            "{name} s left join (select distinct {}, true as __pipe_matched from {other}) o on {}",
            keys.join(", "),
            on.join(" and ")
        );
        (from, "o.__pipe_matched is not null")
    };
    let (added_from, new_changed) = side("__pipe_diff_added", "__pipe_diff_removed");
    let (removed_from, old_changed) = side("__pipe_diff_removed", "__pipe_diff_added");
    let changed = count(format!("select count(*) from {added_from} where {new_changed}")).await?;
    let added = count(format!("select count(*) from {added_from} where not ({new_changed})")).await?;
    let removed = count(format!("select count(*) from {removed_from} where not ({old_changed})")).await?;
    let rows_sql = format!(
        "select * from (\
           select case when {new_changed} then 'changed (new)' else 'added' end as _change, s.* from {added_from} \
           union all \
           select case when {old_changed} then 'changed (old)' else 'removed' end as _change, s.* from {removed_from}\
         ) limit {limit}"
    );
    let rows = ctx.sql(&rows_sql).await.map_err(query)?.collect().await.map_err(query)?;
    for name in ["__pipe_diff_added", "__pipe_diff_removed", "__pipe_diff_from", "__pipe_diff_to"] {
        let _ = ctx.deregister_table(name);
    }
    Ok(TableDiff { added, removed, changed, rows })
}
