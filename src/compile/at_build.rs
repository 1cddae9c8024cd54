//! Rendering at build time. A model whose render asks the warehouse (`execute`, `run_query`, `statement`, the
//! adapter's columns or relations; `dbt_utils.star`, `get_column_values`, `union_relations`) cannot be rendered
//! for real at compile, as in dbt, where the parse sees `execute` false. The build renders such a model again just
//! before running it, when its upstream models are in the warehouse, against a `Catalog` the run gives.

use std::collections::BTreeMap;
use std::sync::Arc;

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
        let at_build: Vec<&Node> = manifest.nodes.values().filter(|n| n.render_at_build).collect();
        if at_build.is_empty() && manifest.tests.values().all(|t| t.render_at_build.is_none()) {
            return None;
        }
        let mut context = super::context::base_context(project, options);
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
        Some(BuildRenderer { renderer, context, macro_files, models })
    }

    /// Renders a test whose render asks the warehouse, with `catalog` answering (the session the test runs in).
    pub fn render_test(&self, test: &TestTemplate, catalog: Arc<dyn Catalog>) -> Result<String, Diagnostic> {
        let sources: Vec<MacroSource<'_>> = self
            .macro_files
            .iter()
            .map(|(package, file, source)| MacroSource { package, file: *file, source })
            .collect();
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
        let sources: Vec<MacroSource<'_>> = self
            .macro_files
            .iter()
            .map(|(package, file, source)| MacroSource { package, file: *file, source })
            .collect();
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
