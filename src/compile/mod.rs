//! `compile`: the phases from a project folder to a checked `Manifest`, as plain functions.
//!
//! load (project) -> render (template, in parallel) -> parse (sql, in parallel) -> resolve refs and sources ->
//! graph checks (duplicates, cycles, layer rules) -> inline ephemeral models -> manifest. Each phase adds to one list
//! of diagnostics; the manifest is produced only when no error was found, so no partial output is ever written.

mod at_build;
mod checks;
mod context;
pub mod contract;
pub mod define;
mod ephemeral;
mod naming;
mod nodes;
mod plan;
mod select;
mod unit;

use nodes::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::logical_expr::LogicalPlan;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diagnostics::{sort_diagnostics, Code, Diagnostic, FileId};
use crate::graph::{Dag, NodeId};
use crate::manifest::{self, Manifest, Node, NodeKind, SourceNode};
use crate::project::{self, ConfigExt, ConfigMap, Layer, LayerRules, Materialization, ModelFile, Project};
use crate::sql::{self, AnalyzedModel, SqlOrigin};
use crate::template::{MacroSource, RenderContext, RenderedModel, Renderer};

/// Inputs to a compile besides the project folder.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// `--vars`, over the project's `vars:`.
    pub vars: BTreeMap<String, Value>,
    /// Environment variables `env_var()` can read.
    pub env_vars: BTreeMap<String, String>,
    pub run_started_at: String,
    pub invocation_id: String,
    pub target_name: String,
    /// Type-check every model with DataFusion (off with `--no-plan`).
    pub plan: bool,
    /// Earlier planning results, from `target/plan_cache.json`.
    pub plan_cache: PlanCache,
    /// Keep the logical plan of every model planned (not found in the cache), for a build to execute.
    pub keep_plans: bool,
    /// The command compiling (`flags.WHICH` in templates); `compile` when empty.
    pub command: String,
    /// `--full-refresh` of the build this compile is for.
    pub full_refresh: bool,
    /// Folders to look for `profiles.yml` in, in order (`--profiles-dir`, `DBT_PROFILES_DIR`, the project, `~/.dbt`).
    pub profiles_dirs: Vec<std::path::PathBuf>,
    /// `--target`: the `profiles.yml` target (else the profile's `target:`).
    pub target: Option<String>,
}

pub use at_build::BuildRenderer;
pub use plan::{PlanCache, PlanStats};
pub use select::SelectableGraph;

/// The outcome of a compile: what was built, and everything found on the way.
pub struct Compilation {
    pub project: Option<Project>,
    /// The files read when there is no project (its project file did not load): the diagnostics point into them.
    pub files: crate::diagnostics::SourceMap,
    /// Present when there are no errors.
    pub manifest: Option<Manifest>,
    /// When every error belongs to a model (it did not render, parse, plan or check): the manifest with those
    /// models in `compile_errors`, for a partial build that fails them, skips their descendants and builds the rest.
    pub partial: Option<Manifest>,
    pub diagnostics: Vec<Diagnostic>,
    /// The planning results to keep for the next compile.
    pub plan_cache: PlanCache,
    pub plan_stats: PlanStats,
    /// Per model unique id, how long rendering its Jinja took.
    pub render_times: BTreeMap<String, Duration>,
    /// What models said while rendering (`log(..., info=True)`, `print`), as `model: message`, for the CLI to show.
    pub logs: Vec<String>,
    /// With `keep_plans`: per model unique id, the analyzed logical plan of its compiled SQL.
    pub plans: HashMap<String, LogicalPlan>,
    /// Renders the models whose render asks the warehouse at build time; `None` when there are none.
    pub render_at_build: Option<Arc<BuildRenderer>>,
}

impl Compilation {
    /// The files the diagnostics point into.
    pub fn sources(&self) -> &crate::diagnostics::SourceMap {
        self.project.as_ref().map_or(&self.files, |p| &p.files)
    }
}

/// Prefix of the CTE an ephemeral model is inlined as.
pub use crate::template::EPHEMERAL_PREFIX;

