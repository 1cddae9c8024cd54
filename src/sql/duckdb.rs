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

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, IntervalUnit, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{plan_err, DFSchema, Result, ScalarValue};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, ScalarFunction, Sort};
use datafusion::logical_expr::expr_rewriter::{FunctionRewrite, NamePreserver};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr, TypePlanner};
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast::{self, BinaryOperator};

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
        functions.extend(functions_planned().into_iter().map(Arc::new));
    }
    if let Some(aggregates) = builder.aggregate_functions() {
        aggregates.extend(aggregates_planned());
    }
    builder
}

/// The rewrite of DuckDB's functions: register it on the built state (`FunctionRegistry::register_function_rewrite`).
pub fn function_rewrite() -> Arc<dyn FunctionRewrite + Send + Sync> {
    Arc::new(Functions)
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

/// Plans and runs `sql` in `ctx` as `SessionContext::sql` does, with DuckDB's case-insensitive column lookup
/// (`resolve_case`) when the session has DuckDB's dialect.
pub async fn sql(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<datafusion::prelude::DataFrame> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    if !dialect.to_string().eq_ignore_ascii_case("duckdb") {
        return ctx.sql(sql).await;
    }
    let mut statement = state.sql_to_statement(sql, &dialect)?;
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
        resolve_case(inner, &|table| known.get(table).cloned());
    }
    let plan = state.statement_to_plan(statement).await?;
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

fn is_decimal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..)
    )
}

fn is_exact_number(data_type: &DataType) -> bool {
    data_type.is_integer() || matches!(data_type, DataType::Decimal128(..) | DataType::Decimal256(..) | DataType::Null)
}

/// `/` of exact numbers is a DOUBLE; `//` divides integers (truncating), and is `/` for anything else.
#[derive(Debug)]
struct Operators;

impl ExprPlanner for Operators {
    fn plan_binary_op(&self, expr: RawBinaryExpr, schema: &DFSchema) -> Result<PlannerResult<RawBinaryExpr>> {
        let types =
            || -> Result<(DataType, DataType)> { Ok((expr.left.get_type(schema)?, expr.right.get_type(schema)?)) };
        match expr.op {
            BinaryOperator::Divide => {
                let (left, right) = types()?;
                if is_exact_number(&left) && is_exact_number(&right) {
                    let RawBinaryExpr { op, left, right } = expr;
                    return Ok(PlannerResult::Original(RawBinaryExpr {
                        op,
                        left: left.cast_to(&DataType::Float64, schema)?,
                        right: right.cast_to(&DataType::Float64, schema)?,
                    }));
                }
                Ok(PlannerResult::Original(expr))
            }
            BinaryOperator::DuckIntegerDivide => {
                let (left_type, right_type) = types()?;
                let RawBinaryExpr { left, right, .. } = expr;
                let planned = if left_type.is_integer() && right_type.is_integer() {
                    Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                        Box::new(left),
                        Operator::Divide,
                        Box::new(right),
                    ))
                } else {
                    Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                        Box::new(left.cast_to(&DataType::Float64, schema)?),
                        Operator::Divide,
                        Box::new(right.cast_to(&DataType::Float64, schema)?),
                    ))
                };
                Ok(PlannerResult::Planned(planned))
            }
            // An integer times an interval: each of its parts multiplied.
            BinaryOperator::Multiply => {
                let (left_type, right_type) = types()?;
                let is_interval = |t: &DataType| matches!(t, DataType::Interval(_));
                let RawBinaryExpr { op, left, right } = expr;
                let (interval, times) = match (is_interval(&left_type), is_interval(&right_type)) {
                    (true, false) if right_type.is_integer() => (left, right),
                    (false, true) if left_type.is_integer() => (right, left),
                    _ => return Ok(PlannerResult::Original(RawBinaryExpr { op, left, right })),
                };
                let interval = interval.cast_to(&DataType::Interval(IntervalUnit::MonthDayNano), schema)?;
                let times = times.cast_to(&DataType::Int64, schema)?;
                let udf = Arc::new(ScalarUDF::new_from_impl(IntervalTimes::new()));
                Ok(PlannerResult::Planned(Expr::ScalarFunction(ScalarFunction::new_udf(udf, vec![interval, times]))))
            }
            // `^` is DuckDB's power (DataFusion's bitwise xor).
            BinaryOperator::BitwiseXor | BinaryOperator::PGExp => {
                let RawBinaryExpr { left, right, .. } = expr;
                let power = datafusion::functions::math::power();
                Ok(PlannerResult::Planned(Expr::ScalarFunction(ScalarFunction::new_udf(
                    power,
                    vec![left.cast_to(&DataType::Float64, schema)?, right.cast_to(&DataType::Float64, schema)?],
                ))))
            }
            // A date plus or minus an interval is a timestamp in DuckDB (a date in DataFusion).
            BinaryOperator::Plus | BinaryOperator::Minus => {
                let (left_type, right_type) = types()?;
                let is_date = |t: &DataType| matches!(t, DataType::Date32 | DataType::Date64);
                let is_interval = |t: &DataType| matches!(t, DataType::Interval(_));
                let RawBinaryExpr { op, left, right } = expr;
                let timestamp = DataType::Timestamp(TimeUnit::Microsecond, None);
                Ok(PlannerResult::Original(match (is_date(&left_type), is_date(&right_type)) {
                    (true, false) if is_interval(&right_type) => {
                        RawBinaryExpr { op, left: left.cast_to(&timestamp, schema)?, right }
                    }
                    (false, true) if is_interval(&left_type) => {
                        RawBinaryExpr { op, left, right: right.cast_to(&timestamp, schema)? }
                    }
                    _ => RawBinaryExpr { op, left, right },
                }))
            }
            _ => Ok(PlannerResult::Original(expr)),
        }
    }
}

