//! dbt's unit tests (`unit_tests:` in the property YAML) as test nodes: each names its model, the rows given for
//! the relations the model reads (`ref('x')`, `source('a', 'b')`, `this`), and the rows expected. Compile resolves
//! every input to the relation the model's compiled SQL names, types it by that relation's planned columns, and reads
//! fixture files (`<test path>/fixtures/<name>.csv|.sql`); a relation the model reads but the test gives no rows for
//! is an empty table of its columns. `quality::unit` runs them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::diagnostics::{Code, Diagnostic};
use crate::manifest::{DependsOn, Manifest, Severity, TestNode, Threshold, UnitInput, UnitRows, UnitTest};
use crate::project::{Project, UnitRowsProperties, UnitTestDef};

use super::at_build::{render_overridden, Overrides};
use super::CompileOptions;

/// Adds the project's unit tests to the manifest; a test that cannot be resolved is a diagnostic at its entry.
pub(super) fn define(
    project: &Project,
    options: &CompileOptions,
    manifest: &mut Manifest,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for def in &project.unit_tests {
        if def.properties.config.as_ref().and_then(|c| c.get("enabled")).and_then(Value::as_bool) == Some(false) {
            continue;
        }
        match unit_test(project, options, manifest, def) {
            Ok(test) => {
                manifest.tests.insert(test.unique_id.clone(), test);
            }
            Err(mut diagnostic) => {
                // The model's own problem when the model exists: it does not build; the rest of the project does.
                let model = manifest.nodes.values().find(|n| n.name == def.properties.model);
                diagnostic.node = model.map(|m| m.unique_id.clone());
                diagnostics.push(diagnostic);
            }
        }
    }
}

fn unit_test(
    project: &Project,
    options: &CompileOptions,
    manifest: &Manifest,
    def: &UnitTestDef,
) -> Result<TestNode, Diagnostic> {
    let props = &def.properties;
    let error = |message: String, help: &str| {
        Diagnostic::error(Code::InvalidConfig, message)
            .with_primary(def.file, def.at..def.at + 4, "this unit test")
            .with_help(help.to_string())
    };
    let model = manifest
        .nodes
        .values()
        .find(|n| n.name == props.model && n.resource_type == crate::manifest::NodeKind::Model)
        .ok_or_else(|| {
            error(
                format!("unit test `{}` is on model `{}`, which the project does not have", props.name, props.model),
                "name the model the test runs in `model:`",
            )
        })?;
    let overrides = props.overrides.clone().unwrap_or_default();
    let incremental = overrides.macros.get("is_incremental").and_then(Value::as_bool) == Some(true);
    // `overrides.vars` / `env_vars`: the model rendered again with them; otherwise its compiled SQL.
    let (full, incremental_sql) = if overrides.vars.is_empty() && overrides.env_vars.is_empty() {
        (model.compiled_sql.clone(), model.compiled_sql_incremental.clone())
    } else {
        let env_vars = overrides
            .env_vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect();
        let values = Overrides { vars: overrides.vars.clone().into_iter().collect(), env_vars };
        render_overridden(project, options, manifest, model, &values).map_err(|mut diagnostic| {
            diagnostic.message =
                format!("unit test `{}` (model rendered with its overrides): {}", props.name, diagnostic.message);
            diagnostic
        })?
    };
    let sql = match incremental {
        true => incremental_sql.unwrap_or(full),
        false => full,
    };
    // Every relation the model reads, typed by its planned columns.
    let mut inputs: BTreeMap<String, UnitInput> = BTreeMap::new();
    for upstream in &model.depends_on.nodes {
        let (relation, columns) = match (manifest.nodes.get(upstream), manifest.sources.get(upstream)) {
            (Some(node), _) => (node.relation.clone(), node.planned_columns.clone()),
            (None, Some(source)) => (source.relation.clone(), source.planned_columns.clone()),
            (None, None) => continue,
        };
        let rows = UnitRows::Dict(Vec::new());
        inputs.insert(relation.clone(), UnitInput { relation, columns: columns.unwrap_or_default(), rows });
    }
    if incremental {
        let (relation, columns) = (model.relation.clone(), model.planned_columns.clone().unwrap_or_default());
        inputs.insert(relation.clone(), UnitInput { relation, columns, rows: UnitRows::Dict(Vec::new()) });
    }
    for given in &props.given {
        let input = given.input.as_deref().unwrap_or_default();
        let relation = input_relation(manifest, model, input).ok_or_else(|| {
            error(
                format!(
                    "unit test `{}` gives rows for `{input}`, which model `{}` does not read",
                    props.name, model.name
                ),
                "give rows for the `ref()`s and `source()`s of the model (and `this` with `is_incremental` overridden)",
            )
        })?;
        let Some(slot) = inputs.get_mut(&relation) else {
            return Err(error(
                format!(
                    "unit test `{}` gives rows for `{input}`, which model `{}` does not read",
                    props.name, model.name
                ),
                "give rows for the `ref()`s and `source()`s of the model",
            ));
        };
        slot.rows =
            rows(project, &props.name, given).map_err(|message| error(message, "see dbt's unit test formats"))?;
    }
    let expect = rows(project, &props.name, &props.expect).map_err(|m| error(m, "see dbt's unit test formats"))?;
    let path = project.files.get(def.file).display_path().to_string();
    Ok(TestNode {
        unique_id: format!("unit_test.{}.{}.{}", manifest.project.name, model.name, props.name),
        name: props.name.clone(),
        test: "unit".into(),
        attached_node: Some(model.unique_id.clone()),
        column_name: None,
        severity: Severity::Error,
        warn_if: Threshold::default(),
        error_if: Threshold::default(),
        store_failures: false,
        compiled_sql: sql.clone(),
        fail_calc: None,
        depends_on: DependsOn { nodes: vec![model.unique_id.clone()], macros: Vec::new() },
        path,
        render_at_build: None,
        unit: Some(UnitTest { model: model.unique_id.clone(), sql, inputs: inputs.into_values().collect(), expect }),
    })
}

