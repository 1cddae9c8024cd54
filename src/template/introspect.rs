//! dbt's introspection: `execute`, `run_query`, `{% call statement(...) %}`, `load_result`,
//! `adapter.get_columns_in_relation`, `adapter.get_relation` and `load_relation`.
//!
//! At compile there is no warehouse to ask: as in dbt's parse, `execute` is false, `run_query` and `load_result`
//! give none, and the adapter finds no columns and no relation. A render that asks any of these is marked
//! introspective, and the build renders the model again just before running it, with a `Catalog` that answers
//! from the warehouse (its upstream models already built), so `dbt_utils.star` or `get_column_values` see the data
//! as they do under `dbt build`.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value as JValue};
use minijinja::{Error, ErrorKind, State};
use serde_json::Value;

use super::relation::Relation;

/// A query's result: column names and rows of JSON values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    /// Each column's type as the engine names it.
    pub types: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// What a render at build time may ask the warehouse.
pub trait Catalog: Send + Sync {
    /// The columns (name, type) of a relation, or `None` when it does not exist.
    fn columns(&self, relation: &str) -> Result<Option<Vec<(String, String)>>, String>;
    /// Runs a query.
    fn query(&self, sql: &str) -> Result<QueryResult, String>;
}

/// The catalog of the render in progress, or `None` at compile.
fn catalog() -> Option<Arc<dyn Catalog>> {
    super::with_capture(|c| c.catalog.clone()).flatten()
}

fn mark() {
    super::with_capture(|c| c.introspected = true);
}

fn failed(what: &str, message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{what} failed: {message}"))
}

/// `execute`: true only when the render can ask the warehouse. Reading it marks the render introspective.
#[derive(Debug)]
pub struct Execute;

impl Object for Execute {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn is_true(self: &Arc<Self>) -> bool {
        mark();
        catalog().is_some() || super::with_capture(|c| c.assume_execute).unwrap_or(false)
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if catalog().is_some() { "True" } else { "False" })
    }
}

/// `run_query(sql)`: the result as a table, or none at compile.
pub fn run_query(sql: JValue) -> Result<JValue, Error> {
    mark();
    let Some(catalog) = catalog() else { return Ok(JValue::from(())) };
    let result = catalog.query(&sql.to_string()).map_err(|e| failed("run_query", e))?;
    Ok(Table::value(result))
}

/// `{% call statement(name, fetch_result=True) %}sql{% endcall %}`: runs the SQL at build time and keeps the
/// result for `load_result(name)`.
pub fn statement(state: &State<'_, '_>, name: Option<String>, kwargs: Kwargs) -> Result<String, Error> {
    mark();
    let caller: Option<JValue> = kwargs.get("caller")?;
    let fetch: Option<bool> = kwargs.get("fetch_result")?;
    let _: Option<JValue> = kwargs.get("auto_begin")?;
    let _: Option<JValue> = kwargs.get("language")?;
    kwargs.assert_all_used()?;
    let Some(catalog) = catalog() else { return Ok(String::new()) };
    let Some(caller) = caller else {
        return Err(Error::new(ErrorKind::InvalidOperation, "statement() is called as `{% call statement(...) %}`"));
    };
    let sql = caller.call(state, &[])?.to_string();
    let name = name.unwrap_or_else(|| "main".to_string());
    let result = catalog.query(&sql).map_err(|e| failed(&format!("statement `{name}`"), e))?;
    let data: Vec<JValue> = result.rows.iter().map(JValue::from_serialize).collect();
    let mut entry: BTreeMap<&str, JValue> = BTreeMap::new();
    entry.insert("data", if fetch.unwrap_or(false) { JValue::from(data) } else { JValue::from(Vec::<JValue>::new()) });
    entry.insert("response", JValue::from_iter([("rows_affected", JValue::from(result.rows.len()))]));
    entry.insert("table", Table::value(result));
    super::with_capture(|c| c.results.insert(name, JValue::from_iter(entry)));
    Ok(String::new())
}

/// `load_result(name)`: what `statement(name)` kept, or none.
pub fn load_result(name: String) -> JValue {
    mark();
    super::with_capture(|c| c.results.get(&name).cloned()).flatten().unwrap_or(JValue::from(()))
}

/// `adapter.get_columns_in_relation(relation)`: its columns, or none at compile.
pub fn columns_in_relation(relation: &JValue) -> Result<JValue, Error> {
    mark();
    let Some(catalog) = catalog() else { return Ok(JValue::from(Vec::<JValue>::new())) };
    let name = relation.to_string();
    let columns = catalog.columns(&name).map_err(|e| failed("get_columns_in_relation", e))?.unwrap_or_default();
    Ok(JValue::from(
        columns
            .into_iter()
            .map(|(name, data_type)| JValue::from_object(Column { name, data_type }))
            .collect::<Vec<_>>(),
    ))
}

/// `adapter.get_relation(database, schema, identifier)` / `load_relation(relation)`: the relation when it exists.
pub fn existing_relation(relation: Relation) -> Result<JValue, Error> {
    mark();
    let Some(catalog) = catalog() else { return Ok(JValue::from(())) };
    let exists = catalog.columns(&relation.rendered()).map_err(|e| failed("get_relation", e))?.is_some();
    Ok(if exists { relation.with_kind(Some("table")).value() } else { JValue::from(()) })
}

/// A dbt `Column` value with this name and SQL type.
pub(super) fn column(name: String, data_type: String) -> JValue {
    JValue::from_object(Column { name, data_type })
}

