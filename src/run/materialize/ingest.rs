//! Bronze ingestion: a bronze `incremental` model over one file source reads each byte of each raw file exactly
//! once.
//!
//! The model's SQL runs once per new file (or new piece of a file), with the source being that file alone, and pipe
//! adds `_pipe_source_file`, `_pipe_loaded_at` and `_pipe_batch_id` to its rows. All new rows are appended in one
//! Delta commit that also records the ledger of what was read (`ledger.rs`: per file the bytes ingested, a digest
//! of them and its size and modification time, as Delta application transactions): the ledger is committed
//! atomically with the rows, so nothing is ingested twice, whether the previous attempt crashed before or after
//! writing data files. A file appended to since has its new bytes ingested (CSV and JSON lines); one rewritten in
//! place is reported, never silently ignored nor read twice; one changed within the settle interval (the model's
//! `settle_interval`, `--watch`'s `--settle`) may still be being written and waits for a later build.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
use datafusion::prelude::lit;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;

use super::ledger::{self, FileState, LandedFile};
use super::{ModelContext, Outcome};
use crate::manifest::SourceNode;
use crate::run::staged::Staged;
use crate::run::RunError;
use crate::sql::source_schema;

/// The settle interval of a bronze model: its `settle_interval` config (e.g. `5s`), else the build's.
fn settle_interval(cx: &ModelContext<'_>) -> std::time::Duration {
    cx.node.settings.settle_interval.unwrap_or(cx.settle_interval)
}

/// A piece of a landed file to ingest: its bytes from `from` to the size it was listed with.
struct Piece {
    file: LandedFile,
    from: u64,
}

/// What an ingestion reads: the new files and appended tails (`pieces`), the files left to settle, and warnings
/// for files changed in ways that cannot be ingested.
struct Planned {
    pieces: Vec<Piece>,
    settling: Vec<String>,
    warnings: Vec<String>,
}

/// Sorts the landed `files` by the bronze table's ledger: new, appended to, rewritten, unchanged or still settling.
async fn plan_pieces(
    cx: &ModelContext<'_>,
    files: &[ledger::LandedFile],
    existing: Option<&deltalake::DeltaTable>,
    format: crate::project::SourceFormat,
    settle: std::time::Duration,
) -> Result<Planned, RunError> {
    let node = cx.node;
    let now = std::time::SystemTime::now();
    let mut pieces = Vec::new();
    let mut settling = Vec::new();
    let mut warnings = Vec::new();
    for file in files {
        // A file changed within the settle interval may still be being written: left for a later build.
        if now.duration_since(file.modified).unwrap_or_default() < settle {
            settling.push(file.key.clone());
            continue;
        }
        let state = match existing {
            Some(table) => ledger::state(table, file).await?,
            None => FileState::New,
        };
        match state {
            FileState::Unchanged => {}
            FileState::New => pieces.push(Piece { file: file.clone(), from: 0 }),
            // Line formats take the appended bytes as new rows; a Parquet file is whole or not at all.
            FileState::Appended { from } if format != crate::project::SourceFormat::Parquet => {
                pieces.push(Piece { file: file.clone(), from })
            }
            FileState::Appended { from } => warnings.push(format!(
                "warning: `{}` changed after it was ingested (it grew from {from} bytes; a Parquet file cannot be appended to): its new content was NOT ingested; land new data as a new file, or rebuild `{}` with `--full-refresh`",
                file.key, node.name
            )),
            FileState::Rewritten(why) => warnings.push(format!(
                "warning: `{}` changed after it was ingested ({why}): its new content was NOT ingested; land new data as a new file, or rebuild `{}` with `--full-refresh`",
                file.key, node.name
            )),
        }
    }
    Ok(Planned { pieces, settling, warnings })
}

