//! `pipe debug`: what dbt's `debug` checks, for pipe: versions, the project file, the profile and target the build
//! would use, the installed packages, and that the warehouse folder is writable. Exits 1 when a check fails.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::ProjectArgs;

#[derive(Debug, Args)]
pub struct DebugArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Print the folder `profiles.yml` is read from, and nothing else (dbt's `--config-dir`).
    #[arg(long)]
    pub config_dir: bool,
}

/// One line of the report: `[OK ...]` or `[ERROR ...]`.
struct Checks {
    failed: usize,
}

impl Checks {
    fn line(&mut self, what: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => eprintln!("  {what} [OK {detail}]"),
            Err(detail) => {
                self.failed += 1;
                eprintln!("  {what} [ERROR {detail}]");
            }
        }
    }
}

pub(super) fn run(args: &DebugArgs) -> anyhow::Result<ExitCode> {
    let options = super::compile_options(&args.project)?;
    let profiles_file = options.profiles_dirs.iter().map(|d| d.join("profiles.yml")).find(|f| f.is_file());
    if args.config_dir {
        match &profiles_file {
            Some(file) => eprintln!("To view your profiles.yml file, run:\n\n  cat {}", file.display()),
            None => eprintln!(
                "No profiles.yml in {}: pipe builds with dbt-duckdb's defaults (target `dev`, schema `main`)",
                options.profiles_dirs.iter().map(|d| format!("`{}`", d.display())).collect::<Vec<_>>().join(", ")
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("pipe version: {}", env!("CARGO_PKG_VERSION"));
    eprintln!("DataFusion version: {}", datafusion::DATAFUSION_VERSION);
    eprintln!("delta-rs version: {}", deltalake::crate_version());
    eprintln!("os info: {} {}", std::env::consts::OS, std::env::consts::ARCH);
    let mut checks = Checks { failed: 0 };

    eprintln!("Configuration:");
    let (project, diagnostics) = crate::project::load_project(&args.project.project_dir);
    let errors: Vec<&str> = diagnostics.iter().filter(|d| d.is_error()).map(|d| d.message.as_str()).collect();
    let project = match project {
        Ok(project) => {
            let file = project.files.get(project.project_file).display_path();
            let detail = match errors.first() {
                None => Ok(format!("{file} found and valid")),
                Some(first) => {
                    Err(format!("{file}: {first} ({} error(s); `pipe compile` shows them all)", errors.len()))
                }
            };
            checks.line("project file", detail);
            Some(project)
        }
        Err(_) => {
            let first = errors.first().copied().unwrap_or("no `pipe.yml` or `dbt_project.yml`");
            checks.line("project file", Err(first.to_string()));
            None
        }
    };
    let profile = project.as_ref().map(|p| p.config.profile_name().to_string());
    let target = match &profile {
        Some(profile) => {
            let resolved = crate::project::profiles::resolve(
                profile,
                &options.profiles_dirs,
                options.target.as_deref(),
                &options.env_vars,
            );
            match resolved {
                Ok(Some(target)) => {
                    let file = target.file.as_ref().map(|f| f.display().to_string()).unwrap_or_default();
                    checks.line("profiles.yml file", Ok(format!("{file} found and valid")));
                    Some(target)
                }
                Ok(None) => {
                    checks.line(
                        "profiles.yml file",
                        Ok("none found: dbt-duckdb's defaults (target `dev`, schema `main`)".into()),
                    );
                    let mut target = crate::project::profiles::Target::default_for("dev", "duckdb");
                    if let Some(name) = &options.target {
                        target.name = name.clone();
                    }
                    Some(target)
                }
                Err(message) => {
                    checks.line("profiles.yml file", Err(message));
                    None
                }
            }
        }
        None => None,
    };
    if let (Some(profile), Some(target)) = (&profile, &target) {
        eprintln!("Profile `{profile}`, target `{}`:", target.name);
        eprintln!("  type: {}", target.kind);
        eprintln!("  schema: {}", target.schema);
        if let Some(database) = &target.database {
            eprintln!("  database: {database}");
        }
        if let Some(threads) = target.threads {
            eprintln!("  threads: {threads}");
        }
        if target.kind != "duckdb" {
            eprintln!(
                "  note: pipe builds every target with DataFusion into Delta tables; `{}` connection settings are not used",
                target.kind
            );
        }
    }
    if let Some(project) = &project {
        eprintln!("Packages:");
        if project.packages.is_empty() {
            eprintln!("  none");
        }
        for package in &project.packages {
            eprintln!("  {} [OK installed at {}]", package.name, package.display_dir);
        }
        eprintln!("Warehouse:");
        use crate::warehouse::Location;
        let written = target.as_ref().and_then(|t| t.warehouse.as_deref()).unwrap_or(&project.config.warehouse);
        match Location::resolve(&project.root, written) {
            Ok(Location::Folder(root)) => checks.line(&super::display_path(&root), writable(&root)),
            Ok(Location::Bucket(url, _)) => {
                let settings = target.as_ref().map(|t| t.bucket.clone()).unwrap_or_default();
                let location = Location::Bucket(url, settings);
                checks.line(&location.to_string(), reachable(&location))
            }
            Err(err) => checks.line(written, Err(err.to_string())),
        }
    }
    if checks.failed == 0 {
        eprintln!("All checks passed!");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} check(s) failed", checks.failed);
        Ok(ExitCode::from(1))
    }
}

/// Whether pipe can write, list and remove an object under a bucket warehouse's prefix.
fn reachable(location: &crate::warehouse::Location) -> Result<String, String> {
    let runtime = super::runtime(None).map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let warehouse = crate::warehouse::Warehouse::open_at(location).map_err(|e| e.to_string())?;
        let probe = format!(".pipe-debug-{}", std::process::id());
        warehouse
            .write_document(&["_pipe", &probe], b"probe".to_vec())
            .await
            .map_err(|e| format!("not writable: {e}"))?;
        let listed = warehouse.list_documents(&["_pipe"]).await.contains(&probe);
        warehouse.remove_document(&["_pipe", &probe]).await.map_err(|e| format!("probe not removed: {e}"))?;
        match listed {
            true => Ok("writable, listable".to_string()),
            false => Err("an object written there is not listed".to_string()),
        }
    })
}

/// Whether pipe can create the warehouse folder and write a file in it (the file, and a folder it created, are
/// removed again).
fn writable(root: &Path) -> Result<String, String> {
    let existed = root.is_dir();
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create the folder: {e}"))?;
    let probe = root.join(format!(".pipe-debug-{}", std::process::id()));
    std::fs::write(&probe, b"probe").map_err(|e| format!("not writable: {e}"))?;
    let _ = std::fs::remove_file(&probe);
    if !existed {
        // The first build creates it; debug leaves the project as it found it.
        let _ = std::fs::remove_dir(root);
        return Ok("can be created and written".into());
    }
    let entries = std::fs::read_dir(root).map(|entries| entries.filter_map(Result::ok).count()).unwrap_or(0);
    Ok(format!("writable, {entries} entries"))
}
