//! `view`: the definition is stored with the warehouse (`_pipe/views/`) so later runs and `pipe query` can read it.
//!
//! Readers of a view inline its plan. A view read by several models of the run is instead computed once for the
//! run and read from memory: inlining it into every reader repeats its work, and a chain of shared views inlined
//! at every level grows the plan exponentially with depth.

use std::sync::Arc;
use std::time::Instant;

use datafusion::catalog::view::ViewTable;
use datafusion::datasource::MemTable;

use super::{accounted, plan_query, Materialize, ModelContext, Outcome};
use crate::project::Materialization;
use crate::run::RunError;
use crate::warehouse::ViewDefinition;

pub struct ViewMaterialization;

#[async_trait::async_trait]
impl Materialize for ViewMaterialization {
    fn kind(&self) -> Materialization {
        Materialization::View
    }

    async fn run(&self, cx: &ModelContext<'_>) -> Result<Outcome, RunError> {
        let started = Instant::now();
        let node = cx.node;
        let frame = plan_query(cx, &node.compiled_sql).await?;
        let plan_time = started.elapsed();
        let started = Instant::now();
        cx.warehouse
            .write_view(&ViewDefinition {
                relation: node.relation.clone(),
                unique_id: node.unique_id.clone(),
                sql: node.compiled_sql.clone(),
                checksum: node.checksum.clone(),
                run_id: cx.run_id.to_string(),
            })
            .await?;
        let (provider, note, rows): (Arc<dyn datafusion::catalog::TableProvider>, _, _) = if cx.compute_once {
            let schema = Arc::new(frame.schema().as_arrow().clone());
            let batches = accounted(cx, frame).collect().await.map_err(|e| RunError::query(&node.name, e))?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let table = MemTable::try_new(schema, vec![batches]).map_err(|e| RunError::query(&node.name, e))?;
            (Arc::new(table), Some(format!("computed once for this run: {rows} rows, read by several models")), None)
        } else {
            // Readers inline the view's plan (not accounted), so their filters and projections reach its scans.
            let view = ViewTable::new(frame.logical_plan().clone(), Some(node.compiled_sql.clone()));
            (Arc::new(view), None, None)
        };
        Ok(Outcome {
            rows_written: rows,
            delta_version: None,
            provider: Some(provider),
            note,
            plan_time,
            write_time: started.elapsed(),
            execute_time: None,
            tests: None,
            rows_read: None,
        })
    }
}
