//! One node's run inside a build: rendering it again when it asks the warehouse, materializing it, its tests and
//! the messages of its failures.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::prelude::SessionContext;

use super::fingerprint::{newest_input, upstream_rows};
use super::{abort_at, input_fingerprint, materialize, BuildOptions, NodeResult, RunError, UNCHANGED_INPUTS_NOTE};
use crate::diagnostics::Code;
use crate::manifest::{Manifest, Node, NodeKind};
use crate::project::Materialization;
use crate::warehouse::Warehouse;

/// The text of a panic's payload.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "no message".to_string(),
    }
}

/// State every model task shares.
pub(super) struct Shared {
    pub(super) ctx: SessionContext,
    pub(super) warehouse: Warehouse,
    pub(super) run_id: String,
    pub(super) options: BuildOptions,
    /// For what a model needs of the others (fingerprints of inputs, upstream configs).
    pub(super) manifest: Manifest,
    /// The models the `exhausted@<model>` failpoint has failed once.
    pub(super) exhausted: std::sync::Mutex<std::collections::BTreeSet<String>>,
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

/// The relation DataFusion's "table 'datafusion.silver.x' not found" names (`silver.x`), if the message is that.
pub fn missing_table(message: &str) -> Option<&str> {
    let (name, _) = message.split("table '").nth(1)?.split_once("' not found")?;
    let relation = name.strip_prefix("datafusion.").unwrap_or(name);
    Some(relation.strip_prefix("public.").unwrap_or(relation))
}

/// A query that failed on "table '...' not found" for a relation that exists now was racing another build that
/// created it while this one ran: said so, rather than DataFusion's words.
async fn raced(warehouse: &Warehouse, message: &str) -> String {
    let Some(relation) = missing_table(message) else { return message.to_string() };
    match warehouse.has_table(relation).await || warehouse.read_view(relation).await.is_some() {
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
        if let Some(relation) = warehouse.relation_of_file(location) {
            return (relation != node.relation).then_some(relation);
        }
        let path = Path::new("/").join(location);
        sources.iter().find(|(pattern, _)| pattern.matches_path(&path)).map(|(_, relation)| relation.to_string())
    }
}

pub(super) async fn run_node(
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
    let exhaust = shared.options.failpoints.iter().any(|f| f.strip_prefix("exhausted@") == Some(node.name.as_str()));
    if exhaust && shared.exhausted.lock().unwrap_or_else(|e| e.into_inner()).insert(node.unique_id.clone()) {
        let message = "Resources exhausted: failpoint exhausted@ (the model's first run)".to_string();
        return NodeResult::error(node, Code::QueryFailed, message, started.elapsed());
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
        engine: &shared.options.engine,
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
    let lock = match shared.warehouse.lock(&node.relation).await {
        Ok(lock) => lock,
        Err(err) => return NodeResult::error(node, err.code(), err.to_string(), started.elapsed()),
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
    lock.release().await;
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
                result.operators = cx.accounting.operators();
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
        Err(err) => {
            NodeResult::error(node, err.code(), raced(&shared.warehouse, &err.to_string()).await, started.elapsed())
        }
    }
}
