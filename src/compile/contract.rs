//! Model contracts: with `contract: {enforced: true}`, a model's output must have exactly its declared columns,
//! with the declared types. Compile checks the planned output; the build checks the result again before writing.

use datafusion::arrow::datatypes::{DataType, Schema};

use crate::manifest::Node;

/// Whether the node's contract is enforced.
pub fn enforced(node: &Node) -> bool {
    node.settings.contract_enforced
}

/// Whether a declared SQL type names `actual`: type families as warehouses write them (`bigint`, `varchar`,
/// `timestamp`, `decimal(10,2)`), or an Arrow type name.
pub fn type_matches(declared: &str, actual: &DataType) -> bool {
    let written = declared.trim();
    let declared = written.to_ascii_lowercase();
    let base = declared.split('(').next().unwrap_or("").trim();
    match base {
        "bigint" | "int8" | "long" => matches!(actual, DataType::Int64),
        "int" | "integer" | "int4" => matches!(actual, DataType::Int32),
        "smallint" | "int2" => matches!(actual, DataType::Int16),
        "tinyint" => matches!(actual, DataType::Int8),
        "double" | "float8" | "double precision" => matches!(actual, DataType::Float64),
        "float" | "real" | "float4" => matches!(actual, DataType::Float32),
        "decimal" | "numeric" => match actual {
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
                let args: Vec<&str> =
                    declared.split(['(', ')', ',']).skip(1).map(str::trim).filter(|a| !a.is_empty()).collect();
                match args.as_slice() {
                    [] => true,
                    [precision] => precision.parse() == Ok(*p),
                    [precision, scale] => precision.parse() == Ok(*p) && scale.parse() == Ok(*s),
                    _ => false,
                }
            }
            _ => false,
        },
        "varchar" | "string" | "text" | "char" | "character varying" => {
            matches!(actual, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        }
        "boolean" | "bool" => matches!(actual, DataType::Boolean),
        "date" => matches!(actual, DataType::Date32 | DataType::Date64),
        "timestamp" | "datetime" | "timestamp_ntz" => matches!(actual, DataType::Timestamp(_, None)),
        "timestamptz" | "timestamp with time zone" | "timestamp_ltz" => {
            matches!(actual, DataType::Timestamp(_, Some(_)))
        }
        _ => written.parse::<DataType>().is_ok_and(|d| &d == actual),
    }
}

/// The differences between the node's declared columns and `schema`, one line per column; empty when the
/// contract holds.
pub fn differences(node: &Node, schema: &Schema) -> Vec<String> {
    let mut lines = Vec::new();
    for column in node.columns.values() {
        match schema.field_with_name(&column.name) {
            Err(_) => lines.push(format!("`{}`: declared, but the query does not return it", column.name)),
            Ok(field) => match &column.data_type {
                None => lines.push(format!(
                    "`{}`: no `data_type` declared (the query returns {})",
                    column.name,
                    field.data_type()
                )),
                Some(declared) if !type_matches(declared, field.data_type()) => lines.push(format!(
                    "`{}`: declared `{declared}`, the query returns {}",
                    column.name,
                    field.data_type()
                )),
                Some(_) => {}
            },
        }
    }
    for field in schema.fields() {
        if !node.columns.contains_key(field.name()) {
            lines.push(format!("`{}`: returned by the query ({}), but not declared", field.name(), field.data_type()));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};

    use super::type_matches;

    #[test]
    fn declared_types_match_arrow_types() {
        assert!(type_matches("bigint", &DataType::Int64));
        assert!(!type_matches("int", &DataType::Int64));
        assert!(type_matches("varchar", &DataType::Utf8View));
        assert!(type_matches("decimal(10, 2)", &DataType::Decimal128(10, 2)));
        assert!(!type_matches("decimal(10,2)", &DataType::Decimal128(12, 2)));
        assert!(type_matches("timestamp", &DataType::Timestamp(TimeUnit::Microsecond, None)));
        assert!(!type_matches("timestamp", &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))));
        assert!(type_matches("Float64", &DataType::Float64));
    }
}
