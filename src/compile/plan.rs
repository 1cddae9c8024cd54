//! The planning phase of compile: type-checks every model with DataFusion against its inputs' schemas, in
//! topological levels (each level in parallel on rayon), and records each model's output columns in the manifest.
//!
//! Results are cached in `target/plan_cache.json` by a key over the model's compiled SQL and its inputs' schemas:
//! after an edit, only the edited model and the models whose inputs changed are planned again.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diagnostics::{Code, Diagnostic, FileId, SourceFile, SourceMap};
use crate::manifest::{Manifest, NodeKind, PlannedColumn};
use crate::project::{Materialization, SourceFormat};
use crate::sql::plan::{PlanError, StaticPlanner};
use crate::sql::{self, source_schema, SqlOrigin};
use crate::template::OffsetMap;

/// Planned output columns by cache key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanCache {
    pub entries: BTreeMap<String, Vec<PlannedColumn>>,
}

impl PlanCache {
    pub fn read(path: &Path) -> PlanCache {
        std::fs::read_to_string(path).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::files::write_atomic(path, serde_json::to_string(self).map_err(std::io::Error::other)?.as_bytes())
    }
}

/// How much planning a compile did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub planned: usize,
    pub cached: usize,
}

/// Where a model's rendered SQL came from, to point planning errors at the model file.
pub(crate) struct ModelOrigin {
    pub file_id: FileId,
    pub rendered_sql: String,
    pub offsets: OffsetMap,
}

/// Reads source and seed schemas from their files; a source that cannot be read is a warning and its readers are
/// not type-checked.
fn input_schemas(
    project_root: &Path,
    manifest: &Manifest,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<String, SchemaRef> {
    let mut schemas = HashMap::new();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return schemas;
    };
    let ctx = SessionContext::new();
    let state = ctx.state();
    runtime.block_on(async {
        for source in manifest.sources.values() {
            let (Some(path), Some(format)) = (&source.path, source.format) else { continue };
            let schema = if format == SourceFormat::Delta {
                read_delta_schema(project_root, path).await
            } else {
                match source_schema::listing(project_root, path, format, &source.settings) {
                    Ok((url, listing)) => {
                        source_schema::infer(&state, &url, &listing, path, &source.declared_types()).await
                    }
                    Err(err) => Err(err),
                }
            };
            match schema {
                Ok(schema) => {
                    schemas.insert(source.relation.to_lowercase(), schema);
                }
                Err(err) => diagnostics.push(
                    Diagnostic::warning(Code::PlanError, format!("source `{}` cannot be read: {err}", source.relation))
                        .with_help("models reading it are not type-checked until its files exist"),
                ),
            }
        }
        for node in manifest.nodes.values().filter(|n| n.resource_type == NodeKind::Seed) {
            let declared = node.columns.values().filter_map(|c| Some((c.name.clone(), c.data_type.clone()?))).collect();
            let listed = source_schema::listing(
                project_root,
                &node.path,
                SourceFormat::Csv,
                &crate::project::SourceSettings::default(),
            );
            if let Ok((url, listing)) = listed {
                if let Ok(schema) = source_schema::infer(&state, &url, &listing, &node.path, &declared).await {
                    schemas.insert(node.relation.to_lowercase(), stored_schema(&schema));
                }
            }
        }
    });
    schemas
}

async fn read_delta_schema(project_root: &Path, path: &str) -> Result<SchemaRef, String> {
    let dir = project_root.join(path).canonicalize().map_err(|e| e.to_string())?;
    let url = url::Url::from_directory_path(dir).map_err(|()| "not an absolute path".to_string())?;
    let table = deltalake::open_table(url).await.map_err(|e| e.to_string())?;
    let provider = table.table_provider().await.map_err(|e| e.to_string())?;
    Ok(provider.schema())
}