/// DuckDB's type names DataFusion does not know, or knows with a length it refuses.
#[derive(Debug)]
struct Types;

impl TypePlanner for Types {
    fn plan_type_field(&self, sql_type: &ast::DataType) -> Result<Option<FieldRef>> {
        use ast::DataType as T;
        let data_type = match sql_type {
            // DataFusion plans `VARCHAR`, `TEXT`, `STRING` and `CHAR` itself (as `Utf8View`); the other spellings
            // get the same type, so a union of both never mixes string types.
            T::CharacterVarying(_) | T::CharVarying(_) | T::Nvarchar(_) | T::Character(_) => DataType::Utf8View,
            T::HugeInt | T::UHugeInt => DataType::Decimal128(38, 0),
            T::Custom(name, _) => match name.to_string().to_ascii_lowercase().as_str() {
                "hugeint" | "uhugeint" | "int128" => DataType::Decimal128(38, 0),
                "ubigint" | "uint64" => DataType::UInt64,
                "uinteger" | "uint32" => DataType::UInt32,
                "usmallint" | "uint16" => DataType::UInt16,
                "utinyint" | "uint8" => DataType::UInt8,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(Field::new("", data_type, true))))
    }
}

/// A function DuckDB has, planned under its name with its return type and rewritten away by `Functions`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Planned {
    name: &'static str,
    signature: Signature,
}

fn planned(name: &'static str) -> ScalarUDF {
    ScalarUDF::new_from_impl(Planned { name, signature: Signature::variadic_any(Volatility::Immutable) })
}

fn functions_planned() -> Vec<ScalarUDF> {
    let mut functions: Vec<ScalarUDF> = [
        "date_diff",
        "datediff",
        "date_sub",
        "date_add",
        "strftime",
        "strptime",
        "epoch",
        "epoch_ms",
        "last_day",
        "dayname",
        "monthname",
        "regexp_matches",
        "regexp_extract",
        "sign",
        "year",
        "month",
        "day",
        "if",
        "len",
        "string_split",
    ]
    .into_iter()
    .map(planned)
    .collect();
    functions.push(ScalarUDF::new_from_impl(TimestampTextUdf::new()));
    functions
}

