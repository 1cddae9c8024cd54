//! Dedupe by key without a sort.
//!
//! `row_number() over (partition by k order by o) ... where rn = 1` is the most common silver pattern, and
//! DataFusion runs it as a full sort of the input followed by a window. [`DedupeRule`] rewrites the logical
//! `Filter(rn = 1)` over a lone `row_number()` window into a [`KeepFirstNode`]: one hash table keyed by `k` holding,
//! for each key, the row that sorts first by `o`. It is linear in the input instead of `n log n`, and the input is
//! hash-partitioned by key so the partitions run in parallel.
//!
//! Ties: `row_number()` numbers tied rows in an unspecified order, so which tied row survives depends on file order
//! and thread timing. [`KeepFirstExec`] breaks ties by comparing every column, ascending, nulls first: the survivor is
//! the same whatever the order rows arrive in, which is one of the orders `row_number()` allows.
//!
//! Memory: the operator keeps each key's current winner (with a compaction pass whenever dropped rows outnumber
//! them), accounted in the session's memory pool. When the pool refuses more, the winners so far are sorted (by key,
//! then as the window orders, then by every column) and written to disk as a run, and the table starts again; at
//! the end the runs are merged with DataFusion's spilling merge and the first row of each key is kept: the same rows
//! as in memory, in bounded memory (`--memory-limit`).

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::make_comparator;
use datafusion::arrow::array::{new_empty_array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{filter_record_batch, interleave_record_batch, SortOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DFSchemaRef, Result, ScalarValue};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Extension, Filter, LogicalPlan, Operator, Projection, SortExpr,
    UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::aggregates::group_values::new_group_values;
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, SpillMetrics};
use datafusion::physical_plan::sorts::sort::sort_batch_chunked;
use datafusion::physical_plan::sorts::streaming_merge::{SortedSpillFile, StreamingMergeBuilder};
use datafusion::physical_plan::spill::SpillManager;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, PhysicalExpr, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use deltalake::delta_datafusion::planner::DeltaExtensionPlanner;
use futures::{StreamExt, TryStreamExt};

/// The query planner of a build session: DataFusion's, with delta-rs's extension nodes and [`KeepFirstNode`].
#[derive(Debug)]
pub struct PipeQueryPlanner;

#[async_trait]
impl QueryPlanner for PipeQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planner = DefaultPhysicalPlanner::with_extension_planners(vec![
            DeltaExtensionPlanner::new(),
            Arc::new(KeepFirstPlanner),
            Arc::new(super::accounting::AccountPlanner),
        ]);
        planner.create_physical_plan(logical_plan, session_state).await
    }
}

/// Rewrites `Filter(rn = 1)` over a window holding only `rn = row_number() over (partition by ..)` into
/// `Projection(<input columns>, 1 as rn)` over a [`KeepFirstNode`].
#[derive(Debug, Default)]
pub struct DedupeRule;

impl OptimizerRule for DedupeRule {
    fn name(&self) -> &str {
        "pipe_dedupe_by_key"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = &plan else { return Ok(Transformed::no(plan)) };
        // The window, or a projection that only selects columns of it (what pruning unused columns leaves).
        let (window, selection) = match filter.input.as_ref() {
            LogicalPlan::Window(window) => (window, None),
            LogicalPlan::Projection(projection) => match projection.input.as_ref() {
                LogicalPlan::Window(window) if projection.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
                    (window, Some(projection))
                }
                _ => return Ok(Transformed::no(plan)),
            },
            _ => return Ok(Transformed::no(plan)),
        };
        let [Expr::WindowFunction(function)] = window.window_expr.as_slice() else { return Ok(Transformed::no(plan)) };
        let WindowFunction { fun, params } = function.as_ref();
        if fun.name() != "row_number"
            || params.partition_by.is_empty()
            || !params.args.is_empty()
            || params.filter.is_some()
            || !supported(window.input.schema(), &params.partition_by, &params.order_by)
        {
            return Ok(Transformed::no(plan));
        }
        let input_width = window.input.schema().fields().len();
        let (qualifier, rn_field) = window.schema.qualified_field(input_width);
        let rn = Column::new(qualifier.cloned(), rn_field.name());
        let mut conjuncts = split_conjunction_owned(filter.predicate.clone());
        let Some(first) = conjuncts.iter().position(|c| keeps_only_first(c, &rn)) else {
            return Ok(Transformed::no(plan));
        };
        conjuncts.remove(first);