pub(super) async fn ingest(cx: &ModelContext<'_>, source: &SourceNode) -> Result<Outcome, RunError> {
    let node = cx.node;
    let started = std::time::Instant::now();
    let err = |message: String| RunError::Source { source_name: source.relation.clone(), message };
    let (Some(pattern), Some(format)) = (&source.path, source.format) else {
        return Err(err("no path or format".into()));
    };
    let files = ledger::landed_files(cx.project_root, pattern)?;
    let existing = cx.warehouse.load(&node.relation).await?.filter(|_| !cx.full_refresh);
    let settle = settle_interval(cx);
    let Planned { pieces, settling, warnings } = plan_pieces(cx, &files, existing.as_ref(), format, settle).await?;
    let mut notes = warnings;
    if !settling.is_empty() {
        notes.push(format!(
            "{} file(s) changed within the last {} and may still be being written, left for a later build: {}",
            settling.len(),
            humantime::format_duration(settle),
            settling.join(", ")
        ));
    }
    if pieces.is_empty() {
        let (version, provider) = match &existing {
            Some(table) => {
                (Some(cx.warehouse.last_commit(table).await?.version), Some(cx.warehouse.provider(table).await?))
            }
            None => (None, None),
        };
        notes.insert(0, format!("no new files ({} already ingested)", files.len() - settling.len()));
        return Ok(Outcome {
            rows_written: Some(0),
            delta_version: version,
            provider,
            note: Some(notes.join("\n")),
            ..Outcome::default()
        });
    }

    // One schema for every file: the one the source is registered with, read over the whole glob.
    let (url, listing) = source_schema::listing(cx.project_root, pattern, format, &source.settings).map_err(err)?;
    let schema = source_schema::infer(&cx.session.state(), &url, &listing, pattern, &source.declared_types())
        .await
        .map_err(err)?;
    let loaded_at = ScalarValue::TimestampMicrosecond(Some(chrono::Utc::now().timestamp_micros()), Some("UTC".into()));
    // With declared types, each file is read as it is (CSV as text, JSON with the types its values have), and a
    // value that does not hold its declared type is found row by row (the source contract) rather than failing the
    // whole read.
    let checked = contract_checked(source);
    let quarantine_mode =
        node.settings.on_contract_violation == crate::project::settings::OnContractViolation::Quarantine;
    // Per piece of a file: the rows that broke the source contract.
    let mut quarantined: Vec<(String, Vec<RecordBatch>)> = Vec::new();
    // Rows read from the new files as they are, before the source contract splits them (checked files only; an
    // unchecked file is scanned by the model's query, which counts it).
    let mut read_from_files: u64 = 0;
    // Per piece, its rows through the model's query (in memory, or staged on disk under a memory limit).
    let mut staged: Vec<Staged> = Vec::new();
    let mut transactions = Vec::new();
    // Copies of appended tails: local files (the scan reads them on this machine), beside a warehouse folder, else
    // in the temporary folder.
    let pieces_dir = match cx.warehouse.folder() {
        Some(root) => root.join("_pipe").join("pieces").join(cx.run_id),
        None => std::env::temp_dir().join("pipe-pieces").join(cx.run_id),
    };
    let header = format == crate::project::SourceFormat::Csv && source.settings.header;
    let extension = match format {
        crate::project::SourceFormat::Json => "json",
        crate::project::SourceFormat::Parquet => "parquet",
        _ => "csv",
    };
    for (i, piece) in pieces.iter().enumerate() {
        let file = &piece.file;
        let copy = pieces_dir.join(format!("{i}.{extension}"));
        // An appended tail is read from a copy of exactly its bytes (with the CSV header); a whole file is read in
        // place, and again from a copy of exactly the bytes listed when it changed while it was read.
        let mut path = file.path.clone();
        if piece.from > 0 {
            ledger::copy_piece(&file.path, piece.from, file.size, header, &copy).map_err(|e| RunError::io(&copy, e))?;
            path = copy.clone();
        }
        let mut read = read_file(cx, source, &schema, &path, &file.key, &loaded_at).await?;
        if piece.from == 0 && file.changed_since_listed() {
            ledger::copy_piece(&file.path, 0, file.size, header, &copy).map_err(|e| RunError::io(&copy, e))?;
            read = read_file(cx, source, &schema, &copy, &file.key, &loaded_at).await?;
        }
        let _ = std::fs::remove_file(&copy);
        let (rows, bad, read_rows) = read;
        read_from_files += read_rows;
        if !bad.is_empty() && !quarantine_mode {
            let shown =
                datafusion::arrow::util::pretty::pretty_format_batches(&bad).map(|t| t.to_string()).unwrap_or_default();
            let count: usize = bad.iter().map(RecordBatch::num_rows).sum();
            let _ = std::fs::remove_dir_all(&pieces_dir);
            return Err(RunError::Contract(format!(
                "`{}`: {count} row(s) break the contract of source `{}`; nothing was ingested:\n{shown}\nset `on_contract_violation: quarantine` on `{}` to ingest the other rows and keep these aside",
                file.key, source.relation, node.name
            )));
        }
        quarantined.push((ledger::piece_id(&file.key, piece.from), bad));
        staged.push(rows);
        transactions.extend(ledger::transactions(file, file.size)?);
    }
    let _ = std::fs::remove_dir_all(&pieces_dir);
    let rows: u64 = staged.iter().map(Staged::rows).sum();
    let spilled: u64 = staged.iter().map(Staged::spilled_bytes).sum();
    let query = |e| RunError::query(&node.name, e);
    let mut all: Option<datafusion::prelude::DataFrame> = None;
    for piece in &staged {
        let frame = piece.frame(cx.session).map_err(query)?;
        all = Some(match all {
            None => frame,
            Some(all) => all.union(frame).map_err(query)?,
        });
    }
    let all = all.ok_or_else(|| RunError::Internal("an ingestion with no piece".into()))?;
    // Rows that break the source contract go, unmodified and with the reason, to a quarantine table next to the
    // bronze table, before the bronze commit: a crash in between re-reads the file, and the quarantine's own
    // per-file transactions keep it from being written twice.
    let quarantine_rows: usize = quarantined.iter().flat_map(|(_, bad)| bad).map(RecordBatch::num_rows).sum();
    let quarantine_relation = format!("{}__quarantine", node.relation);
    if quarantine_rows > 0 {
        write_quarantine(cx, &quarantine_relation, quarantined).await?;
    }
    let metadata = cx.commit_metadata();
    let commit = CommitProperties::default().with_metadata(metadata).with_application_transactions(transactions);
    let (table, mode) = match existing {
        Some(table) => (table, SaveMode::Append),
        None => (cx.warehouse.table_for_write(&node.relation).await?, SaveMode::Overwrite),
    };
    let table = table
        .write(Vec::new())
        .with_input_plan(all.logical_plan().clone())
        .with_writer_properties(super::writer_properties(cx.node))
        .with_session_state(Arc::new(cx.session.state()))
        .with_save_mode(mode)
        .with_commit_properties(commit)
        .await
        .map_err(|e| RunError::write(&node.name, e))?;
    let commit = cx.warehouse.last_commit(&table).await?;
    Ok(Outcome {
        rows_written: Some(rows),
        delta_version: Some(commit.version),
        provider: Some(cx.warehouse.provider(&table).await?),
        note: Some({
            let whole = pieces.iter().filter(|p| p.from == 0).count();
            let mut note = format!("ingested {whole} new file(s)");
            match pieces.len() - whole {
                0 => {}
                n => note.push_str(&format!(" and the bytes appended to {n} file(s) since they were ingested")),
            }
            if spilled > 0 {
                note.push_str(&format!(" (staged on disk: {})", crate::run::staged::mib(spilled)));
            }
            if quarantine_rows > 0 {
                note.push_str(&format!(
                    "; {quarantine_rows} row(s) broke the source contract and went to `{quarantine_relation}`"
                ));
            }
            notes.insert(0, note);
            notes.join("\n")
        }),
        plan_time: std::time::Duration::ZERO,
        write_time: started.elapsed(),
        execute_time: commit.execute_time,
        tests: None,
        rows_read: checked.then(|| std::collections::BTreeMap::from([(source.relation.clone(), read_from_files)])),
    })
}

