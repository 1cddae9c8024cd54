//! The DataFusion session a build runs in: one per run, with a schema per relation namespace (`bronze`, `silver`,
//! `gold`, `seeds`, each source name) and, with `--memory-limit`, a memory pool that spills sorts, joins and
//! aggregates to disk instead of failing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::dedupe::{DedupeRule, PipeQueryPlanner};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, MemorySchemaProvider, SchemaProvider,
    TableProvider,
};
use datafusion::common::TableReference;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::RunError;
use crate::manifest::Manifest;

pub fn new_session(manifest: &Manifest, memory_limit: Option<usize>) -> Result<SessionContext, RunError> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("datafusion", "public")
        // delta-rs disables hash-join IN-list pushdown: it can panic on dictionary-encoded join keys.
        .set_usize("datafusion.optimizer.hash_join_inlist_pushdown_max_size", 0)
        .set_usize("datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values", 0)
        .set_usize("datafusion.sql_parser.recursion_limit", crate::sql::RECURSION_LIMIT);
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    let runtime = runtime.build_arc()?;
    // The planner turns delta-rs's write, merge and delete nodes and pipe's dedupe node into execution plans.
    let mut state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_query_planner(Arc::new(PipeQueryPlanner));
    // The hash-based dedupe does not spill; under a memory limit the window's sort (which does) stays.
    if memory_limit.is_none() {
        state = state.with_optimizer_rule(Arc::new(DedupeRule));
    }
    let state = state.build();
    let ctx = SessionContext::new_with_state(state);
    let mut schemas: BTreeSet<&str> = manifest.nodes.values().map(|n| n.schema.as_str()).collect();
    schemas.extend(manifest.sources.values().map(|s| s.source_name.as_str()));
    schemas.insert(super::materialize::STAGING_SCHEMA);
    schemas.insert(crate::quality::execute::AUDIT_SCHEMA);
    schemas.insert(super::runs::RUNS_SCHEMA);
    let catalog = ctx.catalog("datafusion").ok_or_else(|| RunError::Warehouse("no default catalog".into()))?;
    for schema in schemas {
        if catalog.schema(schema).is_none() {
            catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        }
    }
    Ok(ctx)
}

/// A session over the same state as `ctx` in which each `(relation, provider)` of `overrides` answers for that
/// relation (`schema.table`), whether or not `ctx` has a table by that name; every other table is `ctx`'s.
/// Queries are planned as written: the SQL is never rewritten, so a string literal or a longer name that contains
/// the relation's name is untouched. `ctx`'s own registrations are not changed.
pub fn with_overrides(
    ctx: &SessionContext,
    overrides: &[(String, Arc<dyn TableProvider>)],
) -> Result<SessionContext, RunError> {
    let state = ctx.state();
    let default_catalog = state.config().options().catalog.default_catalog.clone();
    let list = Arc::new(MemoryCatalogProviderList::new());
    let inner = state.catalog_list();
    let mut names = inner.catalog_names();
    if !names.contains(&default_catalog) {
        names.push(default_catalog.clone());
    }
    for name in names {
        let mut tables: HashMap<String, HashMap<String, Arc<dyn TableProvider>>> = HashMap::new();
        for (relation, provider) in overrides {
            let reference = TableReference::parse_str(relation);
            let catalog = reference.catalog().unwrap_or(&default_catalog);
            let Some(schema) = reference.schema() else {
                return Err(RunError::Warehouse(format!("`{relation}` is not a relation `schema.table`")));
            };
            if catalog == name {
                tables
                    .entry(schema.to_string())
                    .or_default()
                    .insert(reference.table().to_string(), Arc::clone(provider));
            }
        }
        list.register_catalog(name.clone(), Arc::new(OverlayCatalog { inner: inner.catalog(&name), tables }));
    }
    let state = SessionStateBuilder::new_from_existing(state).with_catalog_list(list).build();
    Ok(SessionContext::new_with_state(state))
}

/// A catalog whose schemas answer for some tables themselves and ask `inner` for the others.
#[derive(Debug)]
struct OverlayCatalog {
    inner: Option<Arc<dyn CatalogProvider>>,
    /// schema -> table -> provider.
    tables: HashMap<String, HashMap<String, Arc<dyn TableProvider>>>,
}

impl CatalogProvider for OverlayCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> =
            self.inner.as_ref().map(|c| c.schema_names()).unwrap_or_default().into_iter().collect();
        names.extend(self.tables.keys().cloned());
        names.into_iter().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.as_ref().and_then(|c| c.schema(name));
        match self.tables.get(name) {
            None => inner,
            Some(tables) => Some(Arc::new(OverlaySchema { inner, tables: tables.clone() })),
        }
    }
}

#[derive(Debug)]
struct OverlaySchema {
    inner: Option<Arc<dyn SchemaProvider>>,
    tables: HashMap<String, Arc<dyn TableProvider>>,
}

#[async_trait::async_trait]
impl SchemaProvider for OverlaySchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> =
            self.inner.as_ref().map(|s| s.table_names()).unwrap_or_default().into_iter().collect();
        names.extend(self.tables.keys().cloned());
        names.into_iter().collect()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.tables.get(name) {
            return Ok(Some(Arc::clone(table)));
        }
        match &self.inner {
            Some(inner) => inner.table(name).await,
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name) || self.inner.as_ref().is_some_and(|s| s.table_exist(name))
    }
}
