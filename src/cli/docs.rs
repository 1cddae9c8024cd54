//! `pipe docs generate` and `pipe docs serve`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{target_dir, ProjectArgs};
use crate::docs::{delta_versions, site_data, write_site, WarehouseFacts};

#[derive(Debug, Args)]
pub struct DocsArgs {
    #[command(subcommand)]
    pub command: DocsCommand,
}

#[derive(Debug, Subcommand)]
pub enum DocsCommand {
    /// Write the static site (models, sources, column lineage, runs) to `target/docs/`.
    Generate(GenerateArgs),
    /// Generate the site, then serve it on 127.0.0.1 until stopped.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The site's folder (default: `target/docs`).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub generate: GenerateArgs,
    /// The port on 127.0.0.1 (0: any free port, printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

pub(super) fn run(args: &DocsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        DocsCommand::Generate(args) => generate(args).map(|r| r.map_or_else(|code| code, |_| ExitCode::SUCCESS)),
        DocsCommand::Serve(args) => {
            let dir = match generate(&args.generate)? {
                Ok(dir) => dir,
                Err(code) => return Ok(code),
            };
            crate::docs::serve::serve(&dir, args.port, |port| {
                // On stdout, so a script (or a test) can read the address.
                println!("Serving {} at http://127.0.0.1:{port}/", dir.display());
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Compiles with every model planned, gathers what the warehouse knows (when there is one), writes the site.
fn generate(args: &GenerateArgs) -> anyhow::Result<Result<PathBuf, ExitCode>> {
    let started = std::time::Instant::now();
    let (compilation, lineage) = match super::lineage::project_lineage(&args.project)? {
        Ok(done) => done,
        Err(code) => return Ok(Err(code)),
    };
    let manifest = compilation.manifest.as_ref().expect("a compile without errors has a manifest");
    let location = crate::warehouse::Location::of(&args.project.project_dir, &manifest.project)?;
    // A warehouse folder not built yet is not created by the docs; a bucket is always read.
    let facts = if location.folder().is_none_or(Path::is_dir) {
        let runtime = super::runtime(None)?;
        let facts = runtime.block_on(async {
            let (ctx, warehouse, _) = crate::run::open_session(manifest, &args.project.project_dir, None).await?;
            let freshness = crate::quality::freshness::check(
                manifest,
                &args.project.project_dir,
                &ctx,
                &warehouse,
                chrono::Utc::now(),
            )
            .await
            .into_iter()
            .map(|f| (f.name, (format!("{:?}", f.status).to_lowercase(), f.detail)))
            .collect();
            Ok::<_, crate::run::RunError>(WarehouseFacts {
                history: crate::warehouse::runs::node_history(&ctx).await,
                tests: crate::warehouse::runs::latest_tests(&ctx).await,
                freshness,
                versions: delta_versions(&warehouse, manifest.nodes.values().map(|n| n.relation.clone())).await,
            })
        })?;
        Some(facts)
    } else {
        None
    };
    let data = site_data(manifest, &lineage, facts.as_ref());
    let dir = args.output.clone().unwrap_or_else(|| target_dir(&compilation, &args.project).join("docs"));
    write_site(&dir, &data)?;
    eprintln!(
        "Wrote the docs site for {} nodes to {} in {:.2}s{}",
        lineage.nodes.len(),
        dir.join("index.html").display(),
        started.elapsed().as_secs_f64(),
        if facts.is_some() { " (with the warehouse's runs)" } else { "" }
    );
    Ok(Ok(dir))
}
