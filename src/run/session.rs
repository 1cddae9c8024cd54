//! The DataFusion session a build runs in: one per run, with a schema per relation namespace (`bronze`, `silver`,
//! `gold`, `seeds`, each source name) and, with `--memory-limit`, a memory pool that spills sorts, joins and
//! aggregates (several distinct counts in one grouping included) to disk instead of failing.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::dedupe::{DedupeRule, PipeQueryPlanner};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::manifest::Manifest;
use crate::warehouse::RunError;

pub fn new_session(manifest: &Manifest, memory_limit: Option<usize>) -> Result<SessionContext, RunError> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("datafusion", "public")
        // delta-rs disables hash-join IN-list pushdown: it can panic on dictionary-encoded join keys.
        .set_usize("datafusion.optimizer.hash_join_inlist_pushdown_max_size", 0)
        .set_usize("datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values", 0)
        .set_usize("datafusion.sql_parser.recursion_limit", crate::sql::RECURSION_LIMIT);
    let duckdb = manifest.project.sql_dialect.is_duckdb();
    let config = if duckdb { crate::sql::duckdb::configure(config) } else { config };
    // Tables in a bucket resolve their store whichever scan reads them (`WarehouseStores`).
    let stores = Arc::new(crate::warehouse::files_scan::WarehouseStores::default());
    let mut runtime = RuntimeEnvBuilder::new().with_object_store_registry(stores);
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    let runtime = runtime.build_arc()?;
    // The planner turns delta-rs's write, merge and delete nodes and pipe's dedupe node into execution plans.
    let mut state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_query_planner(Arc::new(PipeQueryPlanner))
        // The hash-based dedupe spills sorted runs under a memory limit, as the window's sort would.
        .with_optimizer_rule(Arc::new(DedupeRule));
    if memory_limit.is_some() {
        // Several `count(distinct ...)` in one grouping become groupings that spill, instead of in-memory sets
        // (which cannot spill). Without a limit the sets are kept: they read the input once.
        state = state.with_optimizer_rule(Arc::new(super::distinct::MultiDistinctRule));
    }
    if duckdb {
        state = crate::sql::duckdb::extend(state);
    }
    let mut state = state.build();
    if duckdb {
        use datafusion::execution::FunctionRegistry;
        state.register_function_rewrite(crate::sql::duckdb::function_rewrite())?;
    }
    let ctx = SessionContext::new_with_state(state);
    let mut schemas: BTreeSet<&str> = manifest.nodes.values().map(|n| n.schema.as_str()).collect();
    schemas.extend(manifest.sources.values().map(|s| s.source_name.as_str()));
    schemas.extend(crate::warehouse::RESERVED_SCHEMAS);
    let catalog = ctx.catalog("datafusion").ok_or_else(|| RunError::Internal("no default catalog".into()))?;
    for schema in schemas {
        if catalog.schema(schema).is_none() {
            catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        }
    }
    Ok(ctx)
}
