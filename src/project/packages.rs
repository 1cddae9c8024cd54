//! dbt packages: the ones installed under `packages-install-path` (`dbt_packages/` by default), and the `local:`
//! entries of `packages.yml` / `dependencies.yml`, read from their folder when not installed. A package brings its
//! macros (called as `package.macro`, or found by `adapter.dispatch`), its generic tests, and its models and seeds,
//! which build with the project's (configured by the package's project file, then the root project's
//! `models: <package>:` level).
//!
//! pipe never downloads: a hub or git package that is not installed is a warning that says to install it.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::diagnostics::{Code, Diagnostic};

/// An installed package.
#[derive(Debug, Clone)]
pub struct Package {
    /// The name in its own project file: what its macros are called by (`dbt_utils.star`).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Its folder as shown to users: relative to the project root when inside it.
    pub display_dir: String,
    pub macro_paths: Vec<String>,
    pub model_paths: Vec<String>,
    pub seed_paths: Vec<String>,
    /// The `models:` / `seeds:` config trees of its project file.
    pub models_tree: Value,
    pub seeds_tree: Value,
}

/// One entry of `packages.yml` / `dependencies.yml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSpec {
    /// `local: ../path`: a folder on this machine.
    Local(String),
    /// `package: dbt-labs/dbt_utils` from the dbt Hub.
    Hub(String),
    /// `git: https://...`.
    Git(String),
    /// `tarball: https://...`.
    Tarball(String),
}

impl PackageSpec {
    /// The name the package is probably installed under: the last part of its hub name, git URL or path.
    pub fn likely_name(&self) -> String {
        let text = match self {
            PackageSpec::Local(s) | PackageSpec::Hub(s) | PackageSpec::Git(s) | PackageSpec::Tarball(s) => s,
        };
        let last = text.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or(text);
        last.trim_end_matches(".git").trim_end_matches(".tar.gz").replace('-', "_")
    }

    pub fn describe(&self) -> String {
        match self {
            PackageSpec::Local(s) => format!("local: {s}"),
            PackageSpec::Hub(s) => format!("package: {s}"),
            PackageSpec::Git(s) => format!("git: {s}"),
            PackageSpec::Tarball(s) => format!("tarball: {s}"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct PackagesFile {
    #[serde(default)]
    packages: Vec<serde_json::Map<String, Value>>,
}

/// The project file of a package: only what pipe reads from it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PackageProjectFile {
    name: String,
    #[serde(default)]
    macro_paths: Option<Vec<String>>,
    #[serde(default)]
    model_paths: Option<Vec<String>>,
    #[serde(default)]
    seed_paths: Option<Vec<String>>,
    #[serde(default)]
    models: Option<Value>,
    #[serde(default)]
    seeds: Option<Value>,
}

/// The entries of `packages.yml` (or `dependencies.yml`) in `root`, with the file they come from.
pub fn declared(root: &Path, diagnostics: &mut Vec<Diagnostic>) -> Vec<PackageSpec> {
    let mut specs = Vec::new();
    for file_name in ["packages.yml", "dependencies.yml"] {
        let path = root.join(file_name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let parsed: PackagesFile = match super::parse_yaml(&text) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => continue,
            Err(err) => {
                diagnostics.push(Diagnostic::error(
                    Code::YamlSyntax,
                    format!("invalid YAML in `{file_name}`: {}", err.without_snippet()),
                ));
                continue;
            }
        };
        for entry in parsed.packages {
            let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_string);
            let spec = if let Some(path) = text("local") {
                PackageSpec::Local(path)
            } else if let Some(name) = text("package") {
                PackageSpec::Hub(name)
            } else if let Some(url) = text("git") {
                PackageSpec::Git(url)
            } else if let Some(url) = text("tarball") {
                PackageSpec::Tarball(url)
            } else {
                diagnostics.push(Diagnostic::warning(
                    Code::InvalidConfig,
                    format!(
                        "an entry of `{file_name}` has none of `local:`, `package:`, `git:`, `tarball:`; it is ignored"
                    ),
                ));
                continue;
            };
            specs.push(spec);
        }
    }
    specs
}

/// Reads the package whose project file is in `dir`.
pub fn read_package(dir: &Path, display_dir: String) -> Result<Package, String> {
    let file = dir.join("dbt_project.yml");
    let text =
        std::fs::read_to_string(&file).map_err(|e| format!("cannot read `{display_dir}/dbt_project.yml`: {e}"))?;
    let parsed: PackageProjectFile = match super::parse_yaml(&text) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Err(format!("`{display_dir}/dbt_project.yml` is empty")),
        Err(err) => return Err(format!("invalid YAML in `{display_dir}/dbt_project.yml`: {}", err.without_snippet())),
    };
    Ok(Package {
        name: parsed.name,
        dir: dir.to_path_buf(),
        display_dir,
        macro_paths: parsed.macro_paths.unwrap_or_else(|| vec!["macros".to_string()]),
        model_paths: parsed.model_paths.unwrap_or_else(|| vec!["models".to_string()]),
        seed_paths: parsed.seed_paths.unwrap_or_else(|| vec!["seeds".to_string()]),
        models_tree: parsed.models.unwrap_or(Value::Null),
        seeds_tree: parsed.seeds.unwrap_or(Value::Null),
    })
}

/// The project's packages: every folder of `install_path` with a `dbt_project.yml`, then each `local:` entry not
/// installed there. A declared hub or git package that is not installed is a warning.
pub fn find_packages(root: &Path, install_path: &str, diagnostics: &mut Vec<Diagnostic>) -> Vec<Package> {
    let mut packages: Vec<Package> = Vec::new();
    let mut installed_dirs: Vec<String> = Vec::new();
    let install_dir = root.join(install_path);
    if let Ok(entries) = std::fs::read_dir(&install_dir) {
        let mut dirs: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            if !dir.join("dbt_project.yml").is_file() {
                continue;
            }
            let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let display = format!("{}/{dir_name}", install_path.trim_end_matches('/'));
            match read_package(&dir, display) {
                Ok(package) => {
                    installed_dirs.push(dir_name);
                    packages.push(package);
                }
                Err(message) => diagnostics.push(Diagnostic::error(Code::InvalidConfig, message)),
            }
        }
    }
    for spec in declared(root, diagnostics) {
        let likely = spec.likely_name();
        let installed = packages.iter().any(|p| p.name == likely) || installed_dirs.contains(&likely);
        match &spec {
            PackageSpec::Local(path) => {
                let dir = root.join(path);
                match read_package(&dir, path.trim_end_matches('/').to_string()) {
                    Ok(package) if packages.iter().any(|p| p.name == package.name) => {}
                    Ok(package) => packages.push(package),
                    Err(message) => diagnostics.push(Diagnostic::error(
                        Code::InvalidConfig,
                        format!("the local package `{path}` cannot be read: {message}"),
                    )),
                }
            }
            _ if installed => {}
            _ => diagnostics.push(
                Diagnostic::warning(
                    Code::NotSupported,
                    format!(
                        "package `{}` is not installed in `{install_path}/`, and pipe does not download packages",
                        spec.describe()
                    ),
                )
                .with_help("install it with `dbt deps` (or copy it into the folder); models that call its macros fail until then"),
            ),
        }
    }
    packages
}