        let node = KeepFirstNode {
            input: Arc::clone(&window.input),
            partition_by: params.partition_by.clone(),
            order_by: params.order_by.clone(),
        };
        let mut exprs: Vec<Expr> =
            window.input.schema().iter().map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name()))).collect();
        exprs.push(
            Expr::Literal(ScalarValue::UInt64(Some(1)), None).alias_qualified(qualifier.cloned(), rn_field.name()),
        );
        let extension = LogicalPlan::Extension(Extension { node: Arc::new(node) });
        let projection = Projection::try_new_with_schema(exprs, Arc::new(extension), Arc::clone(&window.schema))?;
        let mut rewritten = LogicalPlan::Projection(projection);
        if let Some(selection) = selection {
            let (exprs, schema) = (selection.expr.clone(), Arc::clone(&selection.schema));
            rewritten = LogicalPlan::Projection(Projection::try_new_with_schema(exprs, Arc::new(rewritten), schema)?);
        }
        if let Some(rest) = conjunction(conjuncts) {
            rewritten = LogicalPlan::Filter(Filter::try_new(rest, Arc::new(rewritten))?);
        }
        Ok(Transformed::yes(rewritten))
    }
}

/// Whether `predicate` keeps exactly the rows whose `rn` is 1: `rn = 1`, `rn <= 1`, `rn < 2`, either way round.
fn keeps_only_first(predicate: &Expr, rn: &Column) -> bool {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else { return false };
    let (column, op, literal) = match (is_column(left, rn), is_column(right, rn)) {
        (true, false) => (left, *op, right),
        (false, true) => match op.swap() {
            Some(op) => (right, op, left),
            None => return false,
        },
        _ => return false,
    };
    debug_assert!(is_column(column, rn));
    let Expr::Literal(value, _) = literal.as_ref() else { return false };
    let Ok(ScalarValue::Int64(Some(n))) = value.cast_to(&DataType::Int64) else { return false };
    matches!((op, n), (Operator::Eq, 1) | (Operator::LtEq, 1) | (Operator::Lt, 2))
}

fn is_column(expr: &Expr, rn: &Column) -> bool {
    match expr {
        Expr::Column(c) => c == rn,
        Expr::Cast(cast) => is_column(&cast.expr, rn),
        Expr::TryCast(cast) => is_column(&cast.expr, rn),
        _ => false,
    }
}

/// Whether [`KeepFirstExec`] can hash the keys, order by the sort keys and compare every column for ties.
fn supported(schema: &DFSchema, partition_by: &[Expr], order_by: &[SortExpr]) -> bool {
    let types = |exprs: &mut dyn Iterator<Item = &Expr>| -> Option<Vec<SortField>> {
        exprs.map(|e| e.get_type(schema).ok().map(SortField::new)).collect()
    };
    let (Some(keys), Some(orders)) = (types(&mut partition_by.iter()), types(&mut order_by.iter().map(|s| &s.expr)))
    else {
        return false;
    };
    RowConverter::supports_fields(&keys)
        && RowConverter::supports_fields(&orders)
        && schema.fields().iter().all(|f| {
            let empty = new_empty_array(f.data_type());
            make_comparator(&empty, &empty, SortOptions::default()).is_ok()
        })
}

/// Keeps, per value of `partition_by`, the one row that sorts first by `order_by` (ties broken by every column).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Hash)]
pub struct KeepFirstNode {
    input: Arc<LogicalPlan>,
    partition_by: Vec<Expr>,
    order_by: Vec<SortExpr>,
}

impl UserDefinedLogicalNodeCore for KeepFirstNode {
    fn name(&self) -> &str {
        "KeepFirst"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        self.partition_by.iter().cloned().chain(self.order_by.iter().map(|s| s.expr.clone())).collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.partition_by.iter().map(|e| e.to_string()).collect();
        let order: Vec<String> = self.order_by.iter().map(|s| s.to_string()).collect();
        write!(f, "KeepFirst: partition_by=[{}], order_by=[{}]", keys.join(", "), order.join(", "))
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let keys = self.partition_by.len();
        let order_by = self.order_by.iter().zip(&exprs[keys..]).map(|(s, e)| s.with_expr(e.clone())).collect();
        Ok(Self { input: Arc::new(inputs.swap_remove(0)), partition_by: exprs[..keys].to_vec(), order_by })
    }
}