struct ModelResult {
    render_time: Duration,
    rendered: RenderedModel,
    analyzed: AnalyzedModel,
}

/// Compiles the project at `root`.
pub fn compile(root: &Path, options: &CompileOptions) -> Compilation {
    let _span = tracing::info_span!("compile").entered();
    let (project, mut diagnostics) = project::load_project(root);
    let mut project = match project {
        Ok(project) => project,
        Err(files) => {
            if diagnostics.is_empty() {
                diagnostics.push(
                    Diagnostic::error(
                        Code::ProjectNotFound,
                        format!("no `pipe.yml` or `dbt_project.yml` in `{}`", root.display()),
                    )
                    .with_help(
                        "run pipe from a project folder, pass `--project-dir`, or create a project with `pipe init`",
                    ),
                );
            }
            let (plan_cache, plan_stats) = (PlanCache::default(), PlanStats::default());
            return Compilation {
                project: None,
                files,
                manifest: None,
                partial: None,
                diagnostics,
                plan_cache,
                plan_stats,
                render_times: BTreeMap::new(),
                logs: Vec::new(),
                plans: HashMap::new(),
                render_at_build: None,
            };
        }
    };
    context::resolve_target(&mut project, options, &mut diagnostics);
    let mut origins = BTreeMap::new();
    let mut render_times = BTreeMap::new();
    let mut logs = Vec::new();
    let mut manifest =
        build_manifest(&project, options, &mut origins, (&mut render_times, &mut logs), &mut diagnostics);
    let mut plan_cache = PlanCache::default();
    let mut plan_stats = PlanStats::default();
    let mut plans = HashMap::new();
    if let (Some(manifest), true) = (manifest.as_mut(), options.plan) {
        let cache = &options.plan_cache;
        let kept = options.keep_plans.then_some(&mut plans);
        manifest.compile_errors = compile_errors(&diagnostics);
        (plan_cache, plan_stats) =
            plan::plan_manifest(root, manifest, &origins, &project.files, cache, kept, &mut diagnostics);
        check_contracts(manifest, &origins, &mut diagnostics);
    }
    if let Some(manifest) = manifest.as_mut() {
        unit::define(&project, options, manifest, &mut diagnostics);
    }
    // Planning and contract errors are the models' too; an error that belongs to no node stops the project.
    let ids = Ids::new(&project);
    attribute_to_models(&project, &ids, &mut diagnostics);
    sort_diagnostics(&mut diagnostics, &project.files);
    let render_at_build = manifest.as_ref().and_then(|m| BuildRenderer::new(&project, options, m)).map(Arc::new);
    let (manifest, partial) = match manifest {
        Some(manifest) if !diagnostics.iter().any(Diagnostic::is_error) => (Some(manifest), None),
        Some(mut manifest) if !blocks_project(&diagnostics) => {
            manifest.compile_errors = compile_errors(&diagnostics);
            (None, Some(manifest))
        }
        _ => (None, None),
    };
    Compilation {
        project: Some(project),
        files: Default::default(),
        manifest,
        partial,
        diagnostics,
        plan_cache,
        plan_stats,
        render_times,
        logs,
        plans,
        render_at_build,
    }
}

/// Models with an enforced contract: the planned output against the declared columns, every difference listed.
fn check_contracts(
    manifest: &Manifest,
    origins: &BTreeMap<String, plan::ModelOrigin>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for node in manifest.nodes.values().filter(|n| crate::compile::contract::enforced(n)) {
        let Some(columns) = &node.planned_columns else { continue };
        let schema = manifest::PlannedColumn::to_schema(columns);
        let differences = crate::compile::contract::differences(node, &schema);
        if differences.is_empty() {
            continue;
        }
        let mut diagnostic = Diagnostic::error(
            Code::ContractViolation,
            format!("model `{}` does not match its contract ({} difference(s))", node.name, differences.len()),
        );
        if let Some(origin) = origins.get(&node.name) {
            diagnostic = diagnostic.with_primary(origin.file_id, 0..0, "this model's output");
        }
        for difference in differences {
            diagnostic = diagnostic.with_note(difference);
        }
        diagnostics.push(diagnostic.with_help("change the query or the declared `columns:` of the model"));
    }
}

