//! Unpartitioned `table` overwrites with one Parquet writer per partition of the query.
//!
//! delta-rs funnels every partition of an unpartitioned write into a single writer task, so on a large table one
//! core encodes all the Parquet while the query waits on it. Here each partition stream of the physical plan gets
//! its own `DeltaWriter` (delta-rs's file writer: its file naming and its statistics in the `add` actions), and
//! the files are committed together in one Delta commit: `remove` of every current file plus the new `add`s (a
//! `WRITE` in overwrite mode, as delta-rs records it), or, for a new table, the create commit carrying the files.
//! Readers see the old or the new version, never a part, as with delta-rs's own write.
//!
//! It applies when the table is unpartitioned, its column types map to Delta's as they are (timestamps are cast to
//! microseconds, Delta's precision) and, for an existing table, the schema is unchanged; anything else returns
//! `None` and goes through delta-rs's write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::physical_plan::execute_stream_partitioned;
use datafusion::prelude::{cast, col, DataFrame};
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, StructType};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::DeltaTable;
use futures::StreamExt;

use super::ModelContext;
use crate::run::RunError;

/// Writes `frame` as the table's new contents in one commit; `None` when this path does not apply.
pub(super) async fn overwrite(
    cx: &ModelContext<'_>,
    table: &DeltaTable,
    frame: DataFrame,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Option<DeltaTable>, RunError> {
    let name = &cx.node.name;
    let Some(prepared) = prepare(cx, table, frame, &[])? else { return Ok(None) };
    let started = Instant::now();
    let plan = prepared.frame.clone().create_physical_plan().await.map_err(|e| RunError::query(name, e))?;
    let streams = execute_stream_partitioned(plan, cx.session.task_ctx()).map_err(|e| RunError::query(name, e))?;
    let store = table.log_store().object_store(None);
    let target = Arc::clone(&prepared.target);
    let config = WriterConfig::new(
        Arc::clone(&target),
        Vec::new(),
        Some(super::writer_properties(cx.node)),
        None,
        None,
        Default::default(),
        None,
    );
    let rows = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for mut stream in streams {
        let (store, config, rows) = (store.clone(), config.clone(), Arc::clone(&rows));
        let (model, target) = (name.clone(), Arc::clone(&target));
        writers.spawn(async move {
            let mut writer = DeltaWriter::new(store, config);
            while let Some(batch) = stream.next().await {
                // The query failed (reading its input, computing a row): a query error, not a write error.
                let batch = batch.map_err(|e| RunError::query(&model, e))?;
                let batch = as_table_batch(batch, &target).map_err(|e| RunError::FileWrite(e.to_string()))?;
                rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                writer
                    .write(&batch)
                    .await
                    .map_err(|e| RunError::FileWrite(crate::warehouse::write_cause(&e.to_string())))?;
            }
            writer.close().await.map_err(|e| RunError::FileWrite(crate::warehouse::write_cause(&e.to_string())))
        });
    }
    let mut adds = Vec::new();
    while let Some(joined) = writers.join_next().await {
        match joined {
            Ok(Ok(files)) => adds.extend(files),
            Ok(Err(err)) => {
                writers.abort_all();
                return Err(match err {
                    RunError::Query { .. } => err,
                    other => RunError::write_text(name, &other.to_string()),
                });
            }
            Err(err) => return Err(RunError::Internal(format!("a writer task failed: {err}"))),
        }
    }
    let rows = rows.load(Ordering::Relaxed);
    commit(cx, table, &prepared, adds, rows, metadata, Vec::new(), started).await.map(Some)
}

/// A query result made ready for pipe's own Delta writers.
pub(crate) struct Prepared<'t> {
    /// The result with its columns cast to the types Delta stores (timestamps in microseconds).
    pub frame: DataFrame,
    /// The table's Arrow schema (partition columns included): the batches the writers get have it.
    pub target: Arc<Schema>,
    pub delta_schema: StructType,
    pub partition_by: Vec<String>,
    /// The table's loaded version; `None` when the commit creates the table.
    existing: Option<&'t deltalake::table::state::DeltaTableState>,
}

