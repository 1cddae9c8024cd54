//! Run history in the warehouse: every build appends its run to `pipe.runs` and each node's result to
//! `pipe.node_runs` and each executed operator's metrics to `pipe.operator_runs` (Delta tables under
//! `<warehouse>/pipe/`), so `pipe query "select * from pipe.node_runs"`
//! shows row counts and durations over time, and anomaly detection compares a run with the ones before it.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::protocol::SaveMode;

use super::results::RunResults;
use super::RunError;
use super::Warehouse;

/// The schema run history lives in.
pub const RUNS_SCHEMA: &str = "pipe";

/// The run-history tables in [`RUNS_SCHEMA`].
pub const HISTORY_TABLES: [&str; 4] = ["runs", "node_runs", "operator_runs", "test_runs"];

fn started_micros(results: &RunResults) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(&results.started_at).ok().map(|t| t.timestamp_micros())
}

async fn append(warehouse: &Warehouse, relation: &str, batch: RecordBatch) -> Result<(), RunError> {
    let lock = warehouse.lock(relation).await?;
    let written = async {
        let table = warehouse.table_for_write(relation).await?;
        let mode = if table.version().is_some() { SaveMode::Append } else { SaveMode::Overwrite };
        // New columns in later versions of pipe are added to the history (schema merge).
        table
            .write(vec![batch])
            .with_save_mode(mode)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
            .await?;
        Ok(())
    }
    .await;
    lock.release().await;
    written
}

/// Column `i` of a history batch as plain strings (Delta reads strings back as views, timestamps cast to text).
pub(crate) fn text_column(batch: &RecordBatch, i: usize) -> Option<StringArray> {
    let column =
        datafusion::arrow::compute::cast(batch.column(i), &datafusion::arrow::datatypes::DataType::Utf8).ok()?;
    column.as_any().downcast_ref::<StringArray>().cloned()
}

/// One node's result in one run, as `pipe.node_runs` holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRun {
    pub run_id: String,
    /// `YYYY-MM-DD HH:MM:SS`, UTC.
    pub at: String,
    pub status: String,
    pub rows: Option<i64>,
    pub seconds: f64,
    pub tests_failed: i64,
    /// The row accounting of the run (absent in history written before pipe recorded it).
    pub rows_read: Option<i64>,
    pub rows_filtered: Option<i64>,
    pub rows_deduplicated: Option<i64>,
}

/// Per unique id, its runs, newest first; empty when nothing was recorded yet.
pub async fn node_history(
    ctx: &datafusion::prelude::SessionContext,
) -> std::collections::BTreeMap<String, Vec<NodeRun>> {
    use datafusion::arrow::array::Array;
    let mut histories: std::collections::BTreeMap<String, Vec<NodeRun>> = Default::default();
    let columns = "unique_id, run_id, cast(started_at as varchar) as started_at, status, rows_written, seconds, \
                   tests_failed";
    let accounting = "rows_read, rows_filtered, rows_deduplicated";
    // History written before the row accounting existed has no such columns.
    let frame = match ctx.sql(&format!("select {columns}, {accounting} from pipe.node_runs order by 3 desc")).await {
        Ok(frame) => frame,
        Err(_) => match ctx.sql(&format!("select {columns} from pipe.node_runs order by 3 desc")).await {
            Ok(frame) => frame,
            Err(_) => return histories,
        },
    };
    for batch in frame.collect().await.unwrap_or_default() {
        let text = |i: usize| text_column(&batch, i);
        let (Some(ids), Some(runs), Some(at), Some(status)) = (text(0), text(1), text(2), text(3)) else { continue };
        let rows = batch.column(4).as_any().downcast_ref::<Int64Array>().cloned();
        let seconds = batch.column(5).as_any().downcast_ref::<Float64Array>().cloned();
        let failed = batch.column(6).as_any().downcast_ref::<Int64Array>().cloned();
        let (Some(rows), Some(seconds), Some(failed)) = (rows, seconds, failed) else { continue };
        let count = |column: usize, i: usize| {
            let array = batch.columns().get(column)?.as_any().downcast_ref::<Int64Array>()?;
            (!array.is_null(i)).then(|| array.value(i))
        };
        for i in 0..batch.num_rows() {
            histories.entry(ids.value(i).to_string()).or_default().push(NodeRun {
                run_id: runs.value(i).to_string(),
                at: at.value(i).chars().take(19).collect(),
                status: status.value(i).to_string(),
                rows: (!rows.is_null(i)).then(|| rows.value(i)),
                seconds: seconds.value(i),
                tests_failed: failed.value(i),
                rows_read: count(7, i),
                rows_filtered: count(8, i),
                rows_deduplicated: count(9, i),
            });
        }
    }
    histories
}