/// DuckDB's names of aggregates DataFusion has under another name.
fn aggregates_planned() -> Vec<Arc<AggregateUDF>> {
    use datafusion::functions_aggregate::{first_last, string_agg};
    let alias = |udaf: Arc<AggregateUDF>, names: &[&'static str]| {
        Arc::new(udaf.as_ref().clone().with_aliases(names.iter().copied()))
    };
    vec![
        alias(string_agg::string_agg_udaf(), &["listagg"]),
        alias(datafusion::functions_aggregate::array_agg::array_agg_udaf(), &["list"]),
        Arc::new(AggregateUDF::new_from_impl(DoubleAverage {
            inner: datafusion::functions_aggregate::average::avg_udaf(),
            signature: Signature::user_defined(Volatility::Immutable),
        })),
        Arc::new(AggregateUDF::new_from_impl(ByAggregate {
            name: "count_star",
            signature: Signature::nullary(Volatility::Immutable),
        })),
        alias(first_last::first_value_udaf(), &["first", "any_value", "arbitrary"]),
        alias(first_last::last_value_udaf(), &["last"]),
        Arc::new(AggregateUDF::new_from_impl(ByAggregate::new("min_by"))),
        Arc::new(AggregateUDF::new_from_impl(ByAggregate::new("arg_min"))),
        Arc::new(AggregateUDF::new_from_impl(ByAggregate::new("max_by"))),
        Arc::new(AggregateUDF::new_from_impl(ByAggregate::new("arg_max"))),
    ]
}

fn timestamp_of(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64)
}

impl ScalarUDFImpl for Planned {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let arg = |i: usize| args.get(i).cloned().unwrap_or(DataType::Null);
        Ok(match self.name {
            "date_diff" | "datediff" | "date_sub" | "epoch_ms" if self.name != "epoch_ms" || timestamp_of(&arg(0)) => {
                DataType::Int64
            }
            "epoch_ms" => DataType::Timestamp(TimeUnit::Millisecond, None),
            "date_add" | "strptime" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "epoch" => DataType::Float64,
            "last_day" => DataType::Date32,
            "strftime" | "dayname" | "monthname" => DataType::Utf8,
            "regexp_matches" => DataType::Boolean,
            "regexp_extract" => DataType::Utf8,
            "sign" => DataType::Int64,
            "year" | "month" | "day" | "len" => DataType::Int64,
            "if" => arg(1),
            "string_split" => DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            other => return plan_err!("`{other}` is not a DuckDB function pipe plans"),
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        plan_err!("`{}` is rewritten before it runs; reaching it is a bug in pipe", self.name)
    }
}

/// `min_by(x, y)` / `arg_min`, `max_by` / `arg_max`: planned under DuckDB's name, rewritten to `first_value(x
/// order by y)` (rows where `y` is null last, so they are never picked over a row with a value).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ByAggregate {
    name: &'static str,
    signature: Signature,
}

impl ByAggregate {
    fn new(name: &'static str) -> ByAggregate {
        ByAggregate { name, signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl datafusion::logical_expr::AggregateUDFImpl for ByAggregate {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Null))
    }

    fn accumulator(
        &self,
        _args: datafusion::logical_expr::function::AccumulatorArgs,
    ) -> Result<Box<dyn datafusion::logical_expr::Accumulator>> {
        plan_err!("`{}` is rewritten before it runs; reaching it is a bug in pipe", self.name)
    }
}

/// DuckDB's `avg`: a DOUBLE for every numeric input (DataFusion keeps a decimal's type), DataFusion's `avg` over the
/// input cast to DOUBLE.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DoubleAverage {
    inner: Arc<AggregateUDF>,
    signature: Signature,
}

