//! The column types a Delta table can hold. A model materialized as a table or incremental is written to Delta, which
//! has no interval, duration or time-of-day type (delta-rs refuses the schema when the first batch is written); compile
//! checks each such model's planned columns here, so the model fails at compile with what to store instead.

use datafusion::arrow::datatypes::DataType;

/// Why a column of `data_type` cannot be stored in a Delta table, and what to store instead; `None` when it can.
pub fn unstorable(data_type: &DataType) -> Option<String> {
    match data_type {
        DataType::Interval(_) | DataType::Duration(_) => Some(
            "an interval, and a Delta table has no interval type: store a number (`extract(epoch from x)` is its length in \
             seconds) or text (`cast(x as varchar)`)"
                .into(),
        ),
        DataType::Time32(_) | DataType::Time64(_) => Some(
            "a time of day, and a Delta table has no time type: store text (`cast(x as varchar)`) or a timestamp"
                .into(),
        ),
        DataType::Float16 => Some("a half-precision float, which a Delta table cannot hold: cast it to float".into()),
        DataType::Decimal256(..) => {
            Some("a decimal wider than 38 digits, which a Delta table cannot hold: cast it to decimal(38, s)".into())
        }
        DataType::Union(..) => Some("a union, which a Delta table cannot hold".into()),
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            unstorable(item.data_type()).map(|why| format!("a list of {why}"))
        }
        DataType::Struct(fields) => fields.iter().find_map(|f| {
            unstorable(f.data_type()).map(|why| format!("a struct whose field `{}` is {why}", f.name()))
        }),
        DataType::Map(entries, _) => unstorable(entries.data_type()).map(|why| format!("a map of {why}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, IntervalUnit, TimeUnit};
    use std::sync::Arc;

    #[test]
    fn intervals_times_and_what_holds_them_are_not_storable() {
        assert!(unstorable(&DataType::Int64).is_none());
        assert!(unstorable(&DataType::Timestamp(TimeUnit::Microsecond, None)).is_none());
        assert!(unstorable(&DataType::Interval(IntervalUnit::MonthDayNano)).unwrap().starts_with("an interval"));
        assert!(unstorable(&DataType::Duration(TimeUnit::Nanosecond)).is_some());
        assert!(unstorable(&DataType::Time64(TimeUnit::Nanosecond)).unwrap().starts_with("a time of day"));
        let list = DataType::List(Arc::new(Field::new("item", DataType::Duration(TimeUnit::Second), true)));
        assert!(unstorable(&list).unwrap().starts_with("a list of an interval"));
        let fields =
            vec![Field::new("a", DataType::Utf8, true), Field::new("t", DataType::Time32(TimeUnit::Second), true)];
        let record = DataType::Struct(fields.into());
        assert!(unstorable(&record).unwrap().starts_with("a struct whose field `t` is a time of day"));
    }
}
