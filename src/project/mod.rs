//! Finds and reads a project: `pipe.yml` (or `dbt_project.yml`), model files, macro files, property YAML, sources
//! and seeds.
//!
//! Owns `Project`, `ModelFile`, `SourceDef` and config precedence between the folder tree and property YAML.
//! **Architecture invariant:** this stage never renders a template or parses SQL; it only reads files and YAML.

pub mod config;
mod external;
pub mod packages;
pub mod profiles;
pub mod properties;
pub mod settings;
pub mod versions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::Value;

pub use config::{
    parse_duration, parse_utc_time, ConfigExt, ConfigMap, DispatchRule, Engine, EngineKeys, Layer, LayerRules,
    Materialization, ProjectConfig, SqlDialect, PARQUET_COMPRESSIONS,
};
pub use packages::Package;
pub use properties::{
    ColumnProperties, ModelProperties, SourceProperties, SourceTableProperties, UnitRowsProperties, UnitTestProperties,
};
pub use settings::{FreshnessPeriod, FreshnessRule, ModelSettings, SourceSettings};
pub use versions::{VersionOf, VersionedModel};

use crate::diagnostics::{Code, Diagnostic, FileId, SourceMap};
use properties::PropertiesFile;

/// Largest YAML or SQL file pipe reads; bigger files are reported rather than loaded.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A loaded project: every file it is made of, parsed as far as YAML goes.
#[derive(Debug)]
pub struct Project {
    pub root: PathBuf,
    pub config: ProjectConfig,
    pub files: SourceMap,
    pub project_file: FileId,
    pub models: Vec<ModelFile>,
    /// Macro files of the project and of its packages.
    pub macro_files: Vec<MacroFile>,
    /// Installed packages (`dbt_packages/`, `local:` entries).
    pub packages: Vec<Package>,
    pub sources: Vec<SourceDef>,
    pub seeds: Vec<SeedFile>,
    /// Singular tests: `.sql` files under the test paths.
    pub test_files: Vec<TestFile>,
    /// The target it builds for: dbt-duckdb's defaults until the compile reads `profiles.yml`.
    pub target: profiles::Target,
    /// Versioned models by name (dbt's `versions:`): which file defines each version.
    pub versions: BTreeMap<String, VersionedModel>,
    /// dbt's unit tests (`unit_tests:` in the property YAML).
    pub unit_tests: Vec<UnitTestDef>,
}

/// A `unit_tests:` entry and where it is written.
#[derive(Debug, Clone)]
pub struct UnitTestDef {
    pub properties: UnitTestProperties,
    pub file: FileId,
    /// The entry's offset in the file.
    pub at: usize,
}

/// A singular test: a query under a test path whose rows are failures.
#[derive(Debug, Clone)]
pub struct TestFile {
    pub name: String,
    pub file: FileId,
    pub path: String,
}

/// One `.sql` (or dbt Python `.py`) file under a model path.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub name: String,
    pub file: FileId,
    /// A dbt Python model: pipe does not run these; it is a node that fails with "not supported".
    pub unsupported: Option<Unsupported>,
    /// Path relative to the project root, with `/` separators.
    pub path: String,
    /// Folders between the model path and the file.
    pub folders: Vec<String>,
    /// The layer given by the first folder (`bronze`, `silver`, `gold`), if any.
    pub folder_layer: Option<Layer>,
    /// Config from the folder tree and property YAML; the in-file `config()` is applied when rendering.
    pub config: ConfigMap,
    pub properties: Option<ModelProperties>,
    /// The property YAML file that describes this model, and the offset of its entry.
    pub properties_at: Option<(FileId, usize)>,
    /// The version of a versioned model this file defines.
    pub version: Option<VersionOf>,
    /// The installed package the model comes from (`None`: the project's own).
    pub package: Option<String>,
}

impl ModelFile {
    /// Whether the file is a snapshot (a `{% snapshot %}` block, or a YAML-defined one).
    pub fn is_snapshot(&self) -> bool {
        self.config.str_value("materialized") == Some("snapshot")
    }
}

/// A kind of dbt node pipe reads but does not run yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// A `.py` model.
    PythonModel,
}

#[derive(Debug, Clone)]
pub struct MacroFile {
    pub file: FileId,
    pub path: String,
    /// The package it belongs to: the project's name for the project's own macros.
    pub package: String,
}

/// File formats a source table can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Csv,
    Json,
    Parquet,
    Delta,
}

