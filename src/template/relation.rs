//! dbt's Relation objects: what `ref()`, `source()`, `this` and `api.Relation.create(...)` give. Rendered, a
//! relation is its name (`silver.orders`); as a mapping it has `database`, `schema`, `identifier`, `name`, `type`,
//! `is_cte` and `metadata.type` (packages check `metadata.type` ends with `Relation` before introspecting), and the
//! methods `include`, `incorporate`, `render` and `quote`.

use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{Error, ErrorKind, State};

use super::EPHEMERAL_PREFIX;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Relation {
    pub database: Option<String>,
    pub schema: Option<String>,
    pub identifier: String,
    /// `table`, `view`, `cte` or `external`; unknown for sources.
    pub kind: Option<String>,
}

impl Relation {
    /// The relation `schema.identifier` (or a lone identifier) as pipe writes it.
    pub fn parse(text: &str) -> Relation {
        let parts: Vec<&str> = text.split('.').collect();
        let (database, schema, identifier) = match parts.as_slice() {
            [database, schema, identifier] => {
                (Some(database.to_string()), Some(schema.to_string()), identifier.to_string())
            }
            [schema, identifier] => (None, Some(schema.to_string()), identifier.to_string()),
            _ => (None, None, text.to_string()),
        };
        let kind = identifier.starts_with(EPHEMERAL_PREFIX).then(|| "cte".to_string());
        Relation { database, schema, identifier, kind }
    }

    pub fn with_kind(mut self, kind: Option<&str>) -> Relation {
        if self.kind.is_none() {
            self.kind = kind.map(str::to_string);
        }
        self
    }

    pub fn value(self) -> Value {
        Value::from_object(self)
    }

    /// How the relation is written in SQL.
    pub fn rendered(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.identifier),
            None => self.identifier.clone(),
        }
    }

    fn is_cte(&self) -> bool {
        self.kind.as_deref() == Some("cte")
    }
}

const KEYS: &[&str] =
    &["database", "schema", "identifier", "name", "table", "type", "is_cte", "is_table", "is_view", "metadata"];

impl Object for Relation {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let optional = |v: &Option<String>| v.clone().map(Value::from).unwrap_or(Value::from(()));
        Some(match key.as_str()? {
            "database" => optional(&self.database),
            "schema" => optional(&self.schema),
            "identifier" | "name" | "table" => Value::from(self.identifier.clone()),
            "type" => optional(&self.kind),
            "is_cte" => Value::from(self.is_cte()),
            "is_table" => Value::from(self.kind.as_deref() == Some("table")),
            "is_view" => Value::from(self.kind.as_deref() == Some("view")),
            "metadata" => Value::from_iter([("type", Value::from("PipeRelation"))]),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(KEYS)
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered())
    }

    fn call_method(self: &Arc<Self>, state: &State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "render" => Ok(Value::from_safe_string(self.rendered())),
            // A mapping's methods: packages check `relation.get('metadata', {}).get('type')`.
            "get" | "items" | "keys" | "values" => {
                super::pycompat::call_method(state, &Value::from_dyn_object(Arc::clone(self)), method, args)
            }
            // Quoting and which parts to include only change how dbt prints a name; pipe's names need neither.
            "quote" | "include" | "replace_path" => {
                let (_rest, kwargs): (minijinja::value::Rest<Value>, Kwargs) = minijinja::value::from_args(args)?;
                let mut relation = (**self).clone();
                if method == "include" {
                    if kwargs.get::<Option<bool>>("schema")? == Some(false) {
                        relation.schema = None;
                    }
                    if kwargs.get::<Option<bool>>("database")? == Some(false) {
                        relation.database = None;
                    }
                }
                if method == "replace_path" {
                    if let Some(identifier) = kwargs.get::<Option<String>>("identifier")? {
                        relation.identifier = identifier;
                    }
                    if let Some(schema) = kwargs.get::<Option<String>>("schema")? {
                        relation.schema = Some(schema);
                    }
                }
                Ok(relation.value())
            }
            "incorporate" => {
                let (kwargs,): (Kwargs,) = minijinja::value::from_args(args)?;
                let mut relation = (**self).clone();
                if let Some(kind) = kwargs.get::<Option<String>>("type")? {
                    relation.kind = Some(kind);
                }
                if let Some(path) = kwargs.get::<Option<Value>>("path")? {
                    if let Ok(identifier) = path.get_attr("identifier") {
                        if let Some(identifier) = identifier.as_str() {
                            relation.identifier = identifier.to_string();
                        }
                    }
                    if let Ok(schema) = path.get_attr("schema") {
                        if let Some(schema) = schema.as_str() {
                            relation.schema = Some(schema.to_string());
                        }
                    }
                }
                Ok(relation.value())
            }
            other => Err(Error::new(ErrorKind::InvalidOperation, format!("a relation has no method `{other}`"))),
        }
    }
}