/// The relation a `given` input names: `ref('x')` (or `ref("x")`, `ref('package', 'x')`), `source('a', 'b')`,
/// or `this`.
fn input_relation(manifest: &Manifest, model: &crate::manifest::Node, input: &str) -> Option<String> {
    let input = input.trim();
    if input == "this" {
        return Some(model.relation.clone());
    }
    let (function, args) = input.split_once('(')?;
    let args: Vec<String> = args
        .trim_end()
        .strip_suffix(')')?
        .split(',')
        .map(|a| a.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .filter(|a| !a.is_empty())
        .collect();
    match (function.trim(), args.as_slice()) {
        ("ref", [.., name]) => manifest.nodes.values().find(|n| &n.name == name).map(|n| n.relation.clone()),
        ("source", [source, table]) => {
            manifest.sources.values().find(|s| &s.source_name == source && &s.name == table).map(|s| s.relation.clone())
        }
        _ => None,
    }
}

/// The rows of a `given` or `expect`, read from its fixture file when it names one.
fn rows(project: &Project, test: &str, props: &UnitRowsProperties) -> Result<UnitRows, String> {
    let format = props.format.as_deref().unwrap_or("dict");
    let text = |value: &Option<Value>| -> Result<String, String> {
        match (value, &props.fixture) {
            (Some(Value::String(text)), _) => Ok(text.clone()),
            (None, Some(fixture)) => fixture_text(project, fixture, format),
            _ => Err(format!("unit test `{test}`: `{format}` rows are text (a `|` block) or a `fixture`")),
        }
    };
    match format {
        "dict" => match (&props.rows, &props.fixture) {
            (Some(Value::Array(items)), _) => items
                .iter()
                .map(|item| match item {
                    Value::Object(row) => Ok(row.clone()),
                    other => Err(format!("unit test `{test}`: a `dict` row is a mapping, not {other}")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(UnitRows::Dict),
            (None, None) => Ok(UnitRows::Dict(Vec::new())),
            _ => Err(format!("unit test `{test}`: `dict` rows are a list of mappings")),
        },
        "csv" => text(&props.rows).map(UnitRows::Csv),
        "sql" => text(&props.rows).map(UnitRows::Sql),
        other => Err(format!("unit test `{test}`: unknown rows format `{other}` (use `dict`, `csv` or `sql`)")),
    }
}

/// A fixture's text: `<test path>/fixtures/<name>.<format>`, anywhere under the fixtures folder.
fn fixture_text(project: &Project, name: &str, format: &str) -> Result<String, String> {
    for test_path in &project.config.test_paths {
        let folder = project.root.join(test_path).join("fixtures");
        let found = walkdir::WalkDir::new(&folder).into_iter().filter_map(Result::ok).find(|entry| {
            let path = entry.path();
            path.file_stem().is_some_and(|s| s == name) && path.extension().is_some_and(|e| e == format)
        });
        if let Some(entry) = found {
            return std::fs::read_to_string(entry.path()).map_err(|e| format!("fixture `{name}`: {e}"));
        }
    }
    Err(format!("no fixture `{name}.{format}` under the test paths' `fixtures/` folders"))
}
