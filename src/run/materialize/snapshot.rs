//! `snapshot` (dbt's snapshots: a slowly changing dimension, type 2). The snapshot's query is the current state of
//! some rows; its table keeps every version of each row (by `unique_key`), each valid from `dbt_valid_from` to
//! `dbt_valid_to` (null, or `dbt_valid_to_current`, while current), with `dbt_scd_id` (a row version's id) and
//! `dbt_updated_at`.
//!
//! The first run writes the query's rows as the current versions. Each later run compares the query's rows with the
//! current versions, by the strategy: `timestamp` (a row changed when its `updated_at` is later) or `check` (when
//! one of `check_cols` differs). A changed row's current version is closed and its new version inserted; a new key
//! is inserted; a key gone from the query is, by `hard_deletes`, kept current (`ignore`), closed (`invalidate`), or
//! closed with a row marking the deletion (`new_record`, `dbt_is_deleted`). All of a run's changes are one Delta
//! MERGE (one commit), carrying the run's identity as an application transaction: a run killed after its commit and
//! run again finds nothing left to change, and one killed before changes everything once. Columns the query gains
//! are added to the table first; columns it loses stay, null in new versions.

use std::sync::Arc;
use std::time::Instant;

use crate::run::staged::Staged;
use datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;

use super::incremental::nothing_written;
use super::{plan, Materialize, ModelContext, Outcome};
use crate::project::settings::{HardDeletes, SnapshotSettings, SnapshotStrategy};
use crate::project::Materialization;
use crate::run::RunError;

pub struct SnapshotMaterialization;

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A timestamp expression as the snapshot's time columns hold it (microseconds, no zone): from a timestamp of any
/// unit, a date or text, never through nanoseconds (which end in 2262: `dbt_valid_to_current` is often 9999-12-31).
fn timestamp(expr: &str) -> String {
    format!("arrow_cast({expr}, 'Timestamp(Microsecond, None)')")
}

/// The SQL that stages one run's changes, over `source` (the query's rows) and `snapshot` (the table).
struct Staging<'a> {
    settings: &'a SnapshotSettings,
    keys: &'a [String],
    /// The query's columns, in order.
    columns: Vec<String>,
    /// The table's columns (before this run).
    table_columns: Vec<String>,
    /// This run's time, as a SQL timestamp.
    now: String,
}