fn layer_of(model: &ModelFile, config: &ConfigMap) -> Option<Layer> {
    model.folder_layer.or_else(|| config.str_value("layer").and_then(Layer::parse))
}

/// The schema part of a relation; the target's schema for an ephemeral model's CTE.
fn schema_in(relation: &str, default: &str) -> String {
    relation.rsplit_once('.').map_or(default, |(schema, _)| schema).to_string()
}

fn model_relation(project: &Project, naming: &naming::Naming, model: &ModelFile, config: &ConfigMap) -> String {
    let resource_type = if model.is_snapshot() { "snapshot" } else { "model" };
    let node = naming::NodeInfo { name: &model.name, resource_type, path: &model.path, config };
    naming.relation(project, &node, layer_of(model, config))
}

fn seed_relation(project: &Project, naming: &naming::Naming, seed: &project::SeedFile) -> String {
    let node = naming::NodeInfo { name: &seed.name, resource_type: "seed", path: &seed.path, config: &seed.config };
    naming.relation(project, &node, None)
}

fn render_and_parse(
    renderer: &Renderer,
    project: &Project,
    models: &[&ModelFile],
    context: &RenderContext,
    macro_files: &[MacroSource<'_>],
) -> Vec<Result<ModelResult, Diagnostic>> {
    let _span = tracing::info_span!("render_and_parse", models = models.len()).entered();
    models
        .par_iter()
        .map(|model| {
            let file = project.files.get(model.file);
            // A dbt Python model: a node that fails with why, so its descendants are skipped, not
            // unknown refs.
            if let Some(kind) = model.unsupported {
                let (what, label, help) = match kind {
                    project::Unsupported::PythonModel => {
                        ("Python model", "a dbt Python model", "write the model in SQL to build it with pipe")
                    }
                };
                return Err(Diagnostic::error(
                    Code::NotSupported,
                    format!("{what} `{}` is not supported by pipe yet", model.name),
                )
                .with_primary(model.file, 0..0, label)
                .with_note("it does not build, nor the models downstream of it; the rest of the project does")
                .with_help(help));
            }
            let this = context.relations.get(&model.name).cloned().unwrap_or_default();
            let started = Instant::now();
            let rendered = renderer.render_model_with(model.file, file, &this, &model.config, context, macro_files)?;
            let render_time = started.elapsed();
            let origin = SqlOrigin { file_id: model.file, file, offsets: &rendered.offsets };
            // A render that asked the warehouse has, at compile, what dbt's parse gives (`star` is `*`,
            // `get_column_values` none): its SQL may not even parse. It is rendered again when the build runs it.
            let analyzed = match sql::analyze(&rendered.sql, &origin, project.config.dialect()) {
                Ok(analyzed) => analyzed,
                Err(_) if rendered.introspective => AnalyzedModel::default(),
                Err(diagnostic) => return Err(diagnostic),
            };
            if let (Some(incremental), false) = (&rendered.sql_incremental, rendered.introspective) {
                sql::analyze(incremental, &origin, project.config.dialect())
                    .map_err(|d| d.with_note("in the `is_incremental()` variant"))?;
            }
            Ok(ModelResult { render_time, rendered, analyzed })
        })
        .collect()
}

/// The models and their render: the one `Renderer`, the render context (with the relations refs render to), and
/// each model's render-and-parse result in `models` order.
struct Rendered<'p> {
    models: Vec<&'p ModelFile>,
    renderer: Renderer,
    context: RenderContext,
    results: Vec<Result<ModelResult, Diagnostic>>,
    /// Macro files failed to parse: undefined-macro errors in models repeat what those errors say.
    macros_broken: bool,
    naming: naming::Naming,
}

