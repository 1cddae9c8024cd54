//! Registers source tables (CSV, newline-delimited JSON, Parquet, Delta; paths may be globs) in the DataFusion
//! session under `<source>.<table>`, with the schema `sql::source_schema` reads, the same one compile planned with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use datafusion::catalog::TableProvider;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
use datafusion::prelude::SessionContext;

use super::RunError;
use crate::manifest::{Manifest, SourceNode};
use crate::project::SourceFormat;
use crate::sql::source_schema;

/// Registers one source table in `ctx`.
pub async fn register_source(ctx: &SessionContext, project_root: &Path, source: &SourceNode) -> Result<(), RunError> {
    let err = |message: String| RunError::Source { source_name: source.relation.clone(), message };
    let Some(path) = &source.path else {
        return Err(err("no `path`; set the file path or glob of the source table".into()));
    };
    let Some(format) = source.format else {
        return Err(err("no file format; set `format: csv|json|parquet|delta` on the source table".into()));
    };
    let provider: Arc<dyn TableProvider> = if format == SourceFormat::Delta {
        let absolute = project_root.join(path);
        let dir = absolute.canonicalize().map_err(|e| err(format!("{}: {e}", absolute.display())))?;
        let url = url::Url::from_directory_path(dir).map_err(|()| err("not an absolute path".into()))?;
        deltalake::open_table(url).await?.table_provider().await?
    } else {
        let (url, listing) = source_schema::listing(project_root, path, format, &source.settings).map_err(err)?;
        let schema =
            source_schema::infer(&ctx.state(), &url, &listing, path, &source.declared_types()).await.map_err(err)?;
        let config = ListingTableConfig::new(url).with_listing_options(listing).with_schema(schema);
        Arc::new(ListingTable::try_new(config)?)
    };
    ctx.register_table(source.relation.as_str(), provider)?;
    Ok(())
}

/// Path -> (size, modification time) of the files a source path or glob names (folders are walked).
pub fn file_stats(project_root: &Path, pattern: &str) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let pattern = project_root.join(pattern);
    for matched in glob::glob(&pattern.to_string_lossy()).into_iter().flatten().filter_map(Result::ok) {
        for entry in walkdir::WalkDir::new(matched).into_iter().filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                files.insert(entry.into_path(), (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
    }
    files
}

/// The files of every source the nodes `ids` read, directly or through other models.
pub fn upstream_files<'m>(
    manifest: &'m Manifest,
    project_root: &Path,
    ids: impl IntoIterator<Item = &'m str>,
) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack: Vec<&str> = ids.into_iter().collect();
    let mut seen = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(node) = manifest.nodes.get(id) {
            stack.extend(node.depends_on.nodes.iter().map(String::as_str));
        } else if let Some(path) = manifest.sources.get(id).and_then(|s| s.path.as_deref()) {
            files.extend(file_stats(project_root, path));
        }
    }
    files
}
