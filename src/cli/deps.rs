//! `pipe deps`: installs the `local:` packages of `packages.yml` / `dependencies.yml` into the install folder
//! (`dbt_packages/`), and says which hub or git packages must be installed some other way: pipe has no network.

use std::path::Path;
use std::process::ExitCode;

use crate::diagnostics::Diagnostic;
use crate::project::packages::{declared, read_package, PackageSpec};

use super::DepsArgs;

pub(super) fn run(args: &DepsArgs) -> anyhow::Result<ExitCode> {
    let root = &args.project_dir;
    let (loaded, _) = crate::project::load_project(root);
    let install_path = match loaded {
        Ok(project) => project.config.packages_install_path,
        Err(_) => anyhow::bail!("no `dbt_project.yml` or `pipe.yml` in `{}`", root.display()),
    };
    let (outcomes, diagnostics) = install(root, &install_path);
    for diagnostic in &diagnostics {
        eprintln!("{}: {}", if diagnostic.is_error() { "error" } else { "warning" }, diagnostic.message);
    }
    if outcomes.is_empty() {
        println!("No packages declared (`packages.yml` or `dependencies.yml`)");
    }
    let mut failed = false;
    for outcome in &outcomes {
        match outcome {
            DepsOutcome::Installed { name, from } => {
                println!("Installed {name} from {from} into {install_path}/{name}")
            }
            DepsOutcome::AlreadyInstalled { spec } => println!("Already installed: {spec}"),
            DepsOutcome::NeedsDownload { spec } => {
                failed = true;
                println!(
                    "Not installed: {spec}: pipe does not download packages; install it with `dbt deps` or copy it into {install_path}/"
                );
            }
            DepsOutcome::Failed { spec, reason } => {
                failed = true;
                println!("Failed: {spec}: {reason}");
            }
        }
    }
    Ok(if failed || diagnostics.iter().any(Diagnostic::is_error) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What `pipe deps` did for one declared package.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DepsOutcome {
    /// A `local:` package copied into the install folder.
    Installed {
        name: String,
        from: String,
    },
    /// Already in the install folder.
    AlreadyInstalled {
        spec: String,
    },
    /// A hub, git or tarball package that is not installed: pipe has no network.
    NeedsDownload {
        spec: String,
    },
    Failed {
        spec: String,
        reason: String,
    },
}

/// `pipe deps`: copies each `local:` package into `install_path` (replacing an older copy) and reports the
/// packages it cannot install without a network.
fn install(root: &Path, install_path: &str) -> (Vec<DepsOutcome>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let specs = declared(root, &mut diagnostics);
    let install_dir = root.join(install_path);
    let mut outcomes = Vec::new();
    for spec in specs {
        let outcome = match &spec {
            PackageSpec::Local(path) => {
                let from = root.join(path);
                match read_package(&from, path.clone()) {
                    Ok(package) => {
                        let to = install_dir.join(&package.name);
                        let copied = std::fs::create_dir_all(&install_dir)
                            .map_err(|e| e.to_string())
                            .and_then(|()| replace_dir(&from, &to));
                        match copied {
                            Ok(()) => DepsOutcome::Installed { name: package.name, from: path.clone() },
                            Err(reason) => DepsOutcome::Failed { spec: spec.describe(), reason },
                        }
                    }
                    Err(reason) => DepsOutcome::Failed { spec: spec.describe(), reason },
                }
            }
            other => {
                let likely = other.likely_name();
                if install_dir.join(&likely).join("dbt_project.yml").is_file() {
                    DepsOutcome::AlreadyInstalled { spec: other.describe() }
                } else {
                    DepsOutcome::NeedsDownload { spec: other.describe() }
                }
            }
        };
        outcomes.push(outcome);
    }
    (outcomes, diagnostics)
}

/// Copies the folder `from` to `to` through a temporary sibling, so `to` is never half written.
fn replace_dir(from: &Path, to: &Path) -> Result<(), String> {
    let staging = to.with_extension("pipe-staging");
    let _ = std::fs::remove_dir_all(&staging);
    copy_dir(from, &staging).map_err(|e| format!("cannot copy `{}`: {e}", from.display()))?;
    let _ = std::fs::remove_dir_all(to);
    std::fs::rename(&staging, to).map_err(|e| format!("cannot move the copy into `{}`: {e}", to.display()))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        // Nested install folders, build output and version control of the package are not part of it.
        if [".git", "target", "dbt_packages", "logs"].iter().any(|skip| name == *skip) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &to.join(&name))?;
        } else {
            std::fs::copy(&path, to.join(&name))?;
        }
    }
    Ok(())
}