/// `frame` ready to be written to `table` partitioned by `partition_by`, or `None` when its column types are left
/// to delta-rs, or the table exists with another schema or other partition columns (delta-rs's write changes them).
pub(crate) fn prepare<'t>(
    cx: &ModelContext<'_>,
    table: &'t DeltaTable,
    frame: DataFrame,
    partition_by: &[String],
) -> Result<Option<Prepared<'t>>, RunError> {
    let Some(target) = delta_arrow_schema(frame.schema().as_arrow()) else { return Ok(None) };
    let Ok(delta_schema) = TryIntoKernel::<StructType>::try_into_kernel(&target) else { return Ok(None) };
    let existing = match table.version() {
        Some(_) => {
            let snapshot = table.snapshot()?;
            if snapshot.schema().as_ref() != &delta_schema || snapshot.metadata().partition_columns() != partition_by {
                return Ok(None);
            }
            Some(snapshot)
        }
        None => None,
    };
    let columns: Vec<_> = frame
        .schema()
        .fields()
        .iter()
        .zip(target.fields())
        .map(|(from, to)| match from.data_type() == to.data_type() {
            true => col(datafusion::common::Column::from_name(from.name())),
            false => {
                cast(col(datafusion::common::Column::from_name(from.name())), to.data_type().clone()).alias(from.name())
            }
        })
        .collect();
    let frame = frame.select(columns).map_err(|e| RunError::query(&cx.node.name, e))?;
    Ok(Some(Prepared { frame, target: Arc::new(target), delta_schema, partition_by: partition_by.to_vec(), existing }))
}

/// `batch` with the table's schema. The executed plan may say a column cannot be null where the planned schema
/// says it can (`split_part` of literals): the columns are the same.
pub(crate) fn as_table_batch(
    batch: RecordBatch,
    target: &Arc<Schema>,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    match batch.schema() == *target {
        true => Ok(batch),
        false => RecordBatch::try_new(Arc::clone(target), batch.columns().to_vec()),
    }
}

/// Commits `adds` (files written for `prepared`, `rows` rows in all) as the table's whole contents: `remove` of
/// every current file plus the `add`s, or, for a new table, the create commit carrying them; with pipe's
/// `metadata` and the application `transactions` (a ledger).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit(
    cx: &ModelContext<'_>,
    table: &DeltaTable,
    prepared: &Prepared<'_>,
    adds: Vec<deltalake::kernel::Add>,
    rows: u64,
    mut metadata: HashMap<String, serde_json::Value>,
    transactions: Vec<deltalake::kernel::Transaction>,
    started: Instant,
) -> Result<DeltaTable, RunError> {
    let name = &cx.node.name;
    let removes: Vec<Action> = match prepared.existing {
        Some(snapshot) => snapshot.log_data().iter().map(|f| Action::Remove(f.remove_action(true))).collect(),
        None => Vec::new(),
    };
    // The figures delta-rs records for its writes, so history, diffs and run results read them the same way.
    metadata.insert(
        "operationMetrics".into(),
        serde_json::json!({
            "num_added_files": adds.len(),
            "num_removed_files": removes.len(),
            "num_added_rows": rows,
            "execution_time_ms": started.elapsed().as_millis() as u64,
        }),
    );
    let properties = CommitProperties::default().with_metadata(metadata).with_application_transactions(transactions);
    crate::run::abort_at(cx.failpoints, name, "before-commit");
    let failed = |e: deltalake::DeltaTableError| RunError::write(name, e);
    let partition_by = (!prepared.partition_by.is_empty()).then(|| prepared.partition_by.clone());
    // The files this commit names: any other data file written since the version it replaces was committed is
    // left by a write that never committed (a killed process, a failed task attempt).
    let named: std::collections::HashSet<String> = adds
        .iter()
        .map(|a| file_name(&a.path))
        .chain(removes.iter().filter_map(|r| match r {
            Action::Remove(remove) => Some(file_name(&remove.path)),
            _ => None,
        }))
        .collect();
    let previous = prepared.existing.map(|snapshot| snapshot.version() as i64);
    let table = match prepared.existing {
        Some(snapshot) => {
            let actions = removes.into_iter().chain(adds.into_iter().map(Action::Add)).collect();
            let operation = DeltaOperation::Write { mode: SaveMode::Overwrite, partition_by, predicate: None };
            CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(snapshot as &dyn TableReference), table.log_store(), operation)
                .await
                .map_err(failed)?;
            // The handle moves on to the new version by reading the log entries after the one it holds.
            let mut table = table.clone();
            table.update_incremental(None).await.map_err(failed)?;
            table
        }
        None => table
            .create()
            .with_columns(prepared.delta_schema.fields().cloned())
            .with_partition_columns(prepared.partition_by.clone())
            .with_actions(adds.into_iter().map(Action::Add))
            .with_commit_properties(properties)
            .await
            .map_err(failed)?,
    };
    match remove_unfinished_writes(&table, previous, &named).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!("{name}: removed {removed} data file(s) of writes that never committed"),
        Err(err) => tracing::warn!("{name}: files of unfinished writes not removed: {err}"),
    }
    Ok(table)
}

