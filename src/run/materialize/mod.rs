//! Materializations: how a model's query becomes a table or a view. One trait, one file per kind; the incremental
//! strategies plug in here.

pub mod external;
mod incremental;
mod ingest;
mod ledger;
pub mod microbatch;
mod parallel_write;
#[cfg(feature = "ballista")]
pub(crate) use parallel_write::{as_table_batch, commit, prepare};
mod seed;
mod snapshot;
mod table;
mod view;

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};

pub use seed::SeedLoad;

use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;

use super::RunError;
use crate::manifest::Node;
use crate::manifest::TestNode;
use crate::project::settings::{AnomalySeverity, ParquetCompression};
use crate::project::Materialization;
use crate::quality::{TestOutcome, TestStatus};
use crate::run::accounting::account;
use crate::warehouse::results::{NodeResult, NodeStatus, Timing};
use crate::warehouse::Warehouse;

/// What a materialization needs to run one model.
pub struct ModelContext<'a> {
    pub node: &'a Node,
    pub session: &'a SessionContext,
    pub warehouse: &'a Warehouse,
    pub run_id: &'a str,
    pub full_refresh: bool,
    /// For views: compute the result once for this run instead of inlining the view into every reader.
    pub compute_once: bool,
    pub project_root: &'a std::path::Path,
    /// For a bronze model over one file source: the source, whose files it ingests exactly once each.
    pub file_source: Option<&'a crate::manifest::SourceNode>,
    /// The compile's analyzed plan of `node.compiled_sql`, when this process planned it.
    pub compiled_plan: Option<&'a LogicalPlan>,
    /// Set when the compile's plan was executed rather than the SQL planned again.
    pub plan_reused: std::sync::atomic::AtomicBool,
    /// The event-time range a microbatch model covers in this run.
    pub event_time: &'a microbatch::EventTimeWindow,
    /// Told of progress inside the model.
    pub events: &'a [Arc<dyn crate::run::BuildEvents>],
    /// A digest of the versions of the tables and the files this model reads, recorded with its commits.
    pub inputs: Option<String>,
    pub manifest: &'a crate::manifest::Manifest,
    /// The tests this model's build runs on its new result (`quality::execute::audit_tests`).
    pub tests: Vec<&'a TestNode>,
    /// Collects the executed plans of the model's own query, for its row accounting.
    pub accounting: Arc<crate::run::accounting::RowAccounting>,
    /// Bronze ingestion leaves files changed more recently than this for a later build (a model's
    /// `settle_interval` overrides it).
    pub settle_interval: Duration,
    /// Failures the tests inject (`run::BuildOptions::failpoints`).
    pub failpoints: &'a [String],
    /// Renders the tests whose render asks the warehouse (`TestNode::render_at_build`) before they run.
    pub renderer: Option<&'a Arc<crate::compile::BuildRenderer>>,
    /// Where the model's query runs.
    pub engine: &'a crate::project::Engine,
}

impl ModelContext<'_> {
    /// pipe's commit metadata for a write of this model.
    pub fn commit_metadata(&self) -> std::collections::HashMap<String, serde_json::Value> {
        let mut metadata = Warehouse::commit_metadata(self.run_id, &self.node.unique_id, &self.node.checksum);
        if let Some(inputs) = &self.inputs {
            metadata.insert(crate::warehouse::META_INPUTS.to_string(), serde_json::Value::String(inputs.clone()));
        }
        metadata
    }
}

/// Where a whole-table write ran (`table::on_cluster`).
pub(crate) enum Placement {
    /// On the cluster: the table at its new version (only a pipe built with the `ballista` feature has one).
    #[cfg_attr(not(feature = "ballista"), allow(dead_code))]
    Cluster(deltalake::DeltaTable),
    /// Not on a cluster: the caller writes it here. With the Ballista engine, why the cluster did not take it.
    Here(Option<String>),
}

