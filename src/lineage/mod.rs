//! Column-level lineage from DataFusion's logical plans: for each output column of a model, the columns of the
//! relations it reads that flow into it (through projections, filters, joins, aggregates, windows, unions,
//! subqueries and inlined ephemeral models), and how: copied, transformed or aggregated. Columns that only decide
//! which rows are kept (filters, join keys) are listed apart. A column computed from nothing (a literal) has no
//! sources.

pub mod graph;
pub mod openlineage;

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use serde::{Deserialize, Serialize};

/// How an output column derives from a source column. Ordered: through a chain of models the strongest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The value, unchanged (a column reference, a rename, a pass through a filter or join).
    Copied,
    /// A function of it (a cast, an expression, a `case`, a window function).
    Transformed,
    /// An aggregate over it (`sum`, `count(x)`, ..., also over a window).
    Aggregated,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Copied => "copied",
            Kind::Transformed => "transformed",
            Kind::Aggregated => "aggregated",
        }
    }
}

/// `(relation, column)` with how each flows into one output column.
pub type Sources = BTreeMap<(String, String), Kind>;

/// One set of sources per output column of `plan`, in the order of its schema.
pub fn column_lineage(plan: &LogicalPlan) -> Vec<Sources> {
    match plan {
        LogicalPlan::TableScan(scan) => scan
            .projected_schema
            .fields()
            .iter()
            .map(|f| Sources::from([((scan.table_name.to_string(), f.name().clone()), Kind::Copied)]))
            .collect(),
        LogicalPlan::Projection(projection) => {
            let input = column_lineage(&projection.input);
            projection.expr.iter().map(|e| sources_of(e, &projection.input, &input)).collect()
        }
        LogicalPlan::Aggregate(aggregate) => {
            let input = column_lineage(&aggregate.input);
            // Grouping sets (`rollup`, `cube`) output each distinct grouping expression, then an internal id.
            let mut out = Vec::new();
            let mut grouping_sets = false;
            for expr in &aggregate.group_expr {
                match expr {
                    Expr::GroupingSet(set) => {
                        grouping_sets = true;
                        out.extend(set.distinct_expr().into_iter().map(|e| sources_of(e, &aggregate.input, &input)));
                    }
                    other => out.push(sources_of(other, &aggregate.input, &input)),
                }
            }
            if grouping_sets {
                out.push(Sources::new());
            }
            out.extend(aggregate.aggr_expr.iter().map(|e| sources_of(e, &aggregate.input, &input)));
            out.resize(plan.schema().fields().len(), Sources::new());
            out
        }
        LogicalPlan::Window(window) => {
            let input = column_lineage(&window.input);
            let mut out = input.clone();
            out.extend(window.window_expr.iter().map(|e| sources_of(e, &window.input, &input)));
            out
        }
        LogicalPlan::Join(join) => {
            let left = column_lineage(&join.left);
            let right = column_lineage(&join.right);
            let mut out = match join.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
                _ => left.into_iter().chain(right).collect(),
            };
            out.resize(plan.schema().fields().len(), Sources::new());
            out
        }
        LogicalPlan::Union(union) => {
            let mut out = vec![Sources::new(); plan.schema().fields().len()];
            for input in &union.inputs {
                for (column, sources) in out.iter_mut().zip(column_lineage(input)) {
                    merge(column, sources);
                }
            }
            out
        }
        other => {
            let inputs = other.inputs();
            let width = other.schema().fields().len();
            match inputs.as_slice() {
                // Filters, sorts, limits, aliases, distinct: the same columns, in the same order.
                [input] if input.schema().fields().len() == width => column_lineage(input),
                // Anything else: every column may come from any input column.
                _ => {
                    let mut all = Sources::new();
                    for sources in inputs.iter().flat_map(|i| column_lineage(i)) {
                        merge(&mut all, sources);
                    }
                    let all = all.into_keys().map(|k| (k, Kind::Transformed)).collect();
                    vec![all; width]
                }
            }
        }
    }
}

fn merge(into: &mut Sources, from: Sources) {
    for (key, kind) in from {
        let entry = into.entry(key).or_insert(kind);
        *entry = (*entry).max(kind);
    }
}

