//! Test definitions: YAML entries and singular test files into manifest test nodes with their failing-rows SQL.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::diagnostics::{Code, Diagnostic};
use crate::manifest::{DependsOn, Manifest, Severity, TestNode, Threshold};
use crate::project::Project;
use crate::template::{RenderContext, Renderer};

use super::macro_files;

const BUILT_IN: &[&str] = &[
    "not_null",
    "unique",
    "accepted_values",
    "relationships",
    "expression_is_true",
    "row_count",
    "row_ratio",
    "equal_rows",
];

/// A declared test: its name, arguments and config, in either of dbt's spellings
/// (`{name: {arguments: {...}, config: {...}}}` or arguments and config side by side).
struct Declared {
    test: String,
    arguments: serde_json::Map<String, Value>,
    config: serde_json::Map<String, Value>,
}

const CONFIG_KEYS: &[&str] = &["severity", "warn_if", "error_if", "where", "store_failures", "name", "tags", "enabled"];

fn declared(value: &Value) -> Option<Declared> {
    match value {
        Value::String(name) => {
            Some(Declared { test: name.clone(), arguments: Default::default(), config: Default::default() })
        }
        Value::Object(map) if map.len() == 1 => {
            let (name, body) = map.iter().next()?;
            // `equal_rows: ref('x')`: a lone value is the `of` argument.
            if let Value::String(of) = body {
                let arguments = serde_json::Map::from_iter([("of".to_string(), Value::String(of.clone()))]);
                return Some(Declared { test: name.clone(), arguments, config: Default::default() });
            }
            let body = body.as_object().cloned().unwrap_or_default();
            let mut arguments = body.get("arguments").and_then(Value::as_object).cloned().unwrap_or_default();
            let mut config = body.get("config").and_then(Value::as_object).cloned().unwrap_or_default();
            for (key, value) in body {
                if key == "arguments" || key == "config" {
                    continue;
                }
                if CONFIG_KEYS.contains(&key.as_str()) {
                    config.insert(key, value);
                } else {
                    arguments.insert(key, value);
                }
            }
            Some(Declared { test: name.clone(), arguments, config })
        }
        _ => None,
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Null => "NULL".into(),
        other => other.to_string(),
    }
}

