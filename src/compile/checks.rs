//! The graph and config checks of compile: materialization and layer config, bronze's append-only rule,
//! hidden dependencies, whole cycles and the medallion layer rules. Each appends diagnostics; none stops the compile.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostics::{Code, Diagnostic, FileId, SourceFile};
use crate::graph::NodeId;
use crate::manifest::{Node, NodeKind, SourceNode};
use crate::project::settings::{IncrementalStrategy, ModelSettings, OnSchemaChange, SettingProblem};
use crate::project::{ConfigExt, ConfigMap, Layer, LayerRules, Materialization, ModelFile, Project};
use crate::sql::{self, SqlOrigin};

use super::{layer_of, ModelResult, EPHEMERAL_PREFIX};

/// `schema`, `alias` and `database` name a relation: identifiers, never paths. A value that is not one is an error
/// pointing at where the model's file writes it (else at the file, when a folder or YAML sets it).
pub(super) fn check_relation_names(
    model: &ModelFile,
    text: &str,
    config: &ConfigMap,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for key in ["schema", "alias", "database"] {
        let Some(value) = config.str_value(key) else { continue };
        let problem = crate::project::name_problem(value)
            .or_else(|| (key != "database" && value.contains('.')).then_some("it contains a `.`"));
        let Some(problem) = problem else { continue };
        let span = match text.find(value).filter(|_| !value.is_empty()) {
            Some(at) => at..at + value.len(),
            None => 0..0,
        };
        let label = if span.is_empty() { "configured in its folder or YAML" } else { "this value" };
        diagnostics.push(
            Diagnostic::error(
                Code::InvalidConfig,
                format!("`{key}` of model `{}` is not a valid name: {problem}", model.name),
            )
            .with_primary(model.file, span, label)
            .with_note(format!("the value is {:?}", value))
            .with_help(format!(
                "`{key}` names a relation in the warehouse, not a path: use letters, digits and `_`, e.g. `{key}='analytics'`"
            )),
        );
    }
}

/// The most batches a microbatch model's first build may compute (`run`'s own bound is the same).
const MAX_MICROBATCHES: i64 = 100_000;

pub(super) fn check_config(
    model: &ModelFile,
    config: &ConfigMap,
    settings: &ModelSettings,
    problems: Vec<SettingProblem>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let invalid = |message: String, help: &str| {
        Diagnostic::error(Code::InvalidConfig, message)
            .with_primary(model.file, 0..0, "configured here or in its folder or YAML")
            .with_help(help.to_string())
    };
    if let Some(materialized) = config.get("materialized") {
        // Materializations of dbt and its adapters pipe does not have yet: "not supported", not a typo.
        let known_elsewhere = ["materialized_view", "dynamic_table", "snapshot", "seed", "test"];
        // A snapshot is a `{% snapshot %}` block under the snapshot paths (or a YAML `snapshots:` entry).
        let snapshot_block = model.is_snapshot() && materialized.as_str() == Some("snapshot");
        if let Some(name) = materialized.as_str().filter(|m| known_elsewhere.contains(m) && !snapshot_block) {
            diagnostics.push(
                Diagnostic::error(
                    Code::NotSupported,
                    format!("materialization `{name}` of model `{}` is not supported by pipe yet", model.name),
                )
                .with_primary(model.file, 0..0, "configured here or in its folder or YAML")
                .with_note("this model does not build, nor the models downstream of it; the rest of the project does")
                .with_help("pipe materializes `view`, `table`, `ephemeral`, `incremental` and `external` models"),
            );
        } else if materialized.as_str().and_then(Materialization::parse).is_none() {
            diagnostics.push(invalid(
                format!("unknown materialization {materialized} on model `{}`", model.name),
                "use one of `view`, `table`, `ephemeral`, `incremental`, `external`",
            ));
        }
    }
    if let Some(layer) = config.get("layer") {
        if layer.as_str().and_then(Layer::parse).is_none() {
            diagnostics.push(invalid(
                format!("unknown layer {layer} on model `{}`", model.name),
                "use one of `bronze`, `silver`, `gold`",
            ));
        }
    }
    for problem in problems {
        diagnostics.push(invalid(problem.message, &problem.help));
    }
    for (key, close) in crate::project::settings::likely_typos(config) {
        diagnostics.push(
            Diagnostic::warning(Code::InvalidConfig, format!("unknown config `{key}` on model `{}`", model.name))
                .with_primary(model.file, 0..0, "configured here or in its folder or YAML")
                .with_help(format!("did you mean `{close}`? (an unknown key is kept in the model's config, unused)")),
        );
    }
    // Bronze is append-only: a strategy that updates, deletes or replaces rows would lose raw data.
    let layer = layer_of(model, config);
    let incremental = config.str_value("materialized") == Some("incremental");
    if let (Some(Layer::Bronze), true, Some(strategy)) = (layer, incremental, settings.incremental_strategy) {
        if strategy != IncrementalStrategy::Append {
            diagnostics.push(invalid(
                format!(
                    "bronze model `{}` uses incremental strategy `{}`; bronze is append-only",
                    model.name,
                    strategy.as_str()
                ),
                "use `incremental_strategy='append'` in bronze, and deduplicate or merge in silver",
            ));
        }
    }
    if let Some(microbatch) = &settings.microbatch {
        // The first build computes every batch since `begin`: a begin centuries ago is a typo.
        let batches = (chrono::Utc::now() - microbatch.begin).num_hours() / microbatch.batch_size.hours();
        if batches > MAX_MICROBATCHES {
            let begin = config.str_value("begin").unwrap_or_default();
            diagnostics.push(invalid(
                format!(
                    "`begin: {begin}` of microbatch model `{}` is about {batches} batches ago, more than the {MAX_MICROBATCHES} a build runs",
                    model.name
                ),
                "set `begin` to when the model's data starts, or use a larger `batch_size`",
            ));
        }
    }
    if settings.on_schema_change == OnSchemaChange::SyncAllColumns && layer == Some(Layer::Bronze) {
        diagnostics.push(invalid(
            format!("unsupported `on_schema_change: sync_all_columns` on model `{}`", model.name),
            "bronze keeps every column it ever ingested; use `append_new_columns`",
        ));
    }
}