/// The latest outcome of each test, by test unique id: `(status, failures, when)`.
pub async fn latest_tests(
    ctx: &datafusion::prelude::SessionContext,
) -> std::collections::BTreeMap<String, (String, i64, String)> {
    let mut latest = std::collections::BTreeMap::new();
    let sql = "select test, status, failures, cast(started_at as varchar) as at from pipe.test_runs order by at desc";
    let Ok(frame) = ctx.sql(sql).await else { return latest };
    for batch in frame.collect().await.unwrap_or_default() {
        let text = |i: usize| text_column(&batch, i);
        let (Some(tests), Some(status), Some(at)) = (text(0), text(1), text(3)) else { continue };
        let Some(failures) = batch.column(2).as_any().downcast_ref::<Int64Array>().cloned() else { continue };
        for i in 0..batch.num_rows() {
            latest.entry(tests.value(i).to_string()).or_insert_with(|| {
                (status.value(i).to_string(), failures.value(i), at.value(i).chars().take(19).collect())
            });
        }
    }
    latest
}

/// Appends a run and its node results to the history.
pub async fn record(warehouse: &Warehouse, results: &RunResults) -> Result<(), RunError> {
    let at = started_micros(results);
    let count = |status| results.count(status) as i64;
    let rows: i64 = results.results.iter().filter_map(|r| r.rows_written).map(|r| r as i64).sum();
    let timestamp =
        |n: usize| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(vec![at; n]).with_timezone("UTC")) };
    let run = RecordBatch::try_from_iter_with_nullable(vec![
        ("run_id", Arc::new(StringArray::from(vec![results.run_id.clone()])) as ArrayRef, true),
        ("started_at", timestamp(1), true),
        ("elapsed_seconds", Arc::new(Float64Array::from(vec![results.elapsed_seconds])) as ArrayRef, true),
        ("succeeded", Arc::new(Int64Array::from(vec![count(super::results::NodeStatus::Success)])) as ArrayRef, true),
        ("failed", Arc::new(Int64Array::from(vec![count(super::results::NodeStatus::Error)])) as ArrayRef, true),
        ("skipped", Arc::new(Int64Array::from(vec![count(super::results::NodeStatus::Skipped)])) as ArrayRef, true),
        ("rows_written", Arc::new(Int64Array::from(vec![rows])) as ArrayRef, true),
    ])
    .map_err(|e| RunError::Internal(e.to_string()))?;
    append(warehouse, &format!("{RUNS_SCHEMA}.runs"), run).await?;
    if !results.results.is_empty() {
        append(warehouse, &format!("{RUNS_SCHEMA}.node_runs"), node_runs(results, &timestamp)?).await?;
    }
    if results.results.iter().any(|r| !r.operators.is_empty()) {
        append(warehouse, &format!("{RUNS_SCHEMA}.operator_runs"), operator_runs(results, &timestamp)?).await?;
    }
    record_tests(warehouse, results, timestamp).await
}

/// `pipe.node_runs` rows for a run's node results.
fn node_runs(results: &RunResults, timestamp: &impl Fn(usize) -> ArrayRef) -> Result<RecordBatch, RunError> {
    let n = results.results.len();
    let text = |f: &dyn Fn(&super::results::NodeResult) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(results.results.iter().map(f).collect::<Vec<_>>()))
    };
    let count = |f: &dyn Fn(&super::results::NodeResult) -> Option<u64>| -> ArrayRef {
        Arc::new(Int64Array::from(results.results.iter().map(|r| f(r).map(|v| v as i64)).collect::<Vec<_>>()))
    };
    let nodes = RecordBatch::try_from_iter_with_nullable(vec![
        ("run_id", Arc::new(StringArray::from(vec![results.run_id.clone(); n])) as ArrayRef, true),
        ("started_at", timestamp(n), true),
        ("unique_id", text(&|r| Some(r.unique_id.clone())), true),
        ("relation", text(&|r| Some(r.relation.clone())), true),
        ("layer", text(&|r| r.layer.clone()), true),
        ("materialized", text(&|r| Some(r.materialized.clone())), true),
        ("status", text(&|r| serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(str::to_string))), true),
        ("rows_written", count(&|r| r.rows_written), true),
        ("rows_read", count(&|r| Some(r.rows_in.values().sum::<u64>()).filter(|_| r.rows_in_scanned)), true),
        ("rows_filtered", count(&|r| r.rows_filtered), true),
        ("rows_deduplicated", count(&|r| r.rows_deduplicated), true),
        (
            "delta_version",
            Arc::new(Int64Array::from(results.results.iter().map(|r| r.delta_version).collect::<Vec<_>>())) as ArrayRef,
            true,
        ),
        (
            "seconds",
            Arc::new(Float64Array::from(results.results.iter().map(|r| r.timing.total_seconds).collect::<Vec<_>>()))
                as ArrayRef,
            true,
        ),
        (
            "tests_failed",
            Arc::new(Int64Array::from(
                results
                    .results
                    .iter()
                    .map(|r| r.tests.iter().filter(|t| t.status != super::results::TestStatus::Pass).count() as i64)
                    .collect::<Vec<_>>(),
            )) as ArrayRef,
            true,
        ),
        (
            "latency_seconds",
            Arc::new(Float64Array::from(results.results.iter().map(|r| r.latency_seconds).collect::<Vec<_>>()))
                as ArrayRef,
            true,
        ),
        ("message", text(&|r| r.message.as_deref().map(|m| crate::secrets::mask(m).into_owned())), true),
    ])
    .map_err(|e| RunError::Internal(e.to_string()))?;
    Ok(nodes)
}

