//! `pipe show <model>`, `pipe query "<sql>"`, `pipe history <model>` and `pipe diff <model>`: read the warehouse
//! (every model and source registered), now or as of an earlier version.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use datafusion::arrow::record_batch::RecordBatch;

use std::sync::Arc;

use super::{compile_reported_with, write_stdout, Partial, ProjectArgs};
use crate::manifest::{Manifest, Node};
use crate::run;
use crate::run::history::AsOf;
use crate::warehouse::Warehouse;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The model (or seed) to show.
    #[arg(required_unless_present_any = ["inline", "select"], conflicts_with_all = ["inline", "select"])]
    pub model: Option<String>,
    /// The model to show, as dbt spells it (`pipe show -s orders`).
    #[arg(long, short = 's', conflicts_with = "inline")]
    pub select: Option<String>,
    /// Show the rows of a query written as a model is (`ref`, `source`, macros): `--inline "select * from
    /// {{ ref('orders') }}"`.
    #[arg(long)]
    pub inline: Option<String>,
    /// Rows to print.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long, short = 'o', value_enum, default_value_t = TableFormat::Table)]
    pub output: TableFormat,
    /// Read the table as it was at a version (`3`) or a UTC time (`2026-11-26 10:00:00`).
    #[arg(long)]
    pub as_of: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// SQL over the warehouse: models by relation (`silver.orders`), sources as `<source>.<table>`. Earlier
    /// versions with Delta's syntax: `silver.orders VERSION AS OF 3`, `silver.orders TIMESTAMP AS OF '2026-11-26'`.
    pub sql: String,
    #[arg(long, short = 'o', value_enum, default_value_t = TableFormat::Table)]
    pub output: TableFormat,
    /// Run the query on a Ballista cluster (`host:port` of a `pipe ballista scheduler`; a pipe built with the
    /// cargo feature `ballista`). The executors read the warehouse's files, so they must reach its folder.
    #[arg(long)]
    pub scheduler: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The model (or seed).
    pub model: String,
    /// Versions to list, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long, short = 'o', value_enum, default_value_t = TableFormat::Table)]
    pub output: TableFormat,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The model (or seed).
    pub model: String,
    /// The older version or time (default: the version before `--to`).
    #[arg(long)]
    pub from: Option<String>,
    /// The newer version or time (default: the latest version).
    #[arg(long)]
    pub to: Option<String>,
    /// Differing rows to print.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long, short = 'o', value_enum, default_value_t = TableFormat::Table)]
    pub output: TableFormat,
}

/// The node called `name`, or a message with a suggestion.
fn find_node<'m>(manifest: &'m Manifest, name: &str) -> Result<&'m Node, ExitCode> {
    manifest.nodes.values().find(|n| n.name == name).ok_or_else(|| {
        let names = manifest.nodes.values().map(|n| n.name.as_str());
        let hint = crate::suggest::did_you_mean(name, names)
            .map(|n| format!("\n\nhint: did you mean `{n}`?"))
            .unwrap_or_default();
        eprintln!("error: no model or seed named `{name}`{hint}");
        ExitCode::from(2)
    })
}