/// `ref('x')`, `source('s', 't')` or a bare name, to a unique id of the manifest.
fn resolve_target(manifest: &Manifest, text: &str) -> Option<String> {
    let args: Vec<String> = text
        .split(['(', ')', ',', '\'', '"'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect();
    match args.as_slice() {
        [function, name] if function == "ref" => {
            manifest.nodes.values().find(|n| &n.name == name).map(|n| n.unique_id.clone())
        }
        [function, source, table] if function == "source" => manifest
            .sources
            .values()
            .find(|s| &s.source_name == source && &s.name == table)
            .map(|s| s.unique_id.clone()),
        [name] => manifest.nodes.values().find(|n| &n.name == name).map(|n| n.unique_id.clone()),
        _ => None,
    }
}

fn relation_of(manifest: &Manifest, id: &str) -> Option<String> {
    manifest.nodes.get(id).map(|n| n.relation.clone()).or_else(|| manifest.sources.get(id).map(|s| s.relation.clone()))
}

/// The failing-rows query of a built-in generic test, or why it cannot be built.
fn built_in_sql(
    manifest: &Manifest,
    test: &Declared,
    relation: &str,
    column: Option<&str>,
    depends: &mut Vec<String>,
) -> Result<String, String> {
    let model = match test.config.get("where").and_then(Value::as_str) {
        Some(filter) => format!("(select * from {relation} where {filter}) as __pipe_model"),
        None => format!("{relation} as __pipe_model"),
    };
    let column_needed = || column.map(quote).ok_or_else(|| format!("`{}` is a column test", test.test));
    Ok(match test.test.as_str() {
        "not_null" => format!("select * from {model} where {} is null", column_needed()?),
        "unique" => {
            let column = column_needed()?;
            format!(
                "select {column} as unique_field, count(*) as n_records from {model} where {column} is not null \
                 group by {column} having count(*) > 1"
            )
        }
        "accepted_values" => {
            let column = column_needed()?;
            let values = test.arguments.get("values").and_then(Value::as_array).ok_or("needs `values: [...]`")?;
            let list: Vec<String> = values.iter().map(literal).collect();
            format!("select * from {model} where {column} is not null and {column} not in ({})", list.join(", "))
        }
        "relationships" => {
            let column = column_needed()?;
            let to = test.arguments.get("to").and_then(Value::as_str).ok_or("needs `to: ref('...')`")?;
            let field = test.arguments.get("field").and_then(Value::as_str).ok_or("needs `field: <column>`")?;
            let target = resolve_target(manifest, to).ok_or_else(|| format!("`to: {to}` names no model or source"))?;
            let target_relation = relation_of(manifest, &target).unwrap_or_default();
            depends.push(target);
            format!(
                "select __pipe_model.* from {model} left join {target_relation} as __pipe_parent \
                 on __pipe_model.{column} = __pipe_parent.{} \
                 where __pipe_model.{column} is not null and __pipe_parent.{} is null",
                quote(field),
                quote(field)
            )
        }
        "expression_is_true" => {
            let expression =
                test.arguments.get("expression").and_then(Value::as_str).ok_or("needs `expression: <sql>`")?;
            let expression = match column {
                Some(column) => format!("{} {expression}", quote(column)),
                None => expression.to_string(),
            };
            format!("select * from {model} where not ({expression})")
        }
        // Row-count expectations: one failing row (with the counts) when the expectation does not hold.
        "row_count" => {
            let bound = |key: &str| test.arguments.get(key).and_then(Value::as_u64);
            let (min, max) = (bound("min"), bound("max"));
            if min.is_none() && max.is_none() {
                return Err("needs `min:` and/or `max:`".into());
            }
            let mut checks = Vec::new();
            checks.extend(min.map(|m| format!("n < {m}")));
            checks.extend(max.map(|m| format!("n > {m}")));
            format!("select n from (select count(*) as n from {model}) as __pipe_count where {}", checks.join(" or "))
        }
        "row_ratio" | "equal_rows" => {
            let of = test.arguments.get("of").and_then(Value::as_str).ok_or("needs `of: ref('...')`")?;
            let target = resolve_target(manifest, of).ok_or_else(|| format!("`of: {of}` names no model or source"))?;
            let of_relation = relation_of(manifest, &target).unwrap_or_default();
            depends.push(target);
            let checks = if test.test == "equal_rows" {
                vec!["n <> n_of".to_string()]
            } else {
                let bound = |key: &str| test.arguments.get(key).and_then(Value::as_f64);
                let mut checks = Vec::new();
                checks.extend(bound("min").map(|m| format!("cast(n as double) < {m} * n_of")));
                checks.extend(bound("max").map(|m| format!("cast(n as double) > {m} * n_of")));
                if checks.is_empty() {
                    return Err("needs `min:` and/or `max:` (a fraction of `of`'s rows)".into());
                }
                checks
            };
            format!(
                "select n, n_of, round(cast(n as double) / nullif(n_of, 0), 4) as ratio from \
                 (select (select count(*) from {model}) as n, (select count(*) from {of_relation}) as n_of) as __pipe_counts \
                 where {}",
                checks.join(" or ")
            )
        }
        other => return Err(format!("unknown test `{other}`")),
    })
}

/// A Jinja literal for a JSON value (custom generic test arguments).
/// A generic test's argument as Jinja, the way dbt renders test arguments: a string that looks like a call of
/// `ref`, `source`, `var`, `env_var` or `doc` (`to: ref('customers')`) is that call, so the test gets a relation;
/// anything else is the literal value (lists and mappings item by item).
fn argument_literal(value: &Value) -> String {
    jinja_value(value, true)
}

/// dbt's test for a test argument that is a function call: `^\s*(env_var|ref|var|source|doc)\s*\(.+\)\s*$`.
fn looks_like_call(text: &str) -> bool {
    let text = text.trim();
    ["env_var", "ref", "var", "source", "doc"].iter().any(|name| {
        text.strip_prefix(name)
            .map(str::trim_start)
            .is_some_and(|rest| rest.starts_with('(') && rest.ends_with(')') && rest.len() > 2)
    })
}

pub(super) fn jinja_literal(value: &Value) -> String {
    jinja_value(value, false)
}

/// `value` as a Jinja literal; with `calls`, a string that looks like a `ref(...)`-style call is that call.
fn jinja_value(value: &Value, calls: bool) -> String {
    match value {
        Value::String(text) if calls && looks_like_call(text) => format!("({})", text.trim()),
        Value::Null => "none".into(),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(|v| jinja_value(v, calls)).collect::<Vec<_>>().join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", jinja_value(&Value::String(k.clone()), false), jinja_value(v, calls)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

fn severity_of(config: &serde_json::Map<String, Value>) -> Severity {
    match config.get("severity").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("warn") => Severity::Warn,
        _ => Severity::Error,
    }
}

/// `warn_if` or `error_if`: dbt's `!=0` when absent; `Err` with the message when it does not parse.
fn threshold_config(config: &serde_json::Map<String, Value>, key: &str) -> Result<Threshold, String> {
    match config.get(key) {
        None => Ok(Threshold::default()),
        Some(value) => value
            .as_str()
            .and_then(Threshold::parse)
            .ok_or_else(|| format!("`{key}: {value}` is not a failure-count condition such as `!=0`, `>10` or `>=5`")),
    }
}

/// A test as declared: (attached unique id, relation, column, the YAML value, the file declaring it).
type Declaration<'m> = (String, String, Option<String>, &'m Value, String);

/// The tests declared on a node (`(unique id, relation, file)`) and on its columns.
fn declared_on<'m>(
    (id, relation, at): (&str, &str, &str),
    own: &'m [Value],
    columns: impl Iterator<Item = (&'m str, &'m [Value])>,
    out: &mut Vec<Declaration<'m>>,
) {
    let on = std::iter::once((None, own)).chain(columns.map(|(name, tests)| (Some(name), tests)));
    for (column, tests) in on {
        for test in tests {
            out.push((id.to_string(), relation.to_string(), column.map(str::to_string), test, at.to_string()));
        }
    }
}

/// Builds the manifest's test nodes from the tests declared on models, seeds, columns and sources, and from the
/// singular test files. Problems (unknown test, missing argument) are errors on the project.
pub fn test_nodes(
    project: &Project,
    manifest: &Manifest,
    renderer: &Renderer,
    context: &RenderContext,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, TestNode> {
    let mut tests = BTreeMap::new();
    declared_tests(project, manifest, renderer, context, &mut tests, diagnostics);
    constraint_tests(manifest, &mut tests, diagnostics);
    singular_tests(project, manifest, renderer, context, &mut tests, diagnostics);
    tests
}

/// Tests declared in YAML on models, seeds, their columns and sources: built-in ones written here, custom generic
/// ones rendered from the project's `{% test %}` macros.
fn declared_tests(
    project: &Project,
    manifest: &Manifest,
    renderer: &Renderer,
    context: &RenderContext,
    tests: &mut BTreeMap<String, TestNode>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let project_name = &manifest.project.name;
    let mut declarations: Vec<Declaration> = Vec::new();
    for node in manifest.nodes.values() {
        let columns = node.columns.values().map(|c| (c.name.as_str(), c.tests.as_slice()));
        let at = (node.unique_id.as_str(), node.relation.as_str(), node.path.as_str());
        declared_on(at, &node.tests, columns, &mut declarations);
    }
    for source in manifest.sources.values() {
        let columns = source.columns.values().map(|c| (c.name.as_str(), c.tests.as_slice()));
        let at = (source.unique_id.as_str(), source.relation.as_str(), source.declared_in.as_str());
        declared_on(at, &source.tests, columns, &mut declarations);
    }
    for (attached, relation, column, value, path) in declarations {
        let Some(test) = declared(value) else {
            diagnostics.push(Diagnostic::error(
                Code::InvalidConfig,
                format!("a test on `{relation}` is neither a name nor a mapping: {value}"),
            ));
            continue;
        };
        if test.config.get("enabled").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let target_name = manifest
            .nodes
            .get(&attached)
            .map(|n| n.name.clone())
            .or_else(|| manifest.sources.get(&attached).map(|s| format!("source_{}_{}", s.source_name, s.name)));
        let default_name = dbt_test_name(&test, &target_name.unwrap_or_default(), column.as_deref());
        let mut name = test.config.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or(default_name);
        let mut depends = vec![attached.clone()];
        // The test's `fail_calc`: from its YAML config, else what its macro set with `config(fail_calc=...)`.
        let mut fail_calc = test.config.get("fail_calc").and_then(Value::as_str).map(str::to_string);
        let mut render_at_build = None;
        let sql = if BUILT_IN.contains(&test.test.as_str()) {
            built_in_sql(manifest, &test, &relation, column.as_deref(), &mut depends)
        } else {
            custom_sql(project, renderer, context, manifest, &test, &relation, column.as_deref(), &mut depends).map(
                |custom| {
                    fail_calc = fail_calc.take().or(custom.fail_calc);
                    render_at_build = custom.render_at_build;
                    custom.sql
                },
            )
        };
        let thresholds = threshold_config(&test.config, "warn_if")
            .and_then(|warn| Ok((warn, threshold_config(&test.config, "error_if")?)));
        let (sql, warn_if, error_if) = match sql.and_then(|sql| thresholds.map(|t| (sql, t))) {
            Ok((sql, (warn_if, error_if))) => (sql, warn_if, error_if),
            Err(message) => {
                let diagnostic =
                    Diagnostic::error(Code::InvalidConfig, format!("test `{}` on `{relation}`: {message}", test.test));
                // Point at the test's name in the property YAML that declares it, when that is a model's entry.
                let entry = manifest
                    .nodes
                    .get(&attached)
                    .and_then(|node| project.models.iter().find(|m| m.name == node.name).and_then(|m| m.properties_at));
                let located = entry.and_then(|(file, at)| {
                    let text = &project.files.get(file).text;
                    let found = text.get(at..)?.find(test.test.as_str())? + at;
                    Some((file, found..found + test.test.len()))
                });
                let built_in = format!("built-in tests: {}", BUILT_IN.join(", "));
                diagnostics.push(match located {
                    Some((file, span)) => diagnostic.with_primary(file, span, "declared here").with_help(built_in),
                    None => diagnostic.with_help(format!("declared in `{path}`; {built_in}")),
                });
                continue;
            }
        };
        // Two tests of one kind on one column with different arguments get distinct names.
        let mut unique_id = format!("test.{project_name}.{name}");
        let mut n = 2;
        while tests.contains_key(&unique_id) {
            name = format!("{}_{n}", name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_'));
            unique_id = format!("test.{project_name}.{name}");
            n += 1;
        }
        depends.sort();
        depends.dedup();
        tests.insert(
            unique_id.clone(),
            TestNode {
                unique_id,
                name,
                test: test.test.clone(),
                attached_node: Some(attached),
                column_name: column,
                severity: severity_of(&test.config),
                warn_if,
                error_if,
                store_failures: test.config.get("store_failures").and_then(Value::as_bool).unwrap_or(false),
                compiled_sql: sql,
                fail_calc,
                depends_on: DependsOn { nodes: depends, macros: Vec::new() },
                path,
                render_at_build,
                unit: None,
            },
        );
    }
}

/// Constraints (`not_null`, `unique`, `primary_key`, `check`) on columns and models, as error-severity tests.
fn constraint_tests(manifest: &Manifest, tests: &mut BTreeMap<String, TestNode>, diagnostics: &mut Vec<Diagnostic>) {
    let project_name = &manifest.project.name;
    // Constraints (`not_null`, `unique`, `primary_key`, `check`) on columns and models are enforced as
    // error-severity tests on the new result, before it is published.
    for node in manifest.nodes.values() {
        let mut constraints: Vec<(Option<&str>, &Value)> = node.constraints.iter().map(|c| (None, c)).collect();
        for column in node.columns.values() {
            constraints.extend(column.constraints.iter().map(|c| (Some(column.name.as_str()), c)));
        }
        for (column, constraint) in constraints {
            let kind = constraint.get("type").and_then(Value::as_str).unwrap_or("");
            let columns: Vec<String> = match (column, constraint.get("columns").and_then(Value::as_array)) {
                (Some(column), _) => vec![column.to_string()],
                (None, Some(list)) => list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                (None, None) => Vec::new(),
            };
            let model = format!("{} as __pipe_model", node.relation);
            let quoted: Vec<String> = columns.iter().map(|c| quote(c)).collect();
            let mut checks: Vec<(String, String)> = Vec::new();
            let any_null = || {
                let tests: Vec<String> = quoted.iter().map(|c| format!("{c} is null")).collect();
                format!("select * from {model} where {}", tests.join(" or "))
            };
            match kind {
                "not_null" | "primary_key" | "unique" if quoted.is_empty() => {
                    diagnostics.push(
                        Diagnostic::error(
                            Code::InvalidConfig,
                            format!("a `{kind}` constraint on model `{}` names no column", node.name),
                        )
                        .with_help("write it under a column, or give `columns: [...]`"),
                    );
                    continue;
                }
                "not_null" => checks.push(("not_null".into(), any_null())),
                "unique" | "primary_key" => {
                    let list = quoted.join(", ");
                    checks.push((
                        kind.into(),
                        format!(
                            "select {list}, count(*) as n_records from {model} group by {list} having count(*) > 1"
                        ),
                    ));
                    if kind == "primary_key" {
                        checks.push(("primary_key_not_null".into(), any_null()));
                    }
                }
                "check" => {
                    let Some(expression) = constraint.get("expression").and_then(Value::as_str) else {
                        diagnostics.push(Diagnostic::error(
                            Code::InvalidConfig,
                            format!("a `check` constraint on model `{}` has no `expression`", node.name),
                        ));
                        continue;
                    };
                    checks.push(("check".into(), format!("select * from {model} where not ({expression})")));
                }
                other => {
                    diagnostics.push(
                        Diagnostic::error(
                            Code::InvalidConfig,
                            format!("unknown constraint `{other}` on model `{}`", node.name),
                        )
                        .with_help("use `not_null`, `unique`, `primary_key` or `check`"),
                    );
                    continue;
                }
            }
            for (kind, sql) in checks {
                let suffix = if columns.is_empty() { String::new() } else { format!("_{}", columns.join("_")) };
                let name = format!("constraint_{kind}_{}{suffix}", node.name);
                let unique_id = format!("test.{project_name}.{name}");
                tests.insert(
                    unique_id.clone(),
                    TestNode {
                        unique_id,
                        name,
                        test: format!("constraint_{kind}"),
                        attached_node: Some(node.unique_id.clone()),
                        column_name: column.map(str::to_string),
                        severity: Severity::Error,
                        warn_if: Threshold::default(),
                        error_if: Threshold::default(),
                        store_failures: false,
                        compiled_sql: sql,
                        fail_calc: None,
                        depends_on: DependsOn { nodes: vec![node.unique_id.clone()], macros: Vec::new() },
                        path: node.path.clone(),
                        render_at_build: None,
                        unit: None,
                    },
                );
            }
        }
    }
}

/// Singular tests: the `.sql` files under the test paths, each a query returning failing rows.
fn singular_tests(
    project: &Project,
    manifest: &Manifest,
    renderer: &Renderer,
    context: &RenderContext,
    tests: &mut BTreeMap<String, TestNode>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let project_name = &manifest.project.name;
    for file in &project.test_files {
        let source = project.files.get(file.file);
        let rendered = match renderer.render_test(file.file, source, context, &macro_files(project)) {
            Ok(rendered) => rendered,
            Err(diagnostic) => {
                diagnostics.push(diagnostic);
                continue;
            }
        };
        let mut depends = Vec::new();
        for reference in &rendered.refs {
            match reference.name.last().and_then(|name| manifest.nodes.values().find(|n| &n.name == name)) {
                Some(node) => depends.push(node.unique_id.clone()),
                None => diagnostics.push(Diagnostic::error(
                    Code::RefNotFound,
                    format!(
                        "singular test `{}` refers to `{}`, which is not a model",
                        file.name,
                        reference.name.join(".")
                    ),
                )),
            }
        }
        for reference in &rendered.sources {
            if let [source, table] = reference.name.as_slice() {
                if let Some(found) = manifest.sources.values().find(|s| &s.source_name == source && &s.name == table) {
                    depends.push(found.unique_id.clone());
                }
            }
        }
        depends.sort();
        depends.dedup();
        let config = serde_json::Map::from_iter(rendered.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        let unique_id = format!("test.{project_name}.{}", file.name);
        let mut threshold = |key: &str| {
            threshold_config(&config, key).unwrap_or_else(|message| {
                let message = format!("singular test `{}`: {message}", file.name);
                diagnostics.push(Diagnostic::error(Code::InvalidConfig, message));
                Threshold::default()
            })
        };
        tests.insert(
            unique_id.clone(),
            TestNode {
                unique_id,
                name: file.name.clone(),
                test: "singular".into(),
                attached_node: (depends.len() == 1).then(|| depends[0].clone()),
                column_name: None,
                severity: severity_of(&config),
                warn_if: threshold("warn_if"),
                error_if: threshold("error_if"),
                store_failures: config.get("store_failures").and_then(Value::as_bool).unwrap_or(false),
                compiled_sql: rendered.sql.trim().trim_end_matches(';').to_string(),
                fail_calc: rendered.config.get("fail_calc").and_then(Value::as_str).map(str::to_string),
                depends_on: DependsOn {
                    nodes: depends,
                    macros: rendered.macros.iter().map(|m| renderer.macros().unique_id(m)).collect(),
                },
                path: file.path.clone(),
                render_at_build: rendered.introspective.then(|| crate::manifest::TestTemplate {
                    text: source.text.to_string(),
                    relation: String::new(),
                    filter: None,
                }),
                unit: None,
            },
        );
    }
}

/// dbt's name for a generic test, so results line up with dbt's: `<test>_<model>_<arguments>`, each argument's
/// values (sorted by argument name, `column_name` among them) joined with `__`, anything but letters, digits and `_`
/// made `_`; a package's test is prefixed with the package (`dbt_utils_expression_is_true_...`); a source is
/// `source_<source>_<table>`. A name of 64 characters or more is its first 30 and the md5 of the whole. (A test
/// without arguments on a model ends in `_`, as in dbt.)
fn dbt_test_name(test: &Declared, target: &str, column: Option<&str>) -> String {
    let test_type = test.test.replace('.', "_");
    let mut arguments: Vec<(&str, &Value)> = test.arguments.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let column_value = column.map(|c| Value::String(c.to_string()));
    if let Some(column) = &column_value {
        arguments.push(("column_name", column));
    }
    arguments.sort_by(|a, b| a.0.cmp(b.0));
    let python = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    };
    let mut parts = Vec::new();
    for (name, value) in arguments {
        if name == "model" {
            continue;
        }
        match value {
            Value::Object(map) => parts.extend(map.values().map(python)),
            Value::Array(items) => parts.extend(items.iter().map(python)),
            other => parts.push(python(other)),
        }
    }
    let clean = regex::Regex::new("[^0-9a-zA-Z_]+")
        .map(|re| parts.iter().map(|p| re.replace_all(p, "_").into_owned()).collect::<Vec<_>>());
    let unique = clean.unwrap_or(parts).join("__");
    let identifier = format!("{test_type}_{target}");
    let full = format!("{identifier}_{unique}");
    if full.len() >= 64 {
        use md5::Digest;
        let label: String = md5::Md5::digest(full.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        format!("{}_{label}", identifier.chars().take(30).collect::<String>())
    } else {
        full
    }
}

/// A custom generic test as rendered at compile.
struct CustomTest {
    sql: String,
    fail_calc: Option<String>,
    /// Set when the render asked the warehouse: the test is rendered again when it runs.
    render_at_build: Option<crate::manifest::TestTemplate>,
}

/// A test's rendered SQL as it runs: without a trailing `;`, and with its `where` config applied to the relation.
pub(super) fn finish_test_sql(rendered: &str, relation: &str, filter: Option<&str>) -> String {
    let sql = rendered.trim().trim_end_matches(';').to_string();
    match filter {
        Some(filter) => sql.replace(relation, &format!("(select * from {relation} where {filter})")),
        None => sql,
    }
}

/// A custom generic test: the `{% test name(model, column_name, ...) %}` macro rendered with the test's arguments.
#[allow(clippy::too_many_arguments)]
fn custom_sql(
    project: &Project,
    renderer: &Renderer,
    context: &RenderContext,
    manifest: &Manifest,
    test: &Declared,
    relation: &str,
    column: Option<&str>,
    depends: &mut Vec<String>,
) -> Result<CustomTest, String> {
    // `unique_combination_of_columns` is the root project's `{% test %}`; `dbt_utils.accepted_range` a package's.
    let (package, bare) = match test.test.split_once('.') {
        Some((package, bare)) => (Some(package), bare),
        None => (None, test.test.as_str()),
    };
    let macro_name = format!("test_{bare}");
    let key = match package {
        Some(package) => renderer.macros().key(package, &macro_name),
        None => macro_name.clone(),
    };
    if renderer.macros().get(&key).is_none() {
        let known = renderer.macros().names().filter_map(|n| n.strip_prefix("test_")).chain(BUILT_IN.iter().copied());
        let hint = crate::suggest::did_you_mean(&test.test, known)
            .map(|n| format!("; did you mean `{n}`?"))
            .unwrap_or_default();
        return Err(match package {
            Some(package) if !renderer.macros().packages().any(|p| p == package) => format!(
                "unknown test `{}`: no package `{package}` is installed (pipe reads `dbt_packages/` and `local:` packages){hint}",
                test.test
            ),
            _ => format!("unknown test `{}` (no `{{% test {bare} %}}` macro){hint}", test.test),
        });
    }
    let callee = match package {
        Some(package) => format!("{package}.{macro_name}"),
        None => macro_name,
    };
    // `model` is a relation, as in dbt (packages check it is one before using it).
    let (schema, identifier) = relation.rsplit_once('.').unwrap_or(("", relation));
    let mut arguments = vec![format!(
        "model=api.Relation.create(schema={}, identifier={})",
        jinja_literal(&Value::String(schema.to_string())),
        jinja_literal(&Value::String(identifier.to_string()))
    )];
    if let Some(column) = column {
        arguments.push(format!("column_name={}", jinja_literal(&Value::String(column.to_string()))));
    }
    for (key, value) in &test.arguments {
        arguments.push(format!("{key}={}", argument_literal(value)));
    }
    let text = format!("{{{{ {callee}({}) }}}}", arguments.join(", "));
    let file = crate::diagnostics::SourceFile::new(
        format!("<test {}>", test.test).into(),
        std::sync::Arc::from(text.as_str()),
    );
    let rendered = renderer
        .render_test(crate::diagnostics::FileId(0), &file, context, &macro_files(project))
        .map_err(|d| d.message)?;
    for reference in &rendered.refs {
        if let Some(node) = reference.name.last().and_then(|name| manifest.nodes.values().find(|n| &n.name == name)) {
            depends.push(node.unique_id.clone());
        }
    }
    let filter = test.config.get("where").and_then(Value::as_str);
    Ok(CustomTest {
        sql: finish_test_sql(&rendered.sql, relation, filter),
        fail_calc: rendered.config.get("fail_calc").and_then(Value::as_str).map(str::to_string),
        render_at_build: rendered.introspective.then(|| crate::manifest::TestTemplate {
            text,
            relation: relation.to_string(),
            filter: filter.map(str::to_string),
        }),
    })
}

#[cfg(test)]
mod naming_tests {
    use super::*;

    fn declared_test(yaml: serde_json::Value) -> Declared {
        declared(&yaml).unwrap()
    }

    #[test]
    fn generic_tests_are_named_as_dbt_names_them() {
        let name = |test: serde_json::Value, target: &str, column: Option<&str>| {
            dbt_test_name(&declared_test(test), target, column)
        };
        assert_eq!(name(serde_json::json!("not_null"), "orders", Some("id")), "not_null_orders_id");
        assert_eq!(
            name(serde_json::json!({"accepted_values": {"values": ["placed", "shipped"]}}), "orders", Some("status")),
            "accepted_values_orders_status__placed__shipped"
        );
        assert_eq!(
            name(
                serde_json::json!({"relationships": {"to": "ref('customers')", "field": "id"}}),
                "orders",
                Some("customer_id")
            ),
            "relationships_orders_customer_id__id__ref_customers_"
        );
        assert_eq!(
            name(
                serde_json::json!({"dbt_utils.accepted_range": {"min_value": 0, "inclusive": true}}),
                "orders",
                Some("amount")
            ),
            "dbt_utils_accepted_range_orders_amount__True__0"
        );
        assert_eq!(name(serde_json::json!("unique"), "source_raw_orders", Some("id")), "unique_source_raw_orders_id");
        // 64 characters or more: the first 30 of `<test>_<target>` and the md5 of the full name.
        let long = name(
            serde_json::json!({"relationships": {"to": "ref('slv_customers')", "field": "customer_id"}}),
            "slv_orders",
            Some("customer_id"),
        );
        assert_eq!(long, "relationships_slv_orders_d32124ef2b1d72c29715b810eec5a337");
    }
}
