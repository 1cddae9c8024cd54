//! Registers source tables (CSV, newline-delimited JSON, Parquet, Delta; paths may be globs) in the DataFusion
//! session under `<source>.<table>`.
//!
//! The schema is read from the files (CSV header and values, JSON keys, Parquet metadata) and the declared column
//! types override the inferred ones by name, so declaring `data_type: bigint` types a column without having to
//! declare every column in file order.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;

use super::RunError;
use crate::manifest::SourceNode;
use crate::project::SourceFormat;

/// Arrow type of a SQL type name as written in YAML (`bigint`, `varchar`, `decimal(10,2)`, `timestamp`, ...).
pub fn arrow_type(sql_type: &str) -> Option<DataType> {
    let lower = sql_type.trim().to_ascii_lowercase();
    let (base, args) = match lower.split_once('(') {
        Some((base, rest)) => (base.trim(), Some(rest.trim_end_matches(')'))),
        None => (lower.as_str(), None),
    };
    Some(match base {
        "bigint" | "int8" | "long" | "integer64" => DataType::Int64,
        "int" | "integer" | "int4" => DataType::Int32,
        "smallint" | "int2" => DataType::Int16,
        "tinyint" => DataType::Int8,
        "double" | "double precision" | "float8" => DataType::Float64,
        "float" | "real" | "float4" => DataType::Float32,
        "varchar" | "string" | "text" | "char" | "character varying" => DataType::Utf8,
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" | "datetime" | "timestamp_ntz" => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        "timestamptz" | "timestamp_tz" | "timestamp with time zone" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        "decimal" | "numeric" => {
            let mut parts = args
                .unwrap_or("38,9")
                .split(',')
                .map(|p| p.trim().parse::<i64>().ok());
            let precision = parts.next().flatten().unwrap_or(38).clamp(1, 38) as u8;
            let scale = parts
                .next()
                .flatten()
                .unwrap_or(0)
                .clamp(0, precision as i64) as i8;
            DataType::Decimal128(precision, scale)
        }
        _ => return None,
    })
}

fn file_format(source: &SourceNode) -> Result<(Arc<dyn FileFormat>, &'static str), RunError> {
    let option = |key: &str| source.options.get(key);
    Ok(match source.format {
        Some(SourceFormat::Csv) => {
            let delimiter = option("delimiter")
                .and_then(|v| v.as_str())
                .and_then(|s| s.bytes().next())
                .unwrap_or(b',');
            let header = option("header").and_then(|v| v.as_bool()).unwrap_or(true);
            (
                Arc::new(
                    CsvFormat::default()
                        .with_has_header(header)
                        .with_delimiter(delimiter),
                ),
                ".csv",
            )
        }
        Some(SourceFormat::Json) => (Arc::new(JsonFormat::default()), ".json"),
        Some(SourceFormat::Parquet) => (Arc::new(ParquetFormat::default()), ".parquet"),
        Some(SourceFormat::Delta) | None => {
            return Err(RunError::Source {
                source_name: source.relation.clone(),
                message: "no file format; set `format: csv|json|parquet|delta` on the source table"
                    .into(),
            })
        }
    })
}

/// Registers one source table in `ctx`.
pub async fn register_source(
    ctx: &SessionContext,
    project_root: &Path,
    source: &SourceNode,
) -> Result<(), RunError> {
    let err = |message: String| RunError::Source {
        source_name: source.relation.clone(),
        message,
    };
    let Some(path) = &source.path else {
        return Err(err(
            "no `path`; set the file path or glob of the source table".into(),
        ));
    };
    let absolute = project_root.join(path);
    let provider: Arc<dyn datafusion::catalog::TableProvider> =
        if source.format == Some(SourceFormat::Delta) {
            let url = url::Url::from_directory_path(
                absolute
                    .canonicalize()
                    .map_err(|e| err(format!("{}: {e}", absolute.display())))?,
            )
            .map_err(|()| err("not an absolute path".into()))?;
            let table = deltalake::open_table(url).await?;
            table.table_provider().await?
        } else {
            let (format, extension) = file_format(source)?;
            let location = absolute.to_string_lossy().to_string();
            let url = ListingTableUrl::parse(&location).map_err(|e| err(e.to_string()))?;
            let options = ListingOptions::new(format).with_file_extension(extension);
            let state = ctx.state();
            let inferred = options
                .infer_schema(&state, &url)
                .await
                .map_err(|e| err(format!("cannot read `{path}`: {e}")))?;
            if inferred.fields().is_empty() {
                return Err(err(format!("no files match `{path}`")));
            }
            let schema = apply_declared_types(&inferred, source);
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(Arc::new(schema));
            Arc::new(ListingTable::try_new(config)?)
        };
    ctx.register_table(source.relation.as_str(), provider)?;
    Ok(())
}

/// The inferred schema with declared column types applied by name; every column is nullable, as raw data is.
fn apply_declared_types(inferred: &Schema, source: &SourceNode) -> Schema {
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|field| {
            let declared = source
                .columns
                .values()
                .find(|c| c.name.eq_ignore_ascii_case(field.name()))
                .and_then(|c| c.data_type.as_deref())
                .and_then(arrow_type);
            Field::new(
                field.name(),
                declared.unwrap_or_else(|| field.data_type().clone()),
                true,
            )
        })
        .collect();
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_type_names() {
        let cases = [
            ("bigint", Some(DataType::Int64)),
            ("VARCHAR", Some(DataType::Utf8)),
            ("decimal(10, 2)", Some(DataType::Decimal128(10, 2))),
            (
                "timestamp",
                Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
            ),
            ("geometry", None),
        ];
        for (input, expected) in cases {
            assert_eq!(arrow_type(input), expected, "{input}");
        }
    }
}