/// Writes the rows that broke the source contract, per piece of a file, to `relation`: a piece already written
/// there (its application transaction is in the quarantine table's log) is not written again.
async fn write_quarantine(
    cx: &ModelContext<'_>,
    relation: &str,
    quarantined: Vec<(String, Vec<RecordBatch>)>,
) -> Result<(), RunError> {
    let table = cx.warehouse.table_for_write(relation).await?;
    let mut keep = Vec::new();
    let mut pieces_taken = Vec::new();
    for (id, bad) in quarantined {
        let done = match table.version() {
            Some(_) => table.snapshot()?.transaction_version(table.log_store().as_ref(), id.clone()).await?.is_some(),
            None => false,
        };
        if !done {
            keep.extend(bad);
            pieces_taken.push(Transaction::new(id, 1));
        }
    }
    if !keep.is_empty() {
        let mode = if table.version().is_some() { SaveMode::Append } else { SaveMode::Overwrite };
        table
            .write(keep)
            .with_session_state(Arc::new(cx.session.state()))
            .with_save_mode(mode)
            .with_commit_properties(
                CommitProperties::default()
                    .with_metadata(cx.commit_metadata())
                    .with_application_transactions(pieces_taken),
            )
            .await
            .map_err(|e| RunError::write(&cx.node.name, e))?;
    }
    Ok(())
}

