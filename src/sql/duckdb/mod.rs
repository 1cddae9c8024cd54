//! DuckDB's SQL semantics on DataFusion (`sql_dialect: duckdb`, the default of a dbt-duckdb project), through
//! DataFusion's extension points only, never by rewriting SQL text:
//!
//! - the parser: DuckDB's dialect (`//`, `EXCLUDE`, trailing commas, ...) and decimal literals (`0.06 + 0.01` is
//!   exactly `0.07`);
//! - an `ExprPlanner` for operators: `/` of integers or decimals is a DOUBLE, `//` divides integers;
//! - a `TypePlanner` for DuckDB's type names (`CHARACTER VARYING(n)`, `TEXT`, `STRING`, `HUGEINT`, ...);
//! - functions DuckDB has and DataFusion lacks, planned under DuckDB's name and rewritten by a `FunctionRewrite`
//!   into DataFusion expressions with DuckDB's meaning (`date_diff`, `strftime`, `min_by`, ...): the rewrite runs
//!   first in the analyzer, so neither the compile's static plan nor the build's plan ever holds them;
//! - an analyzer rule that casts timestamps to text as DuckDB writes them (`2024-01-02 03:04:05`, no `T`).
//!
//! `tests/sql/duckdb/*.slt` holds a case per behaviour with DuckDB's own answer; `skipif pipe` marks the
//! behaviours not covered yet.

mod aggregates;
mod casts;
mod functions;
mod keywords;
pub mod names;
mod planners;

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::planner::{ExprPlanner, TypePlanner};
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast;

use aggregates::aggregates_planned;
use casts::TimestampText;
pub use casts::{interval_text, intervals_as_text, timestamp_text};
use functions::{functions_planned, one_type_functions, whole_decimal_functions, Functions};
use planners::{Operators, Types};

/// The parser settings of DuckDB mode.
pub fn configure(config: SessionConfig) -> SessionConfig {
    config
        .set_str("datafusion.sql_parser.dialect", "duckdb")
        .set_bool("datafusion.sql_parser.parse_float_as_decimal", true)
        // DuckDB sorts nulls last in both directions (DataFusion, as Postgres, puts them first in a descending sort).
        .set_str("datafusion.sql_parser.default_null_ordering", "nulls_last")
}

/// Adds DuckDB's operators, type names, functions and text casts to a session being built.
pub fn extend(builder: SessionStateBuilder) -> SessionStateBuilder {
    let mut builder = builder.with_type_planner(type_planner()).with_analyzer_rule(Arc::new(TimestampText));
    if let Some(planners) = builder.expr_planners() {
        planners.insert(0, Arc::new(Operators));
    }
    if let Some(functions) = builder.scalar_functions() {
        // Some replace DataFusion's functions of the same names: the registry keeps the last one registered.
        functions.extend(scalar_functions());
    }
    if let Some(aggregates) = builder.aggregate_functions() {
        aggregates.extend(aggregate_functions());
    }
    builder
}

/// The scalar functions `extend` registers: DuckDB's names for DataFusion's functions, DuckDB's own, and DuckDB's
/// versions of functions DataFusion has under the same name (`coalesce`, `floor`, ...).
pub fn scalar_functions() -> Vec<Arc<datafusion::logical_expr::ScalarUDF>> {
    functions_planned().into_iter().chain(one_type_functions()).chain(whole_decimal_functions()).map(Arc::new).collect()
}

/// The aggregate functions `extend` registers; `avg` replaces DataFusion's.
pub fn aggregate_functions() -> Vec<Arc<datafusion::logical_expr::AggregateUDF>> {
    aggregates_planned()
}

/// The rewrite of DuckDB's functions: register it on the built state (`FunctionRegistry::register_function_rewrite`).
pub fn function_rewrite() -> Arc<dyn FunctionRewrite + Send + Sync> {
    Arc::new(Functions)
}