/// `pipe.operator_runs` rows: each operator of each model's executed plans, with its metrics.
fn operator_runs(results: &RunResults, timestamp: &impl Fn(usize) -> ArrayRef) -> Result<RecordBatch, RunError> {
    use super::results::{NodeResult, OperatorRun};
    let rows: Vec<(&NodeResult, &OperatorRun)> =
        results.results.iter().flat_map(|r| r.operators.iter().map(move |o| (r, o))).collect();
    let n = rows.len();
    let text = |f: &dyn Fn(&(&NodeResult, &OperatorRun)) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let count = |f: &dyn Fn(&OperatorRun) -> Option<u64>| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(|(_, o)| f(o).map(|v| v as i64)).collect::<Vec<_>>()))
    };
    RecordBatch::try_from_iter_with_nullable(vec![
        ("run_id", Arc::new(StringArray::from(vec![results.run_id.clone(); n])) as ArrayRef, true),
        ("started_at", timestamp(n), true),
        ("unique_id", text(&|(r, _)| r.unique_id.clone()), true),
        ("relation", text(&|(r, _)| r.relation.clone()), true),
        ("plan", count(&|o| Some(o.plan as u64)), true),
        ("position", count(&|o| Some(o.position as u64)), true),
        ("depth", count(&|o| Some(o.depth as u64)), true),
        ("operator", text(&|(_, o)| o.operator.clone()), true),
        ("detail", text(&|(_, o)| o.detail.clone()), true),
        ("output_rows", count(&|o| o.output_rows), true),
        (
            "compute_seconds",
            Arc::new(Float64Array::from(rows.iter().map(|(_, o)| o.compute_seconds).collect::<Vec<_>>())) as ArrayRef,
            true,
        ),
        ("spill_count", count(&|o| o.spill_count), true),
        ("spilled_bytes", count(&|o| o.spilled_bytes), true),
    ])
    .map_err(|e| RunError::Internal(e.to_string()))
}

/// Appends a run's test outcomes to `pipe.test_runs`.
async fn record_tests(
    warehouse: &Warehouse,
    results: &RunResults,
    timestamp: impl Fn(usize) -> ArrayRef,
) -> Result<(), RunError> {
    // Every test outcome of the run: those run with their model, and those run after the build.
    let tests: Vec<(&str, &super::results::TestOutcome)> = results
        .results
        .iter()
        .flat_map(|r| r.tests.iter().map(move |t| (r.unique_id.as_str(), t)))
        .chain(results.tests.iter().map(|t| ("", t)))
        .collect();
    if tests.is_empty() {
        return Ok(());
    }
    let n = tests.len();
    let column = |f: &dyn Fn(&(&str, &super::results::TestOutcome)) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(tests.iter().map(f).collect::<Vec<_>>()))
    };
    let batch = RecordBatch::try_from_iter_with_nullable(vec![
        ("run_id", Arc::new(StringArray::from(vec![results.run_id.clone(); n])) as ArrayRef, true),
        ("started_at", timestamp(n), true),
        ("test", column(&|(_, t)| Some(t.unique_id.clone())), true),
        ("node", column(&|(node, _)| (!node.is_empty()).then(|| node.to_string())), true),
        (
            "status",
            column(&|(_, t)| serde_json::to_value(t.status).ok().and_then(|v| v.as_str().map(str::to_string))),
            true,
        ),
        (
            "failures",
            Arc::new(Int64Array::from(tests.iter().map(|(_, t)| t.failures as i64).collect::<Vec<_>>())) as ArrayRef,
            true,
        ),
        (
            "seconds",
            Arc::new(Float64Array::from(tests.iter().map(|(_, t)| t.seconds).collect::<Vec<_>>())) as ArrayRef,
            true,
        ),
    ])
    .map_err(|e| RunError::Internal(e.to_string()))?;
    append(warehouse, &format!("{RUNS_SCHEMA}.test_runs"), batch).await
}