struct KeepFirstPlanner;

#[async_trait]
impl ExtensionPlanner for KeepFirstPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn datafusion::catalog::Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<KeepFirstNode>() else { return Ok(None) };
        let schema = logical_inputs[0].schema();
        let keys = node
            .partition_by
            .iter()
            .map(|e| planner.create_physical_expr(e, schema, session, planning_ctx))
            .collect::<Result<Vec<_>>>()?;
        let order = node
            .order_by
            .iter()
            .map(|s| {
                let expr = planner.create_physical_expr(&s.expr, schema, session, planning_ctx)?;
                Ok(PhysicalSortExpr::new(expr, SortOptions { descending: !s.asc, nulls_first: s.nulls_first }))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Arc::new(KeepFirstExec::new(Arc::clone(&physical_inputs[0]), keys, order))))
    }
}

/// The physical side of [`KeepFirstNode`]: requires its input hash-partitioned by the keys, and keeps each
/// partition's winners in a hash table of group ids.
#[derive(Debug)]
pub struct KeepFirstExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl KeepFirstExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<PhysicalSortExpr>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            input.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self { input, keys, order, properties, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// The key expressions rows are deduplicated on.
    pub fn keys(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.keys
    }

    /// The order within a key: the first row in it is kept.
    pub fn order(&self) -> &[PhysicalSortExpr] {
        &self.order
    }
}

impl DisplayAs for KeepFirstExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|e| e.to_string()).collect();
        let order: Vec<String> = self.order.iter().map(|s| s.to_string()).collect();
        write!(f, "KeepFirstExec: partition_by=[{}], order_by=[{}]", keys.join(", "), order.join(", "))
    }
}

impl ExecutionPlan for KeepFirstExec {
    fn name(&self) -> &str {
        "KeepFirstExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![Distribution::KeyPartitioned(self.keys.clone())])
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for expr in self.keys.iter().chain(self.order.iter().map(|s| &s.expr)) {
            if f(expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(children.swap_remove(0), self.keys.clone(), self.order.clone())))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema = self.schema();
        let batch_size = context.session_config().batch_size().max(1);
        let (keys, order) = (self.keys.clone(), self.order.clone());
        let mut winners = Winners::new(&schema, keys.clone(), order.clone(), COMPACT_SLACK)?;
        let reservation = MemoryConsumer::new(format!("KeepFirstExec[{partition}]"))
            .with_can_spill(true)
            .register(context.memory_pool());
        // Held from the start, as DataFusion's sort holds it, so the merge of spilled runs has memory to start with.
        let merge_reservation =
            MemoryConsumer::new(format!("KeepFirstExecMerge[{partition}]")).register(context.memory_pool());
        merge_reservation.try_resize(context.session_config().options().execution.sort_spill_reservation_bytes)?;
        let spill_manager =
            SpillManager::new(context.runtime_env(), SpillMetrics::new(&self.metrics, partition), Arc::clone(&schema));
        let ordering = spill_ordering(&schema, &keys, &order)?;
        let output_metrics = baseline.clone();
        let output = futures::stream::once(async move {
            let mut input = input;
            let mut runs: Vec<SortedSpillFile> = Vec::new();
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let _timer = baseline.elapsed_compute().timer();
                winners.push(batch)?;
                // Over the memory pool's share: the winners so far go to disk as a sorted run, and the table starts
                // again. A key may then win in several runs; the merge keeps its first.
                if reservation.try_resize(winners.memory_size()).is_err() {
                    runs.extend(winners.spill(&spill_manager, &ordering, batch_size)?);
                    winners = Winners::new(&schema, keys.clone(), order.clone(), COMPACT_SLACK)?;
                    reservation.free();
                }
            }
            if runs.is_empty() {
                let output = winners.into_output(batch_size);
                // Built a batch at a time as the consumer asks, so the output is never all in memory at once.
                let baseline = output_metrics.clone();
                let batches = futures::stream::iter(output.chunks).map(move |range| {
                    let _timer = baseline.elapsed_compute().timer();
                    let batches: Vec<&RecordBatch> = output.batches.iter().collect();
                    let batch = interleave_record_batch(&batches, &output.best[range])?;
                    baseline.record_output(batch.num_rows());
                    Ok(batch)
                });
                return Ok::<_, datafusion::error::DataFusionError>(batches.boxed());
            }
            runs.extend(winners.spill(&spill_manager, &ordering, batch_size)?);
            drop(winners);
            reservation.free();
            let merged = StreamingMergeBuilder::new()
                .with_sorted_spill_files(runs)
                .with_spill_manager(spill_manager)
                .with_schema(Arc::clone(&schema))
                .with_expressions(&ordering)
                .with_metrics(BaselineMetrics::new(&ExecutionPlanMetricsSet::new(), partition))
                .with_batch_size(batch_size)
                .with_reservation(merge_reservation)
                .build()?;
            let mut first = FirstPerKey::new(&schema, keys)?;
            let baseline = output_metrics.clone();
            Ok(merged
                .map(move |batch| {
                    let batch = first.filter(&batch?)?;
                    baseline.record_output(batch.num_rows());
                    Ok(batch)
                })
                .boxed())
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), output)))
    }
}

