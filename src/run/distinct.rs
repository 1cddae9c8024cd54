//! Several `count(distinct ...)` of different arguments in one grouping, as grouped aggregations that spill.
//!
//! DataFusion computes `count(distinct a), count(distinct b)` with a hash set per group and argument, held in
//! memory whole: under `--memory-limit` such a model fails where DuckDB spills, and even without a limit the sets
//! are slow to build. [`MultiDistinctRule`] rewrites
//!
//! ```sql
//! select g, count(distinct a) as da, count(distinct b) as db, sum(x) as s from t group by g
//! ```
//!
//! into one grouping per distinct argument plus one for the other aggregates, put together and grouped again:
//!
//! ```sql
//! select g, count(a) as da, count(b) as db, sum(s) as s from (
//!     select g, a, null as b, null as s from t group by g, a
//!     union all select g, null, b, null from t group by g, b
//!     union all select g, null, null, sum(x) from t group by g
//! ) group by g
//! ```
//!
//! Every grouping is a hash aggregate, which spills under a memory pool. The other aggregates must merge across
//! the parts (`count`, `sum`, `min`, `max`), and the input is read once per part, so the rule applies only where
//! reading it again is cheap: scans, filters and projections, no join, aggregate or window below.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::{cast, col, lit};

#[derive(Debug, Default)]
pub struct MultiDistinctRule;