/// The parsed statement made to mean what it means in DuckDB, before DataFusion plans it: columns found whatever
/// their case (`resolve_case`), unaliased expressions named as DuckDB names them (`names`), a literal in scientific
/// notation a DOUBLE (`1e3`; with decimal literals DataFusion reads it as a DECIMAL), and `ORDER BY ALL` over the
/// select list's positions (DataFusion expands it to plain columns only).
pub fn prepare(statement: &mut ast::Statement, columns: &dyn Fn(&str) -> Option<Vec<String>>) {
    resolve_case(statement, columns);
    names::name_columns(statement);
    let _ = ast::visit_expressions_mut(statement, |expr| {
        if let ast::Expr::Value(value) = expr {
            if let ast::Value::Number(text, _) = &value.value {
                if text.contains(['e', 'E']) {
                    let text = ast::Value::SingleQuotedString(text.clone());
                    *expr = ast::Expr::Cast {
                        kind: ast::CastKind::Cast,
                        expr: Box::new(ast::Expr::Value(text.into())),
                        data_type: ast::DataType::Double(ast::ExactNumberInfo::None),
                        array: false,
                        format: None,
                    };
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    struct OrderByAll;
    impl ast::VisitorMut for OrderByAll {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut ast::Query) -> std::ops::ControlFlow<()> {
            let (Some(order_by), ast::SetExpr::Select(select)) = (&mut query.order_by, query.body.as_ref()) else {
                return std::ops::ControlFlow::Continue(());
            };
            let ast::OrderByKind::All(options) = &order_by.kind else { return std::ops::ControlFlow::Continue(()) };
            let wildcard = select
                .projection
                .iter()
                .any(|item| matches!(item, ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..)));
            if !wildcard {
                let positions = (1..=select.projection.len())
                    .map(|i| ast::OrderByExpr {
                        expr: ast::Expr::Value(ast::Value::Number(i.to_string(), false).into()),
                        options: *options,
                        with_fill: None,
                    })
                    .collect();
                order_by.kind = ast::OrderByKind::Expressions(positions);
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(statement, &mut OrderByAll);
}

/// DuckDB finds a column whatever case it is written in; DataFusion lowers an unquoted name and matches it exactly,
/// so a column named with capitals (a CSV header `CustomerID`) is found only quoted. Here an unquoted name that
/// matches no input column as lowered, but exactly one of them regardless of case, is quoted with that column's case.
/// `columns` gives the columns of a relation the statement reads (by its name, lower case).
pub fn resolve_case(statement: &mut ast::Statement, columns: &dyn Fn(&str) -> Option<Vec<String>>) {
    use std::collections::{BTreeSet, HashMap};
    use std::ops::ControlFlow;
    let mut tables = Vec::new();
    let _ = ast::visit_relations(statement, |name| {
        tables.push(name.to_string().to_lowercase());
        ControlFlow::<()>::Continue(())
    });
    let mut by_lower: HashMap<String, BTreeSet<String>> = HashMap::new();
    for columns in tables.iter().filter_map(|table| columns(table)) {
        for column in columns {
            by_lower.entry(column.to_lowercase()).or_default().insert(column);
        }
    }
    let fixes: HashMap<String, String> = by_lower
        .into_iter()
        .filter(|(lower, exact)| exact.len() == 1 && !exact.contains(lower))
        .filter_map(|(lower, exact)| Some((lower, exact.into_iter().next()?)))
        .collect();
    if fixes.is_empty() {
        return;
    }
    let fix = |ident: &mut ast::Ident| {
        if ident.quote_style.is_none() {
            if let Some(exact) = fixes.get(&ident.value.to_lowercase()) {
                ident.value = exact.clone();
                ident.quote_style = Some('"');
            }
        }
    };
    let _ = ast::visit_expressions_mut(statement, |expr| {
        match expr {
            ast::Expr::Identifier(ident) => fix(ident),
            ast::Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last_mut() {
                    fix(last);
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Plans `sql` in `ctx` as `SessionContext::sql` does, with DuckDB's case-insensitive column lookup (`resolve_case`)
/// when the session has DuckDB's dialect. A query's plan is returned analyzed (types coerced): the frame's schema is
/// then the schema of the rows it yields, which `SessionContext::sql` does not promise (a UNION's columns keep the
/// first branch's types until the analyzer widens them, so a table created from that schema refuses the rows).
pub async fn sql(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<datafusion::prelude::DataFrame> {
    use datafusion::logical_expr::LogicalPlan;
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let mut statement = state.sql_to_statement(sql, &dialect)?;
    if dialect.to_string().eq_ignore_ascii_case("duckdb") {
        if let datafusion::sql::parser::Statement::Statement(inner) = &mut statement {
            let mut names = Vec::new();
            let _ = ast::visit_relations(inner.as_ref(), |name| {
                names.push(name.to_string());
                std::ops::ControlFlow::<()>::Continue(())
            });
            let mut known = std::collections::HashMap::new();
            for name in names {
                if let Ok(provider) = ctx.table_provider(name.as_str()).await {
                    let columns: Vec<String> = provider.schema().fields().iter().map(|f| f.name().clone()).collect();
                    known.insert(name.to_lowercase(), columns);
                }
            }
            prepare(inner, &|table| known.get(table).cloned());
        }
    }
    let plan = state.statement_to_plan(statement).await?;
    let plan = match plan {
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Statement(_) | LogicalPlan::Copy(_) => plan,
        query => state.analyzer().execute_and_check(query, state.config_options(), |_, _| {})?,
    };
    ctx.execute_logical_plan(plan).await
}

/// A session with DuckDB's semantics and nothing registered (the SQL logic tests run in one).
pub fn session() -> datafusion::prelude::SessionContext {
    use datafusion::execution::FunctionRegistry;
    let config = configure(SessionConfig::new().with_information_schema(true));
    let mut state = extend(SessionStateBuilder::new().with_default_features().with_config(config)).build();
    let _ = state.register_function_rewrite(function_rewrite());
    datafusion::prelude::SessionContext::new_with_state(state)
}

pub fn type_planner() -> Arc<dyn TypePlanner> {
    Arc::new(Types)
}

/// The expression planner for DuckDB's operators, for planners that build their own provider.
pub fn expr_planner() -> Arc<dyn ExprPlanner> {
    Arc::new(Operators)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_without_t_or_trailing_zeros() {
        assert_eq!(timestamp_text(1_704_164_645_000_000), "2024-01-02 03:04:05");
        assert_eq!(timestamp_text(1_704_164_645_120_000), "2024-01-02 03:04:05.12");
    }
}
