//! dbt's model versions: a `models:` entry with `versions:` describes one model written in several files, one per
//! version (`<model>_v<v>.sql` unless `defined_in` says otherwise). Each version is its own node, named after its
//! file and written to `<model>_v<v>` unless it sets an alias; `ref('model')` reads the latest version and
//! `ref('model', v=1)` a pinned one.
//!
//! Here each version's entry is expanded into the property entry of its file: the model's entry with the
//! version's keys on top, and its columns chosen by `include:` / `exclude:`.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::properties::{ColumnProperties, ModelProperties};
use crate::diagnostics::{Code, Diagnostic, FileId};

/// A versioned model: its versions and which one is the latest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionedModel {
    pub latest: String,
    /// (version, the model file that defines it), in the order written.
    pub versions: Vec<(String, String)>,
}

impl VersionedModel {
    /// The node `ref(model)` (`None`) or `ref(model, v=version)` reads.
    pub fn node(&self, version: Option<&str>) -> Option<&str> {
        let wanted = version.unwrap_or(&self.latest);
        self.versions.iter().find(|(v, _)| v == wanted).map(|(_, node)| node.as_str())
    }

    pub fn version_list(&self) -> String {
        self.versions.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Which version of which model a model file defines.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionOf {
    pub model: String,
    pub v: String,
    pub latest: bool,
}

/// A version identifier as dbt prints it: `1`, `1.5` or a string.
pub fn version_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// dbt orders versions numerically when they are numbers, else as text.
fn newest(versions: &[String]) -> Option<String> {
    let numeric: Option<Vec<f64>> = versions.iter().map(|v| v.parse::<f64>().ok()).collect();
    match numeric {
        Some(numbers) => numbers.iter().zip(versions).max_by(|a, b| a.0.total_cmp(b.0)).map(|(_, v)| v.clone()),
        None => versions.iter().max().cloned(),
    }
}

type Entries = BTreeMap<String, (FileId, usize, ModelProperties)>;

/// Replaces each versioned entry by one entry per version, keyed by the file that defines it; returns the
/// versioned models by name and which version each file defines.
pub(crate) fn expand(
    entries: &mut Entries,
    model_files: &HashSet<String>,
    diagnostics: &mut Vec<Diagnostic>,
) -> (BTreeMap<String, VersionedModel>, BTreeMap<String, VersionOf>) {
    let mut models = BTreeMap::new();
    let mut files = BTreeMap::new();
    let versioned: Vec<String> =
        entries.iter().filter(|(_, (_, _, props))| !props.versions.is_empty()).map(|(name, _)| name.clone()).collect();
    for name in versioned {
        let Some((file_id, at, base)) = entries.remove(&name) else { continue };
        let texts: Vec<String> = base.versions.iter().map(|v| version_text(&v.v)).collect();
        let latest = match &base.latest_version {
            Some(v) => version_text(v),
            None => newest(&texts).unwrap_or_default(),
        };
        if !texts.contains(&latest) {
            diagnostics.push(
                Diagnostic::error(
                    Code::InvalidConfig,
                    format!(
                        "`latest_version: {latest}` of model `{name}` is not one of its versions ({})",
                        texts.join(", ")
                    ),
                )
                .with_primary(file_id, at..at + 4, "this model"),
            );
        }
        let mut model = VersionedModel { latest: latest.clone(), versions: Vec::new() };
        for (version, v) in base.versions.iter().zip(&texts) {
            let conventional = format!("{name}_v{v}");
            // dbt also finds the latest version in the unsuffixed file (`dim_customers.sql`).
            let file = match &version.defined_in {
                Some(file) => file.clone(),
                None if !model_files.contains(&conventional) && *v == latest && model_files.contains(&name) => {
                    name.clone()
                }
                None => conventional.clone(),
            };
            let mut props = base.clone();
            props.name = file.clone();
            props.versions = Vec::new();
            props.latest_version = None;
            let mut config = base.config.clone().unwrap_or_default();
            if let Some(more) = &version.config {
                super::config::merge_config(&mut config, more);
            }
            config.entry("alias").or_insert_with(|| Value::String(conventional.clone()));
            config.insert("version".into(), Value::String(v.clone()));
            props.config = Some(config);
            if version.description.is_some() {
                props.description = version.description.clone();
            }
            if version.tests.is_some() || version.data_tests.is_some() {
                props.tests = version.tests.clone().unwrap_or_default();
                props.data_tests = version.data_tests.clone().unwrap_or_default();
            }
            for (slot, value) in [
                (&mut props.meta, &version.meta),
                (&mut props.docs, &version.docs),
                (&mut props.access, &version.access),
                (&mut props.deprecation_date, &version.deprecation_date),
            ] {
                if value.is_some() {
                    *slot = value.clone();
                }
            }
            if let Some(constraints) = &version.constraints {
                props.constraints = constraints.clone();
            }
            match version_columns(&base.columns, &version.columns) {
                Ok(columns) => props.columns = columns,
                Err(message) => diagnostics.push(
                    Diagnostic::error(Code::InvalidConfig, format!("version {v} of model `{name}`: {message}"))
                        .with_primary(file_id, at..at + 4, "this model"),
                ),
            }
            if entries.contains_key(&file) || files.contains_key(&file) {
                diagnostics.push(
                    Diagnostic::error(
                        Code::DuplicateModel,
                        format!("`{file}` is version {v} of model `{name}` and is also described on its own"),
                    )
                    .with_primary(file_id, at..at + 4, "versions declared here")
                    .with_help("describe the version under the model's `versions:` only"),
                );
                continue;
            }
            files.insert(file.clone(), VersionOf { model: name.clone(), v: v.clone(), latest: *v == latest });
            model.versions.push((v.clone(), file.clone()));
            entries.insert(file, (file_id, at, props));
        }
        models.insert(name, model);
    }
    (models, files)
}

/// A version's columns: the model's, filtered by a leading `include:` / `exclude:` entry (all when there is none),
/// then the version's own column entries, which replace a model column of the same name.
fn version_columns(base: &[ColumnProperties], entries: &[Value]) -> Result<Vec<ColumnProperties>, String> {
    let mut include: Option<Vec<String>> = None;
    let mut exclude: Vec<String> = Vec::new();
    let mut own = Vec::new();
    let names = |value: &Value| -> Vec<String> {
        match value {
            Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    for entry in entries {
        if let Some(spec) = entry.get("include") {
            include = match spec.as_str() {
                Some("all" | "*") => None,
                _ => Some(names(spec)),
            };
            exclude = entry.get("exclude").map(names).unwrap_or_default();
            continue;
        }
        let column: ColumnProperties =
            serde_json::from_value(entry.clone()).map_err(|err| format!("a column entry is not valid: {err}"))?;
        own.push(column);
    }
    let mut columns: Vec<ColumnProperties> = base
        .iter()
        .filter(|c| include.as_ref().is_none_or(|names| names.iter().any(|n| n.eq_ignore_ascii_case(&c.name))))
        .filter(|c| !exclude.iter().any(|n| n.eq_ignore_ascii_case(&c.name)))
        .filter(|c| !own.iter().any(|o| o.name.eq_ignore_ascii_case(&c.name)))
        .cloned()
        .collect();
    columns.extend(own);
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str) -> ColumnProperties {
        ColumnProperties { name: name.into(), ..Default::default() }
    }

    #[test]
    fn latest_is_the_highest_number_unless_named() {
        assert_eq!(newest(&["1".into(), "10".into(), "2".into()]).as_deref(), Some("10"));
        assert_eq!(newest(&["a".into(), "b".into()]).as_deref(), Some("b"));
        assert_eq!(version_text(&serde_json::json!(2)), "2");
        assert_eq!(version_text(&serde_json::json!(1.5)), "1.5");
    }

    #[test]
    fn columns_follow_include_and_exclude() {
        let base = vec![column("id"), column("name"), column("country")];
        let entries =
            vec![serde_json::json!({"include": "all", "exclude": ["country"]}), serde_json::json!({"name": "region"})];
        let names: Vec<String> = version_columns(&base, &entries).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["id", "name", "region"]);
        let names: Vec<String> = version_columns(&base, &[]).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["id", "name", "country"]);
        let only = vec![serde_json::json!({"include": ["id"]})];
        let names: Vec<String> = version_columns(&base, &only).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["id"]);
    }
}