/// The names refs and sources resolve against, built once for all models.
struct Names<'p> {
    models: BTreeSet<&'p str>,
    /// Models and seeds, for suggestions.
    refs: Vec<&'p str>,
    /// Declared source tables as `source.table`, for suggestions.
    sources: Vec<String>,
    /// Relation (lowercase) -> model or seed name, for the hidden-dependency check.
    relations: BTreeMap<String, String>,
    /// Source tables that are seeds (`seed_of`): `(source, table)` -> seed name.
    source_seeds: BTreeMap<(String, String), String>,
}

/// What a model reads: its upstream unique ids, the relations its SQL may name (for hidden dependencies), and where
/// each ref or source call is written (for cycle and layer labels).
struct Dependencies {
    depends_on: BTreeSet<String>,
    read_relations: BTreeSet<String>,
    spans: Vec<(String, (FileId, std::ops::Range<usize>))>,
}

fn build_manifest(
    project: &Project,
    options: &CompileOptions,
    origins: &mut BTreeMap<String, plan::ModelOrigin>,
    (render_times, logs): (&mut BTreeMap<String, Duration>, &mut Vec<String>),
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Manifest> {
    let ids = Ids::new(project);
    let models = unique_models(project, diagnostics);
    note_inert_configs(&models, diagnostics);
    let rendered = render_models(project, options, models, diagnostics);

    // Node table: seeds, models, then sources; `NodeId` indexes it.
    let table: Vec<String> = project
        .seeds
        .iter()
        .map(|s| ids.seed(&s.name))
        .chain(rendered.models.iter().map(|m| ids.model(&m.name)))
        .chain(project.sources.iter().map(|s| ids.source(&s.source_name, &s.table_name)))
        .collect();
    let index: BTreeMap<String, NodeId> =
        table.iter().enumerate().map(|(i, id)| (id.clone(), NodeId(i as u32))).collect();

    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    // (upstream, downstream) -> where the downstream's ref is written, for cycle and layer labels.
    let mut edge_spans: BTreeMap<(String, String), (FileId, std::ops::Range<usize>)> = BTreeMap::new();
    let Rendered { models, renderer, context, results, macros_broken, naming } = rendered;
    let names = Names {
        models: models.iter().map(|m| m.name.as_str()).collect(),
        refs: models.iter().map(|m| m.name.as_str()).chain(project.seeds.iter().map(|s| s.name.as_str())).collect(),
        sources: project.sources.iter().map(|s| format!("{}.{}", s.source_name, s.table_name)).collect(),
        relations: context.relations.iter().map(|(name, relation)| (relation.to_lowercase(), name.clone())).collect(),
        source_seeds: project
            .sources
            .iter()
            .filter_map(|s| Some(((s.source_name.clone(), s.table_name.clone()), seed_of(project, s)?.name.clone())))
            .collect(),
    };
    for (model, result) in models.iter().zip(results) {
        let result = match result {
            Ok(result) => result,
            Err(mut diagnostic) => {
                // An error raised inside a macro points at the macro; it is still this model that does not build.
                if diagnostic.primary.as_ref().is_some_and(|label| label.file != model.file) {
                    diagnostic.node = Some(ids.model(&model.name));
                    diagnostic =
                        diagnostic.with_note(format!("while rendering model `{}` ({})", model.name, model.path));
                }
                // With broken macros every model using one fails the same way; the macro error says it once.
                if !(macros_broken && diagnostic.code == Code::JinjaUndefined) {
                    diagnostics.push(diagnostic);
                }
                // The model stays in the graph (its dependents' refs name it) as a node that failed to compile.
                let node = failed_model_node(project, &ids, &context, model);
                nodes.insert(node.unique_id.clone(), node);
                continue;
            }
        };
        let unique_id = ids.model(&model.name);
        render_times.insert(unique_id.clone(), result.render_time);
        let mut said: Vec<&String> = result.rendered.logs.iter().collect();
        said.dedup();
        logs.extend(said.into_iter().map(|line| format!("{}: {line}", model.name)));
        origins.insert(
            model.name.clone(),
            plan::ModelOrigin {
                file_id: model.file,
                rendered_sql: result.rendered.sql.clone(),
                offsets: result.rendered.offsets.clone(),
            },
        );
        let dependencies = resolve_dependencies(project, &ids, &names, &context, model, &result, diagnostics);
        for (upstream, span) in dependencies.spans {
            edge_spans.insert((upstream, unique_id.clone()), span);
        }
        for upstream in &dependencies.depends_on {
            edges.insert((upstream.clone(), unique_id.clone()));
        }
        let node = model_node(project, &ids, &renderer, &context, model, &result, dependencies.depends_on, diagnostics);
        nodes.insert(unique_id, node);
    }
    for message in naming.take_errors() {
        diagnostics.push(Diagnostic::error(Code::JinjaRender, message));
    }
    for node in seed_nodes(project, &ids, &context, diagnostics) {
        nodes.insert(node.unique_id.clone(), node);
    }
    let sources = source_nodes(project, &ids, diagnostics);

    // Graph checks: cycles and medallion layer rules. A cycle leaves no order to build in: it stops the compile.
    let dag = Dag::new(table.len(), edges.iter().filter_map(|(a, b)| Some((*index.get(a)?, *index.get(b)?))));
    let mut cyclic = false;
    for cycle in dag.cycles(|n| table[n.index()].clone()) {
        diagnostics.push(checks::cycle_diagnostic(&cycle, &table, &nodes, &edge_spans));
        cyclic = true;
    }
    if project.config.layer_rules != LayerRules::Off {
        checks::check_layers(project, &nodes, &sources, &edges, &edge_spans, diagnostics);
    }
    attribute_to_models(project, &ids, diagnostics);
    if cyclic || blocks_project(diagnostics) {
        return None;
    }

    let order: Vec<String> =
        dag.topological_order(|n| table[n.index()].clone()).into_iter().map(|n| table[n.index()].clone()).collect();
    ephemeral::inline_ephemerals(&mut nodes, &order);

    let mut manifest = Manifest {
        manifest_version: manifest::MANIFEST_VERSION,
        project: manifest::ProjectInfo {
            name: project.config.name.clone(),
            warehouse: project.warehouse().to_string(),
            target_path: project.config.target_path.clone(),
            sql_dialect: project.config.dialect(),
            bucket: project.target.bucket.clone(),
        },
        nodes,
        sources,
        macros: macro_nodes(project, &renderer),
        edges: edges.into_iter().collect(),
        order,
        tests: BTreeMap::new(),
        compile_errors: BTreeMap::new(),
    };
    let before = diagnostics.len();
    manifest.tests = crate::compile::define::test_nodes(project, &manifest, &renderer, &context, diagnostics);
    // A test that cannot be defined is left out; it does not stop the models from building.
    for diagnostic in &mut diagnostics[before..] {
        diagnostic.node.get_or_insert_with(|| "test".to_string());
    }
    Some(manifest)
}

/// Marks each error whose primary label is in a model's file as that model's: it fails the model, not the project.
fn attribute_to_models(project: &Project, ids: &Ids<'_>, diagnostics: &mut [Diagnostic]) {
    let by_file: HashMap<FileId, String> = project.models.iter().map(|m| (m.file, ids.model(&m.name))).collect();
    for diagnostic in diagnostics.iter_mut().filter(|d| d.is_error() && d.node.is_none()) {
        if let Some(id) = diagnostic.primary.as_ref().and_then(|label| by_file.get(&label.file)) {
            diagnostic.node = Some(id.clone());
        }
    }
}

/// Whether an error belongs to no node (a broken project file, a cycle, a bad seed or source): then nothing builds.
fn blocks_project(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(|d| d.is_error() && d.node.is_none())
}

/// Per model, its first error: what the build reports for it.
fn compile_errors(diagnostics: &[Diagnostic]) -> BTreeMap<String, manifest::CompileError> {
    let mut errors = BTreeMap::new();
    for diagnostic in diagnostics.iter().filter(|d| d.is_error()) {
        let Some(id) = diagnostic.node.as_ref().filter(|id| id.starts_with("model.")) else { continue };
        errors.entry(id.clone()).or_insert_with(|| manifest::CompileError {
            code: diagnostic.code.id().to_string(),
            message: diagnostic.message.clone(),
        });
    }
    errors
}

/// naming the models, rather than silently ignored.
fn note_inert_configs(models: &[&ModelFile], diagnostics: &mut Vec<Diagnostic>) {
    for (key, why) in [
        ("grants", "a local warehouse has no users to grant to"),
        ("persist_docs", "descriptions are in the manifest and the docs site, not written into the tables"),
    ] {
        let using: Vec<&str> = models.iter().filter(|m| m.config.contains_key(key)).map(|m| m.name.as_str()).collect();
        if using.is_empty() {
            continue;
        }
        let shown = if using.len() > 5 { format!("{}, ...", using[..5].join(", ")) } else { using.join(", ") };
        diagnostics.push(
            Diagnostic::warning(
                Code::NotSupported,
                format!("`{key}` is accepted and has no effect in pipe ({} model(s): {shown})", using.len()),
            )
            .with_note(why),
        );
    }
}

fn unique_models<'p>(project: &'p Project, diagnostics: &mut Vec<Diagnostic>) -> Vec<&'p ModelFile> {
    let mut by_name: BTreeMap<&str, &ModelFile> = BTreeMap::new();
    for model in project.models.iter().filter(|m| m.config.enabled()) {
        if let Some(first) = by_name.get(model.name.as_str()) {
            diagnostics.push(
                Diagnostic::error(Code::DuplicateModel, format!("two models are named `{}`", model.name))
                    .with_primary(model.file, 0..0, "second model with this name")
                    .with_secondary(first.file, 0..0, format!("first defined here: `{}`", first.path))
                    .with_note(format!("files: `{}` and `{}`", first.path, model.path))
                    .with_help("rename one of the files; a model's name is its file name"),
            );
        } else {
            by_name.insert(&model.name, model);
        }
    }
    by_name.into_values().collect()
}

