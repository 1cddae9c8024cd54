//! Row accounting of one model's query: rows read from each upstream, rows removed by filters, rows removed by
//! deduplication, taken from the metrics of the physical plan that actually ran.
//!
//! [`account`] puts an [`AccountNode`] on top of a model's logical plan. It plans to an [`AccountExec`], which
//! passes its input's batches through unchanged and, when executed, hands its (final, optimized) input plan to the
//! model's [`RowAccounting`]. Once the write is done, [`RowAccounting::summary`] walks those plans: leaves that
//! scan files are attributed to the table or source that owns the files, `FilterExec` nodes give the rows they
//! removed (and Parquet scans the rows their pushed-down filters removed), `KeepFirstExec` nodes and groupings
//! without aggregates (`select distinct`) the duplicates they dropped. Nothing is counted twice and no query runs again.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchemaRef, Result};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::context::TaskContext;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties, SendableRecordBatchStream,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

/// The plans one model executed, collected as they run, and the metrics of the jobs it ran on a cluster.
#[derive(Debug, Default)]
pub struct RowAccounting {
    plans: Mutex<Vec<Arc<dyn ExecutionPlan>>>,
    jobs: Mutex<Vec<Vec<RemoteStage>>>,
}

/// One stage of a job a cluster ran: its operators in plan order (depth first), with their metrics summed over
/// the stage's tasks, as the scheduler reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteStage {
    pub stage: u32,
    pub operators: Vec<RemoteOperator>,
}

/// An operator of a stage a cluster ran.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteOperator {
    pub depth: u32,
    /// Its name (`FilterExec`, `DataSourceExec`, ...).
    pub name: String,
    /// Its one-line description (`DataSourceExec: file_groups={...}, projection=[...]`).
    pub detail: String,
    pub output_rows: Option<u64>,
    /// Rows a Parquet scan's pushed-down filter removed.
    pub pruned_rows: u64,
    pub compute_seconds: Option<f64>,
    pub spill_count: Option<u64>,
    pub spilled_bytes: Option<u64>,
}

impl RemoteOperator {
    pub fn new(depth: u32, name: String, detail: String, metrics: &MetricsSet) -> RemoteOperator {
        RemoteOperator {
            depth,
            name,
            detail,
            output_rows: metrics.output_rows().map(|r| r as u64),
            pruned_rows: metrics.sum_by_name("pushdown_rows_pruned").map_or(0, |v| v.as_usize() as u64),
            compute_seconds: metrics.elapsed_compute().map(|ns| ns as f64 / 1e9),
            spill_count: metrics.spill_count().map(|c| c as u64),
            spilled_bytes: metrics.spilled_bytes().map(|b| b as u64),
        }
    }
}

/// What a model's executed plans did to rows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RowSummary {
    /// Rows scanned from each upstream relation, keyed by relation. Files and row groups skipped by their
    /// statistics (Delta's data skipping, Parquet pruning) are not read and not counted.
    pub read: BTreeMap<String, u64>,
    /// Rows removed by filters (`where`, `having`, a join's residual filter, an incremental watermark).
    pub filtered: u64,
    /// Rows dropped as duplicates: by a `row_number() ... = 1` deduplication or a `select distinct`.
    pub deduplicated: u64,
}

impl RowAccounting {
    fn record(&self, plan: Arc<dyn ExecutionPlan>) {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if !plans.iter().any(|p| Arc::ptr_eq(p, &plan)) {
            plans.push(plan);
        }
    }

    /// Records the metrics of a job the model's query ran as on a cluster (`run::cluster`).
    pub fn record_job(&self, stages: Vec<RemoteStage>) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).push(stages);
    }

    /// Whether any accounted plan or job has run.
    pub fn is_empty(&self) -> bool {
        self.plans.lock().map(|p| p.is_empty()).unwrap_or(true)
            && self.jobs.lock().map(|j| j.is_empty()).unwrap_or(true)
    }

    /// Sums the metrics of every plan that ran. `owner` maps a scanned file's object-store path to the relation
    /// it belongs to; files it does not know (in-memory batches, the model's own table) are not counted as read.
    pub fn summary(&self, owner: &dyn Fn(&str) -> Option<String>) -> RowSummary {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let mut summary = RowSummary::default();
        for plan in plans.iter() {
            walk(plan, owner, &mut summary);
        }
        for job in self.jobs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            walk_job(job, owner, &mut summary);
        }
        summary
    }
}

impl RowAccounting {
    /// Every operator of every plan that ran, depth first, with its metrics: what `EXPLAIN ANALYZE` would print
    /// for the model's queries, without running them again.
    pub fn operators(&self) -> Vec<crate::warehouse::results::OperatorRun> {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let mut operators = Vec::new();
        for (index, plan) in plans.iter().enumerate() {
            let first = operators.len();
            collect_operators(plan, index as u32, first, 0, &mut operators);
        }
        // A job's stages, each as one plan, in the order the scheduler lists them.
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        for (index, stage) in jobs.iter().flatten().enumerate() {
            for (position, operator) in stage.operators.iter().enumerate() {
                operators.push(crate::warehouse::results::OperatorRun {
                    plan: (plans.len() + index) as u32,
                    position: position as u32,
                    depth: operator.depth,
                    operator: operator.name.clone(),
                    detail: truncated(&operator.detail),
                    output_rows: operator.output_rows,
                    compute_seconds: operator.compute_seconds,
                    spill_count: operator.spill_count,
                    spilled_bytes: operator.spilled_bytes,
                });
            }
        }
        operators
    }
}

