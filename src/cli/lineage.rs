//! `pipe lineage <model> [--column c]`: where each output column of a model comes from, from the model's logical
//! plan; every model's column lineage is also written to `target/lineage.json`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;

use super::{compile_options, report, target_dir, write_stdout, ProjectArgs};
use crate::compile::{compile, CompileOptions, PlanCache};
use crate::diagnostics::SourceMap;

#[derive(Debug, Args)]
pub struct LineageArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The model.
    pub model: String,
    /// Only this output column.
    #[arg(long)]
    pub column: Option<String>,
}

pub(super) fn run(args: &LineageArgs) -> anyhow::Result<ExitCode> {
    // Every model is planned (no cache) and its plan kept: lineage reads the plans.
    let options = CompileOptions {
        keep_plans: true,
        plan: true,
        plan_cache: PlanCache::default(),
        ..compile_options(&args.project)?
    };
    let compilation = compile(&args.project.project_dir, &options);
    let empty = SourceMap::default();
    let sources = compilation.project.as_ref().map_or(&empty, |p| &p.files);
    if report(&compilation.diagnostics, sources, args.project.diagnostics, Some("compile")) {
        return Ok(ExitCode::from(1));
    }
    let Some(manifest) = compilation.manifest.as_ref() else { return Ok(ExitCode::from(1)) };
    let mut all: BTreeMap<String, BTreeMap<String, Vec<(String, String)>>> = BTreeMap::new();
    for (id, plan) in &compilation.plans {
        if let Some(node) = manifest.nodes.get(id) {
            all.insert(node.name.clone(), crate::lineage::by_column(plan));
        }
    }
    let target = target_dir(&compilation, &args.project);
    std::fs::create_dir_all(&target)?;
    std::fs::write(target.join("lineage.json"), serde_json::to_string_pretty(&all)? + "\n")?;
    let Some(columns) = all.get(&args.model) else {
        eprintln!("error: no planned model named `{}`", args.model);
        return Ok(ExitCode::from(2));
    };
    let mut out = String::new();
    for (column, sources) in columns {
        if args.column.as_ref().is_some_and(|c| c != column) {
            continue;
        }
        let list: Vec<String> = sources.iter().map(|(relation, c)| format!("{relation}.{c}")).collect();
        let list = if list.is_empty() { "(computed from no column)".to_string() } else { list.join(", ") };
        out.push_str(&format!("{column} <- {list}\n"));
    }
    write_stdout(&out);
    Ok(ExitCode::SUCCESS)
}
