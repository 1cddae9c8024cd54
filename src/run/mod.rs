//! `run`: executes a manifest's selected nodes in DataFusion into the Delta warehouse, in dependency order and in
//! parallel.
//!
//! In: the `Manifest`, the project root (for source files and seeds), the selection and `BuildOptions`.
//! Out: `RunResults` (per node status, rows, Delta version, timings), also written to `target/run_results.json`.
//! A failed node marks its descendants skipped; unrelated nodes go on.
//! **Architecture invariant:** `run` never renders a template or reads a model file: the manifest holds all it needs.

pub mod accounting;
#[cfg(feature = "ballista")]
pub mod cluster;
pub mod dedupe;
pub mod distinct;
mod fingerprint;
pub mod history;
pub mod materialize;
mod node;
mod open;
mod schemas;
pub mod session;
pub mod sources;
pub mod staged;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::diagnostics::Code;
use crate::manifest::{Manifest, Node};
use crate::project::Materialization;
pub use crate::warehouse::results::{NodeResult, NodeStatus, RunResults, Timing};
use crate::warehouse::Warehouse;
pub use crate::warehouse::{clean_datafusion_message, RunError};
pub use fingerprint::{input_fingerprint, UNCHANGED_INPUTS_NOTE};
pub use node::missing_table;
pub use open::{open_session, Deferred};
pub use schemas::schema_gate;

use node::{panic_message, run_node, Shared};
use open::register_deferred;
use schemas::register_schemas;

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
    /// `abort@<model>:after-commit` right after its commit, before the run's results and history are written;
    /// `exhausted@<model>` fails the model's first run as running out of the memory pool would.
    pub failpoints: Vec<String>,
    /// Check the schema registry before running: a model whose columns break its `schema_compatibility` stops the
    /// build (`run::schema_gate`). The CLI runs the gate itself, before a backfill's dry run or a watch starts,
    /// and passes `false`.
    pub schema_gate: bool,
    /// Register the built models' and the sources' schemas after the run (a one-off build; not each watch cycle).
    pub register_schemas: bool,
    /// Renders the models whose render asks the warehouse (`Node::render_at_build`) just before they run.
    pub render_at_build: Option<Arc<crate::compile::BuildRenderer>>,
    /// Where the models' queries run: here, or on a Ballista cluster (which needs the `ballista` feature).
    pub engine: crate::project::Engine,
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

/// Ends the process at once (as a kill would) when `abort@<model>:<moment>` is among the failpoints.
pub(crate) fn abort_at(failpoints: &[String], model: &str, moment: &str) {
    if failpoints.iter().any(|f| f.strip_prefix("abort@").and_then(|f| f.split_once(':')) == Some((model, moment))) {
        std::process::abort(); // tidy: allow(exit) a failpoint ends the process as a kill would
    }
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
    if request.options.schema_gate {
        let location = crate::warehouse::Location::of(request.project_root, &manifest.project)?;
        let breaks = schema_gate(manifest, &Warehouse::open_at(&location)?, &request.selected).await;
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
        notices.extend(register_schemas(manifest, &warehouse, &results).await);
    }
    Ok(BuildReport { results, notices })
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
    let warehouse = match &request.options.engine {
        crate::project::Engine::Local => warehouse,
        #[cfg(feature = "ballista")]
        crate::project::Engine::Ballista { .. } => {
            // Executors read the tables as the Parquet files of their versions (delta-rs's scan cannot be sent).
            cluster::plan_for_cluster(&ctx, manifest, &warehouse)
                .await
                .map_err(|e| RunError::Internal(format!("cannot read the warehouse's tables as files: {e}")))?;
            warehouse.scanning_files()
        }
        #[cfg(not(feature = "ballista"))]
        crate::project::Engine::Ballista { .. } => return Err(RunError::Internal(
            "`engine: ballista` needs a pipe built with the `ballista` feature (`cargo install --features ballista`)"
                .into(),
        )),
    };

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
        exhausted: Default::default(),
    });
    let mut waiting: HashMap<&str, usize> =
        runnable.iter().map(|id| (*id, parents.get(id).map_or(0, BTreeSet::len))).collect();
    // Ready nodes start in topological order, first come first served.
    let mut ready: std::collections::VecDeque<&str> = runnable.iter().copied().filter(|id| waiting[id] == 0).collect();
    let mut results: BTreeMap<String, NodeResult> = BTreeMap::new();
    let mut running = tokio::task::JoinSet::new();
    let mut tasks: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut stop = false;
    // Models that ran out of the memory pool while others shared it: each runs again once nothing else runs.
    let mut alone: std::collections::VecDeque<&str> = std::collections::VecDeque::new();
    let mut retried: BTreeSet<&str> = BTreeSet::new();
    let mut solo = false;

    loop {
        let mut start = |id: &str, permit, running: &mut tokio::task::JoinSet<NodeResult>| {
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
        };
        if let Some(&id) = alone.front().filter(|_| running.is_empty()) {
            alone.pop_front();
            let permit = Arc::clone(&semaphore).try_acquire_owned().ok();
            start(id, permit, &mut running);
            solo = true;
        }
        // A node starts only when a slot is free, so `--fail-fast` stops every node that has not started. Nothing
        // starts beside a model run alone, nor while one waits to.
        while let Some(&id) = ready.front().filter(|_| !stop && !solo && alone.is_empty()) {
            let Ok(permit) = Arc::clone(&semaphore).try_acquire_owned() else { break };
            ready.pop_front();
            start(id, Some(permit), &mut running);
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
        // Out of the shared memory pool with other models running: run again alone before failing it.
        let mut result = result;
        let exhausted = result.message.as_deref().is_some_and(|m| m.contains("Resources exhausted"));
        if exhausted && request.options.memory_limit.is_some() && request.options.threads > 1 {
            if let Some(key) = selected.get(result.unique_id.as_str()).copied().filter(|k| retried.insert(k)) {
                alone.push_back(key);
                continue;
            }
        }
        if std::mem::take(&mut solo) {
            let said = "ran again alone: the memory pool ran out while other models shared it";
            result.message = Some(result.message.map_or(said.to_string(), |m| format!("{said}; {m}")));
        }
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
