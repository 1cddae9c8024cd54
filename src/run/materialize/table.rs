//! `table`: the query result replaces the table in one Delta commit. Readers see the old or the new version,
//! never a part; a failed query leaves the previous version untouched.

use std::sync::Arc;
use std::time::Instant;

use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;

use super::{plan, Materialize, ModelContext, Outcome, Placement};
use crate::project::Materialization;
use crate::run::RunError;

pub struct TableMaterialization;

#[async_trait::async_trait]
impl Materialize for TableMaterialization {
    fn kind(&self) -> Materialization {
        Materialization::Table
    }

    async fn run(&self, cx: &ModelContext<'_>) -> Result<Outcome, RunError> {
        let started = Instant::now();
        let frame = plan(cx, &cx.node.compiled_sql).await?;
        let plan_time = started.elapsed();
        super::check_contract(cx.node, frame.schema().as_arrow())?;
        publish(cx, frame, plan_time, Vec::new()).await
    }
}

/// Write-audit-publish of a whole result, for every path that replaces a table with a query's rows (a `table`, an
/// incremental model's first build or `--full-refresh`, a microbatch model's first build, a seed): with tests (or
/// `anomaly_severity: error`) the result is written to a staging table, tested there, and published (one commit to
/// the model's table, carrying `transactions`) only when no error-severity test fails; else nothing of it is
/// published and the table keeps its version.
pub(super) async fn publish(
    cx: &ModelContext<'_>,
    frame: datafusion::prelude::DataFrame,
    plan_time: std::time::Duration,
    transactions: Vec<Transaction>,
) -> Result<Outcome, RunError> {
    let anomalies_fail = cx.node.settings.anomaly_severity == crate::project::settings::AnomalySeverity::Error;
    if cx.attached_tests().is_empty() && !anomalies_fail {
        return write_overwrite(cx, frame, plan_time, transactions).await;
    }
    let staged = cx.staged_relation();
    let staging = cx.warehouse.table_for_write(&staged).await?;
    let staging = match on_cluster(cx, &staging, &frame, Vec::new()).await? {
        Placement::Cluster(written) => written,
        Placement::Here(_) => write_staged(cx, staging, &frame).await?,
    };
    let provider = cx.warehouse.provider(&staging).await?;
    let published = async {
        if anomalies_fail {
            cx.refuse_anomalous_rows(crate::warehouse::Warehouse::row_count(&staging)?).await?;
        }
        let tests = cx.audit(Arc::clone(&provider)).await?;
        let staged_rows = cx.session.read_table(provider).map_err(|e| RunError::query(&cx.node.name, e))?;
        let mut outcome = write_overwrite(cx, staged_rows, plan_time, transactions).await?;
        outcome.tests = Some(tests);
        Ok(outcome)
    }
    .await;
    // Published or refused, the staged copy has served its purpose.
    if let Err(err) = cx.warehouse.drop_table(&staged).await {
        tracing::warn!("staged result {staged} not removed: {err}");
    }
    published
}

/// The frame's rows as the staged result's contents, written by delta-rs.
async fn write_staged(
    cx: &ModelContext<'_>,
    staging: deltalake::DeltaTable,
    frame: &datafusion::prelude::DataFrame,
) -> Result<deltalake::DeltaTable, RunError> {
    staging
        .write(Vec::new())
        .with_writer_properties(super::writer_properties(cx.node))
        .with_input_plan(frame.logical_plan().clone())
        .with_session_state(Arc::new(cx.session.state()))
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(SchemaMode::Overwrite)
        .await
        .map_err(|e| RunError::write(&cx.node.name, e))
}

/// With the Ballista engine: the frame's rows written by the cluster's executors and committed here as the table's
/// contents. `Here` on the local engine, or with why the cluster does not take this write (a seed, a query reading
/// this machine's files): delta-rs or pipe's local writers write it here then.
async fn on_cluster(
    cx: &ModelContext<'_>,
    table: &deltalake::DeltaTable,
    frame: &datafusion::prelude::DataFrame,
    transactions: Vec<Transaction>,
) -> Result<Placement, RunError> {
    let Some(_scheduler) = cx.engine.scheduler() else { return Ok(Placement::Here(None)) };
    #[cfg(feature = "ballista")]
    {
        let metadata = cx.commit_metadata();
        return crate::run::cluster::write::overwrite(cx, table, frame.clone(), metadata, transactions, _scheduler)
            .await;
    }
    #[cfg(not(feature = "ballista"))]
    {
        let _ = (table, frame, transactions);
        Err(RunError::Internal("`engine: ballista` needs a pipe built with the `ballista` feature".into()))
    }
}

/// Replaces the table's contents with the frame's rows in one commit.
/// `transactions` (Delta application transactions: a ledger) are committed with the rows.
async fn write_overwrite(
    cx: &ModelContext<'_>,
    frame: datafusion::prelude::DataFrame,
    plan_time: std::time::Duration,
    transactions: Vec<Transaction>,
) -> Result<Outcome, RunError> {
    let started = Instant::now();
    let relation = &cx.node.relation;
    let table = cx.warehouse.table_for_write(relation).await?;
    let here = match on_cluster(cx, &table, &frame, transactions.clone()).await? {
        Placement::Cluster(table) => return outcome(cx, &table, plan_time, started).await,
        Placement::Here(why) => why,
    };
    let mut written = write_here(cx, table, frame, plan_time, started, transactions).await?;
    if let Some(why) = here {
        written.note = Some(format!("ran on this machine, not the cluster: {why}"));
    }
    Ok(written)
}

/// `write_overwrite` in this process.
async fn write_here(
    cx: &ModelContext<'_>,
    table: deltalake::DeltaTable,
    frame: datafusion::prelude::DataFrame,
    plan_time: std::time::Duration,
    started: Instant,
    transactions: Vec<Transaction>,
) -> Result<Outcome, RunError> {
    let metadata = cx.commit_metadata();
    let partitions = cx.node.settings.partition_by.clone();
    // pipe's parallel writers commit rows and metadata; a ledger goes through delta-rs's write.
    if partitions.is_empty() && transactions.is_empty() {
        if let Some(table) = super::parallel_write::overwrite(cx, &table, frame.clone(), metadata.clone()).await? {
            return outcome(cx, &table, plan_time, started).await;
        }
    }
    let mut write = table.write(Vec::new()).with_writer_properties(super::writer_properties(cx.node));
    if !partitions.is_empty() {
        write = write.with_partition_columns(partitions);
    }
    let table = write
        .with_input_plan(frame.logical_plan().clone())
        .with_session_state(Arc::new(cx.session.state()))
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(SchemaMode::Overwrite)
        .with_commit_properties(
            CommitProperties::default().with_metadata(metadata).with_application_transactions(transactions),
        )
        .await
        .map_err(|e| RunError::write(&cx.node.name, e))?;
    outcome(cx, &table, plan_time, started).await
}

async fn outcome(
    cx: &ModelContext<'_>,
    table: &deltalake::DeltaTable,
    plan_time: std::time::Duration,
    started: Instant,
) -> Result<Outcome, RunError> {
    let commit = cx.warehouse.last_commit(table).await?;
    let provider = cx.warehouse.provider(table).await?;
    Ok(Outcome {
        rows_written: commit.rows_added,
        delta_version: Some(commit.version),
        provider: Some(provider),
        note: None,
        plan_time,
        write_time: started.elapsed(),
        tests: None,
        execute_time: commit.execute_time,
        rows_read: None,
    })
}