impl SourceFormat {
    fn parse(text: &str) -> Option<SourceFormat> {
        match text.to_ascii_lowercase().as_str() {
            "csv" => Some(SourceFormat::Csv),
            "json" | "ndjson" | "jsonl" => Some(SourceFormat::Json),
            "parquet" => Some(SourceFormat::Parquet),
            "delta" => Some(SourceFormat::Delta),
            _ => None,
        }
    }

    fn from_path(path: &str) -> Option<SourceFormat> {
        let ext = path.rsplit('.').next()?;
        SourceFormat::parse(ext)
    }
}

/// One declared source table.
#[derive(Debug, Clone)]
pub struct SourceDef {
    pub source_name: String,
    pub table_name: String,
    /// The table's name in the warehouse when it differs from `table_name` (dbt's `identifier`).
    pub identifier: Option<String>,
    pub description: Option<String>,
    pub format: Option<SourceFormat>,
    pub path: Option<String>,
    pub options: BTreeMap<String, Value>,
    pub columns: Vec<ColumnProperties>,
    pub freshness: Option<FreshnessRule>,
    pub loaded_at_field: Option<String>,
    pub tests: Vec<Value>,
    pub meta: Option<Value>,
    pub file: FileId,
    pub offset: usize,
}

/// A CSV seed file.
#[derive(Debug, Clone)]
pub struct SeedFile {
    pub name: String,
    pub path: String,
    pub config: ConfigMap,
    pub properties: Option<ModelProperties>,
    /// The installed package the seed comes from (`None`: the project's own).
    pub package: Option<String>,
}

/// Why `name` cannot be one part of a relation (a schema, a table name, an alias) or one folder or file name under
/// the warehouse: `None` when it can. Relation names are identifiers, never paths.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name == "." || name == ".." {
        return Some("`.` and `..` name folders, not relations");
    }
    if name.contains(['/', '\\']) {
        return Some("it contains a path separator");
    }
    if name.contains('\0') {
        return Some("it contains a NUL character");
    }
    if name.chars().any(char::is_control) {
        return Some("it contains a control character (a newline, a tab, ...)");
    }
    if name.len() > 200 {
        return Some("it is longer than 200 bytes");
    }
    None
}