/// The order of spilled runs and their merge: by key, then as the window orders, then by every column (the tie-break
/// of [`compare_rows`]); a key's first row in it is its winner.
fn spill_ordering(
    schema: &SchemaRef,
    keys: &[Arc<dyn PhysicalExpr>],
    order: &[PhysicalSortExpr],
) -> Result<LexOrdering> {
    let by_key = keys.iter().map(|k| PhysicalSortExpr::new(Arc::clone(k), SortOptions::default()));
    let by_column = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| PhysicalSortExpr::new(Arc::new(PhysicalColumn::new(f.name(), i)), SortOptions::default()));
    let exprs: Vec<PhysicalSortExpr> = by_key.chain(order.iter().cloned()).chain(by_column).collect();
    LexOrdering::new(exprs).ok_or_else(|| datafusion::error::DataFusionError::Internal("no sort keys".into()))
}

/// Keeps the first row of each key of a stream sorted by key.
struct FirstPerKey {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
    last: Option<datafusion::arrow::row::OwnedRow>,
}

impl FirstPerKey {
    fn new(schema: &SchemaRef, keys: Vec<Arc<dyn PhysicalExpr>>) -> Result<Self> {
        let fields = keys.iter().map(|k| Ok(SortField::new(k.data_type(schema)?))).collect::<Result<Vec<_>>>()?;
        Ok(Self { keys, converter: RowConverter::new(fields)?, last: None })
    }

    fn filter(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        if batch.num_rows() == 0 {
            return Ok(batch.clone());
        }
        let rows = self.converter.convert_columns(&Winners::evaluate(self.keys.iter().cloned(), batch)?)?;
        let keep: BooleanArray = (0..rows.num_rows())
            .map(|i| {
                let previous = match i {
                    0 => self.last.as_ref().map(|l| l.row()),
                    _ => Some(rows.row(i - 1)),
                };
                Some(previous != Some(rows.row(i)))
            })
            .collect();
        self.last = Some(rows.row(rows.num_rows() - 1).owned());
        Ok(filter_record_batch(batch, &keep)?)
    }
}

/// One partition's state: the batches still holding a winner, each with its sort keys in row format, and for
/// each group id the (batch, row) of its current winner.
struct Winners {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    groups: Box<dyn datafusion::physical_plan::aggregates::group_values::GroupValues>,
    order_rows: RowConverter,
    batches: Vec<RecordBatch>,
    ranks: Vec<Rows>,
    best: Vec<(usize, usize)>,
    group_ids: Vec<usize>,
    retained_rows: usize,
    compact_slack: usize,
}

/// Compact once the batches hold this many rows more than there are winners.
const COMPACT_SLACK: usize = 1 << 20;

