//! `run`: executes a manifest's selected nodes in DataFusion into the Delta warehouse, in dependency order and in
//! parallel.
//!
//! In: the `Manifest`, the project root (for source files and seeds), the selection and `BuildOptions`.
//! Out: `RunResults` (per node status, rows, Delta version, timings), also written to `target/run_results.json`.
//! A failed node marks its descendants skipped; unrelated nodes go on.
//! **Architecture invariant:** `run` never renders a template or reads a model file: the manifest holds all it needs.

pub mod accounting;
pub mod dedupe;
pub mod history;
pub mod materialize;
pub mod session;
pub mod sources;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::catalog::view::ViewTable;
use datafusion::prelude::SessionContext;
use tokio::sync::Semaphore;

use crate::diagnostics::Code;
use crate::manifest::{Manifest, Node, NodeKind};
use crate::project::Materialization;
pub use crate::warehouse::results::{NodeResult, NodeStatus, RunResults, Timing};
use crate::warehouse::Warehouse;
pub use crate::warehouse::{clean_datafusion_message, RunError};

/// How a build runs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The command and flags that started the run, recorded in `run_results.json` (`pipe retry` repeats them).
    pub invocation: Option<serde_json::Value>,
    /// `--defer`: relations read from another warehouse (production's) instead of this one; never written.
    pub deferred: Vec<Deferred>,
    pub threads: usize,
    pub full_refresh: bool,
    pub fail_fast: bool,
    /// Bytes DataFusion may hold before spilling to disk.
    pub memory_limit: Option<usize>,
    pub run_id: String,
    /// Per unique id, how long the compile took to render the model.
    pub render_times: BTreeMap<String, std::time::Duration>,
    /// Per unique id, the compile's analyzed plan (for the models this process planned).
    pub plans: Arc<HashMap<String, datafusion::logical_expr::LogicalPlan>>,
    /// The event-time range microbatch models cover (default: from their ledger to now).
    pub event_time: materialize::microbatch::EventTimeWindow,
    /// Leave a `table` model as it is when its logic and the versions of everything it reads are those its last
    /// version was written from (`--watch`).
    pub skip_unchanged: bool,
    /// Told as each model starts and finishes and of progress inside a model: OpenLineage's START and
    /// COMPLETE/FAIL events, the CLI's progress lines.
    pub events: Vec<Arc<dyn BuildEvents>>,
    /// Bronze ingestion leaves landed files changed more recently than this for a later build: they may still be
    /// being written (`--watch`'s `--settle`; a model's `settle_interval` overrides it).
    pub settle_interval: std::time::Duration,
    /// Failures the tests inject (`PIPE_FAILPOINTS`, read by `cli`): `panic@<model>` panics in that model's task;
    /// `abort@<model>:before-commit` ends the process once the model's data files are written, before its commit;
    /// `abort@<model>:after-commit` right after its commit, before the run's results and history are written.
    pub failpoints: Vec<String>,
    /// Check the schema registry before running: a model whose columns break its `schema_compatibility` stops the
    /// build (`run::schema_gate`). The CLI runs the gate itself, before a backfill's dry run or a watch starts,
    /// and passes `false`.
    pub schema_gate: bool,
    /// Register the built models' and the sources' schemas after the run (a one-off build; not each watch cycle).
    pub register_schemas: bool,
    /// Renders the models whose render asks the warehouse (`Node::render_at_build`) just before they run.
    pub render_at_build: Option<Arc<crate::compile::BuildRenderer>>,
}

/// Told as each node of a build starts and finishes, and of progress inside a node: `lineage::openlineage::Emitter`
/// (START and COMPLETE/FAIL events) and the CLI's progress output implement it; the run history is written by the
/// build itself. The build calls it from the node's task, so an implementation queues its work and returns.
pub trait BuildEvents: Send + Sync + std::fmt::Debug {
    /// `node` starts; the returned token is handed back to `finished` (OpenLineage's run id).
    fn started(&self, _manifest: &Manifest, _node: &Node) -> String {
        String::new()
    }

    /// `node` finished with `result`; `plan` is the compile's analyzed plan of its query, when there is one.
    fn finished(
        &self,
        _token: &str,
        _manifest: &Manifest,
        _node: &Node,
        _result: &NodeResult,
        _plan: Option<&datafusion::logical_expr::LogicalPlan>,
    ) {
    }

    /// Progress inside the model `model` (a microbatch model's batches).
    fn progress(&self, _model: &str, _message: &str) {}
}

/// A relation a deferred build reads from another warehouse: `relation` here is `relation_there` in the warehouse at
/// `warehouse`.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub relation: String,
    pub relation_there: String,
    pub warehouse: PathBuf,
}

