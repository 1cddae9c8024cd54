//! What every render of a project shares: the target read from `profiles.yml`, the render context (vars, target,
//! dispatch order, command) and dbt's `graph` as far as it is known before rendering.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::diagnostics::{Code, Diagnostic};
use crate::project::{self, ConfigExt, Project};
use crate::template::{DispatchConfig, RenderContext};

use super::CompileOptions;

/// Reads the target from `profiles.yml` into `project.target`: its schema is where a dbt project's models go.
pub(super) fn resolve_target(project: &mut Project, options: &CompileOptions, diagnostics: &mut Vec<Diagnostic>) {
    if !options.target_name.is_empty() {
        project.target.name = options.target_name.clone();
    }
    let profile = project.config.profile_name().to_string();
    match project::profiles::resolve(&profile, &options.profiles_dirs, options.target.as_deref(), &options.env_vars) {
        Ok(Some(target)) => project.target = target,
        Ok(None) => {
            if let Some(target) = &options.target {
                project.target.name = target.clone();
            }
        }
        Err(message) => diagnostics.push(
            Diagnostic::error(Code::InvalidConfig, message)
                .with_help("fix `profiles.yml`, pass `--target`, or `--profiles-dir` to read another one"),
        ),
    }
}

/// The render context every model of the project shares: vars, target, dispatch. Relations are added by the caller.
pub(super) fn base_context(project: &Project, options: &CompileOptions) -> RenderContext {
    let mut context = RenderContext {
        relations: BTreeMap::new(),
        sources: project.sources.iter().map(|s| (s.source_name.clone(), s.table_name.clone())).collect(),
        source_relations: BTreeMap::new(),
        vars: project.config.vars.clone(),
        env_vars: options.env_vars.clone(),
        run_started_at: options.run_started_at.clone(),
        invocation_id: options.invocation_id.clone(),
        target_name: project.target.name.clone(),
        target_schema: project.target.schema.clone(),
        target_type: project.target.kind.clone(),
        project_name: project.config.name.clone(),
        dispatch: DispatchConfig {
            search_order: project
                .config
                .dispatch
                .iter()
                .map(|rule| (rule.macro_namespace.clone(), rule.search_order.clone()))
                .collect(),
        },
        command: if options.command.is_empty() { "compile".into() } else { options.command.clone() },
        full_refresh: options.full_refresh,
        graph: graph_of(project),
        versions: project.versions.clone(),
        model_packages: project.models.iter().filter_map(|m| Some((m.name.clone(), m.package.clone()?))).collect(),
    };
    context.vars.extend(options.vars.clone());
    context
}

/// dbt's `graph` as far as it is known before rendering: every model and seed (name, path, folder and YAML
/// config, tags) and every source, by unique id.
fn graph_of(project: &Project) -> Value {
    let name = &project.config.name;
    let mut nodes = serde_json::Map::new();
    for model in &project.models {
        let name = model.package.as_ref().unwrap_or(name);
        let unique_id = format!("model.{name}.{}", model.name);
        let mut fqn = vec![name.clone()];
        fqn.extend(model.folders.iter().cloned());
        fqn.push(model.name.clone());
        let node = serde_json::json!({
            "unique_id": unique_id,
            "name": model.name,
            "resource_type": "model",
            "package_name": name,
            "path": model.path,
            "original_file_path": model.path,
            "fqn": fqn,
            "config": model.config,
            "tags": model.config.tags(),
            "description": model.properties.as_ref().and_then(|p| p.description.clone()).unwrap_or_default(),
        });
        nodes.insert(unique_id, node);
    }
    for seed in &project.seeds {
        let name = seed.package.as_ref().unwrap_or(name);
        let unique_id = format!("seed.{name}.{}", seed.name);
        let node = serde_json::json!({
            "unique_id": unique_id,
            "name": seed.name,
            "resource_type": "seed",
            "package_name": name,
            "path": seed.path,
            "original_file_path": seed.path,
            "config": seed.config,
            "tags": seed.config.tags(),
        });
        nodes.insert(unique_id, node);
    }
    let mut sources = serde_json::Map::new();
    for source in &project.sources {
        let unique_id = format!("source.{name}.{}.{}", source.source_name, source.table_name);
        let node = serde_json::json!({
            "unique_id": unique_id,
            "name": source.table_name,
            "source_name": source.source_name,
            "identifier": source.identifier.clone().unwrap_or_else(|| source.table_name.clone()),
            "resource_type": "source",
            "package_name": name,
            "schema": source.source_name,
            "description": source.description.clone().unwrap_or_default(),
            "meta": source.meta.clone().unwrap_or(Value::Null),
        });
        sources.insert(unique_id, node);
    }
    serde_json::json!({ "nodes": nodes, "sources": sources })
}