/// How `expr` derives its value from the columns it reads.
fn expr_kind(expr: &Expr) -> Kind {
    match expr {
        Expr::Alias(alias) => expr_kind(&alias.expr),
        Expr::Column(_) | Expr::OuterReferenceColumn(..) => Kind::Copied,
        _ => {
            let mut kind = Kind::Transformed;
            let _ = expr.apply(|e| {
                let windowed_aggregate = matches!(e, Expr::WindowFunction(w)
                    if matches!(w.fun, datafusion::logical_expr::WindowFunctionDefinition::AggregateUDF(_)));
                if matches!(e, Expr::AggregateFunction(_)) || windowed_aggregate {
                    kind = Kind::Aggregated;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            });
            kind
        }
    }
}

/// The sources of the columns `expr` reads from `input` (and from the subqueries inside it).
fn sources_of(expr: &Expr, input: &LogicalPlan, lineage: &[Sources]) -> Sources {
    let kind = expr_kind(expr);
    let mut sources = Sources::new();
    let mut add = |found: &Sources, kind: Kind| {
        for (key, from) in found {
            let entry = sources.entry(key.clone()).or_insert(kind.max(*from));
            *entry = (*entry).max(kind.max(*from));
        }
    };
    for column in expr.column_refs() {
        if let Some(index) = input.schema().maybe_index_of_column(column) {
            if let Some(found) = lineage.get(index) {
                add(found, kind);
            }
        }
    }
    for (subquery, outer) in subqueries(expr) {
        for found in column_lineage(subquery) {
            add(&found, kind.max(Kind::Transformed));
        }
        // A correlated subquery's value also depends on the outer columns it is correlated with.
        for found in outer_sources(outer, input, lineage) {
            add(found, Kind::Transformed);
        }
    }
    sources
}

/// The sources of the outer columns a correlated subquery refers to, resolved against the outer query's input.
fn outer_sources<'a>(outer: &'a [Expr], input: &'a LogicalPlan, lineage: &'a [Sources]) -> Vec<&'a Sources> {
    let mut found = Vec::new();
    for expr in outer {
        let _ = expr.apply(|e| {
            if let Expr::OuterReferenceColumn(_, column) = e {
                if let Some(sources) = input.schema().maybe_index_of_column(column).and_then(|i| lineage.get(i)) {
                    found.push(sources);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    found
}

/// The plans of the subqueries in `expr` (scalar, `in`, `exists`), with the outer columns each refers to.
fn subqueries(expr: &Expr) -> Vec<(&LogicalPlan, &[Expr])> {
    let mut plans = Vec::new();
    let _ = expr.apply(|e| {
        let subquery = match e {
            Expr::ScalarSubquery(sq) => Some(sq),
            Expr::InSubquery(sq) => Some(&sq.subquery),
            Expr::Exists(exists) => Some(&exists.subquery),
            _ => None,
        };
        if let Some(sq) = subquery {
            plans.push((sq.subquery.as_ref(), sq.outer_ref_columns.as_slice()));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    plans
}

/// The source columns that decide which rows a query keeps: read by filters (`where`, `having`, `qualify`), join
/// conditions and the subqueries in them.
pub fn row_deciders(plan: &LogicalPlan) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut add_expr = |expr: &Expr, input: &LogicalPlan| {
        let lineage = column_lineage(input);
        for column in expr.column_refs() {
            if let Some(sources) = input.schema().maybe_index_of_column(column).and_then(|i| lineage.get(i)) {
                found.extend(sources.keys().cloned());
            }
        }
        for (subquery, outer) in subqueries(expr) {
            found.extend(column_lineage(subquery).into_iter().flat_map(|s| s.into_keys()));
            found.extend(outer_sources(outer, input, &lineage).into_iter().flat_map(|s| s.keys().cloned()));
        }
    };
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Filter(filter) => add_expr(&filter.predicate, &filter.input),
            LogicalPlan::Join(join) => {
                for (left, right) in &join.on {
                    add_expr(left, &join.left);
                    add_expr(right, &join.right);
                }
                if let Some(condition) = &join.filter {
                    add_expr(condition, node);
                }
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// One source column of an output column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceColumn {
    pub relation: String,
    pub column: String,
    pub kind: Kind,
}

/// The lineage of one model: per output column (in the model's order), its source columns; and the columns that
/// decide which rows it keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelLineage {
    pub columns: Vec<(String, Vec<SourceColumn>)>,
    pub row_deciders: Vec<(String, String)>,
}

/// The lineage of a model's planned query.
pub fn model_lineage(plan: &LogicalPlan) -> ModelLineage {
    let columns = plan
        .schema()
        .fields()
        .iter()
        .zip(column_lineage(plan))
        .map(|(field, sources)| {
            let sources =
                sources.into_iter().map(|((relation, column), kind)| SourceColumn { relation, column, kind }).collect();
            (field.name().clone(), sources)
        })
        .collect();
    ModelLineage { columns, row_deciders: row_deciders(plan).into_iter().collect() }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use std::collections::BTreeMap;

    use super::{model_lineage, Kind};
    use crate::sql::plan::StaticPlanner;

    #[test]
    fn columns_trace_through_ctes_joins_aggregates_and_windows() {
        let orders = Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, true),
            Field::new("customer_id", DataType::Int64, true),
            Field::new("amount", DataType::Float64, true),
        ]));
        let customers = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Int64, true),
            Field::new("country", DataType::Utf8, true),
        ]));
        let inputs =
            HashMap::from([("silver.orders".to_string(), orders), ("silver.customers".to_string(), customers)]);
        let sql = "with enriched as (select o.*, c.country from silver.orders o join silver.customers c using (customer_id)) \
                   select country, sum(amount) * 2 as revenue, count(*) as n, 'eur' as currency, \
                   row_number() over (order by country) as rank from enriched group by country";
        let plan = StaticPlanner::new().plan_logical(sql, &inputs).unwrap();
        let lineage: BTreeMap<String, Vec<(String, String, Kind)>> = model_lineage(&plan)
            .columns
            .into_iter()
            .map(|(c, s)| (c, s.into_iter().map(|s| (s.relation, s.column, s.kind)).collect()))
            .collect();
        let pair = |r: &str, c: &str, k| (r.to_string(), c.to_string(), k);
        assert_eq!(lineage["country"], [pair("silver.customers", "country", Kind::Copied)]);
        assert_eq!(lineage["revenue"], [pair("silver.orders", "amount", Kind::Aggregated)]);
        assert!(lineage["n"].is_empty() && lineage["currency"].is_empty(), "{lineage:?}");
        assert_eq!(lineage["rank"], [pair("silver.customers", "country", Kind::Transformed)]);
    }
}
