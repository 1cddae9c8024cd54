//! The manifest's nodes: a model's node from its config and render (typed settings, relation, columns, logic
//! checksum), a failed model's node, the seeds', sources' and macros' nodes, and their unique ids.

use super::*;

/// Unique ids of the project's nodes, in one naming scheme.
pub(super) struct Ids<'p> {
    project: &'p str,
    /// Models and seeds of installed packages: their ids name their package, as dbt's do.
    packaged: BTreeMap<&'p str, &'p str>,
    /// Snapshots: their ids are `snapshot.<project>.<name>`.
    snapshots: BTreeSet<&'p str>,
}

impl<'p> Ids<'p> {
    pub(super) fn new(project: &'p Project) -> Ids<'p> {
        let snapshots = project.models.iter().filter(|m| m.is_snapshot()).map(|m| m.name.as_str()).collect();
        Ids { project: &project.config.name, packaged: project.packaged_nodes(), snapshots }
    }

    pub(super) fn package(&self, name: &str) -> &str {
        self.packaged.get(name).copied().unwrap_or(self.project)
    }

    pub(super) fn seed(&self, name: &str) -> String {
        format!("seed.{}.{name}", self.package(name))
    }

    /// The id of a model, or of a snapshot by its name.
    pub(super) fn model(&self, name: &str) -> String {
        match self.snapshots.contains(name) {
            true => format!("snapshot.{}.{name}", self.package(name)),
            false => format!("model.{}.{name}", self.package(name)),
        }
    }

    pub(super) fn source(&self, source: &str, table: &str) -> String {
        format!("source.{}.{source}.{table}", self.project)
    }
}

/// A model that failed to render or parse, as a node: its relation (so its dependents' refs resolve), no SQL and
/// no dependencies known; `compile_errors` says why it does not build.
pub(super) fn failed_model_node(project: &Project, ids: &Ids<'_>, context: &RenderContext, model: &ModelFile) -> Node {
    let (settings, _) = model_settings(project, &model.name, &model.config);
    let checksum = hex(&Sha256::digest(project.files.get(model.file).text.as_bytes()));
    model_node_base(project, ids, context, model, model.config.clone(), settings, checksum)
}

/// A model's node from its config, with no SQL or dependencies yet.
pub(super) fn model_node_base(
    project: &Project,
    ids: &Ids<'_>,
    context: &RenderContext,
    model: &ModelFile,
    config: ConfigMap,
    settings: crate::project::ModelSettings,
    checksum: String,
) -> Node {
    let layer = layer_of(model, &config);
    let properties = model.properties.clone().unwrap_or_default();
    Node {
        unique_id: ids.model(&model.name),
        name: model.name.clone(),
        resource_type: if model.is_snapshot() { NodeKind::Snapshot } else { NodeKind::Model },
        layer,
        path: model.path.clone(),
        schema: match context.relations.get(&model.name).and_then(|r| r.rsplit_once('.')) {
            Some((schema, _)) => schema.to_string(),
            // An ephemeral model's CTE: the schema it would have, for docs and selection.
            None => config
                .str_value("schema")
                .map(str::to_string)
                .or_else(|| layer.filter(|_| project.config.file_name == "pipe.yml").map(|l| l.as_str().to_string()))
                .unwrap_or_else(|| project.target.schema.clone()),
        },
        relation: context.relations.get(&model.name).cloned().unwrap_or_default(),
        materialized: config
            .str_value("materialized")
            .and_then(Materialization::parse)
            .unwrap_or(Materialization::View),
        tags: config.tags(),
        description: properties.description.clone(),
        raw_sql: project.files.get(model.file).text.to_string(),
        compiled_sql: String::new(),
        compiled_sql_incremental: None,
        columns: columns_of(&properties.columns),
        planned_columns: None,
        depends_on: manifest::DependsOn::default(),
        tests: properties.tests.iter().chain(&properties.data_tests).cloned().collect(),
        constraints: properties.constraints.clone(),
        checksum,
        config,
        settings,
        render_at_build: false,
        version: model.version.clone(),
    }
}

/// The seed a source table is, when it has no files of its own and its `identifier` (else its name) names a seed:
/// dbt projects load raw data as seeds and read it through `source()`.
pub(super) fn seed_of<'p>(project: &'p Project, source: &project::SourceDef) -> Option<&'p project::SeedFile> {
    if source.path.is_some() {
        return None;
    }
    let identifier = source.identifier.as_deref().unwrap_or(&source.table_name);
    project.seeds.iter().find(|seed| seed.name == identifier)
}

