//! DuckDB's aggregates: aliases of DataFusion's (`listagg`, `list`, `first`, `any_value`), `min_by`-style ones
//! rewritten to `first_value` with an order, `count_star`, and an `avg` that is a DOUBLE for every numeric input.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{AggregateUDF, Signature, Volatility};

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