/// Whether a source's files are read as they are and split by its declared types (the source contract).
fn contract_checked(source: &SourceNode) -> bool {
    !source.declared_types().is_empty()
        && matches!(
            source.format,
            Some(
                crate::project::SourceFormat::Csv
                    | crate::project::SourceFormat::Json
                    | crate::project::SourceFormat::Parquet
            )
        )
}

/// Reads one file (or a copy of a piece of it) through the model's query, planned as written in a session where
/// the source is this file alone, with pipe's columns added. Returns the rows, the rows that broke the source
/// contract (with the reason), and the rows read from the file (contract-checked files only; else 0).
async fn read_file(
    cx: &ModelContext<'_>,
    source: &SourceNode,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    path: &Path,
    key: &str,
    loaded_at: &ScalarValue,
) -> Result<(Staged, Vec<RecordBatch>, u64), RunError> {
    let node = cx.node;
    let err = |message: String| RunError::Source { source_name: source.relation.clone(), message };
    let format = source.format.ok_or_else(|| err("no format".into()))?;
    let shown = path.to_string_lossy();
    let (url, listing) = source_schema::listing(cx.project_root, &shown, format, &source.settings).map_err(err)?;
    // The rows that hold the source contract, staged: they are read by the model's query below.
    let mut good_rows: Option<Staged> = None;
    let (table, bad, read): (Arc<dyn datafusion::catalog::TableProvider>, Vec<RecordBatch>, u64) =
        if contract_checked(source) {
            // CSV is read as text; JSON and Parquet with the types their values (or the file's schema) have.
            let raw_schema = if format != crate::project::SourceFormat::Csv {
                let undeclared = std::collections::BTreeMap::new();
                source_schema::infer(&cx.session.state(), &url, &listing, key, &undeclared).await.map_err(err)?
            } else {
                Arc::new(datafusion::arrow::datatypes::Schema::new(
                    schema
                        .fields()
                        .iter()
                        .map(|f| datafusion::arrow::datatypes::Field::new(f.name(), DataType::Utf8, true))
                        .collect::<Vec<_>>(),
                ))
            };
            let config = ListingTableConfig::new(url).with_listing_options(listing).with_schema(raw_schema);
            let raw = Arc::new(ListingTable::try_new(config)?);
            let declared = source.declared_types();
            let (good, bad) = split_by_contract(cx, raw, schema, &declared, key, loaded_at).await?;
            let read = good.rows() + bad.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            let provider = good.provider().map_err(|e| RunError::query(&node.name, e))?;
            good_rows = Some(good);
            (provider, bad, read)
        } else {
            let config = ListingTableConfig::new(url).with_listing_options(listing).with_schema(Arc::clone(schema));
            (Arc::new(ListingTable::try_new(config)?), Vec::new(), 0)
        };
    let session = crate::warehouse::with_overrides(cx.session, &[(source.relation.clone(), table)])?;
    let frame = super::plan_in(cx, &session, &node.compiled_sql).await?;
    let frame = frame
        .with_column("_pipe_source_file", lit(key))
        .and_then(|f| f.with_column("_pipe_loaded_at", lit(loaded_at.clone())))
        .and_then(|f| f.with_column("_pipe_batch_id", lit(cx.run_id)))
        .map_err(|e| RunError::query(&node.name, e))?;
    let rows = Staged::new(&session, frame, false).await.map_err(|e| RunError::query(&node.name, e))?;
    drop(good_rows);
    Ok((rows, bad, read))
}