impl Staging<'_> {
    fn meta(&self) -> &crate::project::settings::SnapshotColumns {
        &self.settings.columns
    }

    /// `dbt_valid_to` of a current version.
    fn current_valid_to(&self) -> String {
        timestamp(self.settings.valid_to_current.as_deref().unwrap_or("null"))
    }

    /// The table's current versions, as `c`.
    fn current(&self) -> String {
        let to = format!("c.{}", quote(&self.meta().valid_to));
        let current = match &self.settings.valid_to_current {
            Some(_) => format!("{to} = {}", self.current_valid_to()),
            None => format!("{to} is null"),
        };
        format!("(select * from snapshot c where {current}) c")
    }

    fn join_on(&self) -> String {
        self.keys.iter().map(|k| format!("s.{0} = c.{0}", quote(k))).collect::<Vec<_>>().join(" and ")
    }

    /// When the row in the query was last changed: its `updated_at`, or (`check`) this run's time.
    fn updated(&self, row: &str) -> String {
        match &self.settings.strategy {
            SnapshotStrategy::Timestamp { updated_at } => timestamp(&format!("{row}.{}", quote(updated_at))),
            SnapshotStrategy::Check { .. } => timestamp(&self.now),
        }
    }

    /// A version's id: its key with the time it starts (dbt's `dbt_scd_id`).
    fn scd_id(&self, row: &str, at: &str) -> String {
        let parts: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("coalesce(cast({row}.{} as varchar), '')", quote(k)))
            .chain([format!("coalesce(cast({at} as varchar), '')")])
            .collect();
        format!("md5(concat_ws('|', {}))", parts.join(", "))
    }

    /// Whether the query's row `s` changed from the current version `c`.
    fn changed(&self) -> String {
        let mut changed = match &self.settings.strategy {
            SnapshotStrategy::Timestamp { updated_at } => {
                format!("{} > c.{}", self.updated("s"), quote(&self.meta().updated_at))
                    + &format!(" and s.{} is not null", quote(updated_at))
            }
            SnapshotStrategy::Check { columns } => {
                let checked: Vec<&String> = match columns {
                    Some(columns) => columns.iter().collect(),
                    None => self.columns.iter().filter(|c| !self.keys.contains(c)).collect(),
                };
                let differs: Vec<String> = checked
                    .iter()
                    .filter(|c| self.table_columns.contains(c))
                    .map(|c| format!("s.{0} is distinct from c.{0}", quote(c)))
                    .collect();
                if differs.is_empty() {
                    "false".to_string()
                } else {
                    format!("({})", differs.join(" or "))
                }
            }
        };
        if self.settings.hard_deletes == HardDeletes::NewRecord {
            // A key deleted and back: its deletion marker is closed, and the row inserted again.
            changed = format!("({changed} or c.{} = 'True')", quote(&self.meta().is_deleted));
        }
        changed
    }

    /// The meta columns of a new version starting at `from` (also its `dbt_updated_at`).
    fn new_meta(&self, row: &str, from: &str, deleted: bool) -> Vec<String> {
        let m = self.meta();
        let mut meta = vec![
            format!("{} as {}", self.scd_id(row, from), quote(&m.scd_id)),
            format!("{from} as {}", quote(&m.updated_at)),
            format!("{from} as {}", quote(&m.valid_from)),
            format!("{} as {}", self.current_valid_to(), quote(&m.valid_to)),
        ];
        if self.settings.hard_deletes == HardDeletes::NewRecord {
            meta.push(format!("'{}' as {}", if deleted { "True" } else { "False" }, quote(&m.is_deleted)));
        }
        meta
    }

    /// The meta columns of a current version `c` being closed at `to`.
    fn closed_meta(&self, to: &str) -> Vec<String> {
        let m = self.meta();
        let mut meta = vec![
            format!("c.{}", quote(&m.scd_id)),
            format!("c.{}", quote(&m.updated_at)),
            format!("c.{}", quote(&m.valid_from)),
            format!("{to} as {}", quote(&m.valid_to)),
        ];
        if self.settings.hard_deletes == HardDeletes::NewRecord {
            meta.push(format!("c.{}", quote(&m.is_deleted)));
        }
        meta
    }

    /// The first run: the query's rows, each a current version.
    fn first(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| format!("s.{}", quote(c))).collect();
        let meta = self.new_meta("s", &self.updated("s"), false);
        format!("select {}, {} from source s", columns.join(", "), meta.join(", "))
    }

    /// A later run's changes: rows to insert (`__pipe_merge_key` null) and current versions to close (their id).
    fn changes(&self) -> String {
        let source_columns: Vec<String> = self.columns.iter().map(|c| format!("s.{}", quote(c))).collect();
        let s = source_columns.join(", ");
        let scd = quote(&self.meta().scd_id);
        let (current, on, changed) = (self.current(), self.join_on(), self.changed());
        let first_key = quote(&self.keys[0]);
        let mut parts = vec![
            // New keys and new versions of changed rows.
            format!(
                "select {s}, {}, cast(null as varchar) as __pipe_merge_key from source s left join {current} on {on} \
                 where c.{first_key} is null or {changed}",
                self.new_meta("s", &self.updated("s"), false).join(", ")
            ),
            // The versions they replace, closed when the new one starts.
            format!(
                "select {s}, {}, c.{scd} as __pipe_merge_key from source s join {current} on {on} where {changed}",
                self.closed_meta(&self.updated("s")).join(", ")
            ),
        ];
        if self.settings.hard_deletes != HardDeletes::Ignore {
            let now = timestamp(&self.now);
            let live = match self.settings.hard_deletes {
                HardDeletes::NewRecord => format!(" and c.{} <> 'True'", quote(&self.meta().is_deleted)),
                _ => String::new(),
            };
            // Keys gone from the query: their current versions closed now.
            parts.push(format!(
                "select {s}, {}, c.{scd} as __pipe_merge_key from {current} left join source s on {on} \
                 where s.{first_key} is null{live}",
                self.closed_meta(&now).join(", ")
            ));
            if self.settings.hard_deletes == HardDeletes::NewRecord {
                // And a version marking the deletion, with the deleted row's values.
                let values: Vec<String> = self
                    .columns
                    .iter()
                    .map(|col| match self.table_columns.contains(col) {
                        true => format!("c.{0} as {0}", quote(col)),
                        false => format!("s.{0} as {0}", quote(col)),
                    })
                    .collect();
                parts.push(format!(
                    "select {}, {}, cast(null as varchar) as __pipe_merge_key from {current} left join source s \
                     on {on} where s.{first_key} is null{live}",
                    values.join(", "),
                    self.new_meta("c", &now, true).join(", ")
                ));
            }
        }
        parts.join("\nunion all\n")
    }
}

