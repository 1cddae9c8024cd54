//! `incremental`: the first build (or `--full-refresh`) writes the whole result like `table`; later builds run the
//! model's `is_incremental()` variant and add its rows in one commit (the `append` strategy).
//! Keyed strategies (`merge` on `unique_key`, `delete+insert`, `insert_overwrite`, `microbatch`) are refused before
//! any data moves until they are implemented.

use std::sync::Arc;
use std::time::Instant;

use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;

use super::table::write_overwrite;
use super::{plan, Materialize, ModelContext, Outcome};
use crate::project::{ConfigExt, Materialization};
use crate::run::warehouse::Warehouse;
use crate::run::RunError;

pub struct IncrementalMaterialization;

#[async_trait::async_trait]
impl Materialize for IncrementalMaterialization {
    fn kind(&self) -> Materialization {
        Materialization::Incremental
    }

    async fn run(&self, cx: &ModelContext<'_>) -> Result<Outcome, RunError> {
        let node = cx.node;
        let strategy = node
            .config
            .str_value("incremental_strategy")
            .unwrap_or(if node.config.contains_key("unique_key") { "merge" } else { "append" });
        if strategy != "append" {
            return Err(RunError::Unsupported(format!(
                "incremental strategy `{strategy}` on `{}` is not available yet; use `incremental_strategy='append'` or `materialized='table'`",
                node.name
            )));
        }
        let existing = cx.warehouse.load(&node.relation).await?;
        let started = Instant::now();
        let Some(table) = existing.filter(|_| !cx.full_refresh) else {
            let frame = plan(cx, &node.compiled_sql).await?;
            return write_overwrite(cx, frame, started.elapsed()).await;
        };
        let sql = node.compiled_sql_incremental.as_deref().unwrap_or(&node.compiled_sql);
        let frame = plan(cx, sql).await?;
        let plan_time = started.elapsed();
        let started = Instant::now();
        let metadata = Warehouse::commit_metadata(cx.run_id, &node.unique_id, &node.checksum);
        let table = table
            .write(Vec::new())
            .with_input_plan(frame.logical_plan().clone())
            .with_session_state(Arc::new(cx.session.state()))
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(CommitProperties::default().with_metadata(metadata))
            .await
            .map_err(|e| RunError::write(&node.name, e))?;
        let commit = cx.warehouse.last_commit(&table).await?;
        let provider = cx.warehouse.provider(&table).await?;
        Ok(Outcome {
            rows_written: commit.rows_added,
            delta_version: Some(commit.version),
            provider: Some(provider),
            note: None,
            plan_time,
            write_time: started.elapsed(),
        })
    }
}