/// Renders and parses every model (in parallel) against the project's render context. An in-file `config()` can
/// change a model's layer, schema or materialization, and so the relation its dependents' refs render to: that is
/// rare, and then everything is rendered once more with the corrected relations.
fn render_models<'p>(
    project: &'p Project,
    options: &CompileOptions,
    models: Vec<&'p ModelFile>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Rendered<'p> {
    let naming = naming::Naming::new(project, options);
    let mut context = context::base_context(project, options);
    for seed in &project.seeds {
        context.relations.insert(seed.name.clone(), seed_relation(project, &naming, seed));
    }
    // A source table with no files of its own that names a seed (dbt projects load raw data as seeds and read it
    // through `source()`): `source()` renders to the seed's relation, and the model depends on the seed.
    for source in &project.sources {
        if let Some(seed) = seed_of(project, source) {
            let key = (source.source_name.clone(), source.table_name.clone());
            context.source_relations.insert(key, context.relations[&seed.name].clone());
        }
    }
    for model in &models {
        context.relations.insert(model.name.clone(), model_relation(project, &naming, model, &model.config));
    }

    let macro_files = macro_files(project);
    let (mut renderer, macro_diagnostics) = Renderer::new(Arc::new(context.clone()), &macro_files);
    let macros_broken = !macro_diagnostics.is_empty();
    diagnostics.extend(macro_diagnostics);
    let mut results = render_and_parse(&renderer, project, &models, &context, &macro_files);

    let mut changed = false;
    for (model, result) in models.iter().zip(&results) {
        if let Ok(result) = result {
            let config = effective_config(model, &result.rendered);
            let relation = model_relation(project, &naming, model, &config);
            if context.relations.get(&model.name) != Some(&relation) {
                context.relations.insert(model.name.clone(), relation);
                changed = true;
            }
        }
    }
    if changed {
        renderer = Renderer::new(Arc::new(context.clone()), &macro_files).0;
        results = render_and_parse(&renderer, project, &models, &context, &macro_files);
    }
    Rendered { models, renderer, context, results, macros_broken, naming }
}