#[async_trait::async_trait]
impl Materialize for SnapshotMaterialization {
    fn kind(&self) -> Materialization {
        Materialization::Snapshot
    }

    async fn run(&self, cx: &ModelContext<'_>) -> Result<Outcome, RunError> {
        let node = cx.node;
        let settings = node.settings.snapshot.as_ref().ok_or_else(|| {
            RunError::Internal(format!("snapshot `{}` has no snapshot settings; compile checks them", node.name))
        })?;
        let query = |e| RunError::query(&node.name, e);
        let started = Instant::now();
        let frame = plan(cx, &node.compiled_sql).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        check_columns(&node.name, settings, &node.settings.unique_key, &columns)?;
        // The query's rows are read once (held in memory, or staged on disk under a memory limit): every part of
        // the run's changes compares the same rows.
        let rows = super::stage(cx, frame, false).await?;
        let rows_note = rows.spill_note().map(|n| format!("the query's rows {n}"));
        let plan_time = started.elapsed();
        let started = Instant::now();

        // The scratch session shares the run's memory pool and disk manager.
        let scratch = SessionContext::new_with_config_rt(cx.session.copied_config(), cx.session.runtime_env());
        scratch.register_table("source", rows.provider().map_err(query)?).map_err(query)?;
        let now = format!("'{}'", chrono::Utc::now().naive_utc().format("%Y-%m-%d %H:%M:%S%.6f"));
        let existing = cx.warehouse.load(&node.relation).await?;
        let table_columns = match &existing {
            Some(table) => {
                cx.warehouse.provider(table).await?.schema().fields().iter().map(|f| f.name().clone()).collect()
            }
            None => Vec::new(),
        };
        let staging = Staging { settings, keys: &node.settings.unique_key, columns, table_columns, now };

        let Some(table) = existing else {
            let first = scratch.sql(&staging.first()).await.map_err(query)?;
            return super::table::publish(cx, first, plan_time, Vec::new()).await;
        };
        let table = add_new_columns(cx, table, &schema, &staging.table_columns).await?;
        scratch.register_table("snapshot", cx.warehouse.provider(&table).await?).map_err(query)?;
        let changes = scratch.sql(&staging.changes()).await.map_err(query)?;
        let changes = Staged::new(&scratch, changes, false).await.map_err(query)?;
        if changes.rows() == 0 {
            return nothing_written(cx, &table, "no changes: nothing written".into(), plan_time, started).await;
        }
        // The run's identity: what it read. Run again on the same inputs after its commit, it is found and not
        // applied twice (it would find no changes anyway: the versions it closed are no longer current).
        let inputs = crate::run::input_fingerprint(cx.manifest, cx.warehouse, cx.project_root, node).await;
        let run_id = format!("pipe.snapshot:{}", digest(&[&node.compiled_sql, &inputs]));
        if table.snapshot()?.transaction_version(table.log_store().as_ref(), run_id.clone()).await?.is_some() {
            let note = format!("changes already committed ({run_id}): nothing written");
            return nothing_written(cx, &table, note, plan_time, started).await;
        }
        let rows = changes.rows();
        let source = changes.frame(&scratch).map_err(query)?;
        let inserted = count_new_versions(source.clone()).await.map_err(query)?;
        let commit = CommitProperties::default()
            .with_metadata(cx.commit_metadata())
            .with_application_transactions(vec![deltalake::kernel::Transaction::new(run_id, 1)]);
        crate::run::abort_at(cx.failpoints, &node.name, "before-commit");
        let scd = quote(&settings.columns.scd_id);
        let valid_to = quote(&settings.columns.valid_to);
        let inserts: Vec<String> = changes
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|name| name != "__pipe_merge_key")
            .collect();
        let (table, _) = table
            .merge(source, format!("target.{scd} = source.__pipe_merge_key"))
            .with_writer_properties(super::writer_properties(node))
            .with_source_alias("source")
            .with_target_alias("target")
            .with_session_state(Arc::new(scratch.state()))
            .with_commit_properties(commit)
            .when_matched_update(|update| update.update(valid_to.clone(), format!("source.{valid_to}")))?
            .when_not_matched_insert(|insert| {
                inserts.iter().fold(insert.predicate("source.__pipe_merge_key is null"), |i, c| {
                    i.set(quote(c), format!("source.{}", quote(c)))
                })
            })?
            .await
            .map_err(|e| RunError::write(&node.name, e))?;
        let commit = cx.warehouse.last_commit(&table).await?;
        Ok(Outcome {
            rows_written: Some(inserted),
            delta_version: Some(commit.version),
            provider: Some(cx.warehouse.provider(&table).await?),
            note: Some(format!(
                "{inserted} versions inserted, {} closed{}",
                rows - inserted,
                rows_note.or(changes.spill_note()).map(|n| format!(" ({n})")).unwrap_or_default()
            )),
            plan_time,
            write_time: started.elapsed(),
            execute_time: commit.execute_time,
            tests: None,
            rows_read: None,
        })
    }
}