impl Winners {
    fn new(
        schema: &SchemaRef,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<PhysicalSortExpr>,
        compact_slack: usize,
    ) -> Result<Self> {
        let key_fields = keys.iter().map(|k| k.return_field(schema)).collect::<Result<Vec<_>>>()?;
        let key_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(key_fields));
        let groups = new_group_values(key_schema, &GroupOrdering::None)?;
        let sort_fields = order
            .iter()
            .map(|s| Ok(SortField::new_with_options(s.expr.data_type(schema)?, s.options)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            keys,
            order,
            groups,
            order_rows: RowConverter::new(sort_fields)?,
            batches: Vec::new(),
            ranks: Vec::new(),
            best: Vec::new(),
            group_ids: Vec::new(),
            retained_rows: 0,
            compact_slack,
        })
    }

    fn evaluate(exprs: impl Iterator<Item = Arc<dyn PhysicalExpr>>, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        exprs.map(|e| e.evaluate(batch)?.into_array(batch.num_rows())).collect()
    }

    fn rank(&self, batch: &RecordBatch) -> Result<Rows> {
        let columns = Self::evaluate(self.order.iter().map(|s| Arc::clone(&s.expr)), batch)?;
        Ok(self.order_rows.convert_columns(&columns)?)
    }

    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = Self::evaluate(self.keys.iter().cloned(), &batch)?;
        self.groups.intern(&keys, &mut self.group_ids)?;
        let rank = self.rank(&batch)?;
        let this = self.batches.len();
        for (row, &group) in self.group_ids.iter().enumerate() {
            if group == self.best.len() {
                self.best.push((this, row));
                continue;
            }
            let (held_batch, held_row) = self.best[group];
            let (held, held_rank) = if held_batch == this {
                (&batch, rank.row(held_row))
            } else {
                (&self.batches[held_batch], self.ranks[held_batch].row(held_row))
            };
            let better = match rank.row(row).cmp(&held_rank) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => compare_rows(&batch, row, held, held_row)? == Ordering::Less,
            };
            if better {
                self.best[group] = (this, row);
            }
        }
        self.retained_rows += batch.num_rows();
        self.batches.push(batch);
        self.ranks.push(rank);
        if self.retained_rows > self.best.len().saturating_add(self.compact_slack) {
            self.compact()?;
        }
        Ok(())
    }

    /// Replaces the retained batches by one batch of the winners.
    fn compact(&mut self) -> Result<()> {
        let batch = self.take_winners()?;
        self.ranks = vec![self.rank(&batch)?];
        self.retained_rows = batch.num_rows();
        self.batches = vec![batch];
        for (group, best) in self.best.iter_mut().enumerate() {
            *best = (0, group);
        }
        Ok(())
    }

    fn take_winners(&self) -> Result<RecordBatch> {
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        Ok(interleave_record_batch(&batches, &self.best)?)
    }

    /// The memory the state holds: retained batches, their sort keys, the hash table and the winners' positions.
    fn memory_size(&self) -> usize {
        let batches: usize = self.batches.iter().map(RecordBatch::get_array_memory_size).sum();
        let ranks: usize = self.ranks.iter().map(Rows::size).sum();
        let positions = (self.best.capacity() * 2 + self.group_ids.capacity()) * std::mem::size_of::<usize>();
        batches + ranks + self.groups.size() + positions
    }

    /// Writes the winners so far to disk as a run sorted by `ordering`, in batches of `batch_size` rows.
    fn spill(
        &self,
        manager: &SpillManager,
        ordering: &LexOrdering,
        batch_size: usize,
    ) -> Result<Option<SortedSpillFile>> {
        if self.best.is_empty() {
            return Ok(None);
        }
        let sorted = sort_batch_chunked(&self.take_winners()?, ordering, batch_size)?;
        let largest = sorted.iter().map(RecordBatch::get_array_memory_size).max().unwrap_or(0);
        Ok(manager
            .spill_record_batch_and_finish(&sorted, "KeepFirstExec")?
            .map(|file| SortedSpillFile { file, max_record_batch_memory: largest }))
    }

    /// Keeps what the output needs (the batches and the winners' positions) and drops the rest: the hash table
    /// and the sort keys.
    fn into_output(self, batch_size: usize) -> WinnersOutput {
        let batch_size = batch_size.max(1);
        let chunks = (0..self.best.len()).step_by(batch_size).map(|at| at..(at + batch_size).min(self.best.len()));
        WinnersOutput { chunks: chunks.collect(), batches: self.batches, best: self.best }
    }
}

struct WinnersOutput {
    chunks: Vec<std::ops::Range<usize>>,
    batches: Vec<RecordBatch>,
    best: Vec<(usize, usize)>,
}

#[cfg(test)]
impl WinnersOutput {
    fn batches(&self) -> Vec<RecordBatch> {
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        self.chunks.iter().map(|range| interleave_record_batch(&batches, &self.best[range.clone()]).unwrap()).collect()
    }
}

