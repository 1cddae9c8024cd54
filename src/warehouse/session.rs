//! Sessions over the warehouse: overlaying tables on a session (a staged result read under its relation's name,
//! one landed file read as its bronze model's source) and counting a query's rows.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, SchemaProvider, TableProvider,
};
use datafusion::common::TableReference;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;

use super::RunError;

/// The single count of a `select count(*) ...` query (0 for no row).
pub async fn count_rows(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<u64> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let count = batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .and_then(|b| b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().map(|a| a.value(0)));
    Ok(count.unwrap_or(0).max(0) as u64)
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
                return Err(RunError::BadRelation(format!("`{relation}` is not a relation `schema.table`")));
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
