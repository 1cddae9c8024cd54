//! Rendering at build time. A model whose render asks the warehouse (`execute`, `run_query`, `statement`, the
//! adapter's columns or relations; `dbt_utils.star`, `get_column_values`, `union_relations`) cannot be rendered
//! for real at compile, as in dbt, where the parse sees `execute` false. The build renders such a model again just
//! before running it, when its upstream models are in the warehouse, against a `Catalog` the run gives.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::diagnostics::{Diagnostic, FileId, SourceFile};
use crate::manifest::{Manifest, Node, TestTemplate};
use crate::project::{ConfigMap, Project};
use crate::template::{Catalog, MacroSource, RenderContext, Renderer};

use super::CompileOptions;

/// What the build needs to render the project's introspective models again: the macros, the render context with
/// every relation, and each such model's text and config.
pub struct BuildRenderer {
    renderer: Renderer,
    context: RenderContext,
    macro_files: Vec<(String, FileId, SourceFile)>,
    /// Model name -> (file, text, folder and YAML config).
    models: BTreeMap<String, (FileId, SourceFile, ConfigMap)>,
}

impl std::fmt::Debug for BuildRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRenderer").field("models", &self.models.keys().collect::<Vec<_>>()).finish()
    }
}

fn copy(file: &SourceFile) -> SourceFile {
    SourceFile::new(file.path.clone(), Arc::clone(&file.text))
}

impl BuildRenderer {
    /// `None` when no model of `manifest` is rendered at build time.
    pub fn new(project: &Project, options: &CompileOptions, manifest: &Manifest) -> Option<BuildRenderer> {
        let at_build = manifest.nodes.values().any(|n| n.render_at_build);
        if !at_build && manifest.tests.values().all(|t| t.render_at_build.is_none()) {
            return None;
        }
        Some(BuildRenderer::always(project, options, manifest))
    }

