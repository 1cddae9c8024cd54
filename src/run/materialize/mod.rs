//! Materializations: how a model's query becomes a table or a view. One trait, one file per kind; the incremental
//! strategies plug in here.

mod incremental;
mod ingest;
mod seed;
mod table;
mod view;

use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::TableProvider;
use datafusion::prelude::{DataFrame, SessionContext};

pub use ingest::BATCH_SCHEMA;
pub use seed::SeedLoad;

use super::warehouse::Warehouse;
use super::RunError;
use crate::manifest::Node;
use crate::project::Materialization;

/// What a materialization needs to run one model.
pub struct ModelContext<'a> {
    pub node: &'a Node,
    pub session: &'a SessionContext,
    pub warehouse: &'a Warehouse,
    pub run_id: &'a str,
    pub full_refresh: bool,
    /// For views: compute the result once for this run instead of inlining the view into every reader.
    pub compute_once: bool,
    pub project_root: &'a std::path::Path,
    /// For a bronze model over one file source: the source, whose files it ingests exactly once each.
    pub file_source: Option<&'a crate::manifest::SourceNode>,
}

/// The result of one materialization.
#[derive(Default)]
pub struct Outcome {
    pub rows_written: Option<u64>,
    pub delta_version: Option<i64>,
    /// What downstream models of this run read, registered under the node's relation.
    pub provider: Option<Arc<dyn TableProvider>>,
    pub note: Option<String>,
    pub plan_time: Duration,
    /// Executing the query, writing data files and committing.
    pub write_time: Duration,
    /// The part of `write_time` before the commit, as Delta's operation metrics report it.
    pub execute_time: Option<Duration>,
}

#[async_trait::async_trait]
pub trait Materialize: Send + Sync {
    fn kind(&self) -> Materialization;
    /// Runs the model and publishes its result in one step; on error the previous result is left as it was.
    async fn run(&self, cx: &ModelContext<'_>) -> Result<Outcome, RunError>;
}

/// The materialization for a kind.
pub fn for_kind(kind: Materialization) -> Option<&'static dyn Materialize> {
    match kind {
        Materialization::Table => Some(&table::TableMaterialization),
        Materialization::View => Some(&view::ViewMaterialization),
        Materialization::Incremental => Some(&incremental::IncrementalMaterialization),
        // Ephemeral models are inlined at compile time and never run.
        Materialization::Ephemeral => None,
    }
}

/// Column names from a config value written as a string or a list (`unique_key`, `partition_by`, ...).
pub(crate) fn column_list(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::String(s)) => {
            s.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
        }
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// Plans a model's SQL against the session; planning errors name the model.
pub(crate) async fn plan(cx: &ModelContext<'_>, sql: &str) -> Result<DataFrame, RunError> {
    cx.session.sql(sql).await.map_err(|e| RunError::query(&cx.node.name, e))
}