impl datafusion::logical_expr::AggregateUDFImpl for DoubleAverage {
    fn name(&self) -> &str {
        "avg"
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [arg] if arg.is_numeric() || arg.is_null() => Ok(vec![DataType::Float64]),
            [other] => plan_err!("avg of {other} is not supported; it takes numbers"),
            _ => plan_err!("avg takes one argument"),
        }
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }

    fn accumulator(
        &self,
        args: datafusion::logical_expr::function::AccumulatorArgs,
    ) -> Result<Box<dyn datafusion::logical_expr::Accumulator>> {
        self.inner.accumulator(args)
    }

    fn state_fields(&self, args: datafusion::logical_expr::function::StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: datafusion::logical_expr::function::AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: datafusion::logical_expr::function::AccumulatorArgs,
    ) -> Result<Box<dyn datafusion::logical_expr::GroupsAccumulator>> {
        self.inner.create_groups_accumulator(args)
    }

    fn create_sliding_accumulator(
        &self,
        args: datafusion::logical_expr::function::AccumulatorArgs,
    ) -> Result<Box<dyn datafusion::logical_expr::Accumulator>> {
        self.inner.create_sliding_accumulator(args)
    }

    fn reverse_expr(&self) -> datafusion::logical_expr::ReversedUDAF {
        datafusion::logical_expr::ReversedUDAF::Identical
    }
}

/// Rewrites DuckDB's functions into DataFusion's, with DuckDB's meaning.
#[derive(Debug)]
struct Functions;

fn call(name: &str, args: Vec<Expr>) -> Result<Expr> {
    let udf = match name {
        "to_char" => datafusion::functions::datetime::to_char(),
        "to_timestamp_micros" => datafusion::functions::datetime::to_timestamp_micros(&ConfigOptions::default()),
        "to_timestamp_millis" => datafusion::functions::datetime::to_timestamp_millis(&ConfigOptions::default()),
        "date_part" => datafusion::functions::datetime::date_part(),
        "date_trunc" => datafusion::functions::datetime::date_trunc(),
        "regexp_like" => datafusion::functions::regex::regexp_like(),
        "character_length" => datafusion::functions::unicode::character_length(),
        "array_length" => datafusion::functions_nested::length::array_length_udf(),
        "string_to_array" => datafusion::functions_nested::string::string_to_array_udf(),
        "regexp_match" => datafusion::functions::regex::regexp_match(),
        "concat" => datafusion::functions::string::concat(),
        "coalesce" => datafusion::functions::core::coalesce(),
        "array_element" => datafusion::functions_nested::extract::array_element_udf(),
        "round" => datafusion::functions::math::round(),
        "signum" => datafusion::functions::math::signum(),
        "trunc" => datafusion::functions::math::trunc(),
        other => return plan_err!("no function `{other}`"),
    };
    Ok(Expr::ScalarFunction(ScalarFunction::new_udf(udf, args)))
}

fn text_lit(value: &str) -> Expr {
    text(value)
}

fn text(value: &str) -> Expr {
    Expr::Literal(ScalarValue::Utf8(Some(value.to_string())), None)
}

/// The date part an argument names (a string literal), lower case.
fn part_of(expr: &Expr) -> Result<String> {
    match expr {
        Expr::Literal(ScalarValue::Utf8(Some(part)) | ScalarValue::Utf8View(Some(part)), _) => {
            Ok(part.trim().to_ascii_lowercase())
        }
        other => plan_err!("the date part must be a string literal such as 'day', not `{other}`"),
    }
}

fn part(name: &str, of: Expr) -> Result<Expr> {
    call("date_part", vec![text(name), of])
}

fn int(expr: Expr) -> Expr {
    Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(expr), DataType::Int64))
}

fn as_timestamp(expr: Expr) -> Expr {
    Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(expr), DataType::Timestamp(TimeUnit::Microsecond, None)))
}

fn lit_i64(value: i64) -> Expr {
    Expr::Literal(ScalarValue::Int64(Some(value)), None)
}