/// Loads the project at `root`. Returns the files read instead of a project only when nothing could be loaded (no
/// project file, or it does not parse: the diagnostics point into those files); every other problem is a
/// diagnostic next to a best-effort `Project`.
pub fn load_project(root: &Path) -> (Result<Project, SourceMap>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut files = SourceMap::default();

    let Some((project_file, config)) = read_project_file(root, &mut files, &mut diagnostics) else {
        return (Err(files), diagnostics);
    };

    let packages = packages::find_packages(root, &config.packages_install_path, &mut diagnostics);
    // The project's files, then its packages' models, property YAML and seeds (shown under the package's folder).
    let owned = |paths: &dyn Fn(Option<&Package>) -> Vec<String>, extensions: &[&str]| -> Vec<Found> {
        let mut found: Vec<Found> = discover(root, &paths(None), extensions)
            .into_iter()
            .map(|(rel, abs)| Found { package: None, inner: rel.clone(), rel, abs })
            .collect();
        for (i, package) in packages.iter().enumerate() {
            found.extend(discover(&package.dir, &paths(Some(package)), extensions).into_iter().map(|(inner, abs)| {
                Found { package: Some(i), rel: format!("{}/{inner}", package.display_dir), inner, abs }
            }));
        }
        found
    };
    let model_paths = |p: Option<&Package>| p.map_or_else(|| config.model_paths.clone(), |p| p.model_paths.clone());
    let seed_paths = |p: Option<&Package>| p.map_or_else(|| config.seed_paths.clone(), |p| p.seed_paths.clone());
    let model_entries = owned(&model_paths, &["sql", "py"]);
    // Property YAML: under the model paths, and the project's snapshot paths (snapshots' properties).
    let yaml_paths = |p: Option<&Package>| match p {
        Some(p) => p.model_paths.clone(),
        None => config.model_paths.iter().chain(&config.snapshot_paths).cloned().collect(),
    };
    let yaml_entries = owned(&yaml_paths, &["yml", "yaml"]);
    let seed_entries = owned(&seed_paths, &["csv"]);
    let macro_entries = discover(root, &config.macro_paths, &["sql"]);
    let test_entries = discover(root, &config.test_paths, &["sql"]);

    let read_all = |entries: &[(String, PathBuf)]| -> Vec<(String, Result<String, String>)> {
        entries.par_iter().map(|(rel, abs)| (rel.clone(), read_text(abs))).collect()
    };
    let read_found = |entries: &[Found]| -> Vec<(Found, Result<String, String>)> {
        entries.par_iter().map(|found| (found.clone(), read_text(&found.abs))).collect()
    };
    // A node's config from the folder trees: its package's, then the root project's level for that package.
    let tree_config =
        |tree: fn(&Package) -> &Value, root_tree: &Value, package: Option<usize>, folders: &[&str]| match package
            .map(|i| &packages[i])
        {
            None => config.tree_config(root_tree, folders),
            Some(package) => {
                let mut merged = config::tree_config(tree(package), &package.name, folders);
                let keyed = root_tree.get(&package.name).is_some();
                let from_root = config::tree_config(root_tree, &package.name, if keyed { folders } else { &[] });
                config::merge_config(&mut merged, &from_root);
                merged
            }
        };

    // Property YAML first: model config from it is needed when building `ModelFile`s.
    let mut model_props: BTreeMap<String, (FileId, usize, ModelProperties)> = BTreeMap::new();
    let mut seed_props: BTreeMap<String, ModelProperties> = BTreeMap::new();
    let mut snapshot_props: BTreeMap<String, (FileId, usize, ModelProperties)> = BTreeMap::new();
    let mut unit_tests = Vec::new();
    let mut sources = Vec::new();
    for (Found { rel, .. }, text) in read_found(&yaml_entries) {
        let text = match text {
            Ok(text) => text,
            Err(err) => {
                diagnostics.push(Diagnostic::error(Code::Io, format!("cannot read `{rel}`: {err}")));
                continue;
            }
        };
        let file_id = files.add(rel.clone(), text);
        let file = files.get(file_id);
        let props: PropertiesFile = match parse_yaml(&file.text) {
            Ok(Some(props)) => props,
            Ok(None) => continue,
            Err(err) => {
                diagnostics.push(yaml_diagnostic(file_id, file, &err));
                continue;
            }
        };
        let entries = properties::entry_offsets(&file.text);
        properties::check_unknown_keys(file_id, file, &props, &entries, &mut diagnostics);
        for model in props.models {
            let at = entries.get(&model.name).copied().unwrap_or(0);
            // Two entries for one model: dbt refuses this, and keeping either would drop the other's tests.
            if let Some((first_file, first_at, _)) = model_props.get(&model.name) {
                let first = files.get(*first_file);
                let (line, _) = first.line_col(*first_at);
                diagnostics.push(
                    Diagnostic::error(Code::DuplicateModel, format!("model `{}` is described twice", model.name))
                        .with_primary(file_id, at..at + 4, "second entry")
                        .with_secondary(*first_file, *first_at..*first_at + 4, "first entry")
                        .with_note(format!("the first is in `{}` line {line}", first.display_path()))
                        .with_help("merge the two entries into one"),
                );
                continue;
            }
            model_props.insert(model.name.clone(), (file_id, at, model));
        }
        for seed in props.seeds {
            seed_props.insert(seed.name.clone(), seed);
        }
        for unit_test in props.unit_tests {
            let at = entries.get(&unit_test.name).copied().unwrap_or(0);
            unit_tests.push(UnitTestDef { properties: unit_test, file: file_id, at });
        }
        for snapshot in props.snapshots {
            let at = entries.get(&snapshot.name).copied().unwrap_or(0);
            snapshot_props.insert(snapshot.name.clone(), (file_id, at, snapshot));
        }
        for source in props.sources {
            let source_at = properties::find_entry(&file.text, &source.name);
            for table in source.tables.clone() {
                let table_at = properties::find_entry(&file.text[source_at..], &table.name) + source_at;
                sources.push(source_def(&source, table, file_id, table_at, file.text.as_ref(), &mut diagnostics));
            }
        }
    }
    sources.sort_by(|a, b| (&a.source_name, &a.table_name).cmp(&(&b.source_name, &b.table_name)));
    let file_names: std::collections::HashSet<String> = model_entries
        .iter()
        .filter_map(|found| Some(Path::new(&found.rel).file_stem()?.to_string_lossy().into_owned()))
        .collect();
    let (versions, mut version_of) = versions::expand(&mut model_props, &file_names, &mut diagnostics);

    let mut models: Vec<ModelFile> = Vec::new();
    for (Found { package, rel, inner, .. }, text) in read_found(&model_entries) {
        let text = match text {
            Ok(text) => text,
            Err(err) => {
                diagnostics.push(Diagnostic::error(Code::Io, format!("cannot read `{rel}`: {err}")));
                continue;
            }
        };
        let file = files.add(rel.clone(), text);
        let name = Path::new(&rel).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        // A model's name is its relation's table name: an identifier, never a path nor `schema.table`.
        if let Some(problem) = name_problem(&name).or_else(|| name.contains('.').then_some("it contains a `.`")) {
            diagnostics.push(
                Diagnostic::error(
                    Code::InvalidConfig,
                    format!("model file `{rel}` does not give a valid model name: {problem}"),
                )
                .with_primary(file, 0..0, "this model")
                .with_help("rename the file: a model's name is its file name, made of letters, digits and `_`"),
            );
            continue;
        }
        // One namespace of model names: a package's model named like the project's is left out, said once.
        if let Some(first) = models.iter().find(|m| package.is_some() && m.name == name) {
            diagnostics.push(
                Diagnostic::warning(
                    Code::DuplicateModel,
                    format!("model `{name}` of `{rel}` is not built: `{}` defines a model of that name", first.path),
                )
                .with_help("pipe keeps one model per name; disable one with `+enabled: false` or rename it"),
            );
            continue;
        }
        let folders = folders_under(&inner, &model_paths(package.map(|i| &packages[i])));
        let folder_layer = folders.first().and_then(|f| Layer::parse(f));
        let folder_refs: Vec<&str> = folders.iter().map(String::as_str).collect();
        let mut model_config = tree_config(|p| &p.models_tree, &config.models_tree, package, &folder_refs);
        let props = model_props.get(&name);
        if let Some((_, _, props)) = props {
            if let Some(yaml_config) = &props.config {
                config::merge_config(&mut model_config, yaml_config);
            }
        }
        let version = version_of.remove(&name);
        models.push(ModelFile {
            name,
            file,
            unsupported: rel.ends_with(".py").then_some(Unsupported::PythonModel),
            path: rel,
            folders,
            folder_layer,
            config: model_config,
            properties: props.map(|(_, _, p)| p.clone()),
            properties_at: props.map(|(f, at, _)| (*f, *at)),
            version,
            package: package.map(|i| packages[i].name.clone()),
        });
    }

    // An entry describing a model no file defines: dbt warns, since its tests and docs then go nowhere. Past a
    // few, one warning names them all (a code frame each would bury everything else).
    let model_names: std::collections::HashSet<&str> = models.iter().map(|m| m.name.as_str()).collect();
    // A version whose file is missing: said in the model's terms.
    for (file, of) in &version_of {
        let Some((file_id, at, _)) = model_props.get(file) else { continue };
        diagnostics.push(
            Diagnostic::warning(
                Code::YamlUnknownKey,
                format!(
                    "version {} of model `{}` is defined in `{file}`, but no model file is named `{file}`",
                    of.v, of.model
                ),
            )
            .with_primary(*file_id, *at..*at + 4, "versions declared here")
            .with_help(format!("add `{file}.sql`, or point the version at its file with `defined_in:`")),
        );
    }
    let unmatched: Vec<(&String, &(FileId, usize, ModelProperties))> = model_props
        .iter()
        .filter(|(name, _)| !model_names.contains(name.as_str()) && !version_of.contains_key(name.as_str()))
        .collect();
    if unmatched.len() > 10 {
        let shown: Vec<&str> = unmatched.iter().take(10).map(|(name, _)| name.as_str()).collect();
        diagnostics.push(Diagnostic::warning(
            Code::YamlUnknownKey,
            format!(
                "{} property entries describe models no file defines (their entries are not used): {}, ...",
                unmatched.len(),
                shown.join(", ")
            ),
        ));
    } else {
        for (name, (file_id, at, _)) in unmatched {
            let diagnostic = Diagnostic::warning(
                Code::YamlUnknownKey,
                format!("`{name}` is described here but no model is named `{name}`; its entry is not used"),
            )
            .with_primary(*file_id, *at..*at + 4, "no such model");
            diagnostics.push(match crate::suggest::did_you_mean(name, model_names.iter().copied()) {
                Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
                None => diagnostic.with_help("rename the entry to a model's file name, or remove it"),
            });
        }
    }
    // dbt snapshots: each `{% snapshot name %}` block is a node materialized as a snapshot, its SQL the block's body
    // (the file's text with all else blanked, so lines and columns stay); and (dbt 1.9) each `snapshots:` entry of
    // the property YAML with a `relation` is one over that relation.
    let snapshot_config = |folders: &[&str], name: &str| {
        let mut snapshot_config = config.tree_config(&config.snapshots_tree, folders);
        if let Some((_, _, props)) = snapshot_props.get(name) {
            if let Some(yaml_config) = &props.config {
                config::merge_config(&mut snapshot_config, yaml_config);
            }
        }
        snapshot_config.insert("materialized".into(), Value::String("snapshot".into()));
        snapshot_config
    };
    let snapshot_file = |name: String, file: FileId, path: String, folders: Vec<String>| {
        let folder_refs: Vec<&str> = folders.iter().map(String::as_str).collect();
        let props = snapshot_props.get(&name);
        ModelFile {
            config: snapshot_config(&folder_refs, &name),
            name,
            file,
            unsupported: None,
            path,
            folders,
            folder_layer: None,
            properties: props.map(|(_, _, p)| p.clone()),
            properties_at: props.map(|(f, at, _)| (*f, *at)),
            version: None,
            package: None,
        }
    };
    for (rel, text) in read_all(&discover(root, &config.snapshot_paths, &["sql"])) {
        let Ok(text) = text else { continue };
        let folders = folders_under(&rel, &config.snapshot_paths);
        for (name, body) in snapshot_blocks(&text) {
            let file = files.add(rel.clone(), body);
            models.push(snapshot_file(name, file, rel.clone(), folders.clone()));
        }
    }
    for (name, (file_id, _, props)) in &snapshot_props {
        let Some(relation) = &props.relation else { continue };
        let path = files.get(*file_id).path.clone();
        let file = files.add(path.clone(), format!("select * from {{{{ {relation} }}}}\n"));
        models.push(snapshot_file(name.clone(), file, path.to_string_lossy().replace('\\', "/"), Vec::new()));
    }

    let mut macro_files = Vec::new();
    for (rel, text) in read_all(&macro_entries) {
        match text {
            Ok(text) => {
                let file = files.add(rel.clone(), text);
                macro_files.push(MacroFile { file, path: rel, package: config.name.clone() });
            }
            Err(err) => diagnostics.push(Diagnostic::error(Code::Io, format!("cannot read `{rel}`: {err}"))),
        }
    }
    for package in &packages {
        for (rel, abs) in discover(&package.dir, &package.macro_paths, &["sql"]) {
            let rel = format!("{}/{rel}", package.display_dir);
            match read_text(&abs) {
                Ok(text) => {
                    let file = files.add(rel.clone(), text);
                    macro_files.push(MacroFile { file, path: rel, package: package.name.clone() });
                }
                Err(err) => diagnostics.push(Diagnostic::error(Code::Io, format!("cannot read `{rel}`: {err}"))),
            }
        }
    }

    let seeds = seed_entries
        .into_iter()
        .map(|Found { package, rel, inner, .. }| {
            let name = Path::new(&rel).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let folders = folders_under(&inner, &seed_paths(package.map(|i| &packages[i])));
            let folder_refs: Vec<&str> = folders.iter().map(String::as_str).collect();
            let mut seed_config = tree_config(|p| &p.seeds_tree, &config.seeds_tree, package, &folder_refs);
            let properties = seed_props.get(&name).cloned();
            if let Some(yaml_config) = properties.as_ref().and_then(|p| p.config.as_ref()) {
                config::merge_config(&mut seed_config, yaml_config);
            }
            SeedFile {
                name,
                path: rel,
                config: seed_config,
                properties,
                package: package.map(|i| packages[i].name.clone()),
            }
        })
        .collect();

    let mut test_files = Vec::new();
    for (rel, text) in read_all(&test_entries) {
        // dbt's unit test fixtures (`tests/fixtures/`) are rows, not tests.
        if rel.split('/').any(|part| part == "fixtures") {
            continue;
        }
        match text {
            // dbt's `tests/generic/`: `{% test %}` blocks are generic tests (macros), not singular tests.
            Ok(text) if defines_test_blocks(&text) => {
                let file = files.add(rel.clone(), text);
                macro_files.push(MacroFile { file, path: rel, package: config.name.clone() });
            }
            Ok(text) => {
                let name = Path::new(&rel).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let file = files.add(rel.clone(), text);
                test_files.push(TestFile { name, file, path: rel });
            }
            Err(err) => diagnostics.push(Diagnostic::error(Code::Io, format!("cannot read `{rel}`: {err}"))),
        }
    }

    let kind = if config.file_name == "dbt_project.yml" { "duckdb" } else { "pipe" };
    let project = Project {
        target: profiles::Target::default_for("dev", kind),
        root: root.to_path_buf(),
        config,
        files,
        project_file,
        models,
        macro_files,
        packages,
        sources,
        seeds,
        test_files,
        versions,
        unit_tests,
    };
    (Ok(project), diagnostics)
}