pub(super) fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let (compilation, manifest) = match compile_reported_with(&args.project, false, Partial::Read)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    if let Some(text) = &args.inline {
        if args.as_of.is_some() {
            eprintln!("error: --as-of reads one model's table; write `VERSION AS OF` in the inline query instead");
            return Ok(ExitCode::from(2));
        }
        // One session: the render's introspection and the query read the same registered tables.
        let reading = Reading::open(&manifest, &args.project)?;
        let sql = match render_inline(&compilation, &manifest, &args.project, text, Some(&reading))? {
            Ok(sql) => sql,
            Err(code) => return Ok(code),
        };
        // The limit applies over the query's plan, so its `order by` holds.
        let sql = sql.trim().trim_end_matches(';');
        return query_and_print(&reading, &manifest, sql, args.output, Some(args.limit), None);
    }
    let name = args.model.as_deref().or(args.select.as_deref()).unwrap_or_default();
    let node = match find_node(&manifest, name) {
        Ok(node) => node,
        Err(code) => return Ok(code),
    };
    let version = match &args.as_of {
        None => String::new(),
        Some(text) => match AsOf::parse(text) {
            Ok(AsOf::Version(v)) => format!(" VERSION AS OF {v}"),
            Ok(AsOf::Timestamp(t)) => format!(" TIMESTAMP AS OF '{}'", t.to_rfc3339()),
            Err(message) => {
                eprintln!("error: --as-of: {message}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let sql = format!("select * from {}{version} limit {}", node.relation, args.limit);
    query_and_print(&Reading::open(&manifest, &args.project)?, &manifest, &sql, args.output, None, None)
}

/// The warehouse opened for reading: a runtime and a session with every source, table and view registered, and
/// the tables that could not be (by unique id, with why).
pub(super) struct Reading {
    runtime: tokio::runtime::Runtime,
    ctx: datafusion::prelude::SessionContext,
    warehouse: Warehouse,
    unreadable: BTreeMap<String, String>,
}

impl Reading {
    pub(super) fn open(manifest: &Manifest, project: &ProjectArgs) -> anyhow::Result<Reading> {
        let runtime = super::runtime(None)?;
        let (ctx, warehouse, unreadable) = runtime.block_on(run::open_session(manifest, &project.project_dir, None))?;
        Ok(Reading { runtime, ctx, warehouse, unreadable })
    }
}

/// `--inline` text rendered as a model of the project; with `reading`, introspective macros ask that session.
/// `Err(exit code)` after reporting a render error.
pub(super) fn render_inline(
    compilation: &crate::compile::Compilation,
    manifest: &Manifest,
    project: &ProjectArgs,
    text: &str,
    reading: Option<&Reading>,
) -> anyhow::Result<Result<String, ExitCode>> {
    let Some(loaded) = compilation.project.as_ref() else {
        return Ok(Err(ExitCode::from(1)));
    };
    let options = super::compile_options(project)?;
    let renderer = crate::compile::BuildRenderer::always(loaded, &options, manifest);
    let catalog = reading.map(|r| -> Arc<dyn crate::template::Catalog> {
        Arc::new(crate::warehouse::catalog::SessionCatalog { ctx: r.ctx.clone(), handle: r.runtime.handle().clone() })
    });
    let rendered = renderer.render_inline(&manifest.nodes, text, catalog);
    match rendered {
        Ok(sql) => Ok(Ok(sql)),
        Err(diagnostic) => {
            eprintln!("error[{}]: in the inline query: {}", diagnostic.code.id(), diagnostic.message);
            Ok(Err(ExitCode::from(1)))
        }
    }
}

pub(super) fn history(args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let (_compilation, manifest) = match compile_reported_with(&args.project, false, Partial::Read)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let node = match find_node(&manifest, &args.model) {
        Ok(node) => node,
        Err(code) => return Ok(code),
    };
    let runtime = super::runtime(None)?;
    let versions = runtime.block_on(async {
        let location = crate::warehouse::Location::of(&args.project.project_dir, &manifest.project)?;
        let warehouse = Warehouse::open_at(&location)?;
        run::history::history(&warehouse, &node.relation, args.limit).await
    });
    let versions = match versions {
        Ok(versions) => versions,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(1));
        }
    };
    write_stdout(&format_batches(&[history_batch(&versions)?], args.output)?);
    Ok(ExitCode::SUCCESS)
}

fn history_batch(versions: &[run::history::VersionInfo]) -> anyhow::Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, UInt64Array};
    let text = |f: &dyn Fn(&run::history::VersionInfo) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(versions.iter().map(f).collect::<Vec<_>>()))
    };
    let count = |f: &dyn Fn(&run::history::VersionInfo) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from(versions.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_from_iter(vec![
        ("version", Arc::new(Int64Array::from(versions.iter().map(|v| v.version).collect::<Vec<_>>())) as ArrayRef),
        ("timestamp", text(&|v| Some(v.timestamp.clone()))),
        ("operation", text(&|v| Some(v.operation.clone()))),
        ("rows", count(&|v| v.rows)),
        ("added", count(&|v| v.added)),
        ("updated", count(&|v| v.updated)),
        ("removed", count(&|v| v.removed)),
        ("run_id", text(&|v| v.run_id.clone())),
        ("checksum", text(&|v| v.checksum.clone())),
    ])?)
}