/// Enabled models, first file per name; a second file with the same name is an error naming both.
/// dbt configs that mean nothing for a local warehouse (`grants`, `persist_docs`): accepted, and said once each,
/// A model's manifest node: its config typed and checked, its relation, SQL, columns and checksum.
#[allow(clippy::too_many_arguments)]
pub(super) fn model_node(
    project: &Project,
    ids: &Ids<'_>,
    renderer: &Renderer,
    context: &RenderContext,
    model: &ModelFile,
    result: &ModelResult,
    depends_on: BTreeSet<String>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Node {
    let config = effective_config(model, &result.rendered);
    let (settings, problems) = model_settings(project, &model.name, &config);
    checks::check_config(model, &config, &settings, problems, diagnostics);
    checks::check_relation_names(model, &project.files.get(model.file).text, &config, diagnostics);
    let checksum =
        checksum(project.files.get(model.file).text.as_ref(), &config, &result.rendered.macros, renderer.macros());
    Node {
        compiled_sql: result.rendered.sql.clone(),
        compiled_sql_incremental: result.rendered.sql_incremental.clone(),
        depends_on: manifest::DependsOn {
            nodes: depends_on.into_iter().collect(),
            macros: result.rendered.macros.iter().map(|m| renderer.macros().unique_id(m)).collect(),
        },
        render_at_build: result.rendered.introspective,
        ..model_node_base(project, ids, context, model, config, settings, checksum)
    }
}

/// The seeds' manifest nodes; a seed whose `schema` is not a name, or whose config does not parse, is an error.
pub(super) fn seed_nodes(
    project: &Project,
    ids: &Ids<'_>,
    context: &RenderContext,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for seed in &project.seeds {
        let properties = seed.properties.clone().unwrap_or_default();
        let relation = context.relations.get(&seed.name).cloned().unwrap_or_default();
        let schema = schema_in(&relation, &project.target.schema);
        if let Some(problem) =
            crate::project::name_problem(&schema).or_else(|| schema.contains('.').then_some("it contains a `.`"))
        {
            diagnostics.push(
                Diagnostic::error(
                    Code::InvalidConfig,
                    format!("`schema` of seed `{}` is not a valid name: {problem}", seed.name),
                )
                .with_note(format!("the value is {schema:?}, set in the project file or the seed's YAML"))
                .with_help("`schema` names a schema in the warehouse, not a path: use letters, digits and `_`"),
            );
            continue;
        }
        let seed_text = std::fs::read(project.root.join(&seed.path)).unwrap_or_default();
        let (settings, problems) = crate::project::ModelSettings::parse(&seed.name, &seed.config);
        for problem in problems {
            diagnostics.push(
                Diagnostic::error(
                    Code::InvalidConfig,
                    problem.message.replace("of model", "of seed").replace("on model", "on seed"),
                )
                .with_note("set in the project file or the seed's YAML")
                .with_help(problem.help),
            );
        }
        nodes.push(Node {
            unique_id: ids.seed(&seed.name),
            name: seed.name.clone(),
            resource_type: NodeKind::Seed,
            layer: None,
            path: seed.path.clone(),
            relation,
            schema,
            materialized: Materialization::Table,
            tags: seed.config.tags(),
            description: properties.description.clone(),
            config: seed.config.clone(),
            settings,
            raw_sql: String::new(),
            compiled_sql: String::new(),
            compiled_sql_incremental: None,
            columns: columns_of(&properties.columns),
            planned_columns: None,
            depends_on: manifest::DependsOn::default(),
            tests: properties.tests.iter().chain(&properties.data_tests).cloned().collect(),
            constraints: properties.constraints.clone(),
            checksum: hex(&Sha256::digest(&seed_text)),
            render_at_build: false,
            version: None,
        });
    }
    nodes
}

/// The declared source tables' manifest nodes, their reading options typed and checked.
pub(super) fn source_nodes(
    project: &Project,
    ids: &Ids<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, SourceNode> {
    let mut sources = BTreeMap::new();
    for s in &project.sources {
        let unique_id = ids.source(&s.source_name, &s.table_name);
        let relation = format!("{}.{}", s.source_name, s.table_name);
        let (settings, problems) = crate::project::SourceSettings::parse(&relation, &s.options);
        for problem in problems {
            diagnostics.push(
                Diagnostic::error(Code::InvalidConfig, problem.message)
                    .with_note(format!("declared in `{}`", project.files.get(s.file).display_path()))
                    .with_help(problem.help),
            );
        }
        let node = SourceNode {
            unique_id: unique_id.clone(),
            source_name: s.source_name.clone(),
            name: s.table_name.clone(),
            relation,
            format: s.format,
            path: s.path.clone(),
            options: s.options.clone(),
            settings,
            seed: seed_of(project, s).map(|seed| ids.seed(&seed.name)),
            description: s.description.clone(),
            columns: columns_of(&s.columns),
            planned_columns: None,
            freshness: s.freshness.clone(),
            loaded_at_field: s.loaded_at_field.clone(),
            tests: s.tests.clone(),
            declared_in: project.files.get(s.file).display_path(),
        };
        sources.insert(unique_id, node);
    }
    sources
}

/// The manifest's macro nodes: every macro the project defines, with its file and a checksum of its text.
pub(super) fn macro_nodes(project: &Project, renderer: &Renderer) -> BTreeMap<String, manifest::MacroNode> {
    renderer
        .macros()
        .names()
        .filter_map(|name| renderer.macros().get(name))
        .map(|def| {
            let unique_id = format!("macro.{}.{}", def.package, def.name);
            let node = manifest::MacroNode {
                unique_id: unique_id.clone(),
                name: def.name.clone(),
                path: project.files.get(def.file).display_path(),
                checksum: hex(&Sha256::digest(def.text.as_bytes())),
            };
            (unique_id, node)
        })
        .collect()
}

/// Folder tree and property YAML config, overridden by the model's in-file `config()`.
/// A model's settings; an `external` model without `location` or `external_root` is written under the target's
/// `external_root` (dbt-duckdb's profile setting).
pub(super) fn model_settings(
    project: &Project,
    name: &str,
    config: &ConfigMap,
) -> (crate::project::ModelSettings, Vec<crate::project::settings::SettingProblem>) {
    match &project.target.external_root {
        Some(root) if config.str_value("materialized") == Some("external") && !config.contains_key("location") => {
            let mut config = config.clone();
            config.entry("external_root").or_insert_with(|| Value::String(root.clone()));
            crate::project::ModelSettings::parse(name, &config)
        }
        _ => crate::project::ModelSettings::parse(name, config),
    }
}

pub(super) fn effective_config(model: &ModelFile, rendered: &RenderedModel) -> ConfigMap {
    let mut config = model.config.clone();
    project::config::merge_config(&mut config, &rendered.config);
    config
}

pub(super) fn columns_of(columns: &[project::ColumnProperties]) -> BTreeMap<String, manifest::Column> {
    columns
        .iter()
        .map(|c| {
            let column = manifest::Column {
                name: c.name.clone(),
                description: c.description.clone(),
                data_type: c.data_type.clone(),
                tests: c.tests.iter().chain(&c.data_tests).cloned().collect(),
                constraints: c.constraints.clone(),
            };
            (c.name.clone(), column)
        })
        .collect()
}

/// The logic checksum: raw SQL, the effective config as sorted JSON, and each used macro's text, by name.
pub(super) fn checksum(
    raw_sql: &str,
    config: &ConfigMap,
    macros: &BTreeSet<String>,
    macro_set: &crate::template::MacroSet,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(raw_sql.as_bytes());
    hasher.update(b"\0config\0");
    hasher.update(serde_json::to_string(config).unwrap_or_default().as_bytes());
    for name in macros {
        hasher.update(b"\0macro\0");
        hasher.update(name.as_bytes());
        if let Some(def) = macro_set.get(name) {
            hasher.update(def.text.as_bytes());
        }
    }
    hex(&hasher.finalize())
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
