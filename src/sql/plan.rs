//! Static analysis: plans a model's SQL with DataFusion against the schemas of its inputs, without executing
//! anything, to learn its output columns and to report unknown columns, ambiguous names, type mismatches and
//! unknown functions at compile time.
//!
//! Inputs are `EmptyTable`s with the upstream schemas, served by a small `ContextProvider`, so planning a model never
//! expands its upstream views: the cost of planning a project is linear in its size.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableFunction;
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, SchemaError, TableReference};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner};
use datafusion::logical_expr::{AggregateUDF, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF};
use datafusion::prelude::{Expr, SessionConfig};
use datafusion::sql::planner::{ParserOptions, SqlToRel};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Why planning failed, with what is needed for a good diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub message: String,
    /// 1-based line and column in the planned SQL, when DataFusion knows it.
    pub location: Option<(u64, u64)>,
    /// For an unknown column: the name and the columns that do exist.
    pub unknown_column: Option<(String, Vec<String>)>,
    /// Further lines of DataFusion's message.
    pub notes: Vec<String>,
    /// A close name for an unknown function.
    pub suggestion: Option<String>,
}

/// The session whose function registry and optimizer planning uses; built once and shared.
pub struct StaticPlanner {
    state: SessionState,
    table_functions: HashMap<String, Arc<TableFunction>>,
    dialect: crate::project::SqlDialect,
    type_planner: Option<Arc<dyn datafusion::logical_expr::planner::TypePlanner>>,
}

impl Default for StaticPlanner {
    fn default() -> Self {
        StaticPlanner::new()
    }
}

impl StaticPlanner {
    /// A planner with DataFusion's semantics.
    pub fn new() -> StaticPlanner {
        StaticPlanner::for_dialect(crate::project::SqlDialect::DataFusion)
    }

    /// A planner with `dialect`'s semantics (`sql::duckdb` for DuckDB's).
    pub fn for_dialect(dialect: crate::project::SqlDialect) -> StaticPlanner {
        let mut config = SessionConfig::new();
        if dialect.is_duckdb() {
            config = super::duckdb::configure(config);
        }
        config.options_mut().sql_parser.collect_spans = true;
        if let Ok(limit) = datafusion::common::config::ConfigNonZeroUsize::try_new(super::RECURSION_LIMIT) {
            config.options_mut().sql_parser.recursion_limit = limit;
        }
        let mut builder = SessionStateBuilder::new().with_default_features().with_config(config);
        if dialect.is_duckdb() {
            builder = super::duckdb::extend(builder);
        }
        let mut state = builder.build();
        let type_planner = dialect.is_duckdb().then(super::duckdb::type_planner);
        if dialect.is_duckdb() {
            use datafusion::execution::FunctionRegistry;
            let _ = state.register_function_rewrite(super::duckdb::function_rewrite());
        }
        let table_functions = state.table_functions().clone();
        StaticPlanner { state, table_functions, dialect, type_planner }
    }

    /// Plans and analyzes `sql` against `inputs` (relation name, lower case -> schema); returns the output schema.
    pub fn plan(&self, sql: &str, inputs: &HashMap<String, SchemaRef>) -> Result<SchemaRef, PlanError> {
        Ok(Arc::new(self.plan_logical(sql, inputs)?.schema().as_arrow().clone()))
    }

    /// The analyzed logical plan of `sql`, its scans bound to empty tables of the input schemas: a build rebinds
    /// them to the warehouse's tables instead of planning the SQL again.
    pub fn plan_logical(&self, sql: &str, inputs: &HashMap<String, SchemaRef>) -> Result<LogicalPlan, PlanError> {
        let (generic, duckdb) = (GenericDialect {}, datafusion::sql::sqlparser::dialect::DuckDbDialect {});
        let dialect: &dyn datafusion::sql::sqlparser::dialect::Dialect =
            if self.dialect.is_duckdb() { &duckdb } else { &generic };
        let mut statement = Parser::new(dialect)
            .with_recursion_limit(super::RECURSION_LIMIT)
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statement())
            .map_err(|e| PlanError {
                message: e.to_string(),
                location: None,
                unknown_column: None,
                notes: Vec::new(),
                suggestion: None,
            })?;
        if self.dialect.is_duckdb() {
            let columns =
                |table: &str| inputs.get(table).map(|s| s.fields().iter().map(|f| f.name().clone()).collect());
            super::duckdb::prepare(&mut statement, &columns);
        }
        let provider = Provider {
            state: &self.state,
            inputs,
            table_functions: &self.table_functions,
            type_planner: self.type_planner.clone(),
        };
        let mut options = ParserOptions::from(&self.state.config_options().sql_parser);
        options.collect_spans = true;
        let planner = SqlToRel::new_with_options(&provider, options);
        let plan = planner.sql_statement_to_plan(statement).map_err(|e| self.suggest_function(plan_error(&e)))?;
        // The analyzer (type coercion, function and column checks) finds every error planning can; optimizer rules
        // keep the schema unchanged by contract, so they are skipped: they cost most of the time.
        let plan = self
            .state
            .analyzer()
            .execute_and_check(plan, self.state.config_options(), |_, _| {})
            .map_err(|e| plan_error(&e))?;
        Ok(plan)
    }
}

