//! Bronze ingestion: a bronze `incremental` model over one file source reads each raw file exactly once.
//!
//! The model's SQL runs once per new file, with the source replaced by that file alone, and pipe adds
//! `_pipe_source_file`, `_pipe_loaded_at` and `_pipe_batch_id` to its rows. All new files' rows are appended in one
//! Delta commit that also records, per file, a Delta application transaction (`pipe.file:<path>`): the ledger of
//! ingested files is committed atomically with the rows, so a file is never ingested twice, whether the previous
//! attempt crashed before or after writing data files.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::lit;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;

use super::{ModelContext, Outcome};
use crate::manifest::SourceNode;
use crate::project::ConfigExt;
use crate::run::RunError;
use crate::sql::{replace_relation, source_schema};

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
    let declared = source.declared_types();
    // With declared types, each file is read as it is (CSV as text, JSON with the types its values have), and a
    // value that does not hold its declared type is found row by row (the source contract) rather than failing the
    // whole read.
    let checked = !declared.is_empty()
        && matches!(
            format,
            crate::project::SourceFormat::Csv
                | crate::project::SourceFormat::Json
                | crate::project::SourceFormat::Parquet
        );
    let quarantine_mode = node.config.str_value("on_contract_violation") == Some("quarantine");
    let mut quarantined: Vec<RecordBatch> = Vec::new();
    // Rows read from the new files as they are, before the source contract splits them (checked files only; an
    // unchecked file is scanned by the model's query, which counts it).
    let mut read_from_files: u64 = 0;
    let mut batches: Vec<RecordBatch> = Vec::new();
    for (i, file) in new_files.iter().enumerate() {
        let (file_url, file_listing) =
            source_schema::listing(cx.project_root, file, format, &source.options).map_err(err)?;
        let file_url: ListingTableUrl = file_url;
        let table_name = format!("{BATCH_SCHEMA}.{}_{i}", node.name);
        if checked {
            // CSV is read as text; JSON and Parquet with the types their values (or the file's schema) have.
            let raw_schema = if format != crate::project::SourceFormat::Csv {
                let undeclared = std::collections::BTreeMap::new();
                source_schema::infer(&cx.session.state(), &file_url, &file_listing, file, &undeclared)
                    .await
                    .map_err(err)?
            } else {
                Arc::new(datafusion::arrow::datatypes::Schema::new(
                    schema
                        .fields()
                        .iter()
                        .map(|f| datafusion::arrow::datatypes::Field::new(f.name(), DataType::Utf8, true))
                        .collect::<Vec<_>>(),
                ))
            };
            let config = ListingTableConfig::new(file_url).with_listing_options(file_listing).with_schema(raw_schema);
            let raw_name = format!("{BATCH_SCHEMA}.{}_{i}_raw", node.name);
            cx.session.register_table(raw_name.as_str(), Arc::new(ListingTable::try_new(config)?))?;
            let split = split_by_contract(cx, &raw_name, &schema, &declared, file, &loaded_at).await;
            let _ = cx.session.deregister_table(raw_name.as_str());
            let (good, bad, good_rows) = split?;
            read_from_files += good_rows + bad.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            if !bad.is_empty() && !quarantine_mode {
                let shown = datafusion::arrow::util::pretty::pretty_format_batches(&bad)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                let count: usize = bad.iter().map(RecordBatch::num_rows).sum();
                return Err(RunError::Contract(format!(
                    "`{file}`: {count} row(s) break the contract of source `{}`; nothing was ingested:\n{shown}\nset `on_contract_violation: quarantine` on `{}` to ingest the other rows and keep these aside",
                    source.relation, node.name
                )));
            }
            quarantined.extend(bad);
            cx.session.register_table(table_name.as_str(), good)?;
        } else {
            let config =
                ListingTableConfig::new(file_url).with_listing_options(file_listing).with_schema(Arc::clone(&schema));
            cx.session.register_table(table_name.as_str(), Arc::new(ListingTable::try_new(config)?))?;
        }
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
    // Rows that break the source contract go, unmodified and with the reason, to a quarantine table next to the
    // bronze table, before the bronze commit: a crash in between re-reads the file, and the quarantine's own
    // per-file transactions keep it from being written twice.
    let quarantine_rows: usize = quarantined.iter().map(RecordBatch::num_rows).sum();
    let quarantine_relation = format!("{}__quarantine", node.relation);
    if quarantine_rows > 0 {
        let table = cx.warehouse.table_for_write(&quarantine_relation).await?;
        let mut fresh = Vec::new();
        for file in &new_files {
            let done = match table.version() {
                Some(_) => {
                    table.snapshot()?.transaction_version(table.log_store().as_ref(), app_id(file)).await?.is_some()
                }
                None => false,
            };
            if !done {
                fresh.push(file.clone());
            }
        }
        let keep: Vec<RecordBatch> = quarantined
            .into_iter()
            .filter(|b| {
                let files = b.column_by_name("_pipe_source_file");
                let file = files.and_then(|c| {
                    c.as_any().downcast_ref::<datafusion::arrow::array::StringArray>().map(|a| a.value(0).to_string())
                });
                file.is_some_and(|f| fresh.contains(&f))
            })
            .collect();
        if !keep.is_empty() {
            let transactions = fresh.iter().map(|f| Transaction::new(app_id(f), 1)).collect();
            let mode = if table.version().is_some() { SaveMode::Append } else { SaveMode::Overwrite };
            table
                .write(keep)
                .with_session_state(Arc::new(cx.session.state()))
                .with_save_mode(mode)
                .with_commit_properties(
                    CommitProperties::default()
                        .with_metadata(cx.commit_metadata())
                        .with_application_transactions(transactions),
                )
                .await
                .map_err(|e| RunError::write(&node.name, e))?;
        }
    }
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
        note: Some(match quarantine_rows {
            0 => format!("ingested {} new file(s)", new_files.len()),
            n => format!(
                "ingested {} new file(s); {n} row(s) broke the source contract and went to `{quarantine_relation}`",
                new_files.len()
            ),
        }),
        plan_time: std::time::Duration::ZERO,
        write_time: started.elapsed(),
        execute_time: commit.execute_time,
        tests: None,
        rows_read: checked.then(|| std::collections::BTreeMap::from([(source.relation.clone(), read_from_files)])),
    })
}