/// DuckDB's `date_diff(part, start, end)`: the number of `part` boundaries between the two.
fn date_diff(part_name: &str, start: Expr, end: Expr) -> Result<Expr> {
    let (start, end) = (as_timestamp(start), as_timestamp(end));
    let year = |e: &Expr| Ok::<_, datafusion::error::DataFusionError>(int(part("year", e.clone())?));
    let by = |unit: &str| -> Result<Expr> {
        let epoch_floor = |e: &Expr| -> Result<Expr> {
            Ok(int(call("date_part", vec![text("epoch"), call("date_trunc", vec![text(unit), e.clone()])?])?))
        };
        let seconds = match unit {
            "week" => 604_800,
            "day" => 86_400,
            "hour" => 3_600,
            "minute" => 60,
            _ => 1,
        };
        Ok((epoch_floor(&end)? - epoch_floor(&start)?) / lit_i64(seconds))
    };
    Ok(match part_name {
        "year" | "years" | "y" | "yr" | "yrs" => year(&end)? - year(&start)?,
        "quarter" | "quarters" => {
            let quarter = |e: &Expr| Ok::<_, datafusion::error::DataFusionError>(int(part("quarter", e.clone())?));
            (year(&end)? - year(&start)?) * lit_i64(4) + quarter(&end)? - quarter(&start)?
        }
        "month" | "months" | "mon" | "mons" => {
            let month = |e: &Expr| Ok::<_, datafusion::error::DataFusionError>(int(part("month", e.clone())?));
            (year(&end)? - year(&start)?) * lit_i64(12) + month(&end)? - month(&start)?
        }
        "week" | "weeks" | "w" => int(by("day")? / lit_i64(7)),
        "day" | "days" | "d" | "dayofmonth" => by("day")?,
        "hour" | "hours" | "h" | "hr" | "hrs" => by("hour")?,
        "minute" | "minutes" | "min" | "mins" | "m" => by("minute")?,
        "second" | "seconds" | "s" | "sec" | "secs" => by("second")?,
        other => return plan_err!("`{other}` is not a date part date_diff knows"),
    })
}

/// DuckDB's `date_sub(part, start, end)`: the number of whole `part`s from `start` to `end` (negative when `end` is
/// earlier). Months count as the calendar does: from Jan 31 to Feb 29 is one whole month, to Feb 28 none.
fn date_sub(part_name: &str, start: Expr, end: Expr) -> Result<Expr> {
    let (start, end) = (as_timestamp(start), as_timestamp(end));
    let fixed = |seconds: f64| -> Result<Expr> {
        let epoch = |e: &Expr| part("epoch", e.clone());
        let elapsed = (epoch(&end)? - epoch(&start)?) / Expr::Literal(ScalarValue::Float64(Some(seconds)), None);
        Ok(int(call("trunc", vec![elapsed])?))
    };
    let months = || -> Result<Expr> {
        let year = |e: &Expr| Ok::<_, datafusion::error::DataFusionError>(int(part("year", e.clone())?));
        let month = |e: &Expr| Ok::<_, datafusion::error::DataFusionError>(int(part("month", e.clone())?));
        let calendar = (year(&end)? - year(&start)?) * lit_i64(12) + month(&end)? - month(&start)?;
        let one_month = Expr::Literal(ScalarValue::new_interval_mdn(1, 0, 0), None);
        let udf = Arc::new(ScalarUDF::new_from_impl(IntervalTimes::new()));
        let shifted =
            start.clone() + Expr::ScalarFunction(ScalarFunction::new_udf(udf, vec![one_month, calendar.clone()]));
        let overshoot = datafusion::logical_expr::when(
            calendar.clone().gt(lit_i64(0)).and(shifted.clone().gt(end.clone())),
            lit_i64(1),
        )
        .when(calendar.clone().lt(lit_i64(0)).and(shifted.lt(end.clone())), lit_i64(-1))
        .otherwise(lit_i64(0))?;
        Ok(calendar - overshoot)
    };
    Ok(match part_name {
        "year" | "years" | "y" | "yr" | "yrs" => months()? / lit_i64(12),
        "quarter" | "quarters" => months()? / lit_i64(3),
        "month" | "months" | "mon" | "mons" => months()?,
        "week" | "weeks" | "w" => fixed(604_800.0)?,
        "day" | "days" | "d" | "dayofmonth" => fixed(86_400.0)?,
        "hour" | "hours" | "h" | "hr" | "hrs" => fixed(3_600.0)?,
        "minute" | "minutes" | "min" | "mins" | "m" => fixed(60.0)?,
        "second" | "seconds" | "s" | "sec" | "secs" => fixed(1.0)?,
        other => return plan_err!("`{other}` is not a date part date_sub knows"),
    })
}