/// `api`: `api.Relation.create(...)` and `api.Column`.
#[derive(Debug)]
pub struct Api;

#[derive(Debug)]
struct RelationApi;

impl Object for Api {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "Relation" => Some(Value::from_object(RelationApi)),
            "Column" => Some(Value::from_object(ColumnApi)),
            _ => None,
        }
    }
}

/// `api.Column`: `translate_type(type)`, `create(name, type)`, `string_type(size)`, `numeric_type(type, p, s)`.
#[derive(Debug)]
struct ColumnApi;

impl Object for ColumnApi {
    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "translate_type" => {
                let (data_type,): (String,) = minijinja::value::from_args(args)?;
                Ok(Value::from(translate_type(&data_type)))
            }
            "create" => {
                let (name, data_type): (String, String) = minijinja::value::from_args(args)?;
                Ok(super::introspect::column(name, translate_type(&data_type)))
            }
            "string_type" => {
                let (size,): (Option<i64>,) = minijinja::value::from_args(args)?;
                Ok(Value::from(size.map_or("varchar".to_string(), |n| format!("varchar({n})"))))
            }
            "numeric_type" => {
                let (data_type, precision, scale): (String, Option<i64>, Option<i64>) =
                    minijinja::value::from_args(args)?;
                Ok(Value::from(match (precision, scale) {
                    (Some(p), Some(s)) => format!("{data_type}({p},{s})"),
                    _ => data_type,
                }))
            }
            other => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("`api.Column.{other}` is not supported by pipe yet"),
            )),
        }
    }
}

/// dbt's type labels (`STRING`, `INTEGER`, ...) as DataFusion's SQL types; any other type as written.
fn translate_type(data_type: &str) -> String {
    match data_type.trim().to_ascii_lowercase().as_str() {
        "string" | "text" => "varchar".to_string(),
        "integer" => "int".to_string(),
        "float" => "double".to_string(),
        _ => data_type.to_string(),
    }
}

impl Object for RelationApi {
    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "create" => {
                let (kwargs,): (Kwargs,) = minijinja::value::from_args(args)?;
                let text = |key: &str| -> Result<Option<String>, Error> { kwargs.get::<Option<String>>(key) };
                let relation = Relation {
                    database: text("database")?,
                    schema: text("schema")?,
                    identifier: text("identifier")?.unwrap_or_default(),
                    kind: text("type")?,
                };
                Ok(relation.value())
            }
            "add_ephemeral_prefix" => {
                let (name,): (String,) = minijinja::value::from_args(args)?;
                Ok(Value::from(format!("{EPHEMERAL_PREFIX}{name}")))
            }
            other => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("`api.Relation.{other}` is not supported by pipe yet"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relation_renders_as_its_name_and_reads_as_a_mapping() {
        let mut env = minijinja::Environment::new();
        env.add_global("r", Relation::parse("silver.orders").with_kind(Some("table")).value());
        env.add_global("api", Value::from_object(Api));
        let out = env
            .render_str(
                "{{ r }}|{{ r.schema }}|{{ r.identifier }}|{{ r is mapping }}|{{ r['metadata']['type'] }}|{{ r.include(schema=false) }}|{{ api.Relation.create(schema='gold', identifier='x') }}",
                (),
            )
            .unwrap();
        assert_eq!(out, "silver.orders|silver|orders|True|PipeRelation|orders|gold.x");
    }
}
