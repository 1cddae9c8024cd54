//! The schema registry's part in a build: the gate before it (`schema_compatibility`) and the registration after.

use super::{NodeStatus, Notice, RunResults};
use crate::manifest::Manifest;
use crate::project::Materialization;
use crate::warehouse::Warehouse;

/// The schema registry's verdict on the selected `table` and `incremental` models: each whose planned columns
/// break its `schema_compatibility` against its latest registered schema.
pub async fn schema_gate(
    manifest: &Manifest,
    warehouse: &Warehouse,
    selected: &[String],
) -> Vec<crate::warehouse::SchemaBreak> {
    let mut breaks = Vec::new();
    for node in selected.iter().filter_map(|id| manifest.nodes.get(id)) {
        if !matches!(node.materialized, Materialization::Table | Materialization::Incremental) {
            continue;
        }
        if let Some((mode, changes)) = crate::quality::registry::check_model(warehouse, node).await {
            breaks.push(crate::warehouse::SchemaBreak {
                model: node.name.clone(),
                mode,
                changes: changes.iter().map(ToString::to_string).collect(),
            });
        }
    }
    breaks
}

/// Records the schemas of the models that were built and of the sources; a source whose columns drifted is a
/// warning, compatible or not.
pub(super) async fn register_schemas(manifest: &Manifest, warehouse: &Warehouse, results: &RunResults) -> Vec<Notice> {
    use crate::quality::registry;
    let mut notices = Vec::new();
    for result in results.results.iter().filter(|r| r.status == NodeStatus::Success) {
        let Some(node) = manifest.nodes.get(&result.unique_id) else { continue };
        if let Some(columns) = &node.planned_columns {
            let version = registry::model_version(node);
            if let Err(err) = registry::register(warehouse, &node.relation, columns, version, &results.run_id).await {
                notices.push(Notice::warning(format!("schema of `{}` not registered: {err}", node.relation)));
            }
        }
    }
    for source in manifest.sources.values() {
        let Some(columns) = &source.planned_columns else { continue };
        if let Some(latest) = registry::versions(warehouse, &source.relation).await.pop() {
            let changes = registry::changes(&latest.columns, columns);
            if !changes.is_empty() {
                let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
                notices.push(Notice::warning(format!(
                    "source `{}` drifted since its last registered schema: {}",
                    source.relation,
                    list.join("; ")
                )));
            }
        }
        let _ = registry::register(warehouse, &source.relation, columns, None, &results.run_id).await;
    }
    notices
}