/// The result of one materialization.
#[derive(Default)]
pub struct Outcome {
    pub rows_written: Option<u64>,
    pub delta_version: Option<i64>,
    /// What downstream models of this run read, registered under the node's relation.
    pub provider: Option<Arc<dyn TableProvider>>,
    pub note: Option<String>,
    pub plan_time: Duration,
    /// Executing the query, writing data files and committing.
    pub write_time: Duration,
    /// The part of `write_time` before the commit, as Delta's operation metrics report it.
    pub execute_time: Option<Duration>,
    /// The model's tests, when the materialization ran them on the new result before publishing it.
    pub tests: Option<Vec<TestOutcome>>,
    /// Rows read per upstream when the materialization counted them itself (bronze ingestion reads its files
    /// outside the model's query).
    pub rows_read: Option<std::collections::BTreeMap<String, u64>>,
}

impl Outcome {
    /// The node's result for the run's results and history.
    pub fn result(&self, node: &Node, elapsed: Duration, render: Duration) -> NodeResult {
        let execute = self.execute_time.unwrap_or_default().min(self.write_time);
        NodeResult {
            rows_written: self.rows_written,
            delta_version: self.delta_version,
            timing: Timing {
                render_seconds: render.as_secs_f64(),
                plan_seconds: self.plan_time.as_secs_f64(),
                execute_seconds: execute.as_secs_f64(),
                commit_seconds: (self.write_time - execute).as_secs_f64(),
                total_seconds: elapsed.as_secs_f64(),
            },
            message: self.note.clone(),
            ..NodeResult::base(node, NodeStatus::Success)
        }
    }
}

/// With an enforced contract: the result's columns against the declared ones, before anything is written.
pub(super) fn check_contract(node: &Node, schema: &datafusion::arrow::datatypes::Schema) -> Result<(), RunError> {
    if !crate::compile::contract::enforced(node) {
        return Ok(());
    }
    let differences = crate::compile::contract::differences(node, schema);
    if differences.is_empty() {
        return Ok(());
    }
    Err(RunError::Contract(format!(
        "model `{}` does not match its contract; nothing was written:\n{}",
        node.name,
        differences.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n")
    )))
}

/// The schema staged results are registered in while their tests run.
pub use crate::warehouse::STAGING_SCHEMA;

impl ModelContext<'_> {
    /// The tests declared on this model (or seed) that read nothing but it, its ancestors and sources: they can
    /// run on its new result before it is published. The others (a `relationships` test into a model built in
    /// parallel) run once everything they read is built.
    pub fn attached_tests(&self) -> &[&TestNode] {
        &self.tests
    }

    /// The name the model's staged result is registered under while its tests run.
    pub fn staged_relation(&self) -> String {
        format!("{STAGING_SCHEMA}.{}", self.node.relation.replace('.', "__"))
    }

    /// Write-audit-publish: runs the model's tests on `new_result` (registered under the staged name), and fails
    /// when an error-severity test fails, naming the tests with their failing-row counts and samples.
    /// With `anomaly_severity: error`: refuses, unpublished, a result whose row count is outside the model's
    /// normal range in the run history.
    pub async fn refuse_anomalous_rows(&self, rows: u64) -> Result<(), RunError> {
        if self.node.settings.anomaly_severity != AnomalySeverity::Error {
            return Ok(());
        }
        let history = crate::quality::observe::history(self.warehouse, self.run_id).await?;
        let runs = history.get(&self.node.unique_id).map(Vec::as_slice).unwrap_or_default();
        match crate::quality::observe::rows_anomaly(&self.node.relation, runs, rows) {
            Some(anomaly) => Err(RunError::AnomalyRefused(format!(
                "{anomaly}\nthe new result was not published; the table keeps its previous version"
            ))),
            None => Ok(()),
        }
    }

    pub async fn audit(&self, new_result: Arc<dyn TableProvider>) -> Result<Vec<TestOutcome>, RunError> {
        let tests = self.attached_tests();
        let outcomes = crate::quality::run_tests(
            self.session,
            Some(self.warehouse),
            tests,
            &[(self.node.relation.clone(), new_result)],
            self.renderer,
        )
        .await;
        let failed: Vec<String> = outcomes
            .iter()
            .zip(tests)
            .filter(|(o, t)| {
                o.status == TestStatus::Fail
                    || (o.status == TestStatus::Error && t.severity == crate::manifest::Severity::Error)
            })
            .map(|(o, _)| format!("test `{}` failed: {}", o.name, o.message.as_deref().unwrap_or("")))
            .collect();
        if !failed.is_empty() {
            return Err(RunError::TestFailed {
                message: format!(
                    "{}\nthe new result was not published; the table keeps its previous version",
                    failed.join("\n")
                ),
                outcomes,
            });
        }
        Ok(outcomes)
    }
}