/// Splits a file read as text into the rows that hold their declared types (cast to them, as the source's
/// schema; staged) and the rows that do not (as read, with `_pipe_reason`, `_pipe_source_file`, `_pipe_loaded_at`).
/// Built as expressions over the file's table: a declared type is an Arrow type here, never SQL text.
async fn split_by_contract(
    cx: &ModelContext<'_>,
    raw: Arc<dyn datafusion::catalog::TableProvider>,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    declared: &std::collections::BTreeMap<String, String>,
    file: &str,
    loaded_at: &ScalarValue,
) -> Result<(Staged, Vec<RecordBatch>), RunError> {
    use datafusion::functions::string::expr_fn::concat;
    use datafusion::logical_expr::{cast, try_cast, when, Expr};
    use datafusion::prelude::ident;
    let query = |e| RunError::query(&cx.node.name, e);
    let raw_schema = raw.schema();
    let mut broken: Vec<Expr> = Vec::new();
    let mut reasons: Vec<Expr> = Vec::new();
    for (column, declared_type) in declared {
        let (Ok(field), true) = (schema.field_with_name(column), raw_schema.field_with_name(column).is_ok()) else {
            continue;
        };
        if source_schema::arrow_type(declared_type).is_none() {
            return Err(RunError::Contract(format!(
                "source column `{column}` declares the type {declared_type:?}, which pipe does not know; use a SQL type such as `bigint`, `double`, `decimal(10, 2)`, `varchar`, `date` or `timestamp`"
            )));
        }
        let bad = ident(column).is_not_null().and(try_cast(ident(column), field.data_type().clone()).is_null());
        let reason = concat(vec![
            lit(format!("{column}: ")),
            cast(ident(column), DataType::Utf8),
            lit(format!(" is not {declared_type}; ")),
        ]);
        reasons.push(when(bad.clone(), reason).otherwise(lit("")).map_err(query)?);
        broken.push(bad);
    }
    let any_broken = broken.into_iter().reduce(Expr::or).unwrap_or(lit(false));
    let frame = cx.session.read_table(raw).map_err(query)?;
    // A JSON file may lack a field the source has: it reads as null, as it would with the source's schema.
    let casts: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            let value = match raw_schema.field_with_name(f.name()) {
                Ok(_) => ident(f.name()),
                Err(_) => lit(ScalarValue::Null),
            };
            cast(value, f.data_type().clone()).alias(f.name())
        })
        .collect();
    let good = frame
        .clone()
        .filter(datafusion::logical_expr::not(any_broken.clone()))
        .and_then(|f| f.select(casts))
        .map_err(query)?;
    let good = Staged::new(cx.session, good, false).await.map_err(query)?;
    let reason = if reasons.is_empty() { lit("") } else { concat(reasons) };
    let bad = frame
        .filter(any_broken)
        .and_then(|f| f.with_column("_pipe_reason", reason))
        .and_then(|f| f.with_column("_pipe_source_file", lit(file)))
        .and_then(|f| f.with_column("_pipe_loaded_at", lit(loaded_at.clone())))
        .map_err(query)?
        .collect()
        .await
        .map_err(query)?;
    Ok((good, bad.into_iter().filter(|b| b.num_rows() > 0).collect()))
}
