//! Column-level lineage from DataFusion's logical plans: for each output column of a model, the columns of the
//! relations it reads that flow into it (through projections, filters, joins, aggregates, windows, unions and
//! inlined ephemeral models). A column computed from nothing (a literal) has no sources.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};

/// `(relation, column)` pairs.
pub type Sources = BTreeSet<(String, String)>;

/// One set of sources per output column of `plan`, in the order of its schema.
pub fn column_lineage(plan: &LogicalPlan) -> Vec<Sources> {
    match plan {
        LogicalPlan::TableScan(scan) => scan
            .projected_schema
            .fields()
            .iter()
            .map(|f| Sources::from([(scan.table_name.to_string(), f.name().clone())]))
            .collect(),
        LogicalPlan::Projection(projection) => {
            let input = column_lineage(&projection.input);
            projection.expr.iter().map(|e| sources_of(e, &projection.input, &input)).collect()
        }
        LogicalPlan::Aggregate(aggregate) => {
            let input = column_lineage(&aggregate.input);
            let exprs = aggregate.group_expr.iter().chain(&aggregate.aggr_expr);
            let mut out: Vec<Sources> = exprs.map(|e| sources_of(e, &aggregate.input, &input)).collect();
            // Grouping sets add an internal id column.
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
                    column.extend(sources);
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
                    let all: Sources = inputs.iter().flat_map(|i| column_lineage(i)).flatten().collect();
                    vec![all; width]
                }
            }
        }
    }
}

/// The sources of the columns `expr` reads from `input`.
fn sources_of(expr: &Expr, input: &LogicalPlan, lineage: &[Sources]) -> Sources {
    let mut sources = Sources::new();
    for column in expr.column_refs() {
        if let Some(index) = input.schema().maybe_index_of_column(column) {
            if let Some(found) = lineage.get(index) {
                sources.extend(found.iter().cloned());
            }
        }
    }
    sources
}

/// Per output column name, its sources, for `target/lineage.json` and `pipe lineage`.
pub fn by_column(plan: &LogicalPlan) -> BTreeMap<String, Vec<(String, String)>> {
    plan.schema()
        .fields()
        .iter()
        .zip(column_lineage(plan))
        .map(|(field, sources)| (field.name().clone(), sources.into_iter().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::by_column;
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
        let lineage = by_column(&plan);
        let pair = |r: &str, c: &str| (r.to_string(), c.to_string());
        assert_eq!(lineage["country"], [pair("silver.customers", "country")]);
        assert_eq!(lineage["revenue"], [pair("silver.orders", "amount")]);
        assert!(lineage["n"].is_empty() && lineage["currency"].is_empty(), "{lineage:?}");
        assert_eq!(lineage["rank"], [pair("silver.customers", "country")]);
    }
}