#[async_trait::async_trait]
pub trait Materialize: Send + Sync {
    fn kind(&self) -> Materialization;
    /// Runs the model and publishes its result in one step; on error the previous result is left as it was.
    async fn run(&self, cx: &ModelContext<'_>) -> Result<Outcome, RunError>;
}

/// The materialization for a kind.
pub fn for_kind(kind: Materialization) -> Option<&'static dyn Materialize> {
    match kind {
        Materialization::Table => Some(&table::TableMaterialization),
        Materialization::View => Some(&view::ViewMaterialization),
        Materialization::Incremental => Some(&incremental::IncrementalMaterialization),
        Materialization::External => Some(&external::ExternalMaterialization),
        Materialization::Snapshot => Some(&snapshot::SnapshotMaterialization),
        // Ephemeral models are inlined at compile time and never run.
        Materialization::Ephemeral => None,
    }
}

/// Parquet settings for a model's data files, from its `parquet_compression` config: `lz4` (LZ4_RAW, the
/// default: about 15% faster builds than Snappy here, read by Spark 3.4+, DuckDB, Polars, delta-rs), `snappy`
/// (for older readers), `zstd` (smaller files) or `none`; and `parquet_dictionary_page_size` (bytes, default 16 KiB).
pub(crate) fn writer_properties(node: &Node) -> WriterProperties {
    parquet_writer_properties(node.settings.parquet_compression, node.settings.parquet_dictionary_page_size)
}

/// [`writer_properties`] from the two settings (what an executor is sent).
pub(crate) fn parquet_writer_properties(
    compression: ParquetCompression,
    dictionary_page_size: u64,
) -> WriterProperties {
    let compression = match compression {
        ParquetCompression::Snappy => Compression::SNAPPY,
        ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
        ParquetCompression::None => Compression::UNCOMPRESSED,
        ParquetCompression::Lz4 => Compression::LZ4_RAW,
    };
    // A small dictionary page (`DEFAULT_DICTIONARY_PAGE_SIZE`): a column with few distinct values still gets its
    // dictionary, one with many (ids, timestamps) falls back to plain encoding after 16 KiB instead of hashing its
    // first 1 MiB of values per row group.
    let dictionary_page = usize::try_from(dictionary_page_size).unwrap_or(usize::MAX);
    WriterProperties::builder()
        .set_created_by(format!("pipe {}", env!("CARGO_PKG_VERSION")))
        .set_compression(compression)
        .set_dictionary_page_size_limit(dictionary_page)
        .build()
}

/// A table as it will be once a batch is applied: the `kept` old rows, cast to the batch's columns (a column the
/// table lacks is null for them), then the batch's rows.
pub(crate) fn kept_then_batch(
    kept: DataFrame,
    schema: &datafusion::arrow::datatypes::Schema,
    batch: DataFrame,
) -> datafusion::error::Result<DataFrame> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{col, lit, ExprSchemable};
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let name = field.name();
            match kept.schema().has_column_with_unqualified_name(name) {
                true => Ok(col(format!("\"{name}\"")).cast_to(field.data_type(), kept.schema())?.alias(name)),
                false => Ok(lit(ScalarValue::try_from(field.data_type())?).alias(name)),
            }
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    kept.select(columns)?.union(batch)
}