/// Orders two rows by every column, ascending, nulls first.
fn compare_rows(a: &RecordBatch, a_row: usize, b: &RecordBatch, b_row: usize) -> Result<Ordering> {
    for (left, right) in a.columns().iter().zip(b.columns()) {
        let compare = make_comparator(left.as_ref(), right.as_ref(), SortOptions::default())?;
        match compare(a_row, b_row) {
            Ordering::Equal => continue,
            other => return Ok(other),
        }
    }
    Ok(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// 40,000 rows in 4 partitions over 3,000 keys: duplicate keys, tied and null sort keys, null keys.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("o", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let mut state: u64 = 42;
        let mut next = move |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let partitions = (0..4)
            .map(|_| {
                let (mut k, mut o, mut v) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..10_000 {
                    k.push((next(50) != 0).then(|| next(3_000) as i64));
                    o.push((next(10) != 0).then(|| next(4) as i64));
                    v.push((next(8) != 0).then(|| format!("v{}", next(3))));
                }
                let columns: Vec<ArrayRef> =
                    vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(o)), Arc::new(StringArray::from(v))];
                vec![RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()]
            })
            .collect();
        MemTable::try_new(schema, partitions).unwrap()
    }

    fn session(rule: bool) -> SessionContext {
        session_with(rule, None)
    }

    /// A session whose memory pool holds `memory` bytes: operators that can spill must.
    fn session_with(rule: bool, memory: Option<usize>) -> SessionContext {
        let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
        if let Some(memory) = memory {
            runtime =
                runtime.with_memory_pool(Arc::new(datafusion::execution::memory_pool::FairSpillPool::new(memory)));
        }
        let mut state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(
                SessionConfig::new()
                    .with_target_partitions(4)
                    .with_batch_size(1024)
                    .with_sort_spill_reservation_bytes(32 << 10),
            )
            .with_runtime_env(runtime.build_arc().unwrap())
            .with_query_planner(Arc::new(PipeQueryPlanner));
        if rule {
            state = state.with_optimizer_rule(Arc::new(DedupeRule));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("t", Arc::new(table())).unwrap();
        ctx
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> (String, String) {
        let frame = ctx.sql(sql).await.unwrap();
        let plan = format!("{}", frame.clone().into_optimized_plan().unwrap().display_indent());
        let batches = frame.collect().await.unwrap();
        (plan, pretty_format_batches(&batches).unwrap().to_string())
    }

    /// Compares two printed tables, showing only the first rows that differ.
    fn assert_same(left: &str, right: &str) {
        let diff: Vec<String> = left
            .lines()
            .zip(right.lines())
            .filter(|(l, r)| l != r)
            .take(5)
            .map(|(l, r)| format!("{l}  vs  {r}"))
            .collect();
        assert!(diff.is_empty() && left.lines().count() == right.lines().count(), "{}", diff.join("\n"));
    }

    #[tokio::test]
    async fn keeps_the_row_row_number_keeps_with_ties_broken_by_every_column() {
        let dedupe = |order: &str, filter: &str| {
            format!(
                "select k, o, v, rn from (select *, row_number() over (partition by k order by {order}) as rn from t) \
                 where {filter} order by k nulls first"
            )
        };
        let (plan, fast) = rows(&session(true), &dedupe("o desc", "rn = 1")).await;
        assert!(plan.contains("KeepFirst"), "{plan}");
        // The window, told the same tie-break explicitly, is deterministic too and must agree row for row.
        let tie_break = "o desc, k asc nulls first, o asc nulls first, v asc nulls first";
        let (plan, window) = rows(&session(false), &dedupe(tie_break, "rn = 1")).await;
        assert!(!plan.contains("KeepFirst"), "{plan}");
        assert_same(&fast, &window);
        assert_eq!(fast.lines().count(), 3_001 + 4, "one row per key and one for the null key, plus borders");

        let (_, ascending) = rows(&session(true), &dedupe("o asc nulls last", "1 >= rn")).await;
        let (_, window) =
            rows(&session(false), &dedupe("o asc nulls last, k nulls first, o nulls first, v nulls first", "rn = 1"))
                .await;
        assert_same(&ascending, &window);
    }

    /// Under a memory pool too small for the winners, each partition spills sorted runs and merges them: the same
    /// rows as in memory, and the spill is in the operator's metrics.
    #[tokio::test]
    async fn spills_under_a_memory_limit_and_keeps_the_same_rows() {
        // No `order by`: the sort above would need the pool too. The rows are compared as sorted lines.
        let sql = "select k, o, v from (select *, row_number() over (partition by k order by o desc) as rn from t) \
                   where rn = 1";
        let sorted = |batches: &[RecordBatch]| {
            let text = pretty_format_batches(batches).unwrap().to_string();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            lines.sort();
            lines.join("\n")
        };
        let unlimited = session(true).sql(sql).await.unwrap().collect().await.unwrap();
        let ctx = session_with(true, Some(1 << 20));
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
        assert_same(&sorted(&batches), &sorted(&unlimited));
        let mut exec = plan;
        while exec.name() != "KeepFirstExec" {
            exec = Arc::clone(exec.children()[0]);
        }
        let metrics = exec.metrics().unwrap();
        assert!(metrics.spill_count().unwrap_or(0) > 0, "no spill: {metrics}");
        assert!(metrics.spilled_rows().unwrap_or(0) > 0, "{metrics}");
        assert_eq!(metrics.output_rows(), Some(3_001));
    }

    /// Compaction (every 100 dropped rows here) keeps the same winners as holding every batch.
    #[tokio::test]
    async fn compaction_keeps_the_winners() {
        let ctx = session(true);
        let sql =
            "select * from (select *, row_number() over (partition by k order by o desc) as rn from t) where rn = 1";
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let mut exec = plan;
        while exec.name() != "KeepFirstExec" {
            exec = Arc::clone(exec.children()[0]);
        }
        let exec = exec.as_ref().downcast_ref::<KeepFirstExec>().unwrap();
        let input = datafusion::physical_plan::collect(Arc::clone(&exec.input), ctx.task_ctx()).await.unwrap();
        let winners = |slack| {
            let mut w = Winners::new(&exec.schema(), exec.keys.clone(), exec.order.clone(), slack).unwrap();
            for batch in &input {
                for at in (0..batch.num_rows()).step_by(700) {
                    w.push(batch.slice(at, 700.min(batch.num_rows() - at))).unwrap();
                }
            }
            let sorted =
                datafusion::arrow::compute::concat_batches(&exec.schema(), &w.into_output(1024).batches()).unwrap();
            let order = datafusion::arrow::compute::lexsort_to_indices(
                &sorted
                    .columns()
                    .iter()
                    .map(|c| datafusion::arrow::compute::SortColumn { values: Arc::clone(c), options: None })
                    .collect::<Vec<_>>(),
                None,
            )
            .unwrap();
            pretty_format_batches(&[datafusion::arrow::compute::take_record_batch(&sorted, &order).unwrap()])
                .unwrap()
                .to_string()
        };
        assert_same(&winners(100), &winners(usize::MAX));
    }

    #[tokio::test]
    async fn leaves_other_filters_and_windows_alone() {
        let ctx = session(true);
        for sql in [
            "select * from (select *, row_number() over (partition by k order by o) as rn from t) where rn = 2",
            "select * from (select *, row_number() over (order by o) as rn from t) where rn = 1",
            "select * from (select *, rank() over (partition by k order by o) as rn from t) where rn = 1",
            "select * from (select *, row_number() over (partition by k order by o) as rn, \
             count(*) over (partition by k) as n from t) where rn = 1",
        ] {
            let (plan, _) = rows(&ctx, sql).await;
            assert!(!plan.contains("KeepFirst"), "{sql}\n{plan}");
        }
        // Under a projection that prunes columns (here all but the key), and under an aggregate.
        let sql = "select count(*) as n, count(distinct k) as keys from \
                   (select *, row_number() over (partition by k order by o desc) as rn from t) where rn = 1";
        let (plan, counts) = rows(&ctx, sql).await;
        assert!(plan.contains("KeepFirst"), "{plan}");
        assert_same(&counts, &rows(&session(false), sql).await.1);
        // Other conjuncts stay, applied after the dedupe as the window's filter would.
        let sql = "select * from (select *, row_number() over (partition by k order by o desc) as rn from t) \
                   where rn = 1 and v = 'v1' and rn < 2";
        let (plan, fast) = rows(&ctx, &format!("{sql} order by k")).await;
        assert!(plan.contains("KeepFirst"), "{plan}");
        let full = sql.replace("o desc", "o desc, k nulls first, o nulls first, v nulls first");
        let (_, window) = rows(&session(false), &format!("{full} order by k")).await;
        assert_same(&fast, &window);
        assert!(fast.lines().count() > 500, "{fast}");
    }
}