/// Registers each deferred relation as the other warehouse's table or view (read only: nothing there is written).
/// `deferred` is in dependency order, so a deferred view is planned over the deferred tables it reads.
async fn register_deferred(ctx: &SessionContext, deferred: &[Deferred]) -> Result<(), RunError> {
    let mut opened: BTreeMap<PathBuf, Warehouse> = BTreeMap::new();
    for defer in deferred {
        if !opened.contains_key(&defer.warehouse) {
            opened.insert(defer.warehouse.clone(), Warehouse::open(&defer.warehouse)?);
        }
        let warehouse = &opened[&defer.warehouse];
        let there = format!("{} (in {})", defer.relation_there, defer.warehouse.display());
        let provider: Arc<dyn datafusion::catalog::TableProvider> = match warehouse.load(&defer.relation_there).await? {
            Some(table) => warehouse.provider(&table).await?,
            None => {
                let Some(view) = warehouse.read_view(&defer.relation_there) else {
                    return Err(RunError::NotATable { relation: there });
                };
                let frame = crate::sql::duckdb::sql(ctx, &view.sql).await.map_err(|e| RunError::Query {
                    model: defer.relation.clone(),
                    message: format!("the deferred view {there} cannot be read: {}", clean_datafusion_message(&e)),
                })?;
                Arc::new(ViewTable::new(frame.logical_plan().clone(), Some(view.sql)))
            }
        };
        let _ = ctx.deregister_table(defer.relation.as_str());
        ctx.register_table(defer.relation.as_str(), provider)?;
    }
    Ok(())
}

/// Ends the process at once (as a kill would) when `abort@<model>:<moment>` is among the failpoints.
pub(crate) fn abort_at(failpoints: &[String], model: &str, moment: &str) {
    if failpoints.iter().any(|f| f.strip_prefix("abort@").and_then(|f| f.split_once(':')) == Some((model, moment))) {
        std::process::abort(); // tidy: allow(exit) a failpoint ends the process as a kill would
    }
}

/// The note on a `table` model that `skip_unchanged` left as it was.
pub const UNCHANGED_INPUTS_NOTE: &str = "inputs unchanged: not rebuilt";

/// A digest of what `node` is computed from: its compiled SQL (so a changed `--vars` or `env_var()` value counts,
/// which the logic checksum over the raw SQL does not see), the Delta version of each upstream table (looking
/// through views and ephemeral models to their own inputs and compiled SQL) and the path, size and modification
/// time of each source file.
pub async fn input_fingerprint(manifest: &Manifest, warehouse: &Warehouse, project_root: &Path, node: &Node) -> String {
    use sha2::{Digest, Sha256};
    let sql_digest = |node: &Node| -> String {
        let mut hasher = Sha256::new();
        hasher.update(node.compiled_sql.as_bytes());
        hasher.update([0]);
        hasher.update(node.compiled_sql_incremental.as_deref().unwrap_or_default().as_bytes());
        hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    };
    let mut parts = vec![format!("sql={}", sql_digest(node))];
    let mut stack: Vec<&str> = node.depends_on.nodes.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(upstream) = manifest.nodes.get(id) {
            match upstream.materialized {
                Materialization::View | Materialization::Ephemeral if upstream.resource_type == NodeKind::Model => {
                    parts.push(format!("{}: sql={}", upstream.relation, sql_digest(upstream)));
                    stack.extend(upstream.depends_on.nodes.iter().map(String::as_str));
                }
                _ => {
                    let version = warehouse.load(&upstream.relation).await.ok().flatten().and_then(|t| t.version());
                    parts.push(format!("{}@{version:?}", upstream.relation));
                }
            }
        } else if let Some(path) = manifest.sources.get(id).and_then(|s| s.path.as_deref()) {
            let files: Vec<String> = sources::file_stats(project_root, path)
                .into_iter()
                .map(|(file, (size, modified))| {
                    let nanos = modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
                    format!("{}:{size}:{nanos}", file.display())
                })
                .collect();
            parts.push(format!("{id}={}", files.join(",")));
        }
    }
    parts.sort();
    Sha256::digest(parts.join("\n").as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What to run: unique ids, in topological order.
pub struct BuildRequest<'a> {
    pub manifest: &'a Manifest,
    pub project_root: &'a Path,
    pub selected: Vec<String>,
    pub options: BuildOptions,
    /// Where `run_results.json` is written (`target/`); `None` writes no results file.
    pub target: Option<&'a Path>,
}