/// How an aggregate of the grouping is computed by the rewrite.
enum Part {
    /// `count(distinct arg)`: its own grouping on the argument, counted after.
    Distinct(Expr),
    /// An aggregate computed in the grouping of the other aggregates, merged after by `merge` (`sum`, `min`, `max`).
    Merged { aggregate: Expr, merge: &'static str },
}

impl OptimizerRule for MultiDistinctRule {
    fn name(&self) -> &str {
        "pipe_multi_distinct_to_groupings"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else { return Ok(Transformed::no(plan)) };
        if aggregate.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) || !cheap(&aggregate.input) {
            return Ok(Transformed::no(plan));
        }
        let Some(parts) = parts(&aggregate.aggr_expr) else { return Ok(Transformed::no(plan)) };
        let mut distinct_args: Vec<&Expr> = Vec::new();
        for part in &parts {
            if let Part::Distinct(arg) = part {
                if !distinct_args.contains(&arg) {
                    distinct_args.push(arg);
                }
            }
        }
        if distinct_args.len() < 2 {
            return Ok(Transformed::no(plan));
        }
        let input = aggregate.input.as_ref();
        let input_schema = input.schema();
        let groups: Vec<Expr> =
            aggregate.group_expr.iter().enumerate().map(|(i, g)| g.clone().alias(format!("__pipe_g{i}"))).collect();
        let group_columns: Vec<Expr> = (0..groups.len()).map(|i| col(format!("__pipe_g{i}"))).collect();
        // The columns every part outputs, in order: the groups, one per distinct argument, one per merged aggregate.
        let mut typed_nulls: Vec<(String, Expr)> = Vec::new();
        for (i, arg) in distinct_args.iter().enumerate() {
            let data_type = arg.get_type(input_schema.as_ref())?;
            typed_nulls.push((format!("__pipe_d{i}"), lit(ScalarValue::try_from(&data_type)?)));
        }
        let merged: Vec<(usize, &Expr, &'static str)> = parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Part::Merged { aggregate, merge } => Some((i, aggregate, *merge)),
                Part::Distinct(_) => None,
            })
            .collect();
        for (i, aggregate, _) in &merged {
            let data_type = aggregate.get_type(input_schema.as_ref())?;
            typed_nulls.push((format!("__pipe_m{i}"), lit(ScalarValue::try_from(&data_type)?)));
        }
        let row = |present: &[String]| -> Vec<Expr> {
            group_columns
                .iter()
                .cloned()
                .chain(typed_nulls.iter().map(|(name, null)| match present.contains(name) {
                    true => col(name.as_str()),
                    false => null.clone().alias(name.as_str()),
                }))
                .collect()
        };
        let mut union: Option<LogicalPlanBuilder> = None;
        let mut add = |part: LogicalPlan| -> Result<()> {
            union = Some(match union.take() {
                None => LogicalPlanBuilder::from(part),
                Some(builder) => builder.union(part)?,
            });
            Ok(())
        };
        for (i, arg) in distinct_args.iter().enumerate() {
            let name = format!("__pipe_d{i}");
            let mut keys = groups.clone();
            keys.push((*arg).clone().alias(name.as_str()));
            let part = LogicalPlanBuilder::from(input.clone())
                .aggregate(keys, Vec::<Expr>::new())?
                .project(row(std::slice::from_ref(&name)))?
                .build()?;
            add(part)?;
        }
        if !merged.is_empty() {
            let names: Vec<String> = merged.iter().map(|(i, _, _)| format!("__pipe_m{i}")).collect();
            let aggregates: Vec<Expr> =
                merged.iter().zip(&names).map(|((_, aggregate, _), name)| (*aggregate).clone().alias(name)).collect();
            let part = LogicalPlanBuilder::from(input.clone())
                .aggregate(groups.clone(), aggregates)?
                .project(row(&names))?
                .build()?;
            add(part)?;
        }
        let Some(union) = union else { return Ok(Transformed::no(plan)) };
        let functions = |name: &str| -> Option<Arc<datafusion::logical_expr::AggregateUDF>> {
            match name {
                "count" => Some(datafusion::functions_aggregate::count::count_udaf()),
                "sum" => Some(datafusion::functions_aggregate::sum::sum_udaf()),
                "min" => Some(datafusion::functions_aggregate::min_max::min_udaf()),
                "max" => Some(datafusion::functions_aggregate::min_max::max_udaf()),
                _ => None,
            }
        };
        let mut outer = Vec::new();
        // Which merged aggregates are counts: their sum is never null, as the count was not.
        let mut counts: Vec<(usize, bool)> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let (function, column) = match part {
                Part::Distinct(arg) => {
                    let at = distinct_args.iter().position(|a| *a == arg).unwrap_or_default();
                    ("count", format!("__pipe_d{at}"))
                }
                Part::Merged { merge, .. } => (*merge, format!("__pipe_m{i}")),
            };
            let Some(udaf) = functions(function) else { return Ok(Transformed::no(plan)) };
            let call = Expr::AggregateFunction(AggregateFunction::new_udf(
                udaf,
                vec![col(column.as_str())],
                false,
                None,
                vec![],
                None,
            ));
            outer.push(call.alias(format!("__pipe_r{i}")));
            if let Part::Merged { aggregate: Expr::AggregateFunction(f), .. } = part {
                counts.push((i, f.func.name() == "count"));
            }
        }
        let regrouped = union.aggregate(group_columns.clone(), outer)?.build()?;
        // The original grouping's columns, names, qualifiers and types, so the plan above reads it unchanged.
        let regrouped_schema = Arc::clone(regrouped.schema());
        let result: Vec<Expr> = aggregate
            .schema
            .iter()
            .enumerate()
            .map(|(i, (qualifier, field))| {
                let name =
                    if i < groups.len() { format!("__pipe_g{i}") } else { format!("__pipe_r{}", i - groups.len()) };
                let mut value = col(Column::from_name(name.as_str()));
                if i >= groups.len() && counts.contains(&(i - groups.len(), true)) {
                    value = datafusion::functions::core::expr_fn::coalesce(vec![value, lit(0i64)]);
                }
                let (_, now) = regrouped_schema.qualified_field_with_unqualified_name(&name)?;
                let value = match now.data_type() == field.data_type() {
                    true => value,
                    false => cast(value, field.data_type().clone()),
                };
                Ok(value.alias_qualified(qualifier.cloned(), field.name()))
            })
            .collect::<Result<_>>()?;
        let rewritten = LogicalPlanBuilder::from(regrouped).project(result)?.build()?;
        Ok(Transformed::yes(rewritten))
    }
}

/// Each aggregate as a part of the rewrite; `None` when one cannot be (a filter, an ordering, a function that does
/// not merge across parts, a distinct one that is not `count`).
fn parts(aggregates: &[Expr]) -> Option<Vec<Part>> {
    aggregates
        .iter()
        .map(|e| {
            let inner = match e {
                Expr::Alias(alias) => alias.expr.as_ref(),
                other => other,
            };
            let Expr::AggregateFunction(function) = inner else { return None };
            let params = &function.params;
            if params.filter.is_some() || !params.order_by.is_empty() {
                return None;
            }
            let name = function.func.name();
            match (name, params.distinct, params.args.as_slice()) {
                ("count", true, [arg]) => Some(Part::Distinct(arg.clone())),
                (_, true, _) => None,
                ("count", false, _) => Some(Part::Merged { aggregate: inner.clone(), merge: "sum" }),
                ("sum", false, _) => Some(Part::Merged { aggregate: inner.clone(), merge: "sum" }),
                ("min", false, _) => Some(Part::Merged { aggregate: inner.clone(), merge: "min" }),
                ("max", false, _) => Some(Part::Merged { aggregate: inner.clone(), merge: "max" }),
                _ => None,
            }
        })
        .collect()
}

