//! Property YAML under the model paths: `models:` entries (descriptions, config, columns, tests, constraints) and
//! `sources:` entries (tables with a format and a path or glob, columns, freshness).
//!
//! Unknown keys are kept, then reported as `yaml-unknown-key` warnings with their line: a typo such as
//! `descripton` is never silently ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::config::ConfigMap;
use crate::diagnostics::{Code, Diagnostic, FileId, SourceFile};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PropertiesFile {
    /// dbt's `version: 2`; accepted and not used.
    #[serde(default, rename = "version")]
    pub _version: Option<Value>,
    #[serde(default)]
    pub models: Vec<ModelProperties>,
    #[serde(default)]
    pub sources: Vec<SourceProperties>,
    #[serde(default)]
    pub seeds: Vec<ModelProperties>,
    /// Snapshot entries: properties of `{% snapshot %}` blocks, or (dbt 1.9) whole snapshots, given a `relation`.
    #[serde(default)]
    pub snapshots: Vec<ModelProperties>,
    /// dbt 1.8's unit tests.
    #[serde(default)]
    pub unit_tests: Vec<UnitTestProperties>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A `models:` entry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelProperties {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub config: Option<ConfigMap>,
    #[serde(default)]
    pub columns: Vec<ColumnProperties>,
    #[serde(default)]
    pub tests: Vec<Value>,
    #[serde(default)]
    pub data_tests: Vec<Value>,
    #[serde(default)]
    pub constraints: Vec<Value>,
    #[serde(default)]
    pub meta: Option<Value>,
    #[serde(default)]
    pub docs: Option<Value>,
    #[serde(default)]
    pub access: Option<Value>,
    #[serde(default)]
    pub group: Option<Value>,
    /// dbt's model versions: one entry per version, each defined in its own file.
    #[serde(default)]
    pub versions: Vec<VersionProperties>,
    /// The version an unpinned `ref()` resolves to; the highest version when absent.
    #[serde(default)]
    pub latest_version: Option<Value>,
    #[serde(default)]
    pub deprecation_date: Option<Value>,
    /// A YAML-defined snapshot's input (dbt 1.9): `ref('orders')` or `source('shop', 'orders')`.
    #[serde(default)]
    pub relation: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A `unit_tests:` entry (dbt 1.8).
#[derive(Debug, Clone, Deserialize)]
pub struct UnitTestProperties {
    pub name: String,
    pub model: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub given: Vec<UnitRowsProperties>,
    pub expect: UnitRowsProperties,
    #[serde(default)]
    pub overrides: Option<UnitOverrides>,
    #[serde(default)]
    pub config: Option<ConfigMap>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A unit test's `given` input or its `expect`: rows as `dict` (the default), `csv` or `sql`, inline or from a
/// fixture file.
#[derive(Debug, Clone, Deserialize)]
pub struct UnitRowsProperties {
    /// `ref('x')`, `source('a', 'b')` or `this` (for `given`).
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub rows: Option<Value>,
    #[serde(default)]
    pub fixture: Option<String>,
}

/// A unit test's `overrides`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UnitOverrides {
    #[serde(default)]
    pub macros: BTreeMap<String, Value>,
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    #[serde(default)]
    pub env_vars: BTreeMap<String, Value>,
}

/// One entry of a model's `versions:`. What it sets overrides the model's entry for this version; its `columns`
/// may start with `include:` / `exclude:` over the model's columns.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VersionProperties {
    pub v: Value,
    /// The model file of this version, without extension; `<model>_v<v>` when absent.
    #[serde(default)]
    pub defined_in: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub config: Option<ConfigMap>,
    #[serde(default)]
    pub columns: Vec<Value>,
    #[serde(default)]
    pub tests: Option<Vec<Value>>,
    #[serde(default)]
    pub data_tests: Option<Vec<Value>>,
    #[serde(default)]
    pub constraints: Option<Vec<Value>>,
    #[serde(default)]
    pub meta: Option<Value>,
    #[serde(default)]
    pub docs: Option<Value>,
    #[serde(default)]
    pub access: Option<Value>,
    #[serde(default)]
    pub deprecation_date: Option<Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A column under a model or a source table.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ColumnProperties {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub data_type: Option<String>,
    #[serde(default)]
    pub tests: Vec<Value>,
    #[serde(default)]
    pub data_tests: Vec<Value>,
    #[serde(default)]
    pub constraints: Vec<Value>,
    #[serde(default)]
    pub meta: Option<Value>,
    #[serde(default)]
    pub tags: Option<Value>,
    #[serde(default)]
    pub quote: Option<Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A `sources:` entry: one named source with its tables.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SourceProperties {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub loader: Option<String>,
    #[serde(default)]
    pub freshness: Option<Value>,
    #[serde(default)]
    pub loaded_at_field: Option<String>,
    #[serde(default)]
    pub meta: Option<Value>,
    #[serde(default)]
    pub tags: Option<Value>,
    #[serde(default)]
    pub config: Option<ConfigMap>,
    #[serde(default)]
    pub tables: Vec<SourceTableProperties>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SourceTableProperties {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub identifier: Option<String>,
    /// `csv`, `json` (newline-delimited), `parquet` or `delta`; inferred from the path's extension when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// A path or glob relative to the project root.
    #[serde(default)]
    pub path: Option<String>,
    /// Reader options, e.g. `delimiter` and `header` for CSV.
    #[serde(default)]
    pub options: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub columns: Vec<ColumnProperties>,
    #[serde(default)]
    pub freshness: Option<Value>,
    #[serde(default)]
    pub loaded_at_field: Option<String>,
    #[serde(default)]
    pub meta: Option<Value>,
    #[serde(default)]
    pub tags: Option<Value>,
    #[serde(default)]
    pub tests: Vec<Value>,
    #[serde(default)]
    pub data_tests: Vec<Value>,
    #[serde(default)]
    pub external: Option<Value>,
    #[serde(default)]
    pub config: Option<ConfigMap>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Byte span of the first `key:` at or after `from`, for pointing at a YAML key without a span-tracking tree.
pub(crate) fn find_key(text: &str, key: &str, from: usize) -> Option<std::ops::Range<usize>> {
    let mut search = from.min(text.len());
    while let Some(pos) = text[search..].find(key) {
        let start = search + pos;
        let end = start + key.len();
        let before_ok = text[..start]
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || c == '-' || c == '{' || c == ',' || c == '"' || c == '\'');
        let after = text[end..].trim_start_matches(['"', '\'']);
        if before_ok && after.trim_start_matches([' ', '\t']).starts_with(':') {
            return Some(start..end);
        }
        search = end;
    }
    None
}

/// Byte offset of a named entry (`name: x`) in a YAML file, or 0.
pub(crate) fn find_entry(text: &str, name: &str) -> usize {
    let mut search = 0;
    while let Some(span) = find_key(text, "name", search) {
        let rest = text[span.end..].trim_start_matches([' ', ':', '\t', '"', '\'']);
        if rest.starts_with(name)
            && rest[name.len()..].chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        {
            return span.start;
        }
        search = span.end;
    }
    0
}

/// dbt keys pipe does not run yet: reported as such, never as a spelling mistake.
const NOT_SUPPORTED_YET: &[(&str, &str)] = &[
    ("exposures", "exposures"),
    ("metrics", "metrics"),
    ("semantic_models", "semantic models"),
    ("saved_queries", "saved queries"),
    ("analyses", "analyses"),
    ("groups", "groups"),
    ("macros", "macro properties"),
];

/// The keys each kind of entry knows, for did-you-mean.
const FILE_KEYS: &[&str] = &["version", "models", "sources", "seeds", "snapshots", "unit_tests"];
const MODEL_KEYS: &[&str] = &[
    "name",
    "description",
    "config",
    "columns",
    "tests",
    "data_tests",
    "constraints",
    "meta",
    "docs",
    "access",
    "group",
    "versions",
    "latest_version",
    "deprecation_date",
];
const VERSION_KEYS: &[&str] = &[
    "v",
    "defined_in",
    "description",
    "config",
    "columns",
    "tests",
    "data_tests",
    "constraints",
    "meta",
    "docs",
    "access",
    "deprecation_date",
];
const COLUMN_KEYS: &[&str] =
    &["name", "description", "data_type", "tests", "data_tests", "constraints", "meta", "tags", "quote"];
const SOURCE_KEYS: &[&str] = &[
    "name",
    "description",
    "schema",
    "database",
    "loader",
    "freshness",
    "loaded_at_field",
    "meta",
    "tags",
    "config",
    "tables",
];
const TABLE_KEYS: &[&str] = &[
    "name",
    "description",
    "identifier",
    "format",
    "path",
    "options",
    "columns",
    "freshness",
    "loaded_at_field",
    "meta",
    "tags",
    "tests",
    "data_tests",
    "external",
];

fn unknown(
    file_id: FileId,
    file: &SourceFile,
    anchor: usize,
    keys: &BTreeMap<String, Value>,
    what: &str,
    known: &[&str],
    out: &mut Vec<Diagnostic>,
) {
    for key in keys.keys() {
        let span = find_key(&file.text, key, anchor).unwrap_or(anchor..anchor);
        if let Some((_, feature)) = NOT_SUPPORTED_YET.iter().find(|(k, _)| k == key) {
            out.push(
                Diagnostic::warning(
                    Code::NotSupported,
                    format!("`{key}:` in {what}: {feature} are not supported by pipe yet; these entries are not used"),
                )
                .with_primary(file_id, span, "not supported yet"),
            );
            continue;
        }
        let diagnostic =
            Diagnostic::warning(Code::YamlUnknownKey, format!("unknown key `{key}` in {what}; it is ignored"))
                .with_primary(file_id, span, "not a known key");
        out.push(match crate::suggest::did_you_mean(key, known.iter().copied()) {
            Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
            None => diagnostic.with_help(format!("the keys known here are {}", known.join(", "))),
        });
    }
}

/// Where each entry's `name:` key first appears in a property file, by name, found in one pass.
pub(crate) fn entry_offsets(text: &str) -> std::collections::HashMap<String, usize> {
    let mut offsets = std::collections::HashMap::new();
    let mut search = 0;
    while let Some(span) = find_key(text, "name", search) {
        let rest = text[span.end..].trim_start_matches([' ', ':', '\t', '"', '\'']);
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-').collect();
        offsets.entry(name).or_insert(span.start);
        search = span.end;
    }
    offsets
}

/// Reports every unknown key of a parsed property file.
pub(crate) fn check_unknown_keys(
    file_id: FileId,
    file: &SourceFile,
    props: &PropertiesFile,
    entries: &std::collections::HashMap<String, usize>,
    out: &mut Vec<Diagnostic>,
) {
    unknown(file_id, file, 0, &props.other, "a property file", FILE_KEYS, out);
    let at = |name: &str| entries.get(name).copied().unwrap_or(0);
    for model in props.models.iter().chain(&props.seeds).chain(&props.snapshots) {
        let at = at(&model.name);
        unknown(file_id, file, at, &model.other, &format!("model `{}`", model.name), MODEL_KEYS, out);
        if model.relation.is_some() && !props.snapshots.iter().any(|s| std::ptr::eq(s, model)) {
            let what = format!("model `{}`", model.name);
            let relation = BTreeMap::from([("relation".to_string(), Value::Null)]);
            unknown(file_id, file, at, &relation, &what, MODEL_KEYS, out);
        }
        for column in &model.columns {
            let col_at = find_entry(&file.text[at..], &column.name) + at;
            let what = format!("column `{}.{}`", model.name, column.name);
            unknown(file_id, file, col_at, &column.other, &what, COLUMN_KEYS, out);
        }
        for version in &model.versions {
            let what = format!("version {} of model `{}`", super::versions::version_text(&version.v), model.name);
            unknown(file_id, file, at, &version.other, &what, VERSION_KEYS, out);
        }
    }
    for source in &props.sources {
        let at = at(&source.name);
        unknown(file_id, file, at, &source.other, &format!("source `{}`", source.name), SOURCE_KEYS, out);
        for table in &source.tables {
            let table_at = find_entry(&file.text[at..], &table.name) + at;
            let what = format!("source table `{}.{}`", source.name, table.name);
            unknown(file_id, file, table_at, &table.other, &what, TABLE_KEYS, out);
            for column in &table.columns {
                let col_at = find_entry(&file.text[table_at..], &column.name) + table_at;
                let what = format!("column `{}.{}.{}`", source.name, table.name, column.name);
                unknown(file_id, file, col_at, &column.other, &what, COLUMN_KEYS, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_not_substrings() {
        let text = "models:\n  - name: orders_raw\n  - name: orders\n    descripton: x\n";
        assert_eq!(find_key(text, "descripton", 0).map(|r| &text[r]), Some("descripton"));
        assert_eq!(find_entry(text, "orders"), text.find("name: orders\n").unwrap());
        assert_eq!(find_entry(text, "orders_raw"), text.find("name: orders_raw").unwrap());
    }
}