/// Splits a file read as text into the rows that hold their declared types (cast to them, as the source's
/// schema) and the rows that do not (as read, with `_pipe_reason`, `_pipe_source_file`, `_pipe_loaded_at`).
async fn split_by_contract(
    cx: &ModelContext<'_>,
    raw: &str,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    declared: &std::collections::BTreeMap<String, String>,
    file: &str,
    loaded_at: &ScalarValue,
) -> Result<(Arc<dyn datafusion::catalog::TableProvider>, Vec<RecordBatch>, u64), RunError> {
    let query = |e| RunError::query(&cx.node.name, e);
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let mut broken = Vec::new();
    let mut reasons = Vec::new();
    for (column, data_type) in declared {
        if schema.field_with_name(column).is_err() {
            continue;
        }
        if cx.session.table_provider(raw).await.map_err(query)?.schema().field_with_name(column).is_err() {
            continue;
        }
        let c = quote(column);
        let bad = format!("({c} is not null and try_cast({c} as {data_type}) is null)");
        reasons.push(format!(
            "case when {bad} then '{}: ' || {c} || ' is not {data_type}; ' else '' end",
            column.replace('\'', "''")
        ));
        broken.push(bad);
    }
    let any_broken = if broken.is_empty() { "false".to_string() } else { broken.join(" or ") };
    // A JSON file may lack a field the source has: it reads as null, as it would with the source's schema.
    let raw_schema = cx.session.table_provider(raw).await.map_err(query)?.schema();
    let casts: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let value = if raw_schema.field_with_name(f.name()).is_ok() { quote(f.name()) } else { "null".into() };
            format!("cast({value} as {}) as {}", sql_type(f.data_type()), quote(f.name()))
        })
        .collect();
    let good_sql = format!("select {} from {raw} where not ({any_broken})", casts.join(", "));
    let good = cx.session.sql(&good_sql).await.map_err(query)?;
    let good_schema = Arc::new(good.schema().as_arrow().clone());
    let good_rows = good.collect().await.map_err(query)?;
    let good_count = good_rows.iter().map(|b| b.num_rows() as u64).sum();
    let good: Arc<dyn datafusion::catalog::TableProvider> =
        Arc::new(datafusion::datasource::MemTable::try_new(good_schema, vec![good_rows]).map_err(query)?);
    let reason = if reasons.is_empty() { "''".to_string() } else { format!("concat({})", reasons.join(", ")) };
    let bad_sql = format!("select *, {reason} as _pipe_reason from {raw} where {any_broken}");
    let bad = cx
        .session
        .sql(&bad_sql)
        .await
        .map_err(query)?
        .with_column("_pipe_source_file", lit(file))
        .and_then(|f| f.with_column("_pipe_loaded_at", lit(loaded_at.clone())))
        .map_err(query)?
        .collect()
        .await
        .map_err(query)?;
    Ok((good, bad.into_iter().filter(|b| b.num_rows() > 0).collect(), good_count))
}

/// A SQL type name for an Arrow type the source schema holds.
fn sql_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Float64 => "double".into(),
        DataType::Float32 => "real".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p}, {s})"),
        other => other.to_string(),
    }
}