impl StaticPlanner {
    /// For an unknown function, the closest known function name as the suggestion.
    fn suggest_function(&self, mut err: PlanError) -> PlanError {
        if let Some(name) = err.message.strip_prefix("Invalid function '").and_then(|rest| rest.split('\'').next()) {
            let names = self
                .state
                .scalar_functions()
                .keys()
                .chain(self.state.aggregate_functions().keys())
                .chain(self.state.window_functions().keys());
            err.suggestion = crate::suggest::did_you_mean(name, names.map(String::as_str)).map(str::to_string);
        }
        err
    }
}

fn plan_error(err: &DataFusionError) -> PlanError {
    let location = err.diagnostic().and_then(|d| d.span).map(|span| (span.start.line, span.start.column));
    let mut unknown_column = None;
    let mut current = err;
    loop {
        match current {
            DataFusionError::SchemaError(schema_error, _) => {
                let SchemaError::FieldNotFound { field, valid_fields } = schema_error.as_ref() else { break };
                let valid = valid_fields.iter().map(|c| c.name.clone()).collect();
                unknown_column = Some((field.name.clone(), valid));
                break;
            }
            DataFusionError::Context(_, inner) => current = inner,
            DataFusionError::Diagnostic(_, inner) => current = inner,
            _ => break,
        }
    }
    // An optimizer rule's failure reads "Optimizer rule 'x' failed / caused by / <the error>": keep the error.
    let full = err.strip_backtrace();
    let innermost = full.rsplit("caused by").next().unwrap_or(&full);
    let text = crate::sql::clean_message(innermost);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().trim().trim_end_matches('.').to_string();
    // DataFusion's own "Did you mean" for functions depends on hash-map order; pipe suggests deterministically.
    let notes: Vec<String> =
        lines.map(|l| l.trim().to_string()).filter(|l| !l.is_empty() && !l.starts_with("Did you mean")).collect();
    let message = match &unknown_column {
        Some((name, _)) => format!("unknown column `{name}`"),
        None => first,
    };
    PlanError { message, location, unknown_column, notes, suggestion: None }
}

struct Provider<'a> {
    state: &'a SessionState,
    inputs: &'a HashMap<String, SchemaRef>,
    table_functions: &'a HashMap<String, Arc<TableFunction>>,
    type_planner: Option<Arc<dyn datafusion::logical_expr::planner::TypePlanner>>,
}

impl ContextProvider for Provider<'_> {
    fn get_table_source(&self, name: TableReference) -> datafusion::common::Result<Arc<dyn TableSource>> {
        let key = name.to_string().to_lowercase();
        let schema = self
            .inputs
            .get(&key)
            .ok_or_else(|| DataFusionError::Plan(format!("table `{name}` is not a ref, a source or a CTE")))?;
        Ok(provider_as_source(Arc::new(EmptyTable::new(Arc::clone(schema)))))
    }

    fn get_table_function_source(
        &self,
        name: &str,
        args: Vec<Expr>,
    ) -> datafusion::common::Result<Arc<dyn TableSource>> {
        let function = self
            .table_functions
            .get(name)
            .ok_or_else(|| DataFusionError::Plan(format!("unknown table function `{name}`")))?;
        let provider =
            function.create_table_provider_with_args(datafusion::catalog::TableFunctionArgs::new(&args, self.state))?;
        Ok(provider_as_source(provider))
    }

    fn create_cte_work_table(&self, name: &str, schema: SchemaRef) -> datafusion::common::Result<Arc<dyn TableSource>> {
        let table = Arc::new(datafusion::datasource::cte_worktable::CteWorkTable::new(name, schema));
        Ok(provider_as_source(table))
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_type_planner(&self) -> Option<Arc<dyn datafusion::logical_expr::planner::TypePlanner>> {
        self.type_planner.clone()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state.higher_order_functions().keys().cloned().collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn inputs() -> HashMap<String, SchemaRef> {
        let schema =
            Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("amount", DataType::Float64, true)]);
        HashMap::from([("silver.orders".to_string(), Arc::new(schema))])
    }

    #[test]
    fn plans_output_columns() {
        let planner = StaticPlanner::new();
        let schema = planner
            .plan("select id, sum(amount) as total, count(*) as n from silver.orders group by id", &inputs())
            .unwrap();
        let got: Vec<(String, String, bool)> =
            schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable())).collect();
        assert_eq!(
            got,
            vec![
                ("id".into(), "Int64".into(), true),
                ("total".into(), "Float64".into(), true),
                ("n".into(), "Int64".into(), false)
            ]
        );
    }

    #[test]
    fn unknown_column_names_the_candidates_and_position() {
        let planner = StaticPlanner::new();
        let err = planner.plan("select id,\n  amout from silver.orders", &inputs()).unwrap_err();
        assert_eq!(err.message, "unknown column `amout`");
        assert_eq!(err.location, Some((2, 3)));
        let (name, valid) = err.unknown_column.unwrap();
        assert_eq!((name.as_str(), valid), ("amout", vec!["id".to_string(), "amount".to_string()]));
    }

    #[test]
    fn unknown_function_and_type_mismatch_are_errors() {
        let planner = StaticPlanner::new();
        let err = planner.plan("select no_such_fn(id) from silver.orders", &inputs()).unwrap_err();
        assert!(err.message.contains("no_such_fn"), "{}", err.message);
        let err = planner.plan("select id from silver.orders where amount = date '2024-01-01'", &inputs()).unwrap_err();
        assert!(err.message.to_lowercase().contains("cannot") || err.message.contains("coerc"), "{}", err.message);
    }
}
