//! Casts as DuckDB makes them: a timestamp as text is `2024-01-02 03:04:05` (no `T`, no trailing zeros), an
//! interval `1 year 2 months 3 days 04:05:06.5`, and a fraction cast to an integer rounds.

use super::functions::call;
use super::planners::is_decimal;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Casts of timestamps to text written as DuckDB writes them: `2024-01-02 03:04:05`, fractions without trailing
/// zeros. Runs after type coercion, so the casts it added (`'at ' || ts`) are covered too.
#[derive(Debug)]
pub(super) struct TimestampText;

impl AnalyzerRule for TimestampText {
    fn name(&self) -> &str {
        "duckdb_timestamp_text"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let udf = Arc::new(ScalarUDF::new_from_impl(TimestampTextUdf::new()));
        let interval_udf = Arc::new(ScalarUDF::new_from_impl(IntervalTextUdf::new()));
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
                    Expr::Cast(datafusion::logical_expr::Cast { expr: inner, field })
                        if matches!(field.data_type(), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
                            && matches!(inner.get_type(&schema), Ok(DataType::Interval(_) | DataType::Duration(_))) =>
                    {
                        let udf = Arc::clone(&interval_udf);
                        let text = Expr::ScalarFunction(ScalarFunction::new_udf(udf, vec![*inner]));
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

/// `duckdb_timestamp_text(ts)`: a timestamp as DuckDB writes it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct TimestampTextUdf {
    signature: Signature,
}

impl TimestampTextUdf {
    pub(super) fn new() -> TimestampTextUdf {
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
        like(arg, result)
    }
}

/// `result` in the shape of the argument it was computed from: a scalar for a scalar, else the array.
fn like(arg: &ColumnarValue, result: ArrayRef) -> Result<ColumnarValue> {
    Ok(match arg {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(result),
    })
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

/// `duckdb_interval_text(x)`: an interval (or a duration: the difference of two timestamps) as DuckDB writes it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalTextUdf {
    signature: Signature,
}

impl IntervalTextUdf {
    fn new() -> IntervalTextUdf {
        IntervalTextUdf { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for IntervalTextUdf {
    fn name(&self) -> &str {
        "duckdb_interval_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else { return plan_err!("duckdb_interval_text takes one argument") };
        let array = arg.to_array(args.number_rows)?;
        let Some(result) = intervals_as_text(&array) else {
            return plan_err!("duckdb_interval_text takes an interval, not {}", array.data_type());
        };
        like(arg, result)
    }
}

/// An array of intervals or durations as DuckDB's text (`None` for another type).
pub fn intervals_as_text(array: &ArrayRef) -> Option<ArrayRef> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{
        DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType, DurationSecondType,
        IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType,
    };
    // A duration is a length of time: DuckDB's difference of two timestamps is whole days and the rest.
    let from_micros = |micros: i64| interval_text(0, (micros / 86_400_000_000) as i32, micros % 86_400_000_000);
    let texts: StringArray = match array.data_type() {
        DataType::Interval(IntervalUnit::MonthDayNano) => array
            .as_primitive::<IntervalMonthDayNanoType>()
            .iter()
            .map(|v| v.map(|v| interval_text(v.months, v.days, v.nanoseconds / 1_000)))
            .collect(),
        DataType::Interval(IntervalUnit::DayTime) => array
            .as_primitive::<IntervalDayTimeType>()
            .iter()
            .map(|v| v.map(|v| interval_text(0, v.days, i64::from(v.milliseconds) * 1_000)))
            .collect(),
        DataType::Interval(IntervalUnit::YearMonth) => {
            array.as_primitive::<IntervalYearMonthType>().iter().map(|v| v.map(|v| interval_text(v, 0, 0))).collect()
        }
        DataType::Duration(TimeUnit::Second) => {
            array.as_primitive::<DurationSecondType>().iter().map(|v| v.map(|v| from_micros(v * 1_000_000))).collect()
        }
        DataType::Duration(TimeUnit::Millisecond) => {
            array.as_primitive::<DurationMillisecondType>().iter().map(|v| v.map(|v| from_micros(v * 1_000))).collect()
        }
        DataType::Duration(TimeUnit::Microsecond) => {
            array.as_primitive::<DurationMicrosecondType>().iter().map(|v| v.map(from_micros)).collect()
        }
        DataType::Duration(TimeUnit::Nanosecond) => {
            array.as_primitive::<DurationNanosecondType>().iter().map(|v| v.map(|v| from_micros(v / 1_000))).collect()
        }
        _ => return None,
    };
    Some(Arc::new(texts))
}

/// An interval as DuckDB writes it: `1 year 2 months 3 days 04:05:06.5`; the parts that are zero are left out,
/// and an interval of nothing is `00:00:00`.
pub fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let mut parts = Vec::new();
    let counted = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 || n == -1 { "" } else { "s" });
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        parts.push(counted(i64::from(years), "year"));
    }
    if months != 0 {
        parts.push(counted(i64::from(months), "month"));
    }
    if days != 0 {
        parts.push(counted(i64::from(days), "day"));
    }
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        let micros = micros.unsigned_abs();
        let (seconds, fraction) = (micros / 1_000_000, micros % 1_000_000);
        let mut time = format!("{sign}{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60);
        if fraction != 0 {
            time.push_str(format!(".{fraction:06}").trim_end_matches('0'));
        }
        parts.push(time);
    }
    parts.join(" ")
}