impl FunctionRewrite for Functions {
    fn name(&self) -> &str {
        "duckdb_functions"
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema, _config: &ConfigOptions) -> Result<Transformed<Expr>> {
        match expr {
            Expr::ScalarFunction(ScalarFunction { func, args }) if func.inner().is::<Planned>() => {
                let name = func.name().to_string();
                Ok(Transformed::yes(rewrite_scalar(&name, args, schema)?))
            }
            Expr::AggregateFunction(AggregateFunction { func, params }) if func.inner().is::<ByAggregate>() => {
                if func.name() == "count_star" {
                    return Ok(Transformed::yes(datafusion::functions_aggregate::count::count_all()));
                }
                let ascending = matches!(func.name(), "min_by" | "arg_min");
                let AggregateFunctionParams { mut args, distinct, filter, order_by, null_treatment } = params;
                if args.len() != 2 || !order_by.is_empty() {
                    return plan_err!("`{}` takes a value and the expression it is ordered by", func.name());
                }
                let by = args.pop().unwrap_or_else(|| lit_i64(0));
                let order = vec![Sort::new(by, ascending, false)];
                let first = datafusion::functions_aggregate::first_last::first_value_udaf();
                Ok(Transformed::yes(Expr::AggregateFunction(AggregateFunction::new_udf(
                    first,
                    args,
                    distinct,
                    filter,
                    order,
                    null_treatment,
                ))))
            }
            other => Ok(Transformed::no(other)),
        }
    }
}