/// Appends `plan`'s operators depth first; the plan's own operators start at `first` in `operators`.
fn collect_operators(
    plan: &Arc<dyn ExecutionPlan>,
    index: u32,
    first: usize,
    depth: u32,
    operators: &mut Vec<crate::warehouse::results::OperatorRun>,
) {
    let metrics = plan.metrics();
    let detail = truncated(&datafusion::physical_plan::displayable(plan.as_ref()).one_line().to_string());
    operators.push(crate::warehouse::results::OperatorRun {
        plan: index,
        position: (operators.len() - first) as u32,
        depth,
        operator: plan.name().to_string(),
        detail,
        output_rows: metrics.as_ref().and_then(|m| m.output_rows()).map(|r| r as u64),
        compute_seconds: metrics.as_ref().and_then(|m| m.elapsed_compute()).map(|ns| ns as f64 / 1e9),
        spill_count: metrics.as_ref().and_then(|m| m.spill_count()).map(|c| c as u64),
        spilled_bytes: metrics.as_ref().and_then(|m| m.spilled_bytes()).map(|b| b as u64),
    });
    for child in plan.children() {
        collect_operators(child, index, first, depth + 1, operators);
    }
}

/// An operator's description, cut at 200 characters.
fn truncated(detail: &str) -> String {
    match detail.trim_end().char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &detail[..cut]),
        None => detail.trim_end().to_string(),
    }
}

/// [`walk`] over a job's stages, as the scheduler reports them: the same operators counted the same way. A stage
/// boundary splits a plan where it shuffles, so a `select distinct`'s two phases are in different stages: their
/// input and output are summed over the job.
fn walk_job(stages: &[RemoteStage], owner: &dyn Fn(&str) -> Option<String>, summary: &mut RowSummary) {
    let (mut distinct_in, mut distinct_out) = (0u64, 0u64);
    for stage in stages {
        let operators = &stage.operators;
        for (i, operator) in operators.iter().enumerate() {
            // Its input: its first child, looking through the nodes that move rows without counting them.
            let input = || {
                let (mut j, mut depth) = (i + 1, operator.depth + 1);
                while let Some(next) = operators.get(j).filter(|n| n.depth == depth) {
                    if next.output_rows.is_some() {
                        return next.output_rows;
                    }
                    if !["RepartitionExec", "CoalescePartitionsExec"].contains(&next.name.as_str()) {
                        return None;
                    }
                    (j, depth) = (j + 1, depth + 1);
                }
                None
            };
            match operator.name.as_str() {
                "FilterExec" => {
                    if let (Some(input), Some(output)) = (input(), operator.output_rows) {
                        summary.filtered += input.saturating_sub(output);
                    }
                }
                "KeepFirstExec" => {
                    if let (Some(input), Some(output)) = (input(), operator.output_rows) {
                        summary.deduplicated += input.saturating_sub(output);
                    }
                }
                "AggregateExec" if operator.detail.contains("aggr=[]") => {
                    let partial = operator.detail.contains("mode=Partial");
                    let single = operator.detail.contains("mode=Single");
                    if partial || single {
                        distinct_in += input().unwrap_or(0);
                    }
                    if !partial {
                        distinct_out += operator.output_rows.unwrap_or(0);
                    }
                }
                "DataSourceExec" => {
                    let Some(rows) = operator.output_rows else { continue };
                    summary.filtered += operator.pruned_rows;
                    if let Some(relation) = first_parquet_file(&operator.detail).and_then(owner) {
                        *summary.read.entry(relation).or_default() += rows + operator.pruned_rows;
                    }
                }
                _ => {}
            }
        }
    }
    summary.deduplicated += distinct_in.saturating_sub(distinct_out);
}

/// The first Parquet file a scan's description names (`file_groups={1 group: [[path/part-0.parquet, ...]]}`).
fn first_parquet_file(detail: &str) -> Option<&str> {
    let groups = &detail[detail.find("file_groups=")?..];
    groups
        .split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace())
        .find(|token| token.ends_with(".parquet"))
}

