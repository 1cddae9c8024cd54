//! Seeds: CSV files under `seeds/` loaded into Delta tables. A seed whose file is unchanged since its last load
//! (same checksum on the last commit) is not written again, so rebuilding adds no versions.

use std::time::Instant;

use datafusion::prelude::CsvReadOptions;

use super::table::publish;
use super::{ModelContext, Outcome};
use crate::run::RunError;

pub struct SeedLoad;

impl SeedLoad {
    pub async fn run(&self, cx: &ModelContext<'_>) -> Result<Outcome, RunError> {
        let node = cx.node;
        if !cx.full_refresh {
            if let Some(table) = cx.warehouse.load(&node.relation).await? {
                let commit = cx.warehouse.last_commit(&table).await?;
                if commit.checksum.as_deref() == Some(node.checksum.as_str()) {
                    return Ok(Outcome {
                        delta_version: Some(commit.version),
                        provider: Some(cx.warehouse.provider(&table).await?),
                        note: Some("unchanged".into()),
                        ..Outcome::default()
                    });
                }
            }
        }
        let started = Instant::now();
        let path = cx.project_root.join(&node.path);
        let frame = cx
            .session
            .read_csv(path.to_string_lossy().as_ref(), CsvReadOptions::new().has_header(true))
            .await
            .map_err(|e| RunError::query(&node.name, e))?;
        publish(cx, frame, started.elapsed(), Vec::new()).await
    }
}
