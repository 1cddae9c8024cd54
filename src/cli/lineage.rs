//! `pipe lineage <model>[.<column>] [--upstream|--downstream] [--depth N] [--format text|json|dot|mermaid]`:
//! where a model or a column comes from, or where it goes, from the models' logical plans. The whole project's
//! model and column graph is also written to `target/lineage.json`.

use std::process::ExitCode;

use clap::Args;

use super::{compile_options, report, target_dir, write_stdout, ProjectArgs};
use crate::compile::{compile, Compilation, CompileOptions, PlanCache};
use crate::lineage::graph::{render, ColumnRef, Direction, Format, ProjectLineage};

#[derive(Debug, Args)]
pub struct LineageArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// A model, seed or source (`source.table`), optionally with a column: `gld_daily_revenue.revenue`.
    pub target: String,
    /// Only this output column (the same as `<model>.<column>`).
    #[arg(long)]
    pub column: Option<String>,
    /// Where it comes from (the default).
    #[arg(long, conflicts_with = "downstream")]
    pub upstream: bool,
    /// Where it goes: the models and columns that read it.
    #[arg(long)]
    pub downstream: bool,
    /// At most this many steps away.
    #[arg(long)]
    pub depth: Option<usize>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Compiles with every model planned and returns the project's lineage, also written to `target/lineage.json`.
pub(super) fn project_lineage(
    project: &ProjectArgs,
) -> anyhow::Result<Result<(Compilation, ProjectLineage), ExitCode>> {
    // Every model is planned (no cache) and its plan kept: lineage reads the plans.
    let options =
        CompileOptions { keep_plans: true, plan: true, plan_cache: PlanCache::default(), ..compile_options(project)? };
    let compilation = compile(&project.project_dir, &options);
    let sources = compilation.sources();
    if report(&compilation.diagnostics, sources, project.diagnostics, Some("compile")) {
        return Ok(Err(ExitCode::from(1)));
    }
    let Some(manifest) = compilation.manifest.as_ref() else { return Ok(Err(ExitCode::from(1))) };
    let lineage = ProjectLineage::build(manifest, &compilation.plans);
    let target = target_dir(&compilation, project);
    std::fs::create_dir_all(&target)?;
    crate::files::write_atomic(
        &target.join("lineage.json"),
        (serde_json::to_string_pretty(&lineage)? + "\n").as_bytes(),
    )?;
    Ok(Ok((compilation, lineage)))
}

pub(super) fn run(args: &LineageArgs) -> anyhow::Result<ExitCode> {
    let (_, lineage) = match project_lineage(&args.project)? {
        Ok(found) => found,
        Err(code) => return Ok(code),
    };
    // `name` or `name.column`; a relation (`silver.orders`) or a source (`raw.orders`) is itself dotted.
    let (node, column) = match (lineage.find(&args.target), args.target.rsplit_once('.')) {
        (Some(node), _) => (node, args.column.clone()),
        (None, Some((name, column))) if lineage.find(name).is_some() => {
            (lineage.find(name).expect("found above"), Some(column.to_string()))
        }
        _ => {
            eprintln!("error: no model, seed or source named `{}`", args.target);
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(column) = &column {
        if !node.columns.iter().any(|c| &c.name == column) {
            let names: Vec<&str> = node.columns.iter().map(|c| c.name.as_str()).collect();
            eprintln!("error: `{}` has no column `{column}`; its columns: {}", node.name, names.join(", "));
            return Ok(ExitCode::from(2));
        }
    }
    let direction = if args.downstream { Direction::Downstream } else { Direction::Upstream };
    let edges = lineage.walk(&node.unique_id, column.as_deref(), direction, args.depth);
    let start = ColumnRef { node: node.unique_id.clone(), column: column.unwrap_or_default() };
    write_stdout(&render(&lineage, &start, direction, &edges, args.format));
    Ok(ExitCode::SUCCESS)
}

impl clap::ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Text, Format::Json, Format::Dot, Format::Mermaid]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Dot => "dot",
            Format::Mermaid => "mermaid",
        }))
    }
}
