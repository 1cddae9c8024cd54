//! Bronze ingestion: a bronze `incremental` model over one file source reads each raw file exactly once.
//!
//! The model's SQL runs once per new file, with the source replaced by that file alone, and pipe adds
//! `_pipe_source_file`, `_pipe_loaded_at` and `_pipe_batch_id` to its rows. All new files' rows are appended in one
//! Delta commit that also records, per file, a Delta application transaction (`pipe.file:<path>`): the ledger of
//! ingested files is committed atomically with the rows, so a file is never ingested twice, whether the previous
//! attempt crashed before or after writing data files.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::lit;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;

use super::{ModelContext, Outcome};
use crate::manifest::SourceNode;
use crate::run::RunError;
use crate::sql::source_schema;

/// Schema the per-file batch tables are registered in.
pub const BATCH_SCHEMA: &str = "__pipe_batch";

fn app_id(relative_path: &str) -> String {
    format!("pipe.file:{relative_path}")
}

/// The files a source's path or glob matches, relative to the project root, sorted.
fn source_files(project_root: &Path, pattern: &str) -> Result<Vec<String>, RunError> {
    let absolute = project_root.join(pattern).to_string_lossy().to_string();
    let paths = glob::glob(&absolute).map_err(|e| RunError::Warehouse(format!("bad path `{pattern}`: {e}")))?;
    let mut files: Vec<String> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .map(|p| p.strip_prefix(project_root).unwrap_or(&p).to_string_lossy().replace('\\', "/"))
        .collect();
    files.sort();
    Ok(files)
}

pub(super) async fn ingest(cx: &ModelContext<'_>, source: &SourceNode) -> Result<Outcome, RunError> {
    let node = cx.node;
    let started = std::time::Instant::now();
    let err = |message: String| RunError::Source { source_name: source.relation.clone(), message };
    let (Some(pattern), Some(format)) = (&source.path, source.format) else {
        return Err(err("no path or format".into()));
    };
    let files = source_files(cx.project_root, pattern)?;
    let existing = cx.warehouse.load(&node.relation).await?.filter(|_| !cx.full_refresh);
    let mut new_files = Vec::new();
    for file in &files {
        let ingested = match &existing {
            Some(table) => {
                table.snapshot()?.transaction_version(table.log_store().as_ref(), app_id(file)).await?.is_some()
            }
            None => false,
        };
        if !ingested {
            new_files.push(file.clone());
        }
    }
    if new_files.is_empty() {
        let (version, provider) = match &existing {
            Some(table) => {
                (Some(cx.warehouse.last_commit(table).await?.version), Some(cx.warehouse.provider(table).await?))
            }
            None => (None, None),
        };
        return Ok(Outcome {
            rows_written: Some(0),
            delta_version: version,
            provider,
            note: Some(format!("no new files ({} already ingested)", files.len())),
            ..Outcome::default()
        });
    }

    // One schema for every file: the one the source is registered with, read over the whole glob.
    let (url, listing) = source_schema::listing(cx.project_root, pattern, format, &source.options).map_err(err)?;
    let schema = source_schema::infer(&cx.session.state(), &url, &listing, pattern, &source.declared_types())
        .await
        .map_err(err)?;
    let loaded_at = ScalarValue::TimestampMicrosecond(Some(chrono::Utc::now().timestamp_micros()), Some("UTC".into()));
    let mut batches: Vec<RecordBatch> = Vec::new();
    for (i, file) in new_files.iter().enumerate() {
        let (file_url, file_listing) =
            source_schema::listing(cx.project_root, file, format, &source.options).map_err(err)?;
        let file_url: ListingTableUrl = file_url;
        let config =
            ListingTableConfig::new(file_url).with_listing_options(file_listing).with_schema(Arc::clone(&schema));
        let table_name = format!("{BATCH_SCHEMA}.{}_{i}", node.name);
        cx.session.register_table(table_name.as_str(), Arc::new(ListingTable::try_new(config)?))?;
        let sql = replace_relation(&node.compiled_sql, &source.relation, &table_name);
        let result = async {
            let frame = super::plan(cx, &sql).await?;
            let frame = frame
                .with_column("_pipe_source_file", lit(file.as_str()))
                .and_then(|f| f.with_column("_pipe_loaded_at", lit(loaded_at.clone())))
                .and_then(|f| f.with_column("_pipe_batch_id", lit(cx.run_id)))
                .map_err(|e| RunError::query(&node.name, e))?;
            frame.collect().await.map_err(|e| RunError::query(&node.name, e))
        }
        .await;
        let _ = cx.session.deregister_table(table_name.as_str());
        batches.extend(result?);
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let metadata = cx.commit_metadata();
    let transactions = new_files.iter().map(|f| Transaction::new(app_id(f), 1)).collect();
    let commit = CommitProperties::default().with_metadata(metadata).with_application_transactions(transactions);
    let (table, mode) = match existing {
        Some(table) => (table, SaveMode::Append),
        None => (cx.warehouse.table_for_write(&node.relation).await?, SaveMode::Overwrite),
    };
    let table = table
        .write(batches)
        .with_writer_properties(super::writer_properties(cx.node))
        .with_session_state(Arc::new(cx.session.state()))
        .with_save_mode(mode)
        .with_commit_properties(commit)
        .await
        .map_err(|e| RunError::write(&node.name, e))?;
    let commit = cx.warehouse.last_commit(&table).await?;
    Ok(Outcome {
        rows_written: Some(rows as u64),
        delta_version: Some(commit.version),
        provider: Some(cx.warehouse.provider(&table).await?),
        note: Some(format!("ingested {} new file(s)", new_files.len())),
        plan_time: std::time::Duration::ZERO,
        write_time: started.elapsed(),
        execute_time: commit.execute_time,
        tests: None,
    })
}

/// Replaces whole occurrences of `relation` in SQL: `raw.orders` but not `raw.orders_archive` or `xraw.orders`.
pub(crate) fn replace_relation(sql: &str, relation: &str, with: &str) -> String {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(pos) = rest.find(relation) {
        let before = rest[..pos].chars().next_back();
        let after = rest[pos + relation.len()..].chars().next();
        let whole = !before.is_some_and(|c| is_ident(c) || c == '.') && !after.is_some_and(is_ident);
        out.push_str(&rest[..pos]);
        out.push_str(if whole { with } else { relation });
        rest = &rest[pos + relation.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::replace_relation;

    #[test]
    fn replaces_whole_relation_names_only() {
        let sql = "select * from raw.orders o join raw.orders_archive a on true, xraw.orders, (raw.orders)";
        assert_eq!(
            replace_relation(sql, "raw.orders", "b.x"),
            "select * from b.x o join raw.orders_archive a on true, xraw.orders, (b.x)"
        );
    }
}
