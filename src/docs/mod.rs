//! The docs site: `pipe docs generate` writes a static, self-contained site to `target/docs/` (an `index.html`
//! holding the page's code and style, and `data.js` holding the project as one JSON value), and
//! `pipe docs serve` serves that folder on 127.0.0.1.
//!
//! Everything users write reaches the page as JSON data, never as markup: the page puts it in with `textContent`
//! and attribute setters, and the JSON is written so that no `</script>` (or any `<`) appears in it.

pub mod serve;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::lineage::graph::ProjectLineage;
use crate::manifest::Manifest;
use crate::warehouse::runs::NodeRun;

const INDEX_HTML: &str = include_str!("site/index.html");
const APP_JS: &str = include_str!("site/app.js");
const STYLE_CSS: &str = include_str!("site/style.css");

/// What the warehouse knows of the nodes, when there is one.
#[derive(Debug, Default)]
pub struct WarehouseFacts {
    /// Per unique id, its runs, newest first.
    pub history: BTreeMap<String, Vec<NodeRun>>,
    /// Per test unique id: status, failures, when.
    pub tests: BTreeMap<String, (String, i64, String)>,
    /// Per source or model display name (`source raw.orders`, `model silver.x`): status and detail.
    pub freshness: BTreeMap<String, (String, String)>,
    /// Per relation: the latest Delta version and when it was committed.
    pub versions: BTreeMap<String, (i64, String)>,
}

/// The latest version of each Delta table of `warehouse` and its commit time, read off the log's listing (no
/// table is opened).
pub async fn delta_versions(
    warehouse: &crate::warehouse::Warehouse,
    relations: impl IntoIterator<Item = String>,
) -> BTreeMap<String, (i64, String)> {
    let mut versions = BTreeMap::new();
    for relation in relations {
        if let Some((version, when)) = warehouse.log_head(&relation).await {
            versions.insert(relation, (version, when.format("%Y-%m-%d %H:%M:%S").to_string()));
        }
    }
    versions
}

/// The site's data: one entry per model, seed and source, with its lineage and, given a warehouse, its runs.
pub fn site_data(manifest: &Manifest, lineage: &ProjectLineage, facts: Option<&WarehouseFacts>) -> Value {
    let mut tests_of: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for test in manifest.tests.values() {
        let Some(attached) = test.attached_node.as_deref() else { continue };
        let latest = facts.and_then(|f| f.tests.get(&test.unique_id));
        tests_of.entry(attached).or_default().push(json!({
            "name": test.name,
            "test": test.test,
            "column": test.column_name,
            "severity": format!("{:?}", test.severity).to_lowercase(),
            "status": latest.map(|l| l.0.clone()),
            "failures": latest.map(|l| l.1),
        }));
    }
    let mut nodes = Vec::new();
    for entry in lineage.nodes.values() {
        let columns_yaml = manifest
            .nodes
            .get(&entry.unique_id)
            .map(|n| &n.columns)
            .or_else(|| manifest.sources.get(&entry.unique_id).map(|s| &s.columns));
        let columns: Vec<Value> = entry
            .columns
            .iter()
            .map(|c| {
                let yaml = columns_yaml.and_then(|cols| cols.get(&c.name));
                json!({
                    "name": c.name,
                    "type": c.data_type.clone().or_else(|| yaml.and_then(|y| y.data_type.clone())),
                    "description": yaml.and_then(|y| y.description.clone()),
                    "sources": c.sources.iter().map(|s| json!([s.node, s.column, s.kind.as_str()])).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut node = json!({
            "id": entry.unique_id,
            "name": entry.name,
            "type": entry.resource_type,
            "layer": entry.layer,
            "relation": entry.relation,
            "materialized": entry.materialized,
            "depends_on": entry.depends_on,
            "columns": columns,
            "row_deciders": entry.row_deciders.iter().map(|d| json!([d.node, d.column])).collect::<Vec<_>>(),
            "tests": tests_of.remove(entry.unique_id.as_str()).unwrap_or_default(),
        });
        if let Some(model) = manifest.nodes.get(&entry.unique_id) {
            node["description"] = json!(model.description);
            node["path"] = json!(model.path);
            node["tags"] = json!(model.tags);
            node["config"] = json!(model.config);
            node["raw_sql"] = json!(model.raw_sql);
            node["compiled_sql"] = json!(model.compiled_sql);
        }
        if let Some(source) = manifest.sources.get(&entry.unique_id) {
            node["description"] = json!(source.description);
            node["path"] = json!(source.path);
            node["source"] = json!(source.source_name);
            node["format"] = json!(source.format);
        }
        if let Some(facts) = facts {
            if let Some(runs) = facts.history.get(&entry.unique_id) {
                node["runs"] = json!(runs.iter().take(30).collect::<Vec<_>>());
            }
            if let Some((version, at)) = facts.versions.get(&entry.relation) {
                node["delta"] = json!({ "version": version, "committed_at": at });
            }
            let key =
                format!("{} {}", if entry.resource_type == "source" { "source" } else { "model" }, entry.relation);
            if let Some((status, detail)) = facts.freshness.get(&key) {
                node["freshness"] = json!({ "status": status, "detail": detail });
            }
        }
        nodes.push(node);
    }
    json!({
        "project": manifest.project.name,
        "generated_at": chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        "warehouse": facts.is_some(),
        "nodes": nodes,
    })
}

/// Writes the site to `dir`: `index.html` (page, style and code) and `data.js` (`window.PIPE_DOCS = {...}`).
pub fn write_site(dir: &Path, data: &Value) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let page = INDEX_HTML.replace("/*STYLE*/", STYLE_CSS).replace("/*APP*/", APP_JS);
    std::fs::write(dir.join("index.html"), page)?;
    let data = script_safe_json(data);
    std::fs::write(dir.join("data.js"), format!("window.PIPE_DOCS = {};\n", crate::secrets::mask(&data)))
}

/// JSON that can sit inside a `<script>`: `<`, `>` and `&` escaped as `\u003c`... (still the same JSON value), so
/// no user text can close the script element or open a comment; U+2028/U+2029 escaped for older parsers.
pub fn script_safe_json(value: &Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::script_safe_json;

    #[test]
    fn user_text_cannot_close_the_script_element() {
        let value = serde_json::json!({ "description": "</script><script>alert(1)</script> & <!--" });
        let text = script_safe_json(&value);
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), value, "the same value");
    }
}
