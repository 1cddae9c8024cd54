//! Opening a run's session: the warehouse, every source, table and view registered, and (`--defer`) the
//! relations read from another warehouse.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::prelude::SessionContext;

use super::{clean_datafusion_message, materialize, session, sources, RunError};
use crate::manifest::Manifest;
use crate::project::Materialization;
use crate::warehouse::{Location, Warehouse};

/// A relation a deferred build reads from another warehouse: `relation` here is `relation_there` in the warehouse at
/// `warehouse`.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub relation: String,
    pub relation_there: String,
    pub warehouse: Location,
}

/// Registers each deferred relation as the other warehouse's table or view (read only: nothing there is written).
/// `deferred` is in dependency order, so a deferred view is planned over the deferred tables it reads.
pub(super) async fn register_deferred(ctx: &SessionContext, deferred: &[Deferred]) -> Result<(), RunError> {
    let mut opened: BTreeMap<Location, Warehouse> = BTreeMap::new();
    for defer in deferred {
        if !opened.contains_key(&defer.warehouse) {
            opened.insert(defer.warehouse.clone(), Warehouse::open_at(&defer.warehouse)?);
        }
        let warehouse = &opened[&defer.warehouse];
        let there = format!("{} (in {})", defer.relation_there, defer.warehouse);
        let provider: Arc<dyn datafusion::catalog::TableProvider> = match warehouse.load(&defer.relation_there).await? {
            Some(table) => warehouse.provider(&table).await?,
            None => {
                let Some(view) = warehouse.read_view(&defer.relation_there).await else {
                    return Err(RunError::NotATable { relation: there });
                };
                let frame = crate::sql::duckdb::sql(ctx, &view.sql).await.map_err(|e| RunError::Query {
                    model: defer.relation.clone(),
                    message: format!("the deferred view {there} cannot be read: {}", clean_datafusion_message(&e)),
                })?;
                Arc::new(ViewTable::new(frame.logical_plan().clone(), Some(view.sql)))
            }
        };
        let _ = ctx.deregister_table(defer.relation.as_str());
        ctx.register_table(defer.relation.as_str(), provider)?;
    }
    Ok(())
}

/// Opens the warehouse and a session with every source and every existing table and view registered: what
/// `pipe query` and `pipe show` read, and the starting point of a build. The map returned holds, by unique id, the
/// sources that could not be registered and the tables whose Delta log cannot be read, with why: one broken table
/// fails what reads it, never the whole warehouse.
pub async fn open_session(
    manifest: &Manifest,
    project_root: &Path,
    memory_limit: Option<usize>,
) -> Result<(SessionContext, Warehouse, BTreeMap<String, String>), RunError> {
    let warehouse = Warehouse::open_at(&Location::of(project_root, &manifest.project)?)?;
    let ctx = session::new_session(manifest, memory_limit)?;
    warehouse.register_store(&ctx.runtime_env())?;
    let mut source_errors = BTreeMap::new();
    for source in manifest.sources.values().filter(|s| s.seed.is_none()) {
        if let Err(err) = sources::register_source(&ctx, project_root, source).await {
            source_errors.insert(source.unique_id.clone(), err.to_string());
        }
    }
    for id in &manifest.order {
        let Some(node) = manifest.nodes.get(id) else {
            continue;
        };
        if node.materialized == Materialization::Ephemeral {
            continue;
        }
        if node.materialized == Materialization::External {
            // Its files, where its last build wrote them (a folder or file since removed is left unregistered).
            if let Some(definition) = warehouse.read_external(&node.relation).await.filter(|d| d.location.exists()) {
                if let Ok(provider) = materialize::external::provider(&ctx, &definition).await {
                    ctx.register_table(node.relation.as_str(), provider)?;
                }
            }
            continue;
        }
        let table = match warehouse.load(&node.relation).await {
            Ok(table) => table,
            Err(err) => {
                source_errors.insert(node.unique_id.clone(), err.to_string());
                continue;
            }
        };
        if let Some(table) = table {
            ctx.register_table(node.relation.as_str(), warehouse.provider(&table).await?)?;
        } else if let Some(view) = warehouse.read_view(&node.relation).await {
            // The manifest's SQL when the stored view is its masked copy (the manifest's holds the secrets it uses).
            let sql = match crate::secrets::mask(&node.compiled_sql) == view.sql.as_str() {
                true => node.compiled_sql.clone(),
                false => view.sql,
            };
            // A stored view whose upstreams are gone cannot be planned; it is left unregistered.
            if let Ok(frame) = crate::sql::duckdb::sql(&ctx, &sql).await {
                ctx.register_table(
                    node.relation.as_str(),
                    Arc::new(ViewTable::new(frame.logical_plan().clone(), Some(sql))),
                )?;
            }
        }
    }
    // A source that is a seed is also readable under its own name (`pipe query "select * from raw.customers"`).
    for source in manifest.sources.values() {
        let Some(seed) = source.seed.as_ref().and_then(|id| manifest.nodes.get(id)) else { continue };
        if let Ok(provider) = ctx.table_provider(seed.relation.as_str()).await {
            ctx.register_table(source.relation.as_str(), provider)?;
        }
    }
    // Rows bronze ingestion set aside for breaking a source contract.
    for node in manifest.nodes.values() {
        let quarantine = format!("{}__quarantine", node.relation);
        if let Ok(Some(table)) = warehouse.load(&quarantine).await {
            ctx.register_table(quarantine.as_str(), warehouse.provider(&table).await?)?;
        }
    }
    // Run history.
    for relation in crate::warehouse::runs::HISTORY_TABLES.map(|t| format!("{}.{t}", crate::warehouse::RUNS_SCHEMA)) {
        if let Ok(Some(table)) = warehouse.load(&relation).await {
            ctx.register_table(relation.as_str(), warehouse.provider(&table).await?)?;
        }
    }
    // The schema registry, as `pipe.schemas`: one row per column of every registered version.
    if let Some(schemas) = crate::quality::registry::as_table(&warehouse).await {
        ctx.register_table(format!("{}.schemas", crate::warehouse::RUNS_SCHEMA).as_str(), schemas)?;
    }
    // Failing rows stored by tests with `store_failures`.
    for name in warehouse.list_folders(&[crate::warehouse::AUDIT_SCHEMA]).await {
        let relation = format!("{}.{name}", crate::warehouse::AUDIT_SCHEMA);
        if let Ok(Some(table)) = warehouse.load(&relation).await {
            ctx.register_table(relation.as_str(), warehouse.provider(&table).await?)?;
        }
    }
    Ok((ctx, warehouse, source_errors))
}
