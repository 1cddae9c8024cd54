//! Functions DuckDB has and DataFusion lacks: planned under DuckDB's name with their return type (`Planned`), then
//! rewritten by a `FunctionRewrite` into DataFusion expressions with DuckDB's meaning.

use super::aggregates::ByAggregate;
use super::casts::TimestampTextUdf;
use super::planners::IntervalTimes;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{plan_err, DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, ScalarFunction, Sort};
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// A function DuckDB has, planned under its name with its return type and rewritten away by `Functions`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Planned {
    name: &'static str,
    signature: Signature,
}

fn planned(name: &'static str) -> ScalarUDF {
    ScalarUDF::new_from_impl(Planned { name, signature: Signature::variadic_any(Volatility::Immutable) })
}

pub(super) fn functions_planned() -> Vec<ScalarUDF> {
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

/// Rewrites DuckDB's functions into DataFusion's, with DuckDB's meaning.
#[derive(Debug)]
pub(super) struct Functions;

pub(super) fn call(name: &str, args: Vec<Expr>) -> Result<Expr> {
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

/// `coalesce`, `ifnull`/`nvl`, `greatest` and `least` as DuckDB types their arguments: a text argument among values
/// of another type is read as that type (`coalesce(ts, '1900-01-01')` is a TIMESTAMP; DataFusion finds no common
/// type, or falls back to text). Everything else is DataFusion's function.
pub(super) fn one_type_functions() -> Vec<ScalarUDF> {
    use datafusion::functions::core;
    [core::coalesce(), core::nvl(), core::greatest(), core::least()]
        .into_iter()
        .map(|inner| {
            let signature = Signature::user_defined(inner.signature().volatility);
            ScalarUDF::new_from_impl(OneType { inner, signature })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct OneType {
    inner: Arc<ScalarUDF>,
    signature: Signature,
}

/// Delegates every method but the signature and the argument coercion to DataFusion's function.
impl ScalarUDFImpl for OneType {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
        let typed = arg_types.iter().find(|t| !text(t) && !t.is_null());
        let types: Vec<DataType> = match typed {
            Some(typed) => arg_types.iter().map(|t| if text(t) { typed.clone() } else { t.clone() }).collect(),
            None => arg_types.to_vec(),
        };
        match self.inner.signature().type_signature {
            datafusion::logical_expr::TypeSignature::UserDefined => self.inner.inner().coerce_types(&types),
            _ => datafusion::logical_expr::type_coercion::binary::try_type_union_resolution(&types),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: datafusion::logical_expr::ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.inner().invoke_with_args(args)
    }

    fn simplify(
        &self,
        args: Vec<Expr>,
        info: &datafusion::logical_expr::simplify::SimplifyContext,
    ) -> Result<datafusion::logical_expr::simplify::ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }

    fn conditional_arguments<'a>(&self, args: &'a [Expr]) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.inner().conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        self.inner.inner().documentation()
    }
}

/// `floor`, `ceil` and `trunc` of a DECIMAL(p, s) as DuckDB types them: DECIMAL(p, 0) (`floor(-2.5)` is `-3`;
/// DataFusion keeps the scale: `-3.0`). Any other argument is DataFusion's function as it is.
pub(super) fn whole_decimal_functions() -> Vec<ScalarUDF> {
    use datafusion::functions::math;
    [math::floor(), math::ceil(), math::trunc()]
        .into_iter()
        .map(|inner| ScalarUDF::new_from_impl(WholeDecimal { inner }))
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WholeDecimal {
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for WholeDecimal {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::Decimal128(precision, _)] => Ok(DataType::Decimal128(*precision, 0)),
            _ => self.inner.inner().return_type(arg_types),
        }
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let whole = match args.arg_fields.as_slice() {
            [field] => match field.data_type() {
                DataType::Decimal128(..) => Some(args.return_field.data_type().clone()),
                _ => None,
            },
            _ => None,
        };
        let Some(whole) = whole else { return self.inner.invoke_with_args(args) };
        // DataFusion's function gives the value at the input's scale; it is whole, so the cast to scale 0 is exact.
        let input_type = args.arg_fields[0].data_type().clone();
        args.return_field = Arc::new(Field::new(self.name(), input_type, true));
        self.inner.invoke_with_args(args)?.cast_to(&whole, None)
    }
}