    /// The macro files as the renderer takes them.
    fn macro_sources(&self) -> Vec<MacroSource<'_>> {
        self.macro_files.iter().map(|(package, file, source)| MacroSource { package, file: *file, source }).collect()
    }

    /// A renderer for `manifest` even when no model needs one: `pipe run-operation` calls a macro with it.
    pub fn always(project: &Project, options: &CompileOptions, manifest: &Manifest) -> BuildRenderer {
        BuildRenderer::with_overrides(project, options, manifest, &Overrides::default())
    }

    /// [`BuildRenderer::always`] with `vars` and environment variables set over the project's.
    fn with_overrides(
        project: &Project,
        options: &CompileOptions,
        manifest: &Manifest,
        overrides: &Overrides,
    ) -> BuildRenderer {
        let at_build: Vec<&Node> = manifest.nodes.values().filter(|n| n.render_at_build).collect();
        let mut context = super::context::base_context(project, options);
        context.vars.extend(overrides.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        context.env_vars.extend(overrides.env_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        for node in manifest.nodes.values() {
            context.relations.insert(node.name.clone(), node.relation.clone());
        }
        for source in manifest.sources.values() {
            if let Some(seed) = source.seed.as_ref().and_then(|id| manifest.nodes.get(id)) {
                context
                    .source_relations
                    .insert((source.source_name.clone(), source.name.clone()), seed.relation.clone());
            }
        }
        let macro_files: Vec<(String, FileId, SourceFile)> =
            project.macro_files.iter().map(|m| (m.package.clone(), m.file, copy(project.files.get(m.file)))).collect();
        let sources: Vec<MacroSource<'_>> =
            macro_files.iter().map(|(package, file, source)| MacroSource { package, file: *file, source }).collect();
        let (renderer, _) = Renderer::new(Arc::new(context.clone()), &sources);
        let models = at_build
            .iter()
            .filter_map(|node| {
                let model = project.models.iter().find(|m| m.name == node.name)?;
                Some((node.name.clone(), (model.file, copy(project.files.get(model.file)), model.config.clone())))
            })
            .collect();
        BuildRenderer { renderer, context, macro_files, models }
    }

    /// `pipe run-operation`: calls the macro `name` (or `package.name`) with `args` as keyword arguments, with
    /// `catalog` answering `run_query` and `statement`. Returns what the macro said (`log(..., info=True)`,
    /// `print`); its rendered text is discarded, as dbt discards it.
    pub fn render_operation(
        &self,
        name: &str,
        args: &BTreeMap<String, Value>,
        catalog: Arc<dyn Catalog>,
    ) -> Result<Vec<String>, Diagnostic> {
        let arguments: Vec<String> = args.iter().map(|(k, v)| format!("{k}={}", jinja_literal(v))).collect();
        let text = format!("{{{{ {name}({}) }}}}", arguments.join(", "));
        let sources = self.macro_sources();
        let file = SourceFile::new("<run-operation>".into(), Arc::from(text.as_str()));
        let rendered = self.renderer.render_test_at_build(FileId(0), &file, &self.context, &sources, catalog)?;
        Ok(rendered.logs)
    }

    /// `pipe compile --inline` / `pipe show --inline`: `text` rendered as a model of the project (`ref`, `source`,
    /// macros), with the ephemeral models it reads as CTEs. With a `catalog`, introspection asks it (`show`);
    /// without, it renders as at compile (`execute` false).
    pub fn render_inline(
        &self,
        nodes: &BTreeMap<String, Node>,
        text: &str,
        catalog: Option<Arc<dyn Catalog>>,
    ) -> Result<String, Diagnostic> {
        let sources = self.macro_sources();
        let file = SourceFile::new("<inline>".into(), Arc::from(text));
        let rendered = match catalog {
            Some(catalog) => self.renderer.render_test_at_build(FileId(0), &file, &self.context, &sources, catalog)?,
            None => self.renderer.render_test(FileId(0), &file, &self.context, &sources)?,
        };
        let ephemerals: Vec<(String, String)> = rendered
            .refs
            .iter()
            .filter_map(|dependency| {
                let name = dependency.name.last()?;
                nodes.values().find(|n| &n.name == name && n.materialized == crate::project::Materialization::Ephemeral)
            })
            .map(|node| (node.name.clone(), node.compiled_sql.clone()))
            .collect();
        Ok(match ephemerals.is_empty() {
            true => rendered.sql,
            false => super::ephemeral::with_ctes(&rendered.sql, &ephemerals),
        })
    }

    /// Renders a test whose render asks the warehouse, with `catalog` answering (the session the test runs in).
    pub fn render_test(&self, test: &TestTemplate, catalog: Arc<dyn Catalog>) -> Result<String, Diagnostic> {
        let sources = self.macro_sources();
        let file = SourceFile::new("<test>".into(), Arc::from(test.text.as_str()));
        let rendered = self.renderer.render_test_at_build(FileId(0), &file, &self.context, &sources, catalog)?;
        Ok(super::define::finish_test_sql(&rendered.sql, &test.relation, test.filter.as_deref()))
    }

    /// Renders `node` with `catalog` answering its introspection: its SQL and `is_incremental()` variant, with its
    /// ephemeral upstreams (from `nodes`, which holds at least its direct upstreams) inlined as at compile.
    pub fn render(
        &self,
        nodes: &BTreeMap<String, Node>,
        node: &Node,
        catalog: Arc<dyn Catalog>,
    ) -> Result<(String, Option<String>), Diagnostic> {
        let Some((file_id, file, config)) = self.models.get(&node.name) else {
            return Ok((node.compiled_sql.clone(), node.compiled_sql_incremental.clone()));
        };
        let sources = self.macro_sources();
        let rendered = self.renderer.render_model_at_build(
            *file_id,
            file,
            &node.relation,
            config,
            &self.context,
            &sources,
            catalog,
        )?;
        let inline = |sql: &str| super::ephemeral::inline_into(sql, node, nodes);
        Ok((inline(&rendered.sql), rendered.sql_incremental.as_deref().map(inline)))
    }
}

/// `vars` and environment variables a render sees over the project's (a unit test's `overrides`).
#[derive(Debug, Default)]
pub(super) struct Overrides {
    pub vars: BTreeMap<String, Value>,
    pub env_vars: BTreeMap<String, String>,
}

/// `node` rendered again as at compile, with `overrides`: its SQL and `is_incremental()` variant, ephemeral
/// upstreams inlined. A unit test that overrides `vars` or `env_vars` runs this SQL.
pub(super) fn render_overridden(
    project: &Project,
    options: &CompileOptions,
    manifest: &Manifest,
    node: &Node,
    overrides: &Overrides,
) -> Result<(String, Option<String>), Diagnostic> {
    let renderer = BuildRenderer::with_overrides(project, options, manifest, overrides);
    let Some(model) = project.models.iter().find(|m| m.name == node.name) else {
        return Ok((node.compiled_sql.clone(), node.compiled_sql_incremental.clone()));
    };
    let sources = renderer.macro_sources();
    let file = project.files.get(model.file);
    let rendered = renderer.renderer.render_model_with(
        model.file,
        file,
        &node.relation,
        &model.config,
        &renderer.context,
        &sources,
    )?;
    let inline = |sql: &str| super::ephemeral::inline_into(sql, node, &manifest.nodes);
    Ok((inline(&rendered.sql), rendered.sql_incremental.as_deref().map(inline)))
}

/// A JSON value as a Jinja expression: `none`, `true`, numbers, quoted strings, lists and dicts.
fn jinja_literal(value: &Value) -> String {
    match value {
        Value::Null => "none".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(text) => serde_json::to_string(text).unwrap_or_default(),
        Value::Array(items) => format!("[{}]", items.iter().map(jinja_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap_or_default(), jinja_literal(v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}
