//! What a model is computed from, for `skip_unchanged` and the run's accounting: a digest of its SQL and inputs,
//! the newest source file it reads, and its upstream tables' row counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::sources;
use crate::manifest::{Manifest, Node, NodeKind};
use crate::project::Materialization;
use crate::warehouse::Warehouse;

/// The note on a `table` model that `skip_unchanged` left as it was.
pub const UNCHANGED_INPUTS_NOTE: &str = "inputs unchanged: not rebuilt";

/// A digest of what `node` is computed from: its compiled SQL (so a changed `--vars` or `env_var()` value counts,
/// which the logic checksum over the raw SQL does not see), the Delta version of each upstream table (looking
/// through views and ephemeral models to their own inputs and compiled SQL) and the path, size and modification
/// time of each source file.
pub async fn input_fingerprint(manifest: &Manifest, warehouse: &Warehouse, project_root: &Path, node: &Node) -> String {
    use sha2::{Digest, Sha256};
    let sql_digest = |node: &Node| -> String {
        let mut hasher = Sha256::new();
        hasher.update(node.compiled_sql.as_bytes());
        hasher.update([0]);
        hasher.update(node.compiled_sql_incremental.as_deref().unwrap_or_default().as_bytes());
        hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    };
    let mut parts = vec![format!("sql={}", sql_digest(node))];
    let mut stack: Vec<&str> = node.depends_on.nodes.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(upstream) = manifest.nodes.get(id) {
            match upstream.materialized {
                Materialization::View | Materialization::Ephemeral if upstream.resource_type == NodeKind::Model => {
                    parts.push(format!("{}: sql={}", upstream.relation, sql_digest(upstream)));
                    stack.extend(upstream.depends_on.nodes.iter().map(String::as_str));
                }
                _ => {
                    let version = warehouse.load(&upstream.relation).await.ok().flatten().and_then(|t| t.version());
                    parts.push(format!("{}@{version:?}", upstream.relation));
                }
            }
        } else if let Some(path) = manifest.sources.get(id).and_then(|s| s.path.as_deref()) {
            let files: Vec<String> = sources::file_stats(project_root, path)
                .into_iter()
                .map(|(file, (size, modified))| {
                    let nanos = modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
                    format!("{}:{size}:{nanos}", file.display())
                })
                .collect();
            parts.push(format!("{id}={}", files.join(",")));
        }
    }
    parts.sort();
    Sha256::digest(parts.join("\n").as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The newest modification time of the files of the sources `node` reads, directly or through other models.
pub(super) fn newest_input(manifest: &Manifest, project_root: &Path, node: &Node) -> Option<std::time::SystemTime> {
    let ids = node.depends_on.nodes.iter().map(String::as_str);
    sources::upstream_files(manifest, project_root, ids).into_values().map(|(_, modified)| modified).max()
}

/// Rows in each upstream table of `node` (models and seeds with a Delta table, looking through ephemeral models),
/// summed from the file statistics of the Delta log: nothing is scanned.
pub(super) async fn upstream_rows(manifest: &Manifest, warehouse: &Warehouse, node: &Node) -> BTreeMap<String, u64> {
    let mut rows = BTreeMap::new();
    let mut stack: Vec<&str> = node.depends_on.nodes.iter().map(String::as_str).collect();
    while let Some(id) = stack.pop() {
        let Some(upstream) = manifest.nodes.get(id) else { continue };
        if upstream.materialized == Materialization::Ephemeral && upstream.resource_type == NodeKind::Model {
            stack.extend(upstream.depends_on.nodes.iter().map(String::as_str));
            continue;
        }
        if let Ok(Some(table)) = warehouse.load(&upstream.relation).await {
            if let Ok(count) = Warehouse::row_count(&table) {
                rows.insert(upstream.relation.clone(), count);
            }
        }
    }
    rows
}
