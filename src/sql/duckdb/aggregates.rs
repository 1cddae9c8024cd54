//! DuckDB's aggregates: aliases of DataFusion's (`listagg`, `list`, `first`, `any_value`), `min_by`-style ones
//! rewritten to `first_value` with an order, `count_star`, and an `avg` that is a DOUBLE for every numeric input.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef, UInt64Type};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{AggregateUDF, EmitTo, Signature, Volatility};

/// DuckDB's names of aggregates DataFusion has under another name.
pub(super) fn aggregates_planned() -> Vec<Arc<AggregateUDF>> {
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

/// `min_by(x, y)` / `arg_min`, `max_by` / `arg_max`: planned under DuckDB's name, rewritten to `first_value(x
/// order by y)` (rows where `y` is null last, so they are never picked over a row with a value).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct ByAggregate {
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

/// DuckDB's `avg`: a DOUBLE for every numeric input (DataFusion keeps a decimal's type). Integers and floats are
/// DataFusion's `avg` over the input cast to DOUBLE; a DECIMAL is summed exactly and divided once at the end, as
/// DuckDB does (summing the values as doubles drifts in the last digits over a few hundred thousand rows).
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
            [DataType::Decimal128(p, s)] => Ok(vec![DataType::Decimal128(*p, *s)]),
            [arg] if arg.is_numeric() || arg.is_null() => Ok(vec![DataType::Float64]),
            [other] => plan_err!("avg of {other} is not supported; it takes numbers"),
            _ => plan_err!("avg takes one argument"),
        }
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn datafusion::logical_expr::Accumulator>> {
        match decimal_scale(args.expr_fields) {
            Some(scale) => Ok(Box::new(DecimalAverage::new(scale, args.is_distinct))),
            None => self.inner.accumulator(args),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let Some(scale) = decimal_scale(args.input_fields) else {
            return self.inner.state_fields(args);
        };
        let sum = DataType::Decimal128(38, scale);
        if args.is_distinct {
            let item = Arc::new(Field::new_list_field(sum, true));
            return Ok(vec![Arc::new(Field::new(format!("{}[distinct]", args.name), DataType::List(item), true))]);
        }
        Ok(vec![
            Arc::new(Field::new(format!("{}[sum]", args.name), sum, true)),
            Arc::new(Field::new(format!("{}[count]", args.name), DataType::UInt64, false)),
        ])
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        match decimal_scale(args.expr_fields) {
            Some(_) => !args.is_distinct,
            None => self.inner.groups_accumulator_supported(args),
        }
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn datafusion::logical_expr::GroupsAccumulator>> {
        match decimal_scale(args.expr_fields) {
            Some(scale) => Ok(Box::new(DecimalAverageGroups { scale, sums: Vec::new(), counts: Vec::new() })),
            None => self.inner.create_groups_accumulator(args),
        }
    }

    fn create_sliding_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn datafusion::logical_expr::Accumulator>> {
        match decimal_scale(args.expr_fields) {
            Some(scale) => Ok(Box::new(DecimalAverage::new(scale, args.is_distinct))),
            None => self.inner.create_sliding_accumulator(args),
        }
    }

    fn reverse_expr(&self) -> datafusion::logical_expr::ReversedUDAF {
        datafusion::logical_expr::ReversedUDAF::Identical
    }
}

/// The scale of a DECIMAL argument: the inputs `avg` sums exactly.
fn decimal_scale(fields: &[FieldRef]) -> Option<i8> {
    match fields.first().map(|f| f.data_type()) {
        Some(DataType::Decimal128(_, scale)) => Some(*scale),
        _ => None,
    }
}

/// The mean of an exact sum, as DuckDB finishes a decimal average: the 128-bit sum divided by `count * 10^scale`.
fn decimal_mean(sum: i128, count: u64, scale: i8) -> f64 {
    sum as f64 / (count as f64 * 10f64.powi(i32::from(scale)))
}

/// `avg` of a DECIMAL for one group (and in window frames: it retracts): the exact sum and the count, or the
/// distinct values for `avg(distinct x)`.
#[derive(Debug)]
struct DecimalAverage {
    scale: i8,
    sum: i128,
    count: u64,
    distinct: Option<std::collections::HashSet<i128>>,
}

impl DecimalAverage {
    fn new(scale: i8, distinct: bool) -> DecimalAverage {
        DecimalAverage { scale, sum: 0, count: 0, distinct: distinct.then(Default::default) }
    }

    fn add(&mut self, value: i128) {
        match &mut self.distinct {
            Some(seen) => {
                seen.insert(value);
            }
            None => {
                self.sum = self.sum.wrapping_add(value);
                self.count += 1;
            }
        }
    }
}

impl datafusion::logical_expr::Accumulator for DecimalAverage {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<Decimal128Type>();
        for value in values.iter().flatten() {
            self.add(value);
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<Decimal128Type>();
        for value in values.iter().flatten() {
            self.sum = self.sum.wrapping_sub(value);
            self.count -= 1;
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        self.distinct.is_none()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (sum, count) = match &self.distinct {
            Some(seen) => (seen.iter().fold(0i128, |a, v| a.wrapping_add(*v)), seen.len() as u64),
            None => (self.sum, self.count),
        };
        Ok(ScalarValue::Float64((count > 0).then(|| decimal_mean(sum, count, self.scale))))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.distinct.as_ref().map_or(0, |s| s.capacity() * 16)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let decimal = |v: i128| ScalarValue::Decimal128(Some(v), 38, self.scale);
        match &self.distinct {
            Some(seen) => {
                let values: Vec<ScalarValue> = seen.iter().map(|v| decimal(*v)).collect();
                let list = ScalarValue::new_list_nullable(&values, &DataType::Decimal128(38, self.scale));
                Ok(vec![ScalarValue::List(list)])
            }
            None => Ok(vec![decimal(self.sum), ScalarValue::UInt64(Some(self.count))]),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        if self.distinct.is_some() {
            for list in states[0].as_list::<i32>().iter().flatten() {
                for value in list.as_primitive::<Decimal128Type>().iter().flatten() {
                    self.add(value);
                }
            }
            return Ok(());
        }
        let sums = states[0].as_primitive::<Decimal128Type>();
        let counts = states[1].as_primitive::<UInt64Type>();
        for row in 0..sums.len() {
            if sums.is_valid(row) {
                self.sum = self.sum.wrapping_add(sums.value(row));
                self.count += counts.value(row);
            }
        }
        Ok(())
    }
}

/// `avg` of a DECIMAL per group, for `group by`: an exact sum and a count per group.
#[derive(Debug)]
struct DecimalAverageGroups {
    scale: i8,
    sums: Vec<i128>,
    counts: Vec<u64>,
}

/// Whether a row is counted: not filtered out by the aggregate's `filter (where ...)`.
fn kept(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

impl datafusion::logical_expr::GroupsAccumulator for DecimalAverageGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, 0);
        self.counts.resize(total_num_groups, 0);
        let values = values[0].as_primitive::<Decimal128Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if values.is_valid(row) && kept(opt_filter, row) {
                self.sums[group] = self.sums[group].wrapping_add(values.value(row));
                self.counts[group] += 1;
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.sums.resize(total_num_groups, 0);
        self.counts.resize(total_num_groups, 0);
        let sums = values[0].as_primitive::<Decimal128Type>();
        let counts = values[1].as_primitive::<UInt64Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if sums.is_valid(row) {
                self.sums[group] = self.sums[group].wrapping_add(sums.value(row));
                self.counts[group] += counts.value(row);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = emit_to.take_needed(&mut self.sums);
        let counts = emit_to.take_needed(&mut self.counts);
        let means: Float64Array = sums
            .iter()
            .zip(&counts)
            .map(|(sum, count)| (*count > 0).then(|| decimal_mean(*sum, *count, self.scale)))
            .collect();
        Ok(Arc::new(means))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let sums = emit_to.take_needed(&mut self.sums);
        let counts = emit_to.take_needed(&mut self.counts);
        let sums = Decimal128Array::from(sums).with_precision_and_scale(38, self.scale)?;
        Ok(vec![Arc::new(sums), Arc::new(UInt64Array::from(counts))])
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let values = values[0].as_primitive::<Decimal128Type>();
        let counted = |row: usize| values.is_valid(row) && kept(opt_filter, row);
        let sums: Decimal128Array = (0..values.len()).map(|row| counted(row).then(|| values.value(row))).collect();
        let counts: UInt64Array = (0..values.len()).map(|row| Some(u64::from(counted(row)))).collect();
        Ok(vec![Arc::new(sums.with_precision_and_scale(38, self.scale)?), Arc::new(counts)])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * 16 + self.counts.capacity() * 8
    }
}
