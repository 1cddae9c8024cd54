//! DuckDB's operators (`/`, `//`, `^`, date and interval arithmetic) and type names, planned through DataFusion's
//! `ExprPlanner` and `TypePlanner`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, IntervalUnit, TimeUnit};
use datafusion::common::{plan_err, DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr, TypePlanner};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{self, BinaryOperator};

pub(super) fn is_decimal(data_type: &DataType) -> bool {
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
pub(super) struct Operators;

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
pub(super) struct Types;

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

/// `duckdb_interval_times(interval, n)`: an interval with its months, days and nanoseconds multiplied by `n`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct IntervalTimes {
    signature: Signature,
}

impl IntervalTimes {
    pub(super) fn new() -> IntervalTimes {
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