/// The changes that insert a version (those without a version to close, `__pipe_merge_key` null).
async fn count_new_versions(changes: datafusion::prelude::DataFrame) -> datafusion::common::Result<u64> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::prelude::{col, lit};
    let counted = changes
        .filter(col("__pipe_merge_key").is_null())?
        .aggregate(vec![], vec![count(lit(1)).alias("n")])?
        .collect()
        .await?;
    let n = counted.iter().find(|b| b.num_rows() > 0).map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0));
    Ok(n as u64)
}

/// The columns the settings name are columns of the query, and the query has none of the snapshot's own.
fn check_columns(name: &str, settings: &SnapshotSettings, keys: &[String], columns: &[String]) -> Result<(), RunError> {
    let missing = |column: &String| !columns.iter().any(|c| c == column);
    let mut named: Vec<(&str, &String)> = keys.iter().map(|k| ("unique_key", k)).collect();
    match &settings.strategy {
        SnapshotStrategy::Timestamp { updated_at } => named.push(("updated_at", updated_at)),
        SnapshotStrategy::Check { columns: Some(checked) } => named.extend(checked.iter().map(|c| ("check_cols", c))),
        SnapshotStrategy::Check { columns: None } => {}
    }
    if let Some((key, column)) = named.into_iter().find(|(_, c)| missing(c)) {
        return Err(RunError::Query {
            model: name.to_string(),
            message: format!(
                "snapshot `{name}`: `{key}` names `{column}`, which its query does not return (it returns {})",
                columns.join(", ")
            ),
        });
    }
    let m = &settings.columns;
    if let Some(taken) = [&m.scd_id, &m.updated_at, &m.valid_from, &m.valid_to].into_iter().find(|c| !missing(c)) {
        return Err(RunError::Query {
            model: name.to_string(),
            message: format!(
                "snapshot `{name}`: its query returns `{taken}`, a column the snapshot adds itself; rename it, or \
                 name the snapshot's columns with `snapshot_meta_column_names`"
            ),
        });
    }
    Ok(())
}

/// Adds the query's new columns to the table (null in the versions before), as their own commit before the merge.
async fn add_new_columns(
    cx: &ModelContext<'_>,
    table: deltalake::DeltaTable,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    table_columns: &[String],
) -> Result<deltalake::DeltaTable, RunError> {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::record_batch::RecordBatch;
    let new: Vec<_> =
        schema.fields().iter().filter(|f| !table_columns.contains(f.name())).map(|f| f.as_ref().clone()).collect();
    if new.is_empty() {
        return Ok(table);
    }
    let current = cx.warehouse.provider(&table).await?.schema();
    let fields: Vec<_> = current.fields().iter().map(|f| f.as_ref().clone()).chain(new).collect();
    let empty = RecordBatch::new_empty(Arc::new(Schema::new(fields)));
    table
        .write(vec![empty])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
        .with_commit_properties(CommitProperties::default().with_metadata(cx.commit_metadata()))
        .await
        .map_err(|e| RunError::write(&cx.node.name, e))
}

fn digest(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}