/// Opens the warehouse and a session with every source and every existing table and view registered: what
/// `pipe query` and `pipe show` read, and the starting point of a build. The map returned holds, by unique id, the
/// sources that could not be registered and the tables whose Delta log cannot be read, with why: one broken table
/// fails what reads it, never the whole warehouse.
pub async fn open_session(
    manifest: &Manifest,
    project_root: &Path,
    memory_limit: Option<usize>,
) -> Result<(SessionContext, Warehouse, BTreeMap<String, String>), RunError> {
    let warehouse = Warehouse::open(&project_root.join(&manifest.project.warehouse))?;
    let ctx = session::new_session(manifest, memory_limit)?;
    let mut source_errors = BTreeMap::new();
    for source in manifest.sources.values().filter(|s| s.seed.is_none()) {
        if let Err(err) = sources::register_source(&ctx, project_root, source).await {
            source_errors.insert(source.unique_id.clone(), err.to_string());
        }
    }
    for id in &manifest.order {
        let Some(node) = manifest.nodes.get(id) else {
            continue;
        };
        if node.materialized == Materialization::Ephemeral {
            continue;
        }
        if node.materialized == Materialization::External {
            // Its files, where its last build wrote them (a folder or file since removed is left unregistered).
            if let Some(definition) = warehouse.read_external(&node.relation).filter(|d| d.location.exists()) {
                if let Ok(provider) = materialize::external::provider(&ctx, &definition).await {
                    ctx.register_table(node.relation.as_str(), provider)?;
                }
            }
            continue;
        }
        let table = match warehouse.load(&node.relation).await {
            Ok(table) => table,
            Err(err) => {
                source_errors.insert(node.unique_id.clone(), err.to_string());
                continue;
            }
        };
        if let Some(table) = table {
            ctx.register_table(node.relation.as_str(), warehouse.provider(&table).await?)?;
        } else if let Some(view) = warehouse.read_view(&node.relation) {
            // The manifest's SQL when the stored view is its masked copy (the manifest's holds the secrets it uses).
            let sql = match crate::secrets::mask(&node.compiled_sql) == view.sql.as_str() {
                true => node.compiled_sql.clone(),
                false => view.sql,
            };
            // A stored view whose upstreams are gone cannot be planned; it is left unregistered.
            if let Ok(frame) = crate::sql::duckdb::sql(&ctx, &sql).await {
                ctx.register_table(
                    node.relation.as_str(),
                    Arc::new(ViewTable::new(frame.logical_plan().clone(), Some(sql))),
                )?;
            }
        }
    }
    // A source that is a seed is also readable under its own name (`pipe query "select * from raw.customers"`).
    for source in manifest.sources.values() {
        let Some(seed) = source.seed.as_ref().and_then(|id| manifest.nodes.get(id)) else { continue };
        if let Ok(provider) = ctx.table_provider(seed.relation.as_str()).await {
            ctx.register_table(source.relation.as_str(), provider)?;
        }
    }
    // Rows bronze ingestion set aside for breaking a source contract.
    for node in manifest.nodes.values() {
        let quarantine = format!("{}__quarantine", node.relation);
        if let Ok(Some(table)) = warehouse.load(&quarantine).await {
            ctx.register_table(quarantine.as_str(), warehouse.provider(&table).await?)?;
        }
    }
    // Run history.
    for relation in ["runs", "node_runs", "test_runs"].map(|t| format!("{}.{t}", crate::warehouse::RUNS_SCHEMA)) {
        if let Ok(Some(table)) = warehouse.load(&relation).await {
            ctx.register_table(relation.as_str(), warehouse.provider(&table).await?)?;
        }
    }
    // The schema registry, as `pipe.schemas`: one row per column of every registered version.
    if let Some(schemas) = crate::quality::registry::as_table(warehouse.root()) {
        ctx.register_table(format!("{}.schemas", crate::warehouse::RUNS_SCHEMA).as_str(), schemas)?;
    }
    // Failing rows stored by tests with `store_failures`.
    let audit_dir = warehouse.root().join(crate::warehouse::AUDIT_SCHEMA);
    if let Ok(entries) = std::fs::read_dir(&audit_dir) {
        for entry in entries.filter_map(Result::ok) {
            let relation = format!("{}.{}", crate::warehouse::AUDIT_SCHEMA, entry.file_name().to_string_lossy());
            if let Ok(Some(table)) = warehouse.load(&relation).await {
                ctx.register_table(relation.as_str(), warehouse.provider(&table).await?)?;
            }
        }
    }
    Ok((ctx, warehouse, source_errors))
}

/// Something the build has to say besides its nodes' results: a refused anomaly, a history that could not be
/// written, a source that drifted. The CLI prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// An error (the build fails on it) or a warning.
    pub error: bool,
    pub text: String,
}

impl Notice {
    fn warning(text: String) -> Notice {
        Notice { error: false, text }
    }
}

/// What a whole build produced.
#[derive(Debug)]
pub struct BuildReport {
    pub results: RunResults,
    pub notices: Vec<Notice>,
}

impl BuildReport {
    /// Whether anything failed: a node in error or skipped, or a test failing.
    pub fn failed(&self) -> bool {
        let failed_tests = self.results.tests.iter().filter(|t| t.status == crate::quality::TestStatus::Fail).count();
        self.results.count(NodeStatus::Error) + self.results.count(NodeStatus::Skipped) + failed_tests > 0
    }
}