/// Whether reading `plan` once per part costs about a scan each: no join, aggregate, window or other grouping below.
fn cheap(plan: &LogicalPlan) -> bool {
    let mut cheap = true;
    let _ = plan.apply(|node| {
        match node {
            LogicalPlan::TableScan(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Projection(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Values(_) => {}
            _ => {
                cheap = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    cheap
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn session(rule: bool, pool: Option<usize>) -> SessionContext {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = pool {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        }
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(4096)
            .set_usize("datafusion.execution.sort_spill_reservation_bytes", 1 << 20);
        let mut state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(runtime.build_arc().unwrap());
        if rule {
            state = state.with_optimizer_rule(Arc::new(MultiDistinctRule));
        }
        SessionContext::new_with_state(state.build())
    }

    const EVENTS: &str = "create view t as select v % 365 as day, v % 100003 as user_id, \
        case v % 3 when 0 then 'view' when 1 then 'cart' else 'purchase' end as kind, \
        cast(v % 17 as decimal(10, 2)) as amount, case when v % 11 = 0 then null else v % 7 end as maybe \
        from generate_series(1, 300000) as g(v)";

    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        ctx.sql(EVENTS).await.unwrap().collect().await.unwrap();
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().into_optimized_plan().unwrap().display_indent().to_string();
        // The executed plan's schema, nullability included.
        let physical = frame.clone().create_physical_plan().await.unwrap();
        let schema = format!("{:?}", physical.schema().fields());
        let batches = frame.collect().await.unwrap();
        (format!("{schema}\n{}", pretty_format_batches(&batches).unwrap()), plan)
    }

    const FUNNEL: &str = "select day, count(distinct case when kind = 'view' then user_id end) as viewers, \
        count(distinct case when kind = 'cart' then user_id end) as carters, count(distinct maybe) as maybes, \
        count(*) as events, sum(amount) as amount, min(maybe) as lo, max(kind) as hi from t group by day order by day";

    /// The same rows and column types as DataFusion's own distinct counting, with and without groups, null
    /// arguments and other aggregates; the plan holds no distinct aggregate.
    #[tokio::test]
    async fn gives_the_same_rows_as_distinct_accumulators() {
        for sql in [
            FUNNEL,
            "select count(distinct user_id) as users, count(distinct maybe) as m, sum(amount) as s from t",
            "select count(distinct user_id) as users, count(distinct maybe) as m from t where day > 1000",
            "select maybe, count(distinct day), count(distinct kind) from t group by maybe order by maybe nulls first",
        ] {
            let (expected, plan) = run(&session(false, None), sql).await;
            assert!(plan.contains("count(DISTINCT"), "{plan}");
            let (rewritten, plan) = run(&session(true, None), sql).await;
            let aggregates = plan.lines().filter(|l| l.trim_start().starts_with("Aggregate:"));
            assert!(!aggregates.clone().any(|l| l.contains("DISTINCT")), "{plan}");
            assert!(plan.contains("Union"), "{plan}");
            assert!(rewritten == expected, "{sql}: the rows or their types differ");
        }
    }

    /// One distinct argument, an aggregate that does not merge, or a join below: left to DataFusion.
    #[tokio::test]
    async fn leaves_what_it_cannot_rewrite() {
        for sql in [
            "select day, count(distinct user_id), sum(amount) from t group by day",
            "select day, count(distinct user_id), count(distinct kind), avg(amount) from t group by day",
            "select a.day, count(distinct a.user_id), count(distinct b.kind) from t a join t b on a.day = b.day \
             group by a.day",
        ] {
            let (_, plan) = run(&session(true, None), sql).await;
            assert!(!plan.contains("Union"), "{sql}: {plan}");
        }
    }

    /// Under a memory pool too small for the distinct sets, the rewritten groupings spill and finish with the
    /// same rows as the unlimited run.
    #[tokio::test]
    async fn spills_under_a_memory_limit() {
        let (expected, _) = run(&session(false, None), FUNNEL).await;
        let ctx = session(true, Some(6 << 20));
        ctx.sql(EVENTS).await.unwrap().collect().await.unwrap();
        let plan = ctx.sql(FUNNEL).await.unwrap().create_physical_plan().await.unwrap();
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
        let schema = format!("{:?}", plan.schema().fields());
        // (`assert!` rather than `assert_eq!`: the tables are long.)
        assert!(format!("{schema}\n{}", pretty_format_batches(&batches).unwrap()) == expected, "rows differ");
        let mut spilled = 0;
        let _ = plan.apply(|node| {
            spilled += node.metrics().and_then(|m| m.spill_count()).unwrap_or(0);
            Ok(TreeNodeRecursion::Continue)
        });
        assert!(spilled > 0, "nothing spilled");
    }
}