pub(crate) fn macro_files(project: &Project) -> Vec<MacroSource<'_>> {
    project
        .macro_files
        .iter()
        .map(|m| MacroSource { package: &m.package, file: m.file, source: project.files.get(m.file) })
        .collect()
}

/// A model's `ref`s and `source`s resolved to unique ids; an unknown one is an error with a suggestion. Also runs
/// the hidden-dependency check over the relations its SQL names.
fn resolve_dependencies(
    project: &Project,
    ids: &Ids<'_>,
    names: &Names<'_>,
    context: &RenderContext,
    model: &ModelFile,
    result: &ModelResult,
    diagnostics: &mut Vec<Diagnostic>,
) -> Dependencies {
    let mut found = Dependencies { depends_on: BTreeSet::new(), read_relations: BTreeSet::new(), spans: Vec::new() };
    for dep in &result.rendered.refs {
        let name = &dep.name[0];
        let span = dep.span.clone().unwrap_or(0..0);
        let upstream = if names.models.contains(name.as_str()) {
            Some(ids.model(name))
        } else if project.seeds.iter().any(|s| &s.name == name) {
            Some(ids.seed(name))
        } else {
            None
        };
        match upstream {
            Some(upstream) => {
                if let Some(relation) = context.relations.get(name) {
                    found.read_relations.insert(relation.to_lowercase());
                }
                found.spans.push((upstream.clone(), (model.file, span)));
                found.depends_on.insert(upstream);
            }
            None => {
                // The unresolved ref renders as the bare name; it is not also a hidden dependency.
                found.read_relations.insert(name.to_lowercase());
                let mut diagnostic =
                    Diagnostic::error(Code::RefNotFound, format!("`ref('{name}')` does not name a model or seed"))
                        .with_primary(model.file, span, "no model with this name");
                diagnostic = match crate::suggest::did_you_mean(name, names.refs.iter().copied()) {
                    Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
                    None => diagnostic.with_help(format!("add `models/.../{name}.sql`, or correct the name")),
                };
                diagnostics.push(diagnostic);
            }
        }
    }
    for dep in &result.rendered.sources {
        let (source_name, table) = (&dep.name[0], &dep.name[1]);
        let span = dep.span.clone().unwrap_or(0..0);
        let relation = format!("{source_name}.{table}");
        found.read_relations.insert(relation.to_lowercase());
        let key = (source_name.clone(), table.clone());
        if let Some(seed) = names.source_seeds.get(&key) {
            // A source that is a seed: the model reads (and is ordered after) the seed.
            if let Some(seed_relation) = context.relations.get(seed) {
                found.read_relations.insert(seed_relation.to_lowercase());
            }
            found.spans.push((ids.seed(seed), (model.file, span.clone())));
            found.depends_on.insert(ids.seed(seed));
        } else if context.sources.contains(&key) {
            let upstream = ids.source(source_name, table);
            found.spans.push((upstream.clone(), (model.file, span)));
            found.depends_on.insert(upstream);
        } else {
            let mut diagnostic = Diagnostic::error(
                Code::SourceNotFound,
                format!("`source('{source_name}', '{table}')` is not declared"),
            )
            .with_primary(model.file, span, "no source table with this name");
            diagnostic = match crate::suggest::did_you_mean(&relation, names.sources.iter().map(String::as_str)) {
                Some(close) => {
                    let (s, t) = close.split_once('.').unwrap_or((close, ""));
                    diagnostic.with_help(format!("did you mean `source('{s}', '{t}')`?"))
                }
                None => diagnostic.with_help(format!(
                    "declare it in a YAML file under `models/`:\n  sources:\n    - name: {source_name}\n      tables:\n        - name: {table}"
                )),
            };
            diagnostics.push(diagnostic);
        }
    }
    checks::check_hidden_dependencies(
        model,
        project.files.get(model.file),
        result,
        &found.read_relations,
        &names.relations,
        diagnostics,
    );
    found
}