/// The whole build: the schema gate (with `schema_gate`, a breaking change to a model's columns stops it before
/// anything runs), the selected nodes in dependency order (`on_result` is told as each finishes), the anomaly
/// pass against the run history (refusing results of models with `anomaly_severity: error`), `run_results.json`
/// in `target`, the run appended to the history tables and, with `register_schemas`, the built models' and the
/// sources' schemas registered.
pub async fn build(
    request: BuildRequest<'_>,
    on_result: &(dyn Fn(&NodeResult) + Send + Sync),
) -> Result<BuildReport, RunError> {
    let manifest = request.manifest;
    let warehouse_dir = request.project_root.join(&manifest.project.warehouse);
    if request.options.schema_gate {
        let breaks = schema_gate(manifest, &warehouse_dir, &request.selected);
        if !breaks.is_empty() {
            return Err(RunError::BreakingSchema { breaks });
        }
    }
    let (mut results, warehouse) = run_nodes(&request, on_result).await?;
    let mut notices = Vec::new();
    let anomalies = match crate::quality::observe::detect(&warehouse, &results).await {
        Ok(anomalies) => anomalies,
        Err(err) => {
            notices.push(Notice::warning(format!("run history not read: {err}")));
            Vec::new()
        }
    };
    for anomaly in &anomalies {
        let Some(result) = results.results.iter_mut().find(|r| r.relation == anomaly.relation) else { continue };
        let severity = manifest.nodes.get(&result.unique_id).map(|n| n.settings.anomaly_severity);
        let error = severity == Some(crate::project::settings::AnomalySeverity::Error);
        if error {
            result.status = NodeStatus::Error;
            result.code = Some(Code::Anomaly.id().to_string());
            let before = result.message.take().map(|m| format!("{m}\n")).unwrap_or_default();
            result.message = Some(format!("{before}{anomaly}"));
        }
        notices.push(Notice { error, text: anomaly.to_string() });
    }
    if let Some(target) = request.target {
        results.write(target).map_err(|e| RunError::io(&target.join("run_results.json"), e))?;
    }
    if let Err(err) = crate::warehouse::runs::record(&warehouse, &results).await {
        notices.push(Notice::warning(format!("run not recorded in `pipe.runs`: {err}")));
    }
    if request.options.register_schemas {
        notices.extend(register_schemas(manifest, &warehouse_dir, &results));
    }
    Ok(BuildReport { results, notices })
}

/// The schema registry's verdict on the selected `table` and `incremental` models: each whose planned columns
/// break its `schema_compatibility` against its latest registered schema.
pub fn schema_gate(
    manifest: &Manifest,
    warehouse_dir: &Path,
    selected: &[String],
) -> Vec<crate::warehouse::SchemaBreak> {
    let mut breaks = Vec::new();
    for node in selected.iter().filter_map(|id| manifest.nodes.get(id)) {
        if !matches!(node.materialized, Materialization::Table | Materialization::Incremental) {
            continue;
        }
        if let Some((mode, changes)) = crate::quality::registry::check_model(warehouse_dir, node) {
            breaks.push(crate::warehouse::SchemaBreak {
                model: node.name.clone(),
                mode,
                changes: changes.iter().map(ToString::to_string).collect(),
            });
        }
    }
    breaks
}

/// Records the schemas of the models that were built and of the sources; a source whose columns drifted is a
/// warning, compatible or not.
fn register_schemas(manifest: &Manifest, warehouse: &Path, results: &RunResults) -> Vec<Notice> {
    use crate::quality::registry;
    let mut notices = Vec::new();
    for result in results.results.iter().filter(|r| r.status == NodeStatus::Success) {
        let Some(node) = manifest.nodes.get(&result.unique_id) else { continue };
        if let Some(columns) = &node.planned_columns {
            if let Err(err) =
                registry::register(warehouse, &node.relation, columns, registry::model_version(node), &results.run_id)
            {
                notices.push(Notice::warning(format!("schema of `{}` not registered: {err}", node.relation)));
            }
        }
    }
    for source in manifest.sources.values() {
        let Some(columns) = &source.planned_columns else { continue };
        if let Some(latest) = registry::versions(warehouse, &source.relation).pop() {
            let changes = registry::changes(&latest.columns, columns);
            if !changes.is_empty() {
                let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
                notices.push(Notice::warning(format!(
                    "source `{}` drifted since its last registered schema: {}",
                    source.relation,
                    list.join("; ")
                )));
            }
        }
        let _ = registry::register(warehouse, &source.relation, columns, None, &results.run_id);
    }
    notices
}

