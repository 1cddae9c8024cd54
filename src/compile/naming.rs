//! Where a model or seed is written: its relation `schema.alias`.
//!
//! A `pipe.yml` project names schemas by medallion layer: the `schema` config, else the layer (`bronze`, `silver`,
//! `gold`), else `main`; seeds go to `seeds`, snapshots to `snapshots` (or their `target_schema`). A `dbt_project.yml` project follows dbt: `generate_schema_name` puts
//! a node without a custom schema in the target's schema (`main` unless `profiles.yml` says otherwise) and one with
//! `+schema: x` in `<target schema>_x`, and `generate_alias_name` names it after its `alias` or itself; a project
//! that defines either macro decides instead (rendered per node, with `node` holding its name, config, path and
//! resource type).

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::Value;

use crate::diagnostics::SourceFile;
use crate::project::{ConfigExt, ConfigMap, Layer, Project};
use crate::template::{RenderContext, Renderer};

use super::{CompileOptions, EPHEMERAL_PREFIX};

/// The naming rules of one project.
pub(super) struct Naming {
    dbt: bool,
    target_schema: String,
    /// The project's own `generate_schema_name` / `generate_alias_name`, when it defines one.
    custom: Option<(Renderer, RenderContext, bool, bool)>,
    /// Errors rendering the project's naming macros, each once.
    errors: RefCell<Vec<String>>,
}

/// What the naming macros see as `node`.
pub(super) struct NodeInfo<'a> {
    pub name: &'a str,
    pub resource_type: &'a str,
    pub path: &'a str,
    pub config: &'a ConfigMap,
}

impl Naming {
    pub(super) fn new(project: &Project, options: &CompileOptions) -> Naming {
        let dbt = project.config.file_name == "dbt_project.yml";
        let defines = |name: &str| {
            project
                .macro_files
                .iter()
                .filter(|m| m.package == project.config.name)
                .any(|m| project.files.get(m.file).text.contains(&format!("macro {name}(")))
        };
        let (schema_macro, alias_macro) = (defines("generate_schema_name"), defines("generate_alias_name"));
        let custom = (dbt && (schema_macro || alias_macro)).then(|| {
            let context = super::context::base_context(project, options);
            let sources = super::macro_files(project);
            let (renderer, _) = Renderer::new(Arc::new(context.clone()), &sources);
            (renderer, context, schema_macro, alias_macro)
        });
        Naming { dbt, target_schema: project.target.schema.clone(), custom, errors: RefCell::new(Vec::new()) }
    }

    /// The errors met rendering the project's naming macros.
    pub(super) fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut self.errors.borrow_mut())
    }

    /// The relation of a model or seed with this effective config (`layer` is a model's medallion layer).
    pub(super) fn relation(&self, project: &Project, node: &NodeInfo<'_>, layer: Option<Layer>) -> String {
        if node.config.str_value("materialized") == Some("ephemeral") {
            return format!("{EPHEMERAL_PREFIX}{}", node.name);
        }
        let custom_schema = node.config.str_value("schema");
        let custom_alias = node.config.str_value("alias");
        // A snapshot's legacy `target_schema` is the schema itself, in both kinds of project.
        if let Some(schema) = node.config.str_value("target_schema").filter(|_| node.resource_type == "snapshot") {
            return format!("{schema}.{}", custom_alias.unwrap_or(node.name));
        }
        if !self.dbt {
            let schema = match (custom_schema, node.resource_type) {
                (Some(schema), _) => schema.to_string(),
                (None, "seed") => "seeds".to_string(),
                (None, "snapshot") => "snapshots".to_string(),
                (None, _) => layer.map_or("main", Layer::as_str).to_string(),
            };
            return format!("{schema}.{}", custom_alias.unwrap_or(node.name));
        }
        let schema = match &self.custom {
            Some((renderer, context, true, _)) => {
                self.call(project, renderer, context, "generate_schema_name", custom_schema, node)
            }
            _ => None,
        }
        .unwrap_or_else(|| match custom_schema.map(str::trim) {
            None | Some("") => self.target_schema.clone(),
            Some(custom) => format!("{}_{custom}", self.target_schema),
        });
        let alias = match &self.custom {
            Some((renderer, context, _, true)) => {
                self.call(project, renderer, context, "generate_alias_name", custom_alias, node)
            }
            _ => None,
        }
        .unwrap_or_else(|| custom_alias.unwrap_or(node.name).to_string());
        format!("{schema}.{alias}")
    }

    /// Renders `{{ macro(custom, node) }}`; `None` (and the error kept) when it fails or gives nothing.
    fn call(
        &self,
        project: &Project,
        renderer: &Renderer,
        context: &RenderContext,
        macro_name: &str,
        custom: Option<&str>,
        node: &NodeInfo<'_>,
    ) -> Option<String> {
        let literal = |v: &Value| super::define::jinja_literal(v);
        let node_value = serde_json::json!({
            "name": node.name,
            "resource_type": node.resource_type,
            "path": node.path,
            "original_file_path": node.path,
            "package_name": project.config.name,
            "unique_id": format!("{}.{}.{}", node.resource_type, project.config.name, node.name),
            "config": node.config,
            "tags": node.config.tags(),
        });
        let custom = custom.map_or(Value::Null, |c| Value::String(c.to_string()));
        let text = format!("{{{{ {macro_name}({}, {}) }}}}", literal(&custom), literal(&node_value));
        let file = SourceFile::new(format!("<{macro_name} of {}>", node.name).into(), Arc::from(text.as_str()));
        let sources = super::macro_files(project);
        match renderer.render_model(crate::diagnostics::FileId(0), &file, "", context, &sources) {
            Ok(rendered) => {
                let name = rendered.sql.trim().to_string();
                if name.is_empty() || crate::project::name_problem(&name).is_some() || name.contains('.') {
                    self.keep(format!(
                        "`{macro_name}` gave `{name}` for `{}`, which is not a schema or table name",
                        node.name
                    ));
                    None
                } else {
                    Some(name)
                }
            }
            Err(diagnostic) => {
                self.keep(format!("the project's `{macro_name}` failed for `{}`: {}", node.name, diagnostic.message));
                None
            }
        }
    }

    fn keep(&self, message: String) {
        let mut errors = self.errors.borrow_mut();
        if !errors.contains(&message) {
            errors.push(message);
        }
    }
}
