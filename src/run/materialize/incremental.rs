//! `incremental`: the first build (or `--full-refresh`) writes the whole result like `table`; later builds run the
//! model's `is_incremental()` variant (the batch) and apply it with the model's strategy, in one Delta commit:
//! - `append`: add the batch's rows;
//! - `merge` (default with `unique_key`): update rows whose key matches, insert the others (Delta MERGE), with
//!   `merge_update_columns` / `merge_exclude_columns`, and `incremental_predicates` (more conditions on `target`
//!   and `source`, as in dbt, so a merge into a partitioned table touches only the partitions they select);
//! - `delete+insert`: replace every row whose key is in the batch by the batch's rows (one Delta MERGE that deletes
//!   the rows a key of the batch matches and inserts the batch: a join, however many keys the batch has);
//! - `insert_overwrite`: replace the `partition_by` partitions present in the batch (`replaceWhere`).
//!
//! A batch holding two rows with one key is refused before anything is written, naming the key.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::util::display::array_value_to_string;
use datafusion::logical_expr::Expr;
use datafusion::prelude::DataFrame;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;

use super::table::publish;
use super::{plan, Materialize, ModelContext, Outcome};
use crate::project::settings::{IncrementalStrategy, OnSchemaChange};
use crate::project::Materialization;
use crate::run::RunError;

pub struct IncrementalMaterialization;