fn read_project_file(
    root: &Path,
    files: &mut SourceMap,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(FileId, ProjectConfig)> {
    let (file_name, text) = ["pipe.yml", "dbt_project.yml"].into_iter().find_map(|name| {
        let path = root.join(name);
        path.is_file().then(|| (name, read_text(&path)))
    })?;
    let text = match text {
        Ok(text) => text,
        Err(err) => {
            diagnostics.push(Diagnostic::error(Code::Io, format!("cannot read `{file_name}`: {err}")));
            return None;
        }
    };
    let file_id = files.add(file_name, text);
    let file = files.get(file_id);
    let raw: config::RawProjectConfig = match parse_yaml(&file.text) {
        Ok(Some(raw)) => raw,
        Ok(None) => {
            diagnostics.push(
                Diagnostic::error(Code::YamlSyntax, format!("`{file_name}` is empty"))
                    .with_primary(file_id, 0..0, "expected at least `name:`")
                    .with_help("start it with `name: my_project`"),
            );
            return None;
        }
        Err(err) => {
            diagnostics.push(yaml_diagnostic(file_id, file, &err));
            return None;
        }
    };
    // The config trees map folders to configs; anything else would be ignored without a word.
    for (key, tree) in [("models", &raw.models), ("seeds", &raw.seeds)] {
        if let Some(value) = tree.as_ref().filter(|v| !v.is_object() && !v.is_null()) {
            let span = properties::find_key(&file.text, key, 0).unwrap_or(0..0);
            diagnostics.push(
                Diagnostic::error(
                    Code::YamlSyntax,
                    format!("`{key}:` in `{file_name}` must be a mapping, not {value}"),
                )
                .with_primary(file_id, span, "here")
                .with_help(format!("map folders to configs, e.g. `{key}:\n  silver:\n    +materialized: table`")),
            );
            return None;
        }
    }
    for key in raw.other.keys() {
        if DBT_ONLY_KEYS.contains(&key.as_str()) {
            continue;
        }
        let span = properties::find_key(&file.text, key, 0).unwrap_or(0..0);
        let known = config::PROJECT_KEYS.iter().chain(DBT_ONLY_KEYS).copied();
        let diagnostic =
            Diagnostic::warning(Code::YamlUnknownKey, format!("unknown key `{key}` in `{file_name}`; it is ignored"))
                .with_primary(file_id, span, "not a known project key");
        diagnostics.push(match crate::suggest::did_you_mean(key, known) {
            Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
            None => {
                diagnostic.with_help(format!("the project keys pipe reads are {}", config::PROJECT_KEYS.join(", ")))
            }
        });
    }
    let config = ProjectConfig::from_raw(raw, file_name);
    if let Some(bad) = &config.bad_sql_dialect {
        let span = properties::find_key(&file.text, "sql_dialect", 0).unwrap_or(0..0);
        diagnostics.push(
            Diagnostic::error(Code::InvalidConfig, format!("`sql_dialect: {bad}` is not a dialect pipe knows"))
                .with_primary(file_id, span, "here")
                .with_help("write `sql_dialect: duckdb` (DuckDB's semantics) or `sql_dialect: datafusion`"),
        );
    }
    Some((file_id, config))
}

use config::DBT_ONLY_PROJECT_KEYS as DBT_ONLY_KEYS;

/// Parses YAML into `T`; an empty document is `Ok(None)`.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<Option<T>, serde_saphyr::Error> {
    if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Ok(None);
    }
    // A budget that keeps alias bombs out yet lets a property file describe thousands of models.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 50_000_000;
    budget.max_nodes = 20_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    serde_saphyr::from_str_with_options::<T>(text, options).map(Some)
}

