//! `pipe show <model>` and `pipe query "<sql>"`: read the warehouse with every model and source registered.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use datafusion::arrow::record_batch::RecordBatch;

use super::{compile_reported, write_stdout, ProjectArgs};
use crate::run;

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
    pub model: String,
    /// Rows to print.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long, short = 'o', value_enum, default_value_t = TableFormat::Table)]
    pub output: TableFormat,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// SQL over the warehouse: models by relation (`silver.orders`), sources as `<source>.<table>`.
    pub sql: String,
    #[arg(long, short = 'o', value_enum, default_value_t = TableFormat::Table)]
    pub output: TableFormat,
}

pub(super) fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let (_compilation, manifest) = match compile_reported(&args.project)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let Some(node) = manifest.nodes.values().find(|n| n.name == args.model) else {
        let names = manifest.nodes.values().map(|n| n.name.as_str());
        let hint = crate::suggest::did_you_mean(&args.model, names)
            .map(|n| format!("\n\nhint: did you mean `{n}`?"))
            .unwrap_or_default();
        eprintln!("error: no model or seed named `{}`{hint}", args.model);
        return Ok(ExitCode::from(2));
    };
    let sql = format!("select * from {} limit {}", node.relation, args.limit);
    query_and_print(&args.project, &manifest, &sql, args.output)
}

pub(super) fn query(args: &QueryArgs) -> anyhow::Result<ExitCode> {
    let (_compilation, manifest) = match compile_reported(&args.project)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    query_and_print(&args.project, &manifest, &args.sql, args.output)
}

fn query_and_print(
    project: &ProjectArgs,
    manifest: &crate::manifest::Manifest,
    sql: &str,
    output: TableFormat,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let query_error = |e: datafusion::error::DataFusionError| run::RunError::Query {
        model: "query".into(),
        message: run::clean_datafusion_message(&e),
    };
    let batches = runtime.block_on(async {
        let (ctx, _warehouse, _source_errors) = run::open_session(manifest, &project.project_dir, None).await?;
        ctx.sql(sql).await.map_err(query_error)?.collect().await.map_err(query_error)
    });
    let batches = match batches {
        Ok(batches) => batches,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(1));
        }
    };
    write_stdout(&format_batches(&batches, output)?);
    Ok(ExitCode::SUCCESS)
}

/// Renders record batches as a text table, CSV with a header, or a JSON array of objects.
pub fn format_batches(batches: &[RecordBatch], output: TableFormat) -> anyhow::Result<String> {
    Ok(match output {
        TableFormat::Table => format!("{}\n", datafusion::arrow::util::pretty::pretty_format_batches(batches)?),
        TableFormat::Csv => {
            let mut buffer = Vec::new();
            {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut buffer);
                for batch in batches {
                    writer.write(batch)?;
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