fn rewrite_scalar(name: &str, mut args: Vec<Expr>, schema: &DFSchema) -> Result<Expr> {
    let arity = |n: usize| -> Result<()> {
        match args.len() == n {
            true => Ok(()),
            false => plan_err!("`{name}` takes {n} argument(s), not {}", args.len()),
        }
    };
    Ok(match name {
        "date_diff" | "datediff" => {
            arity(3)?;
            let end = args.pop().unwrap_or_else(|| lit_i64(0));
            let start = args.pop().unwrap_or_else(|| lit_i64(0));
            date_diff(&part_of(&args[0])?, start, end)?
        }
        "date_sub" => {
            arity(3)?;
            let end = args.pop().unwrap_or_else(|| lit_i64(0));
            let start = args.pop().unwrap_or_else(|| lit_i64(0));
            date_sub(&part_of(&args[0])?, start, end)?
        }
        "date_add" => {
            arity(2)?;
            let interval = args.pop().unwrap_or_else(|| lit_i64(0));
            as_timestamp(args.remove(0)) + interval
        }
        "strftime" => {
            arity(2)?;
            call("to_char", args)?
        }
        "strptime" => {
            arity(2)?;
            call("to_timestamp_micros", args)?
        }
        "epoch" => {
            arity(1)?;
            Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(part("epoch", args.remove(0))?), DataType::Float64))
        }
        "epoch_ms" => {
            arity(1)?;
            let arg = args.remove(0);
            match timestamp_of(&arg.get_type(schema)?) {
                true => {
                    int(part("epoch", as_timestamp(arg))? * Expr::Literal(ScalarValue::Float64(Some(1000.0)), None))
                }
                false => call("to_timestamp_millis", vec![arg])?,
            }
        }
        "last_day" => {
            arity(1)?;
            let month = call("date_trunc", vec![text("month"), as_timestamp(args.remove(0))])?;
            let next = month + Expr::Literal(ScalarValue::new_interval_ym(0, 1), None);
            let last = next - Expr::Literal(ScalarValue::new_interval_dt(1, 0), None);
            Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(last), DataType::Date32))
        }
        "dayname" | "monthname" => {
            arity(1)?;
            let format = if name == "dayname" { "%A" } else { "%B" };
            call("to_char", vec![as_timestamp(args.remove(0)), text(format)])?
        }
        "regexp_matches" => call("regexp_like", args)?,
        "sign" => {
            arity(1)?;
            int(call(
                "signum",
                vec![Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(args.remove(0)), DataType::Float64))],
            )?)
        }
        // The first match of the pattern (or of its `group`), '' when there is none.
        "regexp_extract" => {
            let (text, pattern) = match args.len() {
                2 | 3 => (args.remove(0), args.remove(0)),
                n => return plan_err!("`regexp_extract` takes 2 or 3 arguments, not {n}"),
            };
            let group = match args.pop() {
                Some(group) => group + lit_i64(1),
                None => lit_i64(1),
            };
            let whole = call("concat", vec![text_lit("("), pattern, text_lit(")")])?;
            let matched = call("regexp_match", vec![text, whole])?;
            call("coalesce", vec![call("array_element", vec![matched, group])?, text_lit("")])?
        }
        "year" | "month" | "day" => {
            arity(1)?;
            int(part(name, args.remove(0))?)
        }
        "if" => {
            arity(3)?;
            let otherwise = args.pop().unwrap_or_else(|| lit_i64(0));
            let then = args.pop().unwrap_or_else(|| lit_i64(0));
            datafusion::logical_expr::when(args.remove(0), then).otherwise(otherwise)?
        }
        "len" => {
            arity(1)?;
            let arg = args.remove(0);
            match arg.get_type(schema)? {
                DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
                    int(call("array_length", vec![arg])?)
                }
                _ => int(call("character_length", vec![arg])?),
            }
        }
        "string_split" => {
            arity(2)?;
            call("string_to_array", args)?
        }
        other => return plan_err!("`{other}` has no rewrite"),
    })
}

/// Casts of timestamps to text written as DuckDB writes them: `2024-01-02 03:04:05`, fractions without trailing
/// zeros. Runs after type coercion, so the casts it added (`'at ' || ts`) are covered too.
#[derive(Debug)]
struct TimestampText;

impl AnalyzerRule for TimestampText {
    fn name(&self) -> &str {
        "duckdb_timestamp_text"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let udf = Arc::new(ScalarUDF::new_from_impl(TimestampTextUdf::new()));
        plan.transform_up_with_subqueries(|plan| {
            let preserver = NamePreserver::new(&plan);
            // Expressions read the plan's inputs (a scan's, its own schema).
            let schema = match plan.inputs().as_slice() {
                [] => plan.schema().as_ref().clone(),
                inputs => datafusion::logical_expr::utils::merge_schema(inputs),
            };
            plan.map_expressions(|expr| {
                let saved = preserver.save(&expr);
                let rewritten = expr.transform_up(|expr| match expr {
                    Expr::Cast(datafusion::logical_expr::Cast { expr: inner, field })
                        if matches!(field.data_type(), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
                            && matches!(inner.get_type(&schema), Ok(DataType::Timestamp(_, None))) =>
                    {
                        let text = Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(&udf), vec![*inner]));
                        Ok(Transformed::yes(Expr::Cast(datafusion::logical_expr::Cast::new_from_field(
                            Box::new(text),
                            field,
                        ))))
                    }
                    // DuckDB rounds a fraction cast to an integer (3.7 is 4); DataFusion truncates.
                    Expr::Cast(datafusion::logical_expr::Cast { expr: inner, field })
                        if field.data_type().is_integer()
                            && inner.get_type(&schema).is_ok_and(|t| t.is_floating() || is_decimal(&t)) =>
                    {
                        let rounded = call("round", vec![*inner])?;
                        Ok(Transformed::yes(Expr::Cast(datafusion::logical_expr::Cast::new_from_field(
                            Box::new(rounded),
                            field,
                        ))))
                    }
                    other => Ok(Transformed::no(other)),
                })?;
                Ok(rewritten.update_data(|expr| saved.restore(expr)))
            })
        })
        .map(|t| t.data)
    }
}