fn yaml_diagnostic(file_id: FileId, file: &crate::diagnostics::SourceFile, err: &serde_saphyr::Error) -> Diagnostic {
    let inner = err.without_snippet();
    let mut message = inner.to_string();
    // The message repeats the position the label already shows.
    if let Some(idx) = message.find(" at line ") {
        message.truncate(idx);
    }
    let message = message.lines().next().unwrap_or_default().trim();
    // serde-saphyr's advice is about its own options, not the user's file.
    let message = message.split(", set DuplicateKeyPolicy").next().unwrap_or(message).to_string();
    let offset = err.location().map(|loc| file.offset_of(loc.line() as usize, loc.column() as usize)).unwrap_or(0);
    Diagnostic::error(Code::YamlSyntax, format!("invalid YAML in `{}`: {message}", file.display_path()))
        .with_primary(file_id, offset..offset + 1, "here")
        .with_help("fix the YAML at this position")
}

fn source_def(
    source: &SourceProperties,
    table: SourceTableProperties,
    file: FileId,
    offset: usize,
    text: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> SourceDef {
    // dbt-duckdb's `external_location`: on the table or its source, in `meta:` or `config:`, with `{name}`-style
    // placeholders, either a path or a `read_csv(...)`-style call whose options become the source's options.
    let location = in_config(table.config.as_ref())
        .or_else(|| in_meta(table.meta.as_ref()))
        .or_else(|| in_config(source.config.as_ref()))
        .or_else(|| in_meta(source.meta.as_ref()))
        .map(|template| {
            let identifier = table.identifier.as_deref().unwrap_or(&table.name);
            external::fill(template, &table.name, identifier, &source.name)
        });
    let mut location_options = BTreeMap::new();
    let mut location_format = None;
    let external_path = match location.as_deref().map(external::parse) {
        None => None,
        Some(Ok(parsed)) => {
            location_options = parsed.options;
            location_format = parsed.format;
            Some(parsed.path)
        }
        Some(Err(message)) => {
            let span = properties::find_key(text, "external_location", 0).unwrap_or(offset..offset);
            diagnostics.push(
                Diagnostic::error(Code::InvalidConfig, format!("source `{}.{}`: {message}", source.name, table.name))
                    .with_primary(file, span, "this external location")
                    .with_help("write a path (`data/{name}.csv`) or `read_csv('data/{name}.csv', header=true)`"),
            );
            None
        }
    };
    let path = table.path.clone().or(external_path);
    let format = match table.format.as_deref() {
        Some(text_format) => {
            let parsed = SourceFormat::parse(text_format);
            if parsed.is_none() {
                let span = properties::find_key(text, "format", offset).unwrap_or(offset..offset);
                diagnostics.push(
                    Diagnostic::error(Code::InvalidConfig, format!("unknown source format `{text_format}`"))
                        .with_primary(file, span, "not a supported format")
                        .with_help("use one of `csv`, `json`, `parquet`, `delta`"),
                );
            }
            parsed
        }
        None => location_format.or_else(|| path.as_deref().and_then(SourceFormat::from_path)),
    };
    let mut options = location_options;
    options.extend(table.options.unwrap_or_default());
    // `freshness:` on the table or its source, or in their `config:` (dbt 1.9).
    let in_config_freshness = |config: Option<&ConfigMap>| config.and_then(|c| c.get("freshness")).cloned();
    let source_rule = source.freshness.clone().or_else(|| in_config_freshness(source.config.as_ref()));
    let table_rule = table.freshness.clone().or_else(|| in_config_freshness(table.config.as_ref()));
    let freshness = match FreshnessRule::merged(source_rule.as_ref(), table_rule.as_ref()) {
        Ok(rule) => rule,
        Err(message) => {
            let span = properties::find_key(text, "freshness", offset).unwrap_or(offset..offset);
            diagnostics.push(
                Diagnostic::error(Code::InvalidConfig, format!("source `{}.{}`: {message}", source.name, table.name))
                    .with_primary(file, span, "this freshness")
                    .with_help("write `freshness: {warn_after: {count: 12, period: hour}, error_after: {count: 1, period: day}}`"),
            );
            None
        }
    };
    SourceDef {
        source_name: source.name.clone(),
        table_name: table.name,
        identifier: table.identifier,
        description: table.description,
        format,
        path,
        options,
        columns: table.columns,
        freshness,
        loaded_at_field: table.loaded_at_field.or_else(|| source.loaded_at_field.clone()),
        tests: table.tests.into_iter().chain(table.data_tests).collect(),
        meta: table.meta,
        file,
        offset,
    }
}

/// The names of the `{% snapshot name %}` blocks of a file.
/// The `{% snapshot name %} ... {% endsnapshot %}` blocks of a file: each block's name, and the file's text with
/// everything but the block's body blanked (newlines kept), so positions in the body are positions in the file.
fn snapshot_blocks(text: &str) -> Vec<(String, String)> {
    // Each `{% ... %}` tag: its span and its words.
    let mut tags = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{%").map(|i| i + from) {
        let Some(close) = text[open..].find("%}").map(|i| i + open + 2) else { break };
        let inner = text[open + 2..close - 2].trim_matches(|c: char| c == '-' || c.is_whitespace());
        tags.push((open..close, inner.split_whitespace().map(str::to_string).collect::<Vec<_>>()));
        from = close;
    }
    let mut blocks = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (span, words) in tags {
        match (words.first().map(String::as_str), &open) {
            (Some("snapshot"), None) => {
                let name: String = words
                    .get(1)
                    .map(|w| w.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
                    .unwrap_or_default();
                if !name.is_empty() {
                    open = Some((name, span.end));
                }
            }
            (Some("endsnapshot"), Some((name, body_start))) => {
                let body = *body_start..span.start;
                let blanked: String =
                    text.char_indices().map(|(i, c)| if body.contains(&i) || c == '\n' { c } else { ' ' }).collect();
                blocks.push((name.clone(), blanked));
                open = None;
            }
            _ => {}
        }
    }
    blocks
}

/// Whether a file under the test paths defines `{% test %}` blocks (a generic test file).
fn defines_test_blocks(text: &str) -> bool {
    text.match_indices("{%").any(|(at, _)| text[at + 2..].trim_start_matches('-').trim_start().starts_with("test "))
}

/// The `external_location` in a `meta:` mapping.
fn in_meta(meta: Option<&Value>) -> Option<&str> {
    meta.and_then(|m| m.get("external_location")).and_then(Value::as_str)
}

/// The `external_location` in a `config:` mapping.
fn in_config(config: Option<&ConfigMap>) -> Option<&str> {
    config.and_then(|c| c.get("external_location")).and_then(Value::as_str)
}

/// Files with one of `extensions` under each of `dirs`, as (relative path with `/`, absolute path), sorted.
/// A file found under a model, seed or other path of the project or of one of its packages.
#[derive(Debug, Clone)]
struct Found {
    /// Index of the package in `Project::packages`; `None` for the project's own files.
    package: Option<usize>,
    /// The path shown and stored: relative to the project root (a package's under its folder).
    rel: String,
    /// The path relative to its own project's root (folders are read from it).
    inner: String,
    abs: PathBuf,
}

fn discover(root: &Path, dirs: &[String], extensions: &[&str]) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for dir in dirs {
        let base = root.join(dir);
        if !base.is_dir() {
            continue;
        }
        for entry in walkdir::WalkDir::new(&base).follow_links(true).into_iter().filter_map(Result::ok) {
            let path = entry.path();
            let hidden = path
                .strip_prefix(root)
                .ok()
                .is_some_and(|p| p.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.')));
            let matches = path.extension().is_some_and(|ext| extensions.iter().any(|e| ext == *e));
            if entry.file_type().is_file() && matches && !hidden {
                let rel = path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/");
                found.push((rel, path.to_path_buf()));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn folders_under(rel: &str, roots: &[String]) -> Vec<String> {
    let root = roots.iter().map(|r| r.trim_end_matches('/')).find(|r| rel.starts_with(&format!("{r}/"))).unwrap_or("");
    let inner = rel.strip_prefix(root).unwrap_or(rel).trim_start_matches('/');
    let mut parts: Vec<String> = inner.split('/').map(str::to_string).collect();
    parts.pop();
    parts
}

fn read_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("file is larger than {} MiB", MAX_FILE_BYTES / 1024 / 1024));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    // A byte order mark (editors on Windows write one) is not part of the text.
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

impl Project {
    /// The models and seeds of installed packages, by name, with their package.
    pub fn packaged_nodes(&self) -> BTreeMap<&str, &str> {
        let models = self.models.iter().filter_map(|m| Some((m.name.as_str(), m.package.as_deref()?)));
        models.chain(self.seeds.iter().filter_map(|s| Some((s.name.as_str(), s.package.as_deref()?)))).collect()
    }

    pub fn text(&self, file: FileId) -> &Arc<str> {
        &self.files.get(file).text
    }

    /// Where the warehouse is, as written: the profile target's `warehouse:`, else the project file's.
    pub fn warehouse(&self) -> &str {
        self.target.warehouse.as_deref().unwrap_or(&self.config.warehouse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_relative_to_the_model_path() {
        let roots = vec!["models".to_string()];
        assert_eq!(folders_under("models/silver/orders.sql", &roots), vec!["silver"]);
        assert_eq!(folders_under("models/a/b/c.sql", &roots), vec!["a", "b"]);
        assert!(folders_under("models/c.sql", &roots).is_empty());
    }
}