/// `frame`'s rows computed and held for checking and applying (`run::staged`): on the cluster with the Ballista
/// engine (its rows streamed back here), unless the query reads what only this machine sees; else here.
pub(crate) async fn stage(
    cx: &ModelContext<'_>,
    frame: DataFrame,
    digest: bool,
) -> Result<crate::run::staged::Staged, RunError> {
    let query = |e| RunError::query(&cx.node.name, e);
    #[cfg(feature = "ballista")]
    if let Some(scheduler) = cx.engine.scheduler() {
        let plan = frame.clone().create_physical_plan().await.map_err(query)?;
        if crate::run::cluster::write::local_input(&plan, cx.warehouse).is_none() {
            let schema = plan.schema();
            let config = crate::run::cluster::job_config(cx.session.state().config());
            let stream = crate::run::cluster::execute(plan, scheduler, config).await.map_err(query)?;
            return crate::run::staged::Staged::from_streams(cx.session, schema, vec![stream], digest)
                .await
                .map_err(query);
        }
    }
    crate::run::staged::Staged::new(cx.session, frame, digest).await.map_err(query)
}

/// Plans a model's SQL to be executed, under the model's row accounting (`run::accounting`).
pub(crate) async fn plan(cx: &ModelContext<'_>, sql: &str) -> Result<DataFrame, RunError> {
    plan_in(cx, cx.session, sql).await
}

/// `plan` in another session than the build's (one where some relations are other tables:
/// `warehouse::with_overrides`).
pub(crate) async fn plan_in(cx: &ModelContext<'_>, session: &SessionContext, sql: &str) -> Result<DataFrame, RunError> {
    Ok(accounted(cx, plan_query_in(cx, session, sql).await?))
}

/// `frame` under the model's row accounting.
pub(crate) fn accounted(cx: &ModelContext<'_>, frame: DataFrame) -> DataFrame {
    let (state, plan) = frame.into_parts();
    DataFrame::new(state, account(plan, &cx.accounting))
}

/// Plans a model's SQL against the session; planning errors name the model. The compiled SQL re-uses the
/// compile's plan when its inputs still have the schemas it was planned against. Not accounted: for a plan other
/// queries inline (a view), where the accounting node would stop their filters and projections at it.
pub(crate) async fn plan_query(cx: &ModelContext<'_>, sql: &str) -> Result<DataFrame, RunError> {
    plan_query_in(cx, cx.session, sql).await
}

async fn plan_query_in(cx: &ModelContext<'_>, session: &SessionContext, sql: &str) -> Result<DataFrame, RunError> {
    if let Some(plan) = cx.compiled_plan.filter(|_| sql == cx.node.compiled_sql) {
        if let Some(plan) = rebind(session, plan).await {
            cx.plan_reused.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(DataFrame::new(session.state(), plan));
        }
    }
    crate::sql::duckdb::sql(session, sql).await.map_err(|e| RunError::query(&cx.node.name, e))
}

/// `plan` with its scans bound to the session's tables instead of the compile's empty ones; `None` when a table is
/// missing, is a view, or its schema differs in any field (name, type or nullability) from what the compile planned against.
async fn rebind(session: &SessionContext, plan: &LogicalPlan) -> Option<LogicalPlan> {
    let mut names = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            names.push(scan.table_name.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    let mut providers = HashMap::new();
    for name in names {
        let provider = session.table_provider(name.clone()).await.ok()?;
        // A view (read from an earlier run, or built in this one): its scan bound into the compile's plan made
        // DataFusion's physical optimizer fail on the view's joins (`join_selection`: "Cannot swap HashJoinExec
        // inputs after dynamic filters have been constructed"). Planning the SQL again binds and inlines the view as
        // any query does.
        if provider.get_logical_plan().is_some() {
            return None;
        }
        providers.insert(name, provider);
    }
    let rebound = plan.clone().transform_up_with_subqueries(|node| match node {
        LogicalPlan::TableScan(mut scan) => {
            let provider = &providers[&scan.table_name];
            let (planned, actual) = (scan.source.schema(), provider.schema());
            let same = planned.fields().len() == actual.fields().len()
                && planned.fields().iter().zip(actual.fields()).all(|(p, a)| {
                    p.name() == a.name() && p.data_type() == a.data_type() && p.is_nullable() == a.is_nullable()
                });
            if !same {
                return Err(DataFusionError::Plan(format!("`{}` changed since compile", scan.table_name)));
            }
            scan.source = provider_as_source(Arc::clone(provider));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        }
        other => Ok(Transformed::no(other)),
    });
    rebound.ok().map(|t| t.data)
}