fn walk(plan: &Arc<dyn ExecutionPlan>, owner: &dyn Fn(&str) -> Option<String>, summary: &mut RowSummary) {
    let node = plan.as_ref();
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        if let (Some(input), Some(output)) = (rows_out(filter.input()), rows_out(plan)) {
            summary.filtered += input.saturating_sub(output);
        }
    } else if plan.name() == "KeepFirstExec" {
        if let (Some(input), Some(output)) = (rows_out(plan.children()[0]), rows_out(plan)) {
            summary.deduplicated += input.saturating_sub(output);
        }
    } else if let Some(distinct) = node.downcast_ref::<AggregateExec>().filter(|a| is_final_distinct(a)) {
        // `select distinct` (a grouping without aggregates): its input is the first phase's input, if it has one.
        let first_phase = below_moves(distinct.input());
        let input = match first_phase.downcast_ref::<AggregateExec>() {
            Some(partial) if *partial.mode() == AggregateMode::Partial => rows_out(partial.input()),
            _ => rows_out(distinct.input()),
        };
        if let (Some(input), Some(output)) = (input, rows_out(plan)) {
            summary.deduplicated += input.saturating_sub(output);
        }
    } else if let Some(source) = node.downcast_ref::<DataSourceExec>() {
        if let (Some(config), Some(rows)) =
            (source.data_source().as_ref().downcast_ref::<FileScanConfig>(), rows_out(plan))
        {
            // Rows a Parquet scan filtered itself (a `where` pushed into the scan) were read and then filtered.
            let pruned = plan.metrics().and_then(|m| m.sum_by_name("pushdown_rows_pruned")).map_or(0, |v| v.as_usize());
            summary.filtered += pruned as u64;
            let file = config.file_groups.iter().flat_map(|g| g.files()).next();
            if let Some(relation) = file.and_then(|f| owner(f.object_meta.location.as_ref())) {
                *summary.read.entry(relation).or_default() += rows + pruned as u64;
            }
        }
    }
    for child in plan.children() {
        walk(child, owner, summary);
    }
}

fn is_final_distinct(aggregate: &AggregateExec) -> bool {
    aggregate.aggr_expr().is_empty() && *aggregate.mode() != AggregateMode::Partial
}

/// The first node under `plan` that is not one of the nodes that only move rows.
fn below_moves(plan: &Arc<dyn ExecutionPlan>) -> &dyn ExecutionPlan {
    match plan.children().as_slice() {
        [child] if moves_rows(plan.as_ref()) => below_moves(child),
        _ => plan.as_ref(),
    }
}

fn moves_rows(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<RepartitionExec>().is_some()
        || node.downcast_ref::<CoalescePartitionsExec>().is_some()
        || node.downcast_ref::<AccountExec>().is_some()
}

/// The rows a node produced, looking through the nodes that move rows without changing their number (their
/// metrics do not all count output rows).
fn rows_out(plan: &Arc<dyn ExecutionPlan>) -> Option<u64> {
    if let Some(rows) = plan.metrics().and_then(|m| m.output_rows()) {
        return Some(rows as u64);
    }
    match plan.children().as_slice() {
        [child] if moves_rows(plan.as_ref()) => rows_out(child),
        _ => None,
    }
}

/// `plan` under an [`AccountNode`] that reports to `accounting`.
pub fn account(plan: LogicalPlan, accounting: &Arc<RowAccounting>) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(AccountNode { input: plan, accounting: Arc::clone(accounting) }),
    })
}

/// The logical side: the input's rows and schema, unchanged.
#[derive(Debug, Clone)]
pub struct AccountNode {
    input: LogicalPlan,
    accounting: Arc<RowAccounting>,
}

impl PartialEq for AccountNode {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input && Arc::ptr_eq(&self.accounting, &other.accounting)
    }
}

impl Eq for AccountNode {}

impl PartialOrd for AccountNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.input.partial_cmp(&other.input)
    }
}

impl Hash for AccountNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
    }
}

impl UserDefinedLogicalNodeCore for AccountNode {
    fn name(&self) -> &str {
        "Account"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Account")
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(Self { input: inputs.swap_remove(0), accounting: Arc::clone(&self.accounting) })
    }
}

pub(crate) struct AccountPlanner;

#[async_trait]
impl ExtensionPlanner for AccountPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<AccountNode>() else { return Ok(None) };
        Ok(Some(Arc::new(AccountExec::new(Arc::clone(&physical_inputs[0]), Arc::clone(&node.accounting)))))
    }
}

/// The physical side: executes its input as it is and records it for the accounting.
#[derive(Debug)]
pub struct AccountExec {
    input: Arc<dyn ExecutionPlan>,
    accounting: Arc<RowAccounting>,
    properties: Arc<PlanProperties>,
}

impl AccountExec {
    fn new(input: Arc<dyn ExecutionPlan>, accounting: Arc<RowAccounting>) -> Self {
        let properties = Arc::clone(input.properties());
        Self { input, accounting, properties }
    }

    /// The accounting it reports to.
    pub fn accounting(&self) -> &Arc<RowAccounting> {
        &self.accounting
    }
}

impl DisplayAs for AccountExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "AccountExec")
    }
}

impl ExecutionPlan for AccountExec {
    fn name(&self) -> &str {
        "AccountExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(AccountExec::new(children.swap_remove(0), Arc::clone(&self.accounting))))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.accounting.record(Arc::clone(&self.input));
        self.input.execute(partition, context)
    }
}