pub(super) fn diff(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let (_compilation, manifest) = match compile_reported_with(&args.project, false, Partial::Read)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let node = match find_node(&manifest, &args.model) {
        Ok(node) => node,
        Err(code) => return Ok(code),
    };
    let parse = |flag: &str, text: &Option<String>| -> Result<Option<AsOf>, ExitCode> {
        text.as_deref().map(AsOf::parse).transpose().map_err(|message| {
            eprintln!("error: {flag}: {message}");
            ExitCode::from(2)
        })
    };
    let (from, to) = match (parse("--from", &args.from), parse("--to", &args.to)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(code), _) | (_, Err(code)) => return Ok(code),
    };
    let unique_key = node.settings.unique_key.clone();
    let runtime = super::runtime(None)?;
    let result = runtime.block_on(async {
        let (ctx, warehouse, _) = run::open_session(&manifest, &args.project.project_dir, None).await?;
        let Some(latest) = warehouse.load(&node.relation).await? else {
            return Err(run::RunError::NotATable { relation: node.relation.clone() });
        };
        let latest = latest.version().map_or(0, |v| v as i64);
        let to = to.unwrap_or(AsOf::Version(latest));
        let from = match (from, &to) {
            (Some(from), _) => from,
            (None, AsOf::Version(v)) => AsOf::Version((v - 1).max(0)),
            (None, AsOf::Timestamp(_)) => {
                let at = warehouse.load_as_of(&node.relation, &to).await?;
                AsOf::Version((at.version().map_or(0, |v| v as i64) - 1).max(0))
            }
        };
        let diff = run::history::diff(&ctx, &warehouse, &node.relation, &from, &to, &unique_key, args.limit).await?;
        Ok((from, to, diff))
    });
    let (from, to, diff) = match result {
        Ok(done) => done,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(1));
        }
    };
    let name = |a: &AsOf| match a {
        AsOf::Version(v) => format!("version {v}"),
        AsOf::Timestamp(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    };
    eprintln!(
        "{} from {} to {}: {} added, {} removed, {} changed",
        node.relation,
        name(&from),
        name(&to),
        diff.added,
        diff.removed,
        diff.changed
    );
    if !diff.rows.is_empty() {
        write_stdout(&format_batches(&diff.rows, args.output)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn query(args: &QueryArgs) -> anyhow::Result<ExitCode> {
    let (_compilation, manifest) = match compile_reported_with(&args.project, false, Partial::Read)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    if args.scheduler.is_some() && !cfg!(feature = "ballista") {
        eprintln!(
            "error: `--scheduler` needs a pipe built with the `ballista` feature (`cargo install --features ballista`)"
        );
        return Ok(ExitCode::from(2));
    }
    let reading = Reading::open(&manifest, &args.project)?;
    query_and_print(&reading, &manifest, &args.sql, args.output, None, args.scheduler.as_deref())
}

/// Runs `sql` over the warehouse and prints it: on this machine, or, given a `scheduler`, planned here and run on
/// that Ballista cluster (feature `ballista`; the warehouse's tables read as their current versions' files).
fn query_and_print(
    reading: &Reading,
    manifest: &Manifest,
    sql: &str,
    output: TableFormat,
    limit: Option<usize>,
    scheduler: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let query_error = |e: datafusion::error::DataFusionError| run::RunError::Query {
        model: "query".into(),
        message: run::clean_datafusion_message(&e),
    };
    let (ctx, warehouse) = (&reading.ctx, &reading.warehouse);
    let batches = reading.runtime.block_on(async {
        #[cfg(feature = "ballista")]
        if scheduler.is_some() {
            run::cluster::plan_for_cluster(ctx, manifest, warehouse).await.map_err(query_error)?;
        }
        let sql = run::history::resolve_time_travel(sql, ctx, warehouse).await?;
        let mut frame = crate::sql::duckdb::sql(ctx, &sql).await.map_err(query_error)?;
        if let Some(limit) = limit {
            frame = frame.limit(0, Some(limit)).map_err(query_error)?;
        }
        // An empty result still has its columns: the header is printed.
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let mut batches = match scheduler {
            None => frame.collect().await,
            Some(scheduler) => collect_on_cluster(ctx, frame, scheduler).await,
        }
        .map_err(query_error)?;
        if batches.iter().all(|b| b.num_rows() == 0) {
            batches = vec![RecordBatch::new_empty(schema)];
        }
        Ok::<_, run::RunError>(batches)
    });
    let batches = match batches {
        Ok(batches) => batches,
        Err(err) => {
            let err = missing_table_message(manifest, &err.to_string());
            eprintln!("error: {err}");
            // A table the query may have meant, left out because it cannot be read.
            for message in reading.unreadable.values() {
                eprintln!("note: {message}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    write_stdout(&format_batches(&batches, output)?);
    Ok(ExitCode::SUCCESS)
}

/// `frame`'s rows, computed on the Ballista cluster whose scheduler is at `scheduler`.
#[cfg(feature = "ballista")]
async fn collect_on_cluster(
    ctx: &datafusion::prelude::SessionContext,
    frame: datafusion::prelude::DataFrame,
    scheduler: &str,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    use futures::TryStreamExt;
    let plan = frame.create_physical_plan().await?;
    let config = run::cluster::job_config(ctx.state().config());
    run::cluster::execute(plan, scheduler, config).await?.try_collect().await
}

#[cfg(not(feature = "ballista"))]
async fn collect_on_cluster(
    _: &datafusion::prelude::SessionContext,
    _: datafusion::prelude::DataFrame,
    _: &str,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    datafusion::common::not_impl_err!("running on a cluster needs the `ballista` feature")
}

/// DataFusion's "table 'datafusion.silver.x' not found", said in the project's terms: a model not built yet, an
/// ephemeral model (no table), or no such relation (with the closest one).
fn missing_table_message(manifest: &Manifest, message: &str) -> String {
    let Some(relation) = run::missing_table(message) else { return message.to_string() };
    let ephemeral = relation.strip_prefix(crate::compile::EPHEMERAL_PREFIX);
    if let Some(node) = manifest.nodes.values().find(|n| n.relation == relation || Some(n.name.as_str()) == ephemeral) {
        if node.materialized == crate::project::Materialization::Ephemeral {
            return format!(
                "`{}` is ephemeral: it is inlined into the models that read it and has no table; query one of its readers, or make it a `view`",
                node.name
            );
        }
        return format!("`{}` is not built yet: run `pipe build -s {}` first", node.relation, node.name);
    }
    let known = manifest
        .nodes
        .values()
        .map(|n| n.relation.as_str())
        .chain(manifest.sources.values().map(|s| s.relation.as_str()));
    match crate::suggest::did_you_mean(relation, known) {
        Some(close) => format!("no table `{relation}` in the project or the warehouse; did you mean `{close}`?"),
        None => format!("no table `{relation}` in the project or the warehouse (`pipe ls` lists the models)"),
    }
}

/// A batch with its lists, structs and maps as text (`[1, 2]`, `{a: 1}`), as the table format shows them: CSV has
/// no nested values.
fn nested_as_text(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    if !batch.schema().fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns: Vec<datafusion::arrow::array::ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
        let text: datafusion::arrow::array::StringArray =
            (0..column.len()).map(|i| column.is_valid(i).then(|| formatter.value(i).to_string())).collect();
        fields.push(Field::new(field.name(), DataType::Utf8, true));
        columns.push(std::sync::Arc::new(text));
    }
    Ok(RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)?)
}

/// A batch with its intervals (and durations: differences of timestamps) as text, as DuckDB writes them
/// (`1 day 02:00:00`): Arrow's own forms (`PT93600S`, `0 years 0 mons 1 days ...`) are neither read easily nor
/// read back.
fn intervals_as_text(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let is_interval = |t: &DataType| matches!(t, DataType::Interval(_) | DataType::Duration(_));
    if !batch.schema().fields().iter().any(|f| is_interval(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match crate::sql::duckdb::intervals_as_text(column) {
            Some(text) => {
                fields.push(Field::new(field.name(), DataType::Utf8, true));
                columns.push(text);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)?)
}

/// Renders record batches as a text table, CSV with a header, or a JSON array of objects.
pub fn format_batches(batches: &[RecordBatch], output: TableFormat) -> anyhow::Result<String> {
    let batches = &batches.iter().map(intervals_as_text).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(match output {
        TableFormat::Table => format!("{}\n", datafusion::arrow::util::pretty::pretty_format_batches(batches)?),
        TableFormat::Csv => {
            let mut buffer = Vec::new();
            {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut buffer);
                for batch in batches {
                    writer.write(&nested_as_text(batch)?)?;
                }
            }
            String::from_utf8(buffer)?
        }
        TableFormat::Json => {
            let mut buffer = Vec::new();
            {
                let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut buffer);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            let mut text = String::from_utf8(buffer)?;
            if text.is_empty() {
                text.push_str("[]");
            }
            text.push('\n');
            text
        }
    })
}