/// `duckdb_interval_times(interval, n)`: an interval with its months, days and nanoseconds multiplied by `n`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalTimes {
    signature: Signature,
}

impl IntervalTimes {
    fn new() -> IntervalTimes {
        IntervalTimes {
            signature: Signature::exact(
                vec![DataType::Interval(IntervalUnit::MonthDayNano), DataType::Int64],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for IntervalTimes {
    fn name(&self) -> &str {
        "duckdb_interval_times"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::{Int64Array, IntervalMonthDayNanoArray};
        use datafusion::arrow::datatypes::IntervalMonthDayNano;
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let [interval, times] = args.args.as_slice() else {
            return plan_err!("duckdb_interval_times takes two arguments");
        };
        let (intervals, times) = (interval.to_array(args.number_rows)?, times.to_array(args.number_rows)?);
        let internal = || datafusion::error::DataFusionError::Internal("unexpected argument types".into());
        let intervals = intervals.as_any().downcast_ref::<IntervalMonthDayNanoArray>().ok_or_else(internal)?;
        let times = times.as_any().downcast_ref::<Int64Array>().ok_or_else(internal)?;
        let overflow = || datafusion::error::DataFusionError::Execution("interval multiplication overflowed".into());
        let product: IntervalMonthDayNanoArray = intervals
            .iter()
            .zip(times.iter())
            .map(|(interval, n)| match (interval, n) {
                (Some(i), Some(n)) => {
                    let n32 = i32::try_from(n).map_err(|_| overflow())?;
                    Ok(Some(IntervalMonthDayNano::new(
                        i.months.checked_mul(n32).ok_or_else(overflow)?,
                        i.days.checked_mul(n32).ok_or_else(overflow)?,
                        i.nanoseconds.checked_mul(n).ok_or_else(overflow)?,
                    )))
                }
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let result: ArrayRef = Arc::new(product);
        Ok(match scalar {
            true => ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?),
            false => ColumnarValue::Array(result),
        })
    }
}

/// `duckdb_timestamp_text(ts)`: a timestamp as DuckDB writes it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimestampTextUdf {
    signature: Signature,
}

impl TimestampTextUdf {
    fn new() -> TimestampTextUdf {
        TimestampTextUdf { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for TimestampTextUdf {
    fn name(&self) -> &str {
        "duckdb_timestamp_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else { return plan_err!("duckdb_timestamp_text takes one argument") };
        let array = arg.to_array(args.number_rows)?;
        let micros = cast(&array, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let micros = micros
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| datafusion::error::DataFusionError::Internal("not a timestamp".into()))?;
        let texts: StringArray = micros.iter().map(|value| value.map(timestamp_text)).collect();
        let result: ArrayRef = Arc::new(texts);
        Ok(match arg {
            ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?),
            ColumnarValue::Array(_) => ColumnarValue::Array(result),
        })
    }
}

/// Microseconds since the epoch as DuckDB writes a timestamp.
pub fn timestamp_text(micros: i64) -> String {
    let Some(at) = chrono::DateTime::from_timestamp_micros(micros) else { return micros.to_string() };
    let mut text = at.format("%Y-%m-%d %H:%M:%S").to_string();
    let fraction = at.timestamp_subsec_micros();
    if fraction != 0 {
        text.push_str(format!(".{fraction:06}").trim_end_matches('0'));
    }
    text
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