/// The last segment of a data file's path (its unique name: delta-rs's writers put a UUID in it).
fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// Deletes the data files a write left without committing them: Parquet files in the table's folder that `named`
/// (the files of the commit just made: its `add`s and the `remove`s of the version it replaced) does not hold and
/// that were written after the `previous` version was committed (all of them for a new table). The files of
/// earlier versions stay, for time travel. A model's table is written by one build at a time (the warehouse's
/// lock), so nothing else is writing into the folder. The number of files deleted.
async fn remove_unfinished_writes(
    table: &DeltaTable,
    previous: Option<i64>,
    named: &std::collections::HashSet<String>,
) -> Result<usize, deltalake::DeltaTableError> {
    use datafusion::object_store::{ObjectStore, ObjectStoreExt};
    let store = table.log_store().object_store(None);
    let since = match previous {
        Some(version) => {
            let log = deltalake::Path::from(format!("_delta_log/{version:020}.json"));
            Some(store.head(&log).await?.last_modified)
        }
        None => None,
    };
    let mut listed = store.list(None);
    let mut unfinished = Vec::new();
    while let Some(meta) = listed.next().await {
        let meta = meta?;
        let path = meta.location.as_ref();
        let hidden = path.split('/').any(|part| part.starts_with('_') || part.starts_with('.'));
        if hidden || !path.ends_with(".parquet") || named.contains(&file_name(path)) {
            continue;
        }
        if since.is_none_or(|since| meta.last_modified > since) {
            unfinished.push(meta.location);
        }
    }
    for path in &unfinished {
        store.delete(path).await?;
    }
    Ok(unfinished.len())
}

/// The Arrow schema of the files: Delta keeps timestamps in microseconds, and has no unsigned integers (an unsigned
/// column, such as `rank()`'s, is stored as the signed type of its width, as delta-rs stores it; a value that does
/// not fit fails the write). `None` for types left to delta-rs.
fn delta_arrow_schema(schema: &Schema) -> Option<Schema> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            let data_type = match f.data_type() {
                DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
                DataType::UInt8 => DataType::Int8,
                DataType::UInt16 => DataType::Int16,
                DataType::UInt32 => DataType::Int32,
                DataType::UInt64 => DataType::Int64,
                DataType::Boolean
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Float32
                | DataType::Float64
                | DataType::Utf8
                | DataType::Utf8View
                | DataType::LargeUtf8
                | DataType::Binary
                | DataType::Date32
                | DataType::Decimal128(..) => f.data_type().clone(),
                _ => return None,
            };
            Some(Field::new(f.name(), data_type, f.is_nullable()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Schema::new(fields))
}