/// One column of a relation, as dbt's `Column`: `name`, `column`, `data_type` (a SQL type), `dtype`, `quoted`,
/// and `is_string()`, `is_number()`, `is_integer()`, `is_float()`, `is_numeric()`, `string_size()`,
/// `can_expand_to(other)`, `literal(value)`.
#[derive(Debug)]
struct Column {
    name: String,
    data_type: String,
}

impl Column {
    fn base_type(&self) -> String {
        self.data_type.split('(').next().unwrap_or_default().trim().to_ascii_lowercase()
    }

    fn is_string(&self) -> bool {
        matches!(self.base_type().as_str(), "varchar" | "text" | "string" | "char" | "character varying" | "bpchar")
    }

    fn is_integer(&self) -> bool {
        matches!(
            self.base_type().as_str(),
            "bigint"
                | "int"
                | "integer"
                | "smallint"
                | "tinyint"
                | "hugeint"
                | "ubigint"
                | "uinteger"
                | "usmallint"
                | "utinyint"
        )
    }

    fn is_float(&self) -> bool {
        matches!(self.base_type().as_str(), "double" | "float" | "real" | "float4" | "float8")
    }

    fn is_numeric(&self) -> bool {
        matches!(self.base_type().as_str(), "decimal" | "numeric")
    }
}

impl Object for Column {
    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        Ok(match method {
            "is_string" => JValue::from(self.is_string()),
            "is_integer" => JValue::from(self.is_integer()),
            "is_float" => JValue::from(self.is_float()),
            "is_numeric" => JValue::from(self.is_numeric()),
            "is_number" => JValue::from(self.is_integer() || self.is_float() || self.is_numeric()),
            // pipe's strings have no declared size; dbt's default for an unsized string.
            "string_size" => JValue::from(256),
            "can_expand_to" => JValue::from(false),
            "literal" => {
                let (value,): (JValue,) = minijinja::value::from_args(args)?;
                JValue::from(format!("cast({value} as {})", self.data_type))
            }
            other => return Err(Error::new(ErrorKind::InvalidOperation, format!("a column has no method `{other}`"))),
        })
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        Some(match key.as_str()? {
            "name" | "column" => JValue::from(self.name.clone()),
            "data_type" | "dtype" => JValue::from(self.data_type.clone()),
            "quoted" => JValue::from(format!("\"{}\"", self.name.replace('"', "\"\""))),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["name", "column", "data_type", "dtype", "quoted"])
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<Column {} ({})>", self.name, self.data_type)
    }
}

/// An agate-like table: `rows` (each indexable by position and column name), `columns` (by position or name,
/// with `values()`), `column_names`; iterating it gives its rows.
#[derive(Debug)]
struct Table {
    result: Arc<QueryResult>,
}

impl Table {
    fn value(result: QueryResult) -> JValue {
        JValue::from_object(Table { result: Arc::new(result) })
    }

    fn rows(&self) -> Vec<JValue> {
        (0..self.result.rows.len())
            .map(|index| JValue::from_object(Row { result: Arc::clone(&self.result), index }))
            .collect()
    }

    fn columns(&self) -> JValue {
        JValue::from_object(Columns { result: Arc::clone(&self.result) })
    }
}

impl Object for Table {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Iterable
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        Some(match key.as_str()? {
            "rows" => JValue::from(self.rows()),
            "columns" => self.columns(),
            "column_names" => JValue::from(self.result.columns.clone()),
            "column_types" => JValue::from(self.result.types.clone()),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.rows())
    }

    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, _args: &[JValue]) -> Result<JValue, Error> {
        match method {
            "print_table" => Ok(JValue::from(())),
            other => Err(Error::new(ErrorKind::InvalidOperation, format!("a query result has no method `{other}`"))),
        }
    }
}

#[derive(Debug)]
struct Row {
    result: Arc<QueryResult>,
    index: usize,
}

impl Object for Row {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let row = self.result.rows.get(self.index)?;
        let at = match key.as_str() {
            Some(name) => self.result.columns.iter().position(|c| c == name)?,
            None => usize::try_from(key.as_i64()?).ok()?,
        };
        row.get(at).map(JValue::from_serialize)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.result.columns.len())
    }
}

#[derive(Debug)]
struct Columns {
    result: Arc<QueryResult>,
}

impl Object for Columns {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let at = match key.as_str() {
            Some(name) => self.result.columns.iter().position(|c| c == name)?,
            None => usize::try_from(key.as_i64()?).ok()?,
        };
        (at < self.result.columns.len())
            .then(|| JValue::from_object(ResultColumn { result: Arc::clone(&self.result), index: at }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.result.columns.len())
    }
}

#[derive(Debug)]
struct ResultColumn {
    result: Arc<QueryResult>,
    index: usize,
}

impl ResultColumn {
    fn values(&self) -> JValue {
        JValue::from(
            self.result
                .rows
                .iter()
                .map(|row| row.get(self.index).map(JValue::from_serialize).unwrap_or(JValue::from(())))
                .collect::<Vec<_>>(),
        )
    }
}

impl Object for ResultColumn {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        Some(match key.as_str()? {
            "name" => JValue::from(self.result.columns[self.index].clone()),
            "values" => self.values(),
            _ => return None,
        })
    }

    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, _args: &[JValue]) -> Result<JValue, Error> {
        match method {
            "values" => Ok(self.values()),
            other => Err(Error::new(ErrorKind::InvalidOperation, format!("a result column has no method `{other}`"))),
        }
    }
}