/// The schema a Delta table written with `schema` reads back with in a build: delta-rs reads strings and binaries
/// as views and stores timestamps in microseconds. Downstream models are planned against these types, so the
/// compile's plan is the plan the build executes.
fn stored_schema(schema: &SchemaRef) -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let stored = |data_type: &DataType| match data_type {
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
        DataType::Binary | DataType::LargeBinary => DataType::BinaryView,
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        other => other.clone(),
    };
    let fields: Vec<Field> =
        schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(stored(f.data_type()))).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A snapshot's table: its query's columns, then `dbt_scd_id`, `dbt_updated_at`, `dbt_valid_from`, `dbt_valid_to`
/// (named as its `snapshot_meta_column_names` say), and with `hard_deletes: new_record`, `dbt_is_deleted`.
fn snapshot_schema(schema: &SchemaRef, settings: &crate::project::ModelSettings) -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let Some(snapshot) = &settings.snapshot else { return Arc::clone(schema) };
    let columns = &snapshot.columns;
    let time = DataType::Timestamp(TimeUnit::Microsecond, None);
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(&columns.scd_id, DataType::Utf8, true));
    for name in [&columns.updated_at, &columns.valid_from, &columns.valid_to] {
        fields.push(Field::new(name, time.clone(), true));
    }
    if snapshot.hard_deletes == crate::project::settings::HardDeletes::NewRecord {
        fields.push(Field::new(&columns.is_deleted, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

/// Relations a model's compiled SQL reads: its upstreams, looking through inlined ephemeral models.
fn input_relations(manifest: &Manifest, id: &str) -> Vec<String> {
    let mut relations = Vec::new();
    let Some(node) = manifest.nodes.get(id) else { return relations };
    for upstream in &node.depends_on.nodes {
        match (manifest.nodes.get(upstream), manifest.sources.get(upstream)) {
            (Some(up), _) if up.materialized == Materialization::Ephemeral => {
                relations.extend(input_relations(manifest, upstream))
            }
            (Some(up), _) => relations.push(up.relation.to_lowercase()),
            (None, Some(source)) => relations.push(source.relation.to_lowercase()),
            (None, None) => {}
        }
    }
    relations.sort();
    relations.dedup();
    relations
}

fn cache_key(sql: &str, inputs: &[(String, Vec<PlannedColumn>)]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(sql.as_bytes());
    for (relation, columns) in inputs {
        hasher.update(b"\0");
        hasher.update(relation.as_bytes());
        hasher.update(serde_json::to_string(columns).unwrap_or_default().as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Plans every model of `manifest` (except ephemeral ones, which are planned inside their readers) and records
/// output columns; returns the cache to write and what was done.
pub(crate) fn plan_manifest(
    project_root: &Path,
    manifest: &mut Manifest,
    origins: &BTreeMap<String, ModelOrigin>,
    files: &SourceMap,
    cache: &PlanCache,
    mut kept_plans: Option<&mut HashMap<String, LogicalPlan>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> (PlanCache, PlanStats) {
    let _span = tracing::info_span!("plan").entered();
    let mut schemas = input_schemas(project_root, manifest, diagnostics);
    for source in manifest.sources.values_mut() {
        source.planned_columns = schemas.get(&source.relation.to_lowercase()).map(|s| PlannedColumn::from_schema(s));
    }
    for node in manifest.nodes.values_mut().filter(|n| n.resource_type == NodeKind::Seed) {
        node.planned_columns = schemas.get(&node.relation.to_lowercase()).map(|s| PlannedColumn::from_schema(s));
    }

    // Topological levels: a model's level is one more than its deepest planned upstream.
    let mut level: HashMap<&str, usize> = HashMap::new();
    let mut levels: Vec<Vec<String>> = Vec::new();
    for id in &manifest.order {
        let Some(node) = manifest.nodes.get(id) else { continue };
        // A model that did not compile is not planned (nor, having no schema, its dependents); nor one rendered
        // again at build time, whose SQL is not known yet.
        if node.resource_type != NodeKind::Model || manifest.compile_errors.contains_key(id) || node.render_at_build {
            continue;
        }
        let depth = node.depends_on.nodes.iter().filter_map(|up| level.get(up.as_str())).max().map_or(0, |d| d + 1);
        level.insert(id, depth);
        if node.materialized != Materialization::Ephemeral {
            if levels.len() <= depth {
                levels.resize(depth + 1, Vec::new());
            }
            levels[depth].push(id.clone());
        }
    }

    let planner = StaticPlanner::for_dialect(manifest.project.sql_dialect);
    let keep = kept_plans.is_some();
    let mut new_cache = PlanCache::default();
    let mut stats = PlanStats::default();
    for ids in levels {
        // (id, cache key, the plan's schema and plan, from the cache, the `is_incremental()` variant's error)
        type Planned =
            (String, String, Option<Result<(SchemaRef, Option<LogicalPlan>), PlanError>>, bool, Option<PlanError>);
        let planned: Vec<Planned> = ids
            .par_iter()
            .map(|id| {
                let node = &manifest.nodes[id];
                let relations = input_relations(manifest, id);
                let mut inputs: HashMap<String, SchemaRef> = HashMap::new();
                let mut keyed = Vec::new();
                for relation in &relations {
                    match schemas.get(relation) {
                        Some(schema) => {
                            keyed.push((relation.clone(), PlannedColumn::from_schema(schema)));
                            inputs.insert(relation.clone(), Arc::clone(schema));
                        }
                        // An input that could not be planned or read: this model is not type-checked.
                        None => return (id.clone(), String::new(), None, false, None),
                    }
                }
                let incremental = node
                    .compiled_sql_incremental
                    .as_deref()
                    .filter(|_| node.materialized == Materialization::Incremental);
                let key = cache_key(&format!("{}\0{}", node.compiled_sql, incremental.unwrap_or_default()), &keyed);
                if let Some(columns) = cache.entries.get(&key) {
                    return (
                        id.clone(),
                        key,
                        Some(Ok((Arc::new(PlannedColumn::to_schema(columns)), None))),
                        true,
                        None,
                    );
                }
                let planned = planner.plan_logical(&node.compiled_sql, &inputs).map(|plan| {
                    let schema = Arc::new(plan.schema().as_arrow().clone());
                    (schema, keep.then_some(plan))
                });
                // The `is_incremental()` variant runs against the table the full variant wrote (`{{ this }}`): it is
                // planned too, so a branch that only fails on the second run fails the compile instead.
                let incremental_error = match (&planned, incremental) {
                    (Ok((schema, _)), Some(sql)) => {
                        let mut inputs = inputs.clone();
                        let mut fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                        if crate::manifest::file_ingest_source(manifest, node).is_some() {
                            fields.extend(crate::manifest::ingest_fields());
                        }
                        let this = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
                        inputs.insert(node.relation.to_lowercase(), stored_schema(&this));
                        planner.plan_logical(sql, &inputs).err()
                    }
                    _ => None,
                };
                (id.clone(), key, Some(planned), false, incremental_error)
            })
            .collect();
        for (id, key, result, from_cache, incremental_error) in planned {
            if let (Some(err), Some(origin)) = (&incremental_error, origins.get(&manifest.nodes[&id].name)) {
                let sql = manifest.nodes[&id].compiled_sql_incremental.clone().unwrap_or_default();
                diagnostics.push(
                    plan_diagnostic(err, &sql, origin, files).with_note(
                        "in the `is_incremental()` variant, planned against the table the full build writes",
                    ),
                );
                continue;
            }
            let Some(result) = result else { continue };
            let ingests_files = crate::manifest::file_ingest_source(manifest, &manifest.nodes[&id]).is_some();
            let node = manifest.nodes.get_mut(&id).expect("planned ids come from the manifest");
            match result {
                Ok((schema, plan)) => {
                    if let (Some(kept), Some(plan)) = (kept_plans.as_deref_mut(), plan) {
                        kept.insert(id.clone(), plan);
                    }
                    // Bronze file ingestion adds pipe's lineage columns to the model's own (cached entries have them).
                    let schema = if ingests_files && !from_cache {
                        let mut fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                        fields.extend(crate::manifest::ingest_fields());
                        Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
                    } else {
                        schema
                    };
                    // A table or incremental model is written to Delta: a column Delta cannot hold fails here, not
                    // when the build writes its first batch.
                    if matches!(
                        node.materialized,
                        Materialization::Table | Materialization::Incremental | Materialization::Snapshot
                    ) {
                        let unstorable = schema
                            .fields()
                            .iter()
                            .find_map(|f| sql::storage::unstorable(f.data_type()).map(|why| (f.name().clone(), why)));
                        if let (Some((column, why)), Some(origin)) = (unstorable, origins.get(&node.name)) {
                            let err = PlanError {
                                message: format!("column `{column}` is {why}"),
                                location: sql::column_name_location(&column, &node.compiled_sql),
                                unknown_column: None,
                                notes: Vec::new(),
                                suggestion: None,
                            };
                            diagnostics.push(plan_diagnostic(&err, &node.compiled_sql, origin, files).with_note(
                                "the model is materialized as a Delta table; as a view it may keep the type",
                            ));
                            continue;
                        }
                    }
                    // Views are read as their query; tables and incremental models as Delta tables.
                    let schema = match node.materialized {
                        Materialization::Table | Materialization::Incremental => stored_schema(&schema),
                        // A snapshot's table is the query's columns and the snapshot's own.
                        Materialization::Snapshot => stored_schema(&snapshot_schema(&schema, &node.settings)),
                        // External files are read back with the types they were written with.
                        Materialization::View | Materialization::Ephemeral | Materialization::External => schema,
                    };
                    let columns = PlannedColumn::from_schema(&schema);
                    new_cache.entries.insert(key, columns.clone());
                    node.planned_columns = Some(columns);
                    schemas.insert(node.relation.to_lowercase(), schema);
                    if from_cache {
                        stats.cached += 1;
                    } else {
                        stats.planned += 1;
                    }
                }
                Err(err) => {
                    if let Some(origin) = origins.get(&node.name) {
                        diagnostics.push(plan_diagnostic(&err, &node.compiled_sql, origin, files));
                    }
                }
            }
        }
    }
    (new_cache, stats)
}

fn plan_diagnostic(err: &PlanError, compiled_sql: &str, origin: &ModelOrigin, files: &SourceMap) -> Diagnostic {
    let file: &SourceFile = files.get(origin.file_id);
    let mut diagnostic = Diagnostic::error(Code::PlanError, err.message.clone());
    for note in &err.notes {
        diagnostic = diagnostic.with_note(format!("DataFusion: {note}"));
    }
    let exact_origin = compiled_sql == origin.rendered_sql;
    let location = err.location.or_else(|| sql::function_call_location(&err.message, compiled_sql));
    match location {
        Some((line, column)) if exact_origin => {
            let rendered = SourceFile::new(file.path.clone(), Arc::from(compiled_sql));
            let start = rendered.offset_of(line as usize, column as usize);
            let len = compiled_sql[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .count()
                .max(1);
            let sql_origin = SqlOrigin { file_id: origin.file_id, file, offsets: &origin.offsets };
            let (span, exact) = sql::map_span(&sql_origin, start..start + len);
            diagnostic = diagnostic.with_primary(origin.file_id, span, "here");
            if !exact {
                diagnostic = diagnostic.with_note(format!("in the compiled SQL at {line}:{column}"));
            }
        }
        Some((line, column)) => {
            diagnostic = diagnostic.with_primary(origin.file_id, 0..0, "in this model").with_note(format!(
                "in the compiled SQL (`target/compiled/{}`) at {line}:{column}",
                file.display_path()
            ));
        }
        None => diagnostic = diagnostic.with_primary(origin.file_id, 0..0, "in this model"),
    }
    match &err.unknown_column {
        Some((name, valid)) => {
            let bare: Vec<&str> = valid.iter().map(String::as_str).collect();
            match crate::suggest::did_you_mean(name, bare.iter().copied()) {
                Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
                None => diagnostic.with_help(format!("available columns: {}", bare.join(", "))),
            }
        }
        None => match &err.suggestion {
            Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
            None => diagnostic.with_help("fix the query; `pipe compile --no-plan` skips type-checking"),
        },
    }
}