/// Runs the selected nodes. `on_result` is called as each node finishes (for progress output).
async fn run_nodes(
    request: &BuildRequest<'_>,
    on_result: &(dyn Fn(&NodeResult) + Send + Sync),
) -> Result<(RunResults, Warehouse), RunError> {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let manifest = request.manifest;
    let (ctx, warehouse, source_errors) =
        open_session(manifest, request.project_root, request.options.memory_limit).await?;
    register_deferred(&ctx, &request.options.deferred).await?;

    // Ephemeral models never run; they are inlined into their readers.
    let runnable: Vec<&str> = request
        .selected
        .iter()
        .filter(|id| manifest.nodes.get(*id).is_some_and(|n| n.materialized != Materialization::Ephemeral))
        .map(String::as_str)
        .collect();
    let selected: BTreeSet<&str> = runnable.iter().copied().collect();
    let mut parents: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for (up, down) in &manifest.edges {
        *readers.entry(up.as_str()).or_default() += 1;
        // Edges through ephemeral models connect their upstreams to their readers.
        for up in crate::manifest::effective_upstreams(manifest, up) {
            if selected.contains(up) && selected.contains(down.as_str()) {
                parents.entry(down.as_str()).or_default().insert(up);
                children.entry(up).or_default().push(down.as_str());
            }
        }
    }

    let semaphore = Arc::new(Semaphore::new(request.options.threads.max(1)));
    let shared = Arc::new(Shared {
        ctx,
        warehouse,
        run_id: request.options.run_id.clone(),
        options: request.options.clone(),
        manifest: manifest.clone(),
    });
    let mut waiting: HashMap<&str, usize> =
        runnable.iter().map(|id| (*id, parents.get(id).map_or(0, BTreeSet::len))).collect();
    // Ready nodes start in topological order, first come first served.
    let mut ready: std::collections::VecDeque<&str> = runnable.iter().copied().filter(|id| waiting[id] == 0).collect();
    let mut results: BTreeMap<String, NodeResult> = BTreeMap::new();
    let mut running = tokio::task::JoinSet::new();
    let mut tasks: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut stop = false;

    loop {
        // A node starts only when a slot is free, so `--fail-fast` stops every node that has not started.
        while let Some(&id) = ready.front().filter(|_| !stop) {
            let Ok(permit) = Arc::clone(&semaphore).try_acquire_owned() else { break };
            ready.pop_front();
            let node = manifest.nodes[id].clone();
            let failed_source = node.depends_on.nodes.iter().find_map(|d| source_errors.get(d).cloned());
            let compute_once = node.materialized == Materialization::View && readers.get(id).copied().unwrap_or(0) >= 2;
            let file_source = crate::manifest::file_ingest_source(manifest, &node).cloned();
            let shared = Arc::clone(&shared);
            let project_root = request.project_root.to_path_buf();
            let unique_id = node.unique_id.clone();
            let handle = running.spawn(async move {
                let tokens: Vec<String> =
                    shared.options.events.iter().map(|e| e.started(&shared.manifest, &node)).collect();
                let result =
                    run_node(&shared, &node, compute_once, failed_source, &project_root, file_source.as_ref()).await;
                drop(permit);
                let plan = shared.options.plans.get(&node.unique_id);
                for (events, token) in shared.options.events.iter().zip(&tokens) {
                    events.finished(token, &shared.manifest, &node, &result, plan);
                }
                result
            });
            tasks.insert(handle.id(), unique_id);
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        // A model task that panicked fails its node (descendants skipped); the rest of the build goes on.
        let result = match joined {
            Ok((_, result)) => result,
            Err(err) => {
                let Some(id) = tasks.get(&err.id()) else {
                    return Err(RunError::Internal(format!("a model task failed: {err}")));
                };
                let reason = match err.try_into_panic() {
                    Ok(payload) => panic_message(payload.as_ref()),
                    Err(err) => err.to_string(),
                };
                NodeResult::error(
                    &manifest.nodes[id.as_str()],
                    Code::Internal,
                    format!("pipe failed inside this model (a panic: {reason}); nothing was published for it"),
                    std::time::Duration::ZERO,
                )
            }
        };
        on_result(&result);
        let id = result.unique_id.clone();
        let succeeded = result.status == NodeStatus::Success;
        results.insert(id.clone(), result);
        let Some(key) = selected.get(id.as_str()).copied() else { continue };
        if succeeded {
            for child in children.get(key).into_iter().flatten() {
                let count = waiting.get_mut(child).expect("every child is runnable");
                *count -= 1;
                if *count == 0 && !results.contains_key(*child) {
                    ready.push_back(child);
                }
            }
        } else {
            if request.options.fail_fast {
                stop = true;
            }
            for descendant in descendants(key, &children) {
                if results.contains_key(descendant) {
                    continue;
                }
                let node = &manifest.nodes[descendant];
                let skipped =
                    NodeResult::skipped(node, format!("skipped: upstream `{}` failed", manifest.nodes[key].name));
                on_result(&skipped);
                results.insert(descendant.to_string(), skipped);
            }
        }
        ready.retain(|r| !results.contains_key(*r));
    }
    // With `--fail-fast`, what never started is skipped.
    for id in &runnable {
        if !results.contains_key(*id) {
            let skipped = NodeResult::skipped(
                &manifest.nodes[*id],
                "skipped: the build stopped at the first failure (--fail-fast)".into(),
            );
            on_result(&skipped);
            results.insert(id.to_string(), skipped);
        }
    }
    // Tests on more than one node (singular tests joining models) run once everything they read succeeded.
    let succeeded: BTreeSet<&str> =
        results.iter().filter(|(_, r)| r.status == NodeStatus::Success).map(|(id, _)| id.as_str()).collect();
    let audited: BTreeSet<&str> = runnable
        .iter()
        .flat_map(|id| crate::quality::execute::audit_tests(manifest, id))
        .map(|t| t.unique_id.as_str())
        .collect();
    let shared_tests: Vec<&crate::manifest::TestNode> = manifest
        .tests
        .values()
        .filter(|t| !audited.contains(t.unique_id.as_str()) && t.unit.is_none())
        .filter(|t| t.depends_on.nodes.iter().any(|d| succeeded.contains(d.as_str())))
        .filter(|t| {
            // Everything the test reads is built: in this run, or before it (not selected), or a source.
            t.depends_on.nodes.iter().all(|d| {
                succeeded.contains(d.as_str()) || manifest.sources.contains_key(d) || !selected.contains(d.as_str())
            })
        })
        .collect();
    let tests = crate::quality::run_tests(
        &shared.ctx,
        Some(&shared.warehouse),
        &shared_tests,
        &[],
        shared.options.render_at_build.as_ref(),
    )
    .await;
    let ordered: Vec<NodeResult> = runnable.iter().filter_map(|id| results.remove(*id)).collect();
    let results = RunResults {
        run_id: request.options.run_id.clone(),
        started_at: started_at.to_rfc3339(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        results: ordered,
        tests,
        args: request.options.invocation.clone(),
    };
    Ok((results, shared.warehouse.clone()))
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "no message".to_string(),
    }
}

/// State every model task shares.
struct Shared {
    ctx: SessionContext,
    warehouse: Warehouse,
    run_id: String,
    options: BuildOptions,
    /// For what a model needs of the others (fingerprints of inputs, upstream configs).
    manifest: Manifest,
}

/// `node` with its SQL rendered now, against the warehouse as this build has left it (its upstreams are built).
async fn render_now(
    shared: &Shared,
    renderer: &Arc<crate::compile::BuildRenderer>,
    node: &Node,
) -> Result<Node, crate::diagnostics::Diagnostic> {
    let upstreams: BTreeMap<String, Node> = node
        .depends_on
        .nodes
        .iter()
        .filter_map(|id| shared.manifest.nodes.get(id).map(|n| (id.clone(), n.clone())))
        .collect();
    let catalog = crate::warehouse::catalog::SessionCatalog {
        ctx: shared.ctx.clone(),
        handle: tokio::runtime::Handle::current(),
    };
    let (renderer, mut node) = (Arc::clone(renderer), node.clone());
    // The render blocks on the catalog's queries: a blocking thread, not one of the runtime's workers.
    tokio::task::spawn_blocking(move || {
        let (sql, sql_incremental) = renderer.render(&upstreams, &node, Arc::new(catalog))?;
        node.compiled_sql = sql;
        node.compiled_sql_incremental = sql_incremental;
        Ok(node)
    })
    .await
    .map_err(|e| crate::diagnostics::Diagnostic::error(Code::Internal, format!("the render task failed: {e}")))?
}

async fn run_node(
    shared: &Shared,
    node: &crate::manifest::Node,
    compute_once: bool,
    failed_source: Option<String>,
    project_root: &Path,
    file_source: Option<&crate::manifest::SourceNode>,
) -> NodeResult {
    let started = Instant::now();
    if let Some(error) = shared.manifest.compile_errors.get(&node.unique_id) {
        let code = Code::from_str_any(&error.code).unwrap_or(Code::PlanError);
        let message = format!("did not compile: {}", error.message);
        return NodeResult::error(node, code, message, started.elapsed());
    }
    if let Some(message) = failed_source {
        return NodeResult::error(node, Code::SourceFailed, message, started.elapsed());
    }
    if shared.options.failpoints.iter().any(|f| f.strip_prefix("panic@") == Some(node.name.as_str())) {
        panic!("failpoint panic@{}", node.name);
    }
    let rendered;
    let node = match (&shared.options.render_at_build, node.render_at_build) {
        (Some(renderer), true) => match render_now(shared, renderer, node).await {
            Ok(node) => {
                rendered = node;
                &rendered
            }
            Err(diagnostic) => {
                let message = format!("rendering at build time failed: {}", diagnostic.message);
                return NodeResult::error(node, diagnostic.code, message, started.elapsed());
            }
        },
        _ => node,
    };
    let cx = materialize::ModelContext {
        node,
        session: &shared.ctx,
        warehouse: &shared.warehouse,
        run_id: &shared.run_id,
        // dbt's `full_refresh` config overrides the flag for its model.
        full_refresh: node.settings.full_refresh.unwrap_or(shared.options.full_refresh),
        compute_once,
        project_root,
        file_source,
        compiled_plan: shared.options.plans.get(&node.unique_id),
        plan_reused: std::sync::atomic::AtomicBool::new(false),
        event_time: &shared.options.event_time,
        events: &shared.options.events,
        inputs: match shared.options.skip_unchanged {
            true => Some(input_fingerprint(&shared.manifest, &shared.warehouse, project_root, node).await),
            false => None,
        },
        manifest: &shared.manifest,
        tests: crate::quality::execute::audit_tests(&shared.manifest, &node.unique_id),
        accounting: Default::default(),
        settle_interval: shared.options.settle_interval,
        failpoints: &shared.options.failpoints,
        renderer: shared.options.render_at_build.as_ref(),
    };
    // Unit tests run before the model: a failing one keeps it (and what reads it) from building.
    let units = crate::quality::execute::unit_tests(&shared.manifest, &node.unique_id);
    let unit_outcomes = match units.is_empty() {
        true => Vec::new(),
        false => crate::quality::run_tests(&shared.ctx, None, &units, &[], None).await,
    };
    let failed: Vec<String> = unit_outcomes
        .iter()
        .filter(|o| matches!(o.status, crate::quality::TestStatus::Fail | crate::quality::TestStatus::Error))
        .map(|o| format!("unit test `{}` failed: {}", o.name, o.message.as_deref().unwrap_or("")))
        .collect();
    if !failed.is_empty() {
        let message = format!(
            "{}
the model was not built",
            failed.join("\n")
        );
        let mut result = NodeResult::error(node, Code::TestsFailed, message, started.elapsed());
        result.tests = unit_outcomes;
        return result;
    }
    // Blocking: the lock is taken on a blocking thread so the runtime's workers keep running other models.
    let warehouse = shared.warehouse.clone();
    let relation = node.relation.clone();
    let lock = match tokio::task::spawn_blocking(move || warehouse.lock(&relation)).await {
        Ok(Ok(lock)) => lock,
        Ok(Err(err)) => return NodeResult::error(node, err.code(), err.to_string(), started.elapsed()),
        Err(err) => {
            return NodeResult::error(node, Code::Internal, format!("lock task failed: {err}"), started.elapsed())
        }
    };
    let unchanged = match (&cx.inputs, node.materialized, node.resource_type) {
        (Some(inputs), Materialization::Table, NodeKind::Model) => match shared.warehouse.load(&node.relation).await {
            Ok(Some(table)) => match shared.warehouse.last_commit(&table).await {
                Ok(last) if last.inputs.as_ref() == Some(inputs) && last.checksum.as_ref() == Some(&node.checksum) => {
                    shared.warehouse.provider(&table).await.ok().map(|provider| materialize::Outcome {
                        rows_written: Some(0),
                        delta_version: Some(last.version),
                        provider: Some(provider),
                        note: Some(UNCHANGED_INPUTS_NOTE.to_string()),
                        ..materialize::Outcome::default()
                    })
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let outcome = if let Some(outcome) = unchanged {
        Ok(outcome)
    } else if node.resource_type == NodeKind::Seed {
        materialize::SeedLoad.run(&cx).await
    } else {
        match materialize::for_kind(node.materialized) {
            Some(materialization) => materialization.run(&cx).await,
            None => Ok(materialize::Outcome::default()),
        }
    };
    if outcome.is_ok() {
        abort_at(&shared.options.failpoints, &node.name, "after-commit");
    }
    let outcome = outcome.and_then(|outcome| {
        if let Some(provider) = &outcome.provider {
            // Downstream models of this run read the new version; the old registration is replaced.
            let _ = shared.ctx.deregister_table(node.relation.as_str());
            shared.ctx.register_table(node.relation.as_str(), Arc::clone(provider))?;
        }
        Ok(outcome)
    });
    drop(lock);
    match outcome {
        Ok(outcome) => {
            let render = shared.options.render_times.get(&node.unique_id).copied().unwrap_or_default();
            let mut result = outcome.result(node, started.elapsed(), render);
            result.plan_reused = cx.plan_reused.load(std::sync::atomic::Ordering::Relaxed);
            // Views (a definition), seeds, bronze ingestion and microbatch slices are tested once published.
            let attached = cx.attached_tests();
            let tests = match outcome.tests {
                Some(tests) => tests,
                None if attached.is_empty() => Vec::new(),
                None => {
                    let renderer = shared.options.render_at_build.as_ref();
                    crate::quality::run_tests(&shared.ctx, Some(&shared.warehouse), attached, &[], renderer).await
                }
            };
            // Rows read: as the materialization counted them, else as the executed plan scanned them, else (the
            // query did not run) the upstream tables' sizes.
            let mut scanned = outcome.rows_read.clone();
            if !cx.accounting.is_empty() {
                let owner = file_owner(&shared.manifest, &shared.warehouse, project_root, node);
                let summary = cx.accounting.summary(&owner);
                if scanned.is_none() && !summary.read.is_empty() {
                    scanned = Some(summary.read);
                }
                result.rows_filtered = Some(summary.filtered);
                result.rows_deduplicated = Some(summary.deduplicated);
            }
            result.rows_in_scanned = scanned.is_some();
            result.rows_in = match scanned {
                Some(read) => read,
                None => upstream_rows(&shared.manifest, &shared.warehouse, node).await,
            };
            if node.layer == Some(crate::project::Layer::Gold) {
                let newest = newest_input(&shared.manifest, project_root, node);
                result.latency_seconds =
                    newest.and_then(|t| std::time::SystemTime::now().duration_since(t).ok()).map(|d| d.as_secs_f64());
            }
            let read: u64 = result.rows_in.values().sum();
            if result.rows_written == Some(0) && read > 0 && node.materialized == Materialization::Table {
                let warning = format!("warning: wrote 0 rows from {read} input rows");
                result.message = Some(match result.message.take() {
                    Some(message) => format!("{message}\n{warning}"),
                    None => warning,
                });
            }
            result.record_tests(tests, attached);
            // The unit tests that passed before it built.
            result.tests.splice(0..0, unit_outcomes);
            result.timing.total_seconds = started.elapsed().as_secs_f64();
            result
        }
        Err(RunError::TestFailed { message, outcomes }) => {
            // The tests that refused the result are part of the node's result and of the run history.
            let mut result = NodeResult::error(node, Code::TestsFailed, message, started.elapsed());
            result.tests = outcomes;
            result
        }
        Err(err) => NodeResult::error(node, err.code(), raced(&shared.warehouse, &err.to_string()), started.elapsed()),
    }
}

/// The relation DataFusion's "table 'datafusion.silver.x' not found" names (`silver.x`), if the message is that.
pub fn missing_table(message: &str) -> Option<&str> {
    let (name, _) = message.split("table '").nth(1)?.split_once("' not found")?;
    let relation = name.strip_prefix("datafusion.").unwrap_or(name);
    Some(relation.strip_prefix("public.").unwrap_or(relation))
}

/// A query that failed on "table '...' not found" for a relation that exists now was racing another build that
/// created it while this one ran: said so, rather than DataFusion's words.
fn raced(warehouse: &Warehouse, message: &str) -> String {
    let Some(relation) = missing_table(message) else { return message.to_string() };
    match warehouse.has_table(relation) || warehouse.read_view(relation).is_some() {
        true => format!(
            "`{relation}` was created by another build while this one ran, so this build had not registered it; run the build again"
        ),
        false => format!("`{relation}` is not in the warehouse: build it first (`pipe build -s +<model>`)"),
    }
}

/// Maps a scanned file (its object-store path) to the relation that owns it: a warehouse table other than
/// `node`'s own, or a file source of the project.
fn file_owner<'a>(
    manifest: &'a Manifest,
    warehouse: &'a Warehouse,
    project_root: &'a Path,
    node: &'a Node,
) -> impl Fn(&str) -> Option<String> + 'a {
    let root = warehouse.root().to_path_buf();
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let sources: Vec<(glob::Pattern, &str)> = manifest
        .sources
        .values()
        .filter_map(|s| {
            let path = project_root.join(s.path.as_deref()?);
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            Some((glob::Pattern::new(&path.to_string_lossy()).ok()?, s.relation.as_str()))
        })
        .collect();
    move |location: &str| {
        let path = Path::new("/").join(location);
        if let Ok(inside) = path.strip_prefix(&root) {
            let parts: Vec<_> = inside.components().take(2).map(|c| c.as_os_str().to_string_lossy()).collect();
            let relation = parts.join(".");
            return (parts.len() == 2 && relation != node.relation).then_some(relation);
        }
        sources.iter().find(|(pattern, _)| pattern.matches_path(&path)).map(|(_, relation)| relation.to_string())
    }
}

/// The newest modification time of the files of the sources `node` reads, directly or through other models.
fn newest_input(manifest: &Manifest, project_root: &Path, node: &Node) -> Option<std::time::SystemTime> {
    let ids = node.depends_on.nodes.iter().map(String::as_str);
    sources::upstream_files(manifest, project_root, ids).into_values().map(|(_, modified)| modified).max()
}

/// Rows in each upstream table of `node` (models and seeds with a Delta table, looking through ephemeral models),
/// summed from the file statistics of the Delta log: nothing is scanned.
async fn upstream_rows(manifest: &Manifest, warehouse: &Warehouse, node: &Node) -> BTreeMap<String, u64> {
    let mut rows = BTreeMap::new();
    let mut stack: Vec<&str> = node.depends_on.nodes.iter().map(String::as_str).collect();
    while let Some(id) = stack.pop() {
        let Some(upstream) = manifest.nodes.get(id) else { continue };
        if upstream.materialized == Materialization::Ephemeral && upstream.resource_type == NodeKind::Model {
            stack.extend(upstream.depends_on.nodes.iter().map(String::as_str));
            continue;
        }
        if let Ok(Some(table)) = warehouse.load(&upstream.relation).await {
            if let Ok(count) = Warehouse::row_count(&table) {
                rows.insert(upstream.relation.clone(), count);
            }
        }
    }
    rows
}

fn descendants<'a>(id: &'a str, children: &HashMap<&'a str, Vec<&'a str>>) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![id];
    while let Some(node) = stack.pop() {
        for child in children.get(node).into_iter().flatten() {
            if seen.insert(*child) {
                found.push(*child);
                stack.push(child);
            }
        }
    }
    found
}
