//! Registers source tables (CSV, newline-delimited JSON, Parquet, Delta; paths may be globs) in the DataFusion
//! session under `<source>.<table>`, with the schema `sql::source_schema` reads, the same one compile planned with.

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
use datafusion::prelude::SessionContext;

use super::RunError;
use crate::manifest::SourceNode;
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
        let (url, listing) = source_schema::listing(project_root, path, format, &source.options).map_err(err)?;
        let schema =
            source_schema::infer(&ctx.state(), &url, &listing, path, &source.declared_types()).await.map_err(err)?;
        let config = ListingTableConfig::new(url).with_listing_options(listing).with_schema(schema);
        Arc::new(ListingTable::try_new(config)?)
    };
    ctx.register_table(source.relation.as_str(), provider)?;
    Ok(())
}
