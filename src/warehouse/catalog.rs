//! The `Catalog` a model or test rendered at build time asks (`compile::BuildRenderer`): the run's DataFusion
//! session, where every relation built so far, every seed and every source is registered.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use serde_json::Value;

use crate::template::{Catalog, QueryResult};

/// Answers from the session of the running build. Its methods block: call them off the runtime's workers (the
/// build renders on a blocking thread).
pub struct SessionCatalog {
    pub ctx: SessionContext,
    pub handle: tokio::runtime::Handle,
}

impl Catalog for SessionCatalog {
    fn columns(&self, relation: &str) -> Result<Option<Vec<(String, String)>>, String> {
        let provider = self.handle.block_on(self.ctx.table_provider(relation));
        Ok(provider.ok().map(|provider| {
            provider.schema().fields().iter().map(|f| (f.name().clone(), sql_type(f.data_type()))).collect()
        }))
    }

    fn query(&self, sql: &str) -> Result<QueryResult, String> {
        self.handle.block_on(async {
            let frame = self.ctx.sql(sql).await.map_err(|e| crate::sql::clean_message(&e.to_string()))?;
            let schema = frame.schema().as_arrow().clone();
            let batches = frame.collect().await.map_err(|e| crate::sql::clean_message(&e.to_string()))?;
            Ok(QueryResult {
                columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
                types: schema.fields().iter().map(|f| sql_type(f.data_type())).collect(),
                rows: rows_of(&schema, &batches)?,
            })
        })
    }
}

/// The SQL name of an Arrow type, as a macro writes it into a cast (`cast(null as bigint)`).
fn sql_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 => "tinyint unsigned".into(),
        DataType::UInt16 => "smallint unsigned".into(),
        DataType::UInt32 => "integer unsigned".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p}, {s})"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        other => other.to_string(),
    }
}

/// The rows of `batches` as JSON values, column by column in `schema`'s order.
fn rows_of(schema: &datafusion::arrow::datatypes::Schema, batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>, String> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let objects: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(objects
        .into_iter()
        .map(|mut object| schema.fields().iter().map(|f| object.remove(f.name()).unwrap_or(Value::Null)).collect())
        .collect())
}