pub(super) fn check_hidden_dependencies(
    model: &ModelFile,
    file: &SourceFile,
    result: &ModelResult,
    read_relations: &BTreeSet<String>,
    known_relations: &BTreeMap<String, String>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let origin = SqlOrigin { file_id: model.file, file, offsets: &result.rendered.offsets };
    let mut reported = BTreeSet::new();
    for relation in &result.analyzed.relations {
        let name = &relation.name;
        if read_relations.contains(name) || result.analyzed.ctes.contains(name) || name.starts_with(EPHEMERAL_PREFIX) {
            continue;
        }
        if !reported.insert(name.clone()) {
            continue;
        }
        let (span, _) = sql::map_span(&origin, relation.span.clone());
        let help = match known_relations.get(name) {
            Some(model_name) => {
                format!("this is model `{model_name}`: write `{{{{ ref('{model_name}') }}}}` so pipe orders it")
            }
            None => "read it through `{{ ref('...') }}` or `{{ source('...', '...') }}` so pipe knows the dependency"
                .to_string(),
        };
        diagnostics.push(
            Diagnostic::warning(Code::HiddenDependency, format!("`{name}` is neither a ref, a source nor a CTE"))
                .with_primary(model.file, span, "hidden dependency")
                .with_help(help),
        );
    }
}

pub(super) fn cycle_diagnostic(
    cycle: &[NodeId],
    ids: &[String],
    nodes: &BTreeMap<String, Node>,
    edge_spans: &BTreeMap<(String, String), (FileId, std::ops::Range<usize>)>,
) -> Diagnostic {
    let name = |id: &str| nodes.get(id).map_or(id.to_string(), |n| n.name.clone());
    let mut path: Vec<String> = cycle.iter().map(|n| name(&ids[n.index()])).collect();
    path.push(path[0].clone());
    let mut diagnostic = Diagnostic::error(Code::Cycle, format!("dependency cycle: {}", path.join(" -> ")));
    for (i, node) in cycle.iter().enumerate() {
        let from = &ids[node.index()];
        let to = &ids[cycle[(i + 1) % cycle.len()].index()];
        // The ref that makes `to` read `from` is written in `to`'s file.
        if let Some((file, span)) = edge_spans.get(&(from.clone(), to.clone())) {
            let message = format!("`{}` reads `{}` here", name(to), name(from));
            diagnostic = if diagnostic.primary.is_none() {
                diagnostic.with_primary(*file, span.clone(), message)
            } else {
                diagnostic.with_secondary(*file, span.clone(), message)
            };
        }
    }
    diagnostic.with_help("remove one of these refs to break the cycle")
}

pub(super) fn check_layers(
    project: &Project,
    nodes: &BTreeMap<String, Node>,
    sources: &BTreeMap<String, SourceNode>,
    edges: &BTreeSet<(String, String)>,
    edge_spans: &BTreeMap<(String, String), (FileId, std::ops::Range<usize>)>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for (upstream, downstream) in edges {
        let Some(child) = nodes.get(downstream) else {
            continue;
        };
        let Some(child_layer) = child.layer else {
            continue;
        };
        let (parent_layer, parent_name, parent_path) = match nodes.get(upstream) {
            Some(parent) if parent.resource_type == NodeKind::Seed => continue,
            Some(parent) => match parent.layer {
                Some(layer) => (layer.as_str(), parent.name.clone(), parent.path.clone()),
                None => continue,
            },
            None => match sources.get(upstream) {
                Some(source) => ("source", source.relation.clone(), String::new()),
                None => continue,
            },
        };
        let allowed: &[&str] = match child_layer {
            Layer::Bronze => &["source"],
            Layer::Silver => &["bronze", "silver"],
            Layer::Gold => &["silver", "gold"],
        };
        if allowed.contains(&parent_layer) {
            continue;
        }
        let Some((file, span)) = edge_spans.get(&(upstream.clone(), downstream.clone())) else {
            continue;
        };
        let what = if parent_layer == "source" { "source".to_string() } else { format!("{parent_layer} model") };
        let mut diagnostic = Diagnostic::error(
            Code::LayerViolation,
            format!("{child_layer} model `{}` reads {what} `{parent_name}`", child.name),
        )
        .with_primary(*file, span.clone(), format!("{child_layer} reads {parent_layer} here"))
        .with_note(format!("{child_layer} may read only {}", allowed.join(" or ")))
        .with_help("read through the layer in between, or set `layer-rules: warn` in the project file");
        if let Some(parent_file) = project.models.iter().find(|m| m.path == parent_path).map(|m| m.file) {
            diagnostic = diagnostic.with_secondary(
                parent_file,
                0..0,
                format!("`{parent_name}` is a {parent_layer} model: `{parent_path}`"),
            );
        }
        if project.config.layer_rules == LayerRules::Warn {
            diagnostic.severity = crate::diagnostics::Severity::Warning;
        }
        diagnostics.push(diagnostic);
    }
}