/// A column of the batch by its exact name (never parsed or case-folded).
fn column(name: &str) -> Expr {
    datafusion::prelude::col(datafusion::common::Column::from_name(name))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[async_trait::async_trait]
impl Materialize for IncrementalMaterialization {
    fn kind(&self) -> Materialization {
        Materialization::Incremental
    }

    async fn run(&self, cx: &ModelContext<'_>) -> Result<Outcome, RunError> {
        if let Some(source) = cx.file_source {
            return super::ingest::ingest(cx, source).await;
        }
        let node = cx.node;
        let settings = &node.settings;
        let keys = settings.unique_key.clone();
        let partitions = settings.partition_by.clone();
        // The compile checked the strategy and its keys; a model without one is appended to, as in dbt.
        let strategy = settings.incremental_strategy.unwrap_or(IncrementalStrategy::Append);
        if strategy == IncrementalStrategy::Microbatch {
            return super::microbatch::run(cx).await;
        }

        let existing = cx.warehouse.load(&node.relation).await?;
        let started = Instant::now();
        let Some(table) = existing.filter(|_| !cx.full_refresh) else {
            let frame = plan(cx, &node.compiled_sql).await?;
            super::check_contract(node, frame.schema().as_arrow())?;
            return publish(cx, frame, started.elapsed(), Vec::new()).await;
        };
        let sql = node.compiled_sql_incremental.as_deref().unwrap_or(&node.compiled_sql);
        let (frame, watermarks) = fold_scalar_subqueries(cx, plan(cx, sql).await?).await?;
        let plan_time = started.elapsed();
        let started = Instant::now();

        // The batch is computed once, held in memory or staged on disk (`run::staged`), then checked, audited and
        // applied from there.
        super::check_contract(node, frame.schema().as_arrow())?;
        let digest = !node.depends_on.nodes.is_empty();
        let staged = super::stage(cx, frame, digest).await?;
        if staged.rows() == 0 {
            // Nothing new: no commit, so a rerun without new input adds no version.
            return nothing_written(cx, &table, "empty batch: nothing written".into(), plan_time, started).await;
        }
        let query = |e| RunError::query(&node.name, e);
        if !keys.is_empty() && strategy != IncrementalStrategy::Append {
            check_unique_keys(&node.name, staged.frame(cx.session).map_err(query)?, &keys).await?;
        }
        let target_schema = cx.warehouse.provider(&table).await?.schema();
        let (columns, change) = apply_schema_change(node, staged.schema(), &target_schema)?;
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let batch = staged.frame(cx.session).and_then(|f| f.select_columns(&columns)).map_err(query)?;
        // The batch's identity: what it was computed from (the SQL, the versions of the tables and files it read, the
        // watermark values) and its rows. A retried batch (the process died around its commit, the same command run
        // again on the same inputs) is found and not applied twice; a new batch with equal rows, computed from new
        // inputs, is applied. A batch that reads no table or file at all has nothing to tell a retry by: applied.
        let batch_id = match staged.digest() {
            None => None,
            Some(rows) => {
                let inputs = crate::run::input_fingerprint(cx.manifest, cx.warehouse, cx.project_root, node).await;
                Some(format!("pipe.batch:{}", batch_identity(sql, &inputs, &watermarks, &rows)))
            }
        };
        if let Some(id) = &batch_id {
            if table.snapshot()?.transaction_version(table.log_store().as_ref(), id.clone()).await?.is_some() {
                let note = format!("batch already committed ({id}): nothing written");
                return nothing_written(cx, &table, note, plan_time, started).await;
            }
        }
        // A batch whose size is out of the model's normal range is refused before it is applied (when its
        // anomalies are errors); an empty batch above wrote nothing and is not judged.
        let rows = staged.rows();
        cx.refuse_anomalous_rows(rows).await?;
        // Write-audit-publish: the model's tests run on the table as it will be, before the batch is applied.
        let replace_by = match strategy {
            IncrementalStrategy::Append => Vec::new(),
            IncrementalStrategy::InsertOverwrite => partitions.clone(),
            _ => keys.clone(),
        };
        let tests = match cx.attached_tests().is_empty() {
            true => None,
            false => Some(cx.audit(new_result(cx, &table, batch.clone(), &replace_by).await?.into_view()).await?),
        };
        let metadata = cx.commit_metadata();
        let transactions = batch_id.iter().map(|id| deltalake::kernel::Transaction::new(id.clone(), 1)).collect();
        let commit = CommitProperties::default().with_metadata(metadata).with_application_transactions(transactions);
        let batch = Batch { batch, change, replace_by, commit };
        let table = apply(cx, table, strategy, batch).await?;
        let commit = cx.warehouse.last_commit(&table).await?;
        let staged_note = staged.spill_note().map(|n| format!(" ({n})")).unwrap_or_default();
        Ok(Outcome {
            rows_written: Some(rows),
            delta_version: Some(commit.version),
            provider: Some(cx.warehouse.provider(&table).await?),
            note: Some(format!("{}: {rows} rows in the batch{staged_note}", strategy.as_str())),
            plan_time,
            write_time: started.elapsed(),
            execute_time: commit.execute_time,
            tests,
            rows_read: None,
        })
    }
}

/// A batch computed, checked and audited, ready to apply: how its columns meet the table's (`change`), the columns
/// whose values it replaces (`replace_by`), and the commit carrying its metadata and identity.
struct Batch {
    batch: DataFrame,
    change: SchemaChange,
    replace_by: Vec<String>,
    commit: CommitProperties,
}

/// Applies `batch` to `table` with `strategy`, in one commit: the table as it is after.
async fn apply(
    cx: &ModelContext<'_>,
    table: deltalake::DeltaTable,
    strategy: IncrementalStrategy,
    batch: Batch,
) -> Result<deltalake::DeltaTable, RunError> {
    let Batch { batch, change, replace_by, commit } = batch;
    let node = cx.node;
    let (keys, partitions) = (&node.settings.unique_key, &node.settings.partition_by);
    let merge_schema = change == SchemaChange::AddColumns;
    let all: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    let session = Arc::new(cx.session.state());
    let table = match strategy {
        _ if change == SchemaChange::Sync => sync_all_columns(cx, &table, batch, &replace_by, commit).await?,
        IncrementalStrategy::Merge => {
            // `incremental_predicates` narrow the target rows a merge considers (e.g. `target.day = source.day`
            // on a table partitioned by `day`), so only the files they select are read and rewritten.
            let predicate = keys
                .iter()
                .map(|k| format!("target.{} = source.{}", quote(k), quote(k)))
                .chain(node.settings.incremental_predicates.iter().map(|p| format!("({p})")))
                .collect::<Vec<_>>()
                .join(" AND ");
            let mut update_columns = match &node.settings.merge_update_columns {
                list if !list.is_empty() => list.clone(),
                _ => all.iter().filter(|c| !keys.contains(c)).cloned().collect(),
            };
            update_columns.retain(|c| !node.settings.merge_exclude_columns.contains(c));
            let builder = table
                .merge(batch, predicate.as_str())
                .with_writer_properties(super::writer_properties(node))
                .with_source_alias("source")
                .with_target_alias("target")
                .with_session_state(session)
                .with_merge_schema(merge_schema)
                .with_commit_properties(commit);
            let builder = if update_columns.is_empty() {
                builder
            } else {
                builder.when_matched_update(|update| {
                    update_columns.iter().fold(update, |u, c| u.update(quote(c), format!("source.{}", quote(c))))
                })?
            };
            let builder = builder.when_not_matched_insert(|insert| {
                all.iter().fold(insert, |i, c| i.set(quote(c), format!("source.{}", quote(c))))
            })?;
            builder.await.map_err(|e| RunError::write(&node.name, e))?.0
        }
        IncrementalStrategy::Append => table
            .write(Vec::new())
            .with_input_plan(batch.logical_plan().clone())
            .with_writer_properties(super::writer_properties(node))
            .with_session_state(session)
            .with_save_mode(SaveMode::Append)
            .with_schema_mode_opt(merge_schema)
            .with_commit_properties(commit)
            .await
            .map_err(|e| RunError::write(&node.name, e))?,
        IncrementalStrategy::DeleteInsert => {
            // The source is the batch twice: once with its keys in `__pipe_key_<i>`, matching (and deleting) every
            // row of the table with that key, once with null there, matching nothing and inserted. As in dbt, a
            // null key matches no row of the table, so the first half leaves out the rows with one (they would be
            // inserted twice).
            let query = |e| RunError::query(&node.name, e);
            let key_columns: Vec<String> = (0..keys.len()).map(|i| format!("__pipe_key_{i}")).collect();
            let values = || all.iter().map(|c| column(c));
            let matching: Vec<Expr> =
                keys.iter().zip(&key_columns).map(|(k, name)| column(k).alias(name)).chain(values()).collect();
            let mut inserted = Vec::new();
            for (k, name) in keys.iter().zip(&key_columns) {
                let field = batch.schema().as_arrow().field_with_name(k).map_err(|e| query(e.into()))?.clone();
                let null = datafusion::common::ScalarValue::try_from(field.data_type()).map_err(query)?;
                inserted.push(datafusion::prelude::lit(null).alias(name));
            }
            inserted.extend(values());
            let keyed = keys
                .iter()
                .map(|k| column(k).is_not_null())
                .reduce(Expr::and)
                .unwrap_or(datafusion::prelude::lit(true));
            let source = batch
                .clone()
                .filter(keyed)
                .and_then(|b| b.select(matching))
                .and_then(|m| batch.select(inserted).and_then(|i| m.union(i)))
                .map_err(query)?;
            let predicate = keys
                .iter()
                .zip(&key_columns)
                .map(|(k, name)| format!("target.{} = source.{}", quote(k), quote(name)))
                .chain(node.settings.incremental_predicates.iter().map(|p| format!("({p})")))
                .collect::<Vec<_>>()
                .join(" AND ");
            let first_key = quote(key_columns.first().map_or("__pipe_key_0", String::as_str));
            table
                .merge(source, predicate.as_str())
                .with_writer_properties(super::writer_properties(node))
                .with_source_alias("source")
                .with_target_alias("target")
                .with_session_state(session)
                .with_merge_schema(merge_schema)
                .with_commit_properties(commit)
                .when_matched_delete(|delete| delete)?
                .when_not_matched_insert(|insert| {
                    all.iter().fold(insert.predicate(format!("source.{first_key} is null")), |i, c| {
                        i.set(quote(c), format!("source.{}", quote(c)))
                    })
                })?
                .await
                .map_err(|e| RunError::write(&node.name, e))?
                .0
        }
        _ => {
            // insert_overwrite replaces the partitions the batch has, in one commit.
            let predicate = replace_predicate(&node.name, &batch, partitions).await?;
            table
                .write(Vec::new())
                .with_input_plan(batch.logical_plan().clone())
                .with_writer_properties(super::writer_properties(node))
                .with_session_state(session)
                .with_save_mode(SaveMode::Overwrite)
                .with_schema_mode_opt(merge_schema)
                .with_replace_where(predicate)
                .with_commit_properties(commit)
                .await
                .map_err(|e| RunError::write(&node.name, e))?
        }
    };
    Ok(table)
}

/// The outcome of a run that wrote nothing (an empty batch, a batch already committed): the table as it is.
pub(super) async fn nothing_written(
    cx: &ModelContext<'_>,
    table: &deltalake::DeltaTable,
    note: String,
    plan_time: std::time::Duration,
    started: Instant,
) -> Result<Outcome, RunError> {
    let commit = cx.warehouse.last_commit(table).await?;
    Ok(Outcome {
        rows_written: Some(0),
        delta_version: Some(commit.version),
        provider: Some(cx.warehouse.provider(table).await?),
        note: Some(note),
        plan_time,
        write_time: started.elapsed(),
        execute_time: commit.execute_time,
        tests: None,
        rows_read: None,
    })
}

/// The frame with each uncorrelated scalar subquery of its filters computed first and put in as a literal, so
/// that an incremental batch's `where ts > (select max(ts) from {{ this }})` prunes the upstream's files by
/// their statistics (Delta's data skipping) instead of scanning all of them to compare each row.
/// Also returns the values put in (the batch's watermarks), as text.
async fn fold_scalar_subqueries(cx: &ModelContext<'_>, frame: DataFrame) -> Result<(DataFrame, Vec<String>), RunError> {
    use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Expr, LogicalPlan, Subquery};
    let query = |e| RunError::query(&cx.node.name, e);
    let (state, plan) = frame.into_parts();
    let mut subqueries: Vec<Subquery> = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::Filter(filter) = node {
            filter.predicate.apply(|e| {
                if let Expr::ScalarSubquery(sq) = e {
                    if sq.outer_ref_columns.is_empty() && !subqueries.contains(sq) {
                        subqueries.push(sq.clone());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(query)?;
    if subqueries.is_empty() {
        return Ok((DataFrame::new(state, plan), Vec::new()));
    }
    let mut values = Vec::with_capacity(subqueries.len());
    for sq in &subqueries {
        let batches = DataFrame::new(state.clone(), (*sq.subquery).clone()).collect().await.map_err(query)?;
        let field = sq.subquery.schema().field(0).clone();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let value = match batches.iter().find(|b| b.num_rows() > 0) {
            Some(_) if rows > 1 => {
                return Err(RunError::Query {
                    model: cx.node.name.clone(),
                    message: format!("a scalar subquery returned {rows} rows"),
                })
            }
            Some(batch) => datafusion::common::ScalarValue::try_from_array(batch.column(0), 0).map_err(query)?,
            None => datafusion::common::ScalarValue::try_from(field.data_type()).map_err(query)?,
        };
        values.push(value);
    }
    let folded = plan
        .transform_up(|node| match node {
            LogicalPlan::Filter(_) => node.map_expressions(|e| {
                e.transform_up(|e| match &e {
                    Expr::ScalarSubquery(sq) => match subqueries.iter().position(|s| s == sq) {
                        Some(i) => Ok(Transformed::yes(datafusion::prelude::lit(values[i].clone()))),
                        None => Ok(Transformed::no(e)),
                    },
                    _ => Ok(Transformed::no(e)),
                })
            }),
            other => Ok(Transformed::no(other)),
        })
        .map_err(query)?
        .data;
    let watermarks = values.iter().map(ToString::to_string).collect();
    Ok((DataFrame::new(state, folded), watermarks))
}

/// A batch's identity: a digest over the SQL it was computed with, the fingerprint of its inputs
/// (`run::input_fingerprint`), its watermark values and the digest of its rows.
fn batch_identity(sql: &str, inputs: &str, watermarks: &[String], rows: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [sql, inputs].into_iter().chain(watermarks.iter().map(String::as_str)).chain([rows]) {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest: String = hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    // The row count stays readable in front.
    format!("{}-{digest}", rows.split('-').next().unwrap_or("0"))
}

/// `with_schema_mode(Merge)` when new columns are to be added.
trait SchemaModeExt {
    fn with_schema_mode_opt(self, merge: bool) -> Self;
}

impl SchemaModeExt for deltalake::operations::write::WriteBuilder {
    fn with_schema_mode_opt(self, merge: bool) -> Self {
        if merge {
            self.with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
        } else {
            self
        }
    }
}

/// Applies `on_schema_change` to a batch whose columns differ from the table's: `ignore` (default) drops new
/// columns, `fail` refuses, `append_new_columns` adds them to the table. A column the table has and the batch lacks
/// is an error except with `append_new_columns`, where it is written as null. Returns the batch's columns to write.
fn apply_schema_change(
    node: &crate::manifest::Node,
    batch_schema: &datafusion::arrow::datatypes::Schema,
    target: &datafusion::arrow::datatypes::Schema,
) -> Result<(Vec<String>, SchemaChange), RunError> {
    let has =
        |schema: &datafusion::arrow::datatypes::Schema, name: &str| schema.fields().iter().any(|f| f.name() == name);
    let columns: Vec<String> = batch_schema.fields().iter().map(|f| f.name().clone()).collect();
    let added: Vec<String> = columns.iter().filter(|n| !has(target, n)).cloned().collect();
    let removed: Vec<String> =
        target.fields().iter().map(|f| f.name().clone()).filter(|n| !has(batch_schema, n)).collect();
    if added.is_empty() && removed.is_empty() {
        return Ok((columns, SchemaChange::None));
    }
    let mode = node.settings.on_schema_change;
    let describe = || {
        let list = |names: &[String]| if names.is_empty() { "none".to_string() } else { names.join(", ") };
        format!("new columns: {}; missing columns: {}", list(&added), list(&removed))
    };
    match mode {
        OnSchemaChange::AppendNewColumns => Ok((columns, SchemaChange::AddColumns)),
        OnSchemaChange::SyncAllColumns => Ok((columns, SchemaChange::Sync)),
        OnSchemaChange::Ignore if removed.is_empty() => {
            Ok((columns.into_iter().filter(|c| !added.contains(c)).collect(), SchemaChange::None))
        }
        _ => Err(RunError::Unsupported(format!(
            "the batch's columns differ from the table's ({}); `on_schema_change: {}` refuses this: set `append_new_columns` or run with `--full-refresh`",
            describe(),
            if mode == OnSchemaChange::Fail { "fail" } else { "ignore" }
        ))),
    }
}

/// How a batch's columns are reconciled with the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemaChange {
    /// Same columns (or new ones dropped by `ignore`).
    None,
    /// `append_new_columns`: the write adds the batch's new columns (Delta schema merge).
    AddColumns,
    /// `sync_all_columns`: the table takes the batch's columns exactly.
    Sync,
}

/// `sync_all_columns`: rewrites the table with the batch's columns in one commit: the rows the batch does not
/// replace (by `replace_by`: the unique key, the partition columns, or nothing for `append`) keep their values
/// in the columns that remain, the new columns are null for them, and the removed columns are gone.
async fn sync_all_columns(
    cx: &ModelContext<'_>,
    table: &deltalake::DeltaTable,
    batch: DataFrame,
    replace_by: &[String],
    commit: CommitProperties,
) -> Result<deltalake::DeltaTable, RunError> {
    let node = cx.node;
    let rows = new_result(cx, table, batch, replace_by).await?;
    let partitions = node.settings.partition_by.clone();
    let mut write = table
        .clone()
        .write(Vec::new())
        .with_writer_properties(super::writer_properties(node))
        .with_input_plan(rows.logical_plan().clone())
        .with_session_state(Arc::new(cx.session.state()))
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
        .with_commit_properties(commit);
    if !partitions.is_empty() {
        write = write.with_partition_columns(partitions);
    }
    write.await.map_err(|e| RunError::write(&node.name, e))
}

/// The table as it will be once the batch is applied, with the batch's columns: the rows the batch does not
/// replace (by `replace_by`: the unique key, the partition columns, or nothing for `append`), then the batch.
async fn new_result(
    cx: &ModelContext<'_>,
    table: &deltalake::DeltaTable,
    batch_frame: DataFrame,
    replace_by: &[String],
) -> Result<DataFrame, RunError> {
    use datafusion::logical_expr::JoinType;
    let node = cx.node;
    let query = |e| RunError::query(&node.name, e);
    let schema = Arc::new(batch_frame.schema().as_arrow().clone());
    let old = cx.session.read_table(cx.warehouse.provider(table).await?).map_err(query)?;
    let kept = if replace_by.is_empty() {
        old
    } else {
        let keys: Vec<&str> = replace_by.iter().map(String::as_str).collect();
        let batch_keys = batch_frame.clone().select_columns(&keys).map_err(query)?.distinct().map_err(query)?;
        old.join(batch_keys, JoinType::LeftAnti, &keys, &keys, None).map_err(query)?
    };
    super::kept_then_batch(kept, &schema, batch_frame).map_err(query)
}

/// Refuses a batch with two rows for one key, naming the key: an aggregate over the batch (which spills under a
/// memory limit), stopped at the first key found twice.
async fn check_unique_keys(model: &str, batch: DataFrame, keys: &[String]) -> Result<(), RunError> {
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::prelude::{col, lit};
    let query = |e| RunError::query(model, e);
    for key in keys {
        if batch.schema().as_arrow().index_of(key).is_err() {
            return Err(RunError::Unsupported(format!(
                "`unique_key` column `{key}` is not an output column of `{model}`"
            )));
        }
    }
    let columns: Vec<Expr> = keys.iter().map(|k| column(k)).collect();
    let twice = batch
        .aggregate(columns, vec![count(lit(1)).alias("__pipe_rows")])
        .and_then(|f| f.filter(col("__pipe_rows").gt(lit(1))))
        .and_then(|f| f.limit(0, Some(1)))
        .map_err(query)?
        .collect()
        .await
        .map_err(query)?;
    let Some(found) = twice.iter().find(|b| b.num_rows() > 0) else { return Ok(()) };
    let shown: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k}={}", array_value_to_string(found.column(i), 0).unwrap_or_default()))
        .collect();
    Err(RunError::Unsupported(format!(
        "the batch has more than one row for key ({}); deduplicate the model's batch or fix `unique_key`",
        shown.join(", ")
    )))
}

/// `(c1, c2) IN (...)` as an expression: ORs of equalities (or `IS NULL`s) over the distinct values of `columns` in
/// a non-empty batch, each value a literal of its column's type (Delta casts it to the table's type).
async fn replace_predicate(model: &str, batch: &DataFrame, columns: &[String]) -> Result<Expr, RunError> {
    for column in columns {
        if batch.schema().as_arrow().index_of(column).is_err() {
            return Err(RunError::Unsupported(format!("column `{column}` is not in the batch")));
        }
    }
    let query = |e| RunError::query(model, e);
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let distinct = batch
        .clone()
        .select_columns(&names)
        .and_then(|f| f.distinct())
        .map_err(query)?
        .collect()
        .await
        .map_err(query)?;
    // Keyed by the term's text, so each distinct combination of values is one term, in a stable order.
    let mut terms = std::collections::BTreeMap::new();
    for (batch, row) in distinct.iter().flat_map(|b| (0..b.num_rows()).map(move |row| (b, row))) {
        let mut parts = Vec::new();
        for (index, column) in columns.iter().enumerate() {
            let name = Expr::Column(datafusion::common::Column::new_unqualified(column));
            let array = batch.column(index);
            parts.push(if array.is_null(row) {
                name.is_null()
            } else {
                let value = datafusion::common::ScalarValue::try_from_array(array, row)
                    .map_err(|e| RunError::Internal(e.to_string()))?;
                name.eq(Expr::Literal(value, None))
            });
        }
        let term = datafusion::logical_expr::utils::conjunction(parts).unwrap_or(Expr::Literal(true.into(), None));
        terms.insert(term.to_string(), term);
    }
    Ok(datafusion::logical_expr::utils::disjunction(terms.into_values()).unwrap_or(Expr::Literal(false.into(), None)))
}
