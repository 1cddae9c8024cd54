//! `pipe build`, `pipe run`, `pipe seed`: compile, select, then run the selection into the warehouse.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;

use clap::{Args, ValueEnum};

use super::{compile_reported_with, selected_ids, target_dir, Partial, ProjectArgs, SelectArgs};
use crate::manifest::NodeKind;
use crate::run::{self, BuildOptions, BuildRequest, NodeResult, NodeStatus};
use crate::warehouse::{Location, Warehouse};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per node on stderr, a summary at the end.
    Text,
    /// One JSON line per event on stdout, in dbt's structured-log shape (`info.name`, `info.msg`, `data`): each
    /// node's and test's result, then the run's counts (`StatsLine`).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    Local,
    Ballista,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Models run at once, 1 to 256 (default: the number of cores).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
    /// Stop starting new models after the first failure; what did not start is skipped.
    #[arg(long)]
    pub fail_fast: bool,
    /// Rebuild incremental models and reload seeds from scratch.
    #[arg(long)]
    pub full_refresh: bool,
    /// Memory DataFusion may use before spilling to disk, e.g. `4GiB` or `512MiB`. Sorts, joins' hash
    /// aggregates, deduplication and distinct counts spill; an incremental batch, microbatch slice, snapshot or new
    /// bronze file larger than a quarter of it is staged on disk before it is checked and written.
    #[arg(long, value_parser = parse_bytes)]
    pub memory_limit: Option<usize>,
    /// Output for people (`text`) or machines (`json`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Microbatch models: the first event time to (re)process, e.g. `2026-01-01` (default: `lookback` batches
    /// before the latest batch already built).
    #[arg(long, value_parser = parse_event_time)]
    pub event_time_start: Option<chrono::DateTime<chrono::Utc>>,
    /// Microbatch models: process events before this time (default: now).
    #[arg(long, value_parser = parse_event_time)]
    pub event_time_end: Option<chrono::DateTime<chrono::Utc>>,
    /// Keep running: when new files land in a source the selection reads, ingest them and run what depends on
    /// them; `table` models whose inputs did not change are not rebuilt. Ctrl-C stops after the current cycle (a
    /// second Ctrl-C abandons it; nothing half-written is ever visible). Each cycle's latency (file written ->
    /// models committed) is appended to `target/watch_log.jsonl`.
    #[arg(long)]
    pub watch: bool,
    /// Build models whose schema change breaks their `schema_compatibility` all the same.
    #[arg(long)]
    pub allow_breaking: bool,
    /// Where models' queries run: `local` (this process) or `ballista` (a cluster of `pipe ballista executor`s;
    /// needs `--scheduler`). Default: `engine:` of the profile's target, else of the project file, else `local`.
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    /// The Ballista scheduler, `df://host:port` (implies `--engine ballista`).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// How often `--watch` looks for new files, e.g. `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// A landed file is ingested once it has not changed for this long (before, it may still be being written),
    /// e.g. `2s`; appended bytes are ingested later. Default: `2s` with `--watch`, else `0s`. A bronze model's
    /// `settle_interval` config overrides it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub settle: Option<std::time::Duration>,
    /// Also POST each OpenLineage event to this collector (e.g. Marquez at `http://localhost:5000`); events are
    /// always written to `target/openlineage.ndjson`.
    #[arg(long, env = "OPENLINEAGE_URL")]
    pub openlineage_url: Option<String>,
    /// How long the build waits, once its models are done, for the collector to take the events still queued;
    /// past it they are only in `target/openlineage.ndjson`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub openlineage_deadline: std::time::Duration,
    /// Slim CI: a selected model's unselected upstreams that this warehouse lacks are read from the warehouse of
    /// `--state` (production's), never built nor written.
    #[arg(long, requires = "state")]
    pub defer: bool,
    /// With `--defer`: read those upstreams from the state's warehouse even when this warehouse has them.
    #[arg(long, requires = "defer")]
    pub favor_state: bool,
    /// With `--defer`: the state's warehouse (default: the `warehouse` its manifest names, beside the state folder).
    #[arg(long, requires = "defer")]
    pub defer_warehouse: Option<std::path::PathBuf>,
}

/// `pipe seed`: only the flags that mean something for seeds.
#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Seeds loaded at once, 1 to 256 (default: the number of cores).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
    /// Load every seed again, changed or not.
    #[arg(long)]
    pub full_refresh: bool,
    /// Output for people (`text`) or machines (`json`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `pipe snapshot`: the selected snapshots only.
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Snapshots run at once, 1 to 256 (default: the number of cores).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
    /// Memory DataFusion may use before spilling to disk, e.g. `4GiB`; a snapshot's query and changes larger than a
    /// quarter of it are staged on disk.
    #[arg(long, value_parser = parse_bytes)]
    pub memory_limit: Option<usize>,
    /// Output for people (`text`) or machines (`json`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl SnapshotArgs {
    /// The build that runs the selected snapshots (a snapshot keeps its history: no `--full-refresh`).
    pub(super) fn build_args(&self) -> BuildArgs {
        let seeds = SeedArgs {
            project: self.project.clone(),
            select: self.select.clone(),
            threads: self.threads,
            full_refresh: false,
            log_format: self.log_format,
        };
        BuildArgs { memory_limit: self.memory_limit, ..seeds.build_args() }
    }
}

impl SeedArgs {
    /// The build that loads the selected seeds.
    pub(super) fn build_args(&self) -> BuildArgs {
        BuildArgs {
            project: self.project.clone(),
            select: self.select.clone(),
            threads: self.threads,
            fail_fast: false,
            full_refresh: self.full_refresh,
            memory_limit: None,
            log_format: self.log_format,
            event_time_start: None,
            event_time_end: None,
            watch: false,
            allow_breaking: false,
            interval: std::time::Duration::from_secs(10),
            settle: None,
            openlineage_url: None,
            openlineage_deadline: std::time::Duration::from_secs(10),
            defer: false,
            favor_state: false,
            defer_warehouse: None,
            engine: None,
            scheduler: None,
        }
    }
}

impl BuildArgs {
    /// How long a landed file must be unchanged before it is ingested.
    pub(super) fn settle_interval(&self) -> std::time::Duration {
        self.settle.unwrap_or(if self.watch { std::time::Duration::from_secs(2) } else { std::time::Duration::ZERO })
    }
}

/// The shortest `--interval`: below it `--watch` would only poll the disk.
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let interval = match text.parse::<u64>() {
        Ok(seconds) => std::time::Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text)
            .map_err(|_| format!("`{text}` is not an interval such as `10s`, `500ms` or `1m`"))?,
    };
    if interval < MIN_INTERVAL {
        return Err(format!("`{text}` is shorter than the shortest interval, 100ms"));
    }
    Ok(interval)
}

fn parse_event_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    crate::run::materialize::microbatch::parse_time(text)
}

/// Which nodes a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Seeds and models.
    Build,
    /// Models only.
    Run,
    /// Seeds only.
    Seed,
    /// Snapshots only.
    Snapshot,
}

impl Scope {
    /// The command's name: `build`, `run`, `seed`, `snapshot`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Build => "build",
            Scope::Run => "run",
            Scope::Seed => "seed",
            Scope::Snapshot => "snapshot",
        }
    }

    fn parse(text: &str) -> Option<Scope> {
        [Scope::Build, Scope::Run, Scope::Seed, Scope::Snapshot].into_iter().find(|s| s.as_str() == text)
    }
}

/// `pipe retry`: the last run's command again, over the nodes that failed or were skipped.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Models run at once (default: the last run's).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
    /// Output for people (`text`) or machines (`json`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Reruns, with the last run's command and flags (`run_results.json`), the nodes it left failed or skipped.
pub(super) fn retry(args: &RetryArgs) -> anyhow::Result<ExitCode> {
    let path = args.project.project_dir.join(target_path(&args.project.project_dir)).join("run_results.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("error: there is no run to retry: `{}` does not exist (run `pipe build` first)", path.display());
        return Ok(ExitCode::from(2));
    };
    let last: run::RunResults = match serde_json::from_str(&text) {
        Ok(last) => last,
        Err(err) => {
            eprintln!("error: `{}` is not a run's results: {err}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let names: Vec<String> = last
        .results
        .iter()
        .filter(|r| matches!(r.status, NodeStatus::Error | NodeStatus::Skipped))
        .map(|r| r.name.clone())
        .collect();
    if names.is_empty() {
        eprintln!("Nothing to retry: every node of the last run ({}) succeeded", last.run_id);
        return Ok(ExitCode::SUCCESS);
    }
    let invocation = last.args.unwrap_or_default();
    let flag = |key: &str| invocation.get(key).and_then(serde_json::Value::as_bool).unwrap_or(false);
    let scope = invocation.get("which").and_then(|w| w.as_str()).and_then(Scope::parse).unwrap_or(Scope::Build);
    let threads = args.threads.or_else(|| invocation.get("threads").and_then(|t| t.as_u64()).map(|t| t as usize));
    eprintln!("Retrying `pipe {}` on {} node(s): {}", scope.as_str(), names.len(), names.join(", "));
    let mut build = SeedArgs {
        project: args.project.clone(),
        select: SelectArgs { select: names, exclude: Vec::new(), state: None },
        threads,
        full_refresh: flag("full_refresh"),
        log_format: args.log_format,
    }
    .build_args();
    build.fail_fast = flag("fail_fast");
    run(&build, scope)
}

/// `--defer`: the upstreams of the selection that are not selected, to be read from the state's warehouse (those
/// this warehouse lacks, or all with `--favor-state`).
fn deferred(
    args: &BuildArgs,
    manifest: &crate::manifest::Manifest,
    selected: &[String],
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<run::Deferred>, String> {
    use crate::project::Materialization;
    let Some(state_dir) = &args.select.state else { return Err("`--defer` needs `--state <folder>`".into()) };
    let manifest_path = if state_dir.is_dir() { state_dir.join("manifest.json") } else { state_dir.clone() };
    let state = crate::manifest::Manifest::read(&manifest_path)
        .map_err(|e| format!("cannot read the state manifest `{}`: {e}", manifest_path.display()))?;
    let warehouse = match &args.defer_warehouse {
        Some(dir) => Location::Folder(dir.clone()),
        None => {
            let folder = manifest_path.parent().and_then(|p| p.parent()).unwrap_or(std::path::Path::new("."));
            Location::of(folder, &state.project).map_err(|e| e.to_string())?
        }
    };
    if warehouse.folder().is_some_and(|dir| !dir.is_dir()) {
        return Err(format!("the state's warehouse `{warehouse}` does not exist; name it with `--defer-warehouse`"));
    }
    let local = Location::of(&args.project.project_dir, &manifest.project).map_err(|e| e.to_string())?;
    let chosen: std::collections::BTreeSet<&str> = selected.iter().map(String::as_str).collect();
    let mut upstream = std::collections::BTreeSet::new();
    let mut frontier: Vec<&str> = selected.iter().map(String::as_str).collect();
    while let Some(id) = frontier.pop() {
        for (up, down) in &manifest.edges {
            if down == id && upstream.insert(up.as_str()) {
                frontier.push(up.as_str());
            }
        }
    }
    let mut deferred = Vec::new();
    let local = crate::warehouse::Warehouse::open_at(&local).ok();
    // In dependency order: a deferred view is planned over the deferred tables it reads.
    let upstream: Vec<&str> =
        manifest.order.iter().map(String::as_str).filter(|id| upstream.contains(id) && !chosen.contains(id)).collect();
    for id in upstream {
        let (Some(node), Some(there)) = (manifest.nodes.get(id), state.nodes.get(id)) else { continue };
        if matches!(node.materialized, Materialization::Ephemeral | Materialization::External) {
            continue;
        }
        let here = match &local {
            Some(w) => runtime
                .block_on(async { w.has_table(&node.relation).await || w.read_view(&node.relation).await.is_some() }),
            None => false,
        };
        if here && !args.favor_state {
            continue;
        }
        deferred.push(run::Deferred {
            relation: node.relation.clone(),
            relation_there: there.relation.clone(),
            warehouse: warehouse.clone(),
        });
    }
    Ok(deferred)
}

/// The project's `target-path` (without compiling it).
fn target_path(project_dir: &std::path::Path) -> String {
    let (project, _) = crate::project::load_project(project_dir);
    project.map(|p| p.config.target_path).unwrap_or_else(|_| "target".into())
}

/// Parses `4GiB`, `512MiB`, `1G`, `1000000` into bytes.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a size such as `4GiB`"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit `{other}`; use KiB, MiB, GiB or TiB")),
    };
    Ok((number * factor) as usize)
}

fn status_word(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Success => "OK",
        NodeStatus::Error => "ERROR",
        NodeStatus::Skipped => "SKIP",
    }
}

fn result_line(result: &NodeResult, index: usize, total: usize) -> String {
    let rows = match (result.status, result.rows_written) {
        (NodeStatus::Success, Some(rows)) => format!("{rows} rows"),
        _ => String::new(),
    };
    let version = result.delta_version.map(|v| format!("v{v}")).unwrap_or_default();
    let mut line = format!(
        "{index:>4} of {total:<4} {:<5} {:<11} {:<40} {:>12} {:>5} {:>7.2}s",
        status_word(result.status),
        result.materialized,
        result.relation,
        rows,
        version,
        result.timing.total_seconds
    );
    if let Some(message) = &result.message {
        let prefix = match result.status {
            NodeStatus::Success => "note",
            NodeStatus::Skipped => "",
            NodeStatus::Error => "error",
        };
        for (i, text) in message.lines().enumerate() {
            let label = if i == 0 && !prefix.is_empty() { format!("{prefix}: ") } else { String::new() };
            line.push_str(&format!("\n             {label}{text}"));
        }
    }
    if let (NodeStatus::Error, Some(code)) = (result.status, &result.code) {
        line.push_str(&format!("\n             code: {code} (`pipe explain {code}`)"));
    }
    line
}

pub(super) fn run(args: &BuildArgs, scope: Scope) -> anyhow::Result<ExitCode> {
    run_with(args, scope, None)
}

/// What `pipe backfill` adds to a run.
pub(super) struct Backfill {
    pub dry_run: bool,
}

pub(super) fn run_with(args: &BuildArgs, scope: Scope, backfill: Option<Backfill>) -> anyhow::Result<ExitCode> {
    if let (Some(_), Some(bound)) = (args.memory_limit, super::BOUNDED_MEMORY.get()) {
        bound();
    }
    let (mut compilation, manifest) = match compile_reported_with(&args.project, true, Partial::Build)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let target = target_dir(&compilation, &args.project);
    manifest.write(&target)?;
    let engine = match engine(args, compilation.project.as_ref()) {
        Ok(engine) => engine,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let selected = match selected_ids(&manifest, &args.select, &args.project)? {
        Ok(ids) => ids,
        Err(code) => return Ok(code),
    };
    let selected: Vec<String> = selected
        .into_iter()
        .filter(|id| match manifest.nodes.get(id) {
            Some(node) => match scope {
                Scope::Build => true,
                Scope::Run => node.resource_type == NodeKind::Model,
                Scope::Seed => node.resource_type == NodeKind::Seed,
                Scope::Snapshot => node.resource_type == NodeKind::Snapshot,
            },
            None => false,
        })
        .collect();
    // The schema registry: a breaking change to a model's columns stops the build before anything runs (and
    // before a backfill's dry run or a watch starts).
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = super::runtime(Some(threads))?;
    if !args.allow_breaking {
        let breaks = runtime.block_on(async {
            let location = Location::of(&args.project.project_dir, &manifest.project)?;
            Ok::<_, crate::warehouse::RunError>(
                run::schema_gate(&manifest, &Warehouse::open_at(&location)?, &selected).await,
            )
        });
        let breaks = match breaks {
            Ok(breaks) => breaks,
            Err(err) => {
                eprintln!("error: {err}");
                return Ok(ExitCode::from(2));
            }
        };
        if !breaks.is_empty() {
            print_breaks(&breaks);
            return Ok(ExitCode::from(1));
        }
    }
    let backfill_id = match &backfill {
        None => None,
        Some(spec) => {
            let id = super::backfill::backfill_id(args.event_time_start, args.event_time_end, &selected);
            let window = crate::run::materialize::microbatch::EventTimeWindow {
                start: args.event_time_start,
                end: args.event_time_end,
                backfill: Some(id.clone()),
            };
            if spec.dry_run {
                return runtime.block_on(super::backfill::dry_run(&manifest, &args.project, &selected, &window));
            }
            eprintln!("Backfill {id} (rerun the same command to resume it)");
            Some(id)
        }
    };
    let cycle = Cycle {
        args,
        manifest: &manifest,
        selected: &selected,
        target: &target,
        threads,
        engine,
        render_times: compilation.render_times.clone(),
        plans: std::sync::Arc::new(std::mem::take(&mut compilation.plans)),
        backfill_id,
        runtime: &runtime,
        render_at_build: compilation.render_at_build.take(),
        deferred: match args.defer {
            true => match deferred(args, &manifest, &selected, &runtime) {
                Ok(deferred) => deferred,
                Err(message) => {
                    eprintln!("error: {message}");
                    return Ok(ExitCode::from(2));
                }
            },
            false => Vec::new(),
        },
        invocation: serde_json::json!({
            "which": scope.as_str(),
            "select": args.select.select,
            "exclude": args.select.exclude,
            "threads": args.threads,
            "full_refresh": args.full_refresh,
            "fail_fast": args.fail_fast,
        }),
    };
    if args.watch {
        return super::watch::watch(&cycle);
    }
    let report = cycle.run(false)?;
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The engine the build runs on: the flags', else the profile target's, else the project file's `engine:`.
fn engine(args: &BuildArgs, project: Option<&crate::project::Project>) -> Result<crate::project::Engine, String> {
    use crate::project::{Engine, EngineKeys};
    let flags = EngineKeys {
        engine: args.engine.map(|e| match e {
            EngineArg::Local => "local".to_string(),
            EngineArg::Ballista => "ballista".to_string(),
        }),
        scheduler: args.scheduler.clone(),
    };
    let none = EngineKeys::default();
    let (target, file) = match project {
        Some(project) => (&project.target.engine, &project.config.engine),
        None => (&none, &none),
    };
    let file_name = project.map_or("pipe.yml", |p| p.config.file_name);
    let engine = Engine::choose(&[
        ("the command line", &flags),
        ("the profile's target", target),
        (&format!("`{file_name}`"), file),
    ])?;
    if engine != Engine::Local && !cfg!(feature = "ballista") {
        return Err(
            "the Ballista engine needs a pipe built with the `ballista` feature (`cargo install --features ballista`)"
                .into(),
        );
    }
    Ok(engine)
}

/// The schema gate's refusal, a model at a time, with what to do.
fn print_breaks(breaks: &[crate::warehouse::SchemaBreak]) {
    for schema_break in breaks {
        eprintln!("error: {schema_break}");
    }
    eprintln!(
        "help: bump the model's `version` config, set its `schema_compatibility`, or build with `--allow-breaking` (`pipe explain {}`)",
        crate::diagnostics::Code::BreakingSchema.id()
    );
}

/// One run of the selected nodes, as `pipe build` does once and `--watch` does on every change.
pub(super) struct Cycle<'a> {
    pub args: &'a BuildArgs,
    pub manifest: &'a crate::manifest::Manifest,
    pub selected: &'a [String],
    pub target: &'a std::path::Path,
    pub threads: usize,
    pub engine: crate::project::Engine,
    pub render_times: std::collections::BTreeMap<String, std::time::Duration>,
    pub plans: std::sync::Arc<std::collections::HashMap<String, datafusion::logical_expr::LogicalPlan>>,
    pub backfill_id: Option<String>,
    pub runtime: &'a tokio::runtime::Runtime,
    pub render_at_build: Option<std::sync::Arc<crate::compile::BuildRenderer>>,
    /// The command and flags, for `run_results.json`.
    pub invocation: serde_json::Value,
    /// `--defer`: the unselected upstream relations read from the state's warehouse.
    pub deferred: Vec<run::Deferred>,
}

impl Cycle<'_> {
    /// Runs the selection once, printing a line per node and a summary; writes `run_results.json`. With
    /// `skip_unchanged`, `table` models whose inputs and logic are those of their last version are not rebuilt.
    pub(super) fn run(&self, skip_unchanged: bool) -> anyhow::Result<run::BuildReport> {
        let args = self.args;
        let manifest = self.manifest;
        let run_id = uuid::Uuid::new_v4().to_string();
        let total = self
            .selected
            .iter()
            .filter(|id| manifest.nodes[*id].materialized != crate::project::Materialization::Ephemeral)
            .count();
        let json = args.log_format == LogFormat::Json;
        if !json {
            eprintln!("Running {total} nodes with {} threads (run {run_id})", self.threads);
        }
        let progress = if !json && std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            Some(bar)
        } else {
            None
        };
        let done = Mutex::new(0usize);
        let on_result = |result: &NodeResult| {
            let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
            *done += 1;
            if json {
                let mut stdout = std::io::stdout().lock();
                let line = super::log_json::node_event(result, *done, total, &run_id).to_string();
                let _ = writeln!(stdout, "{}", crate::secrets::mask(&line));
            } else {
                let line = crate::secrets::mask(&result_line(result, *done, total)).into_owned();
                match &progress {
                    Some(bar) => {
                        bar.println(line);
                        bar.inc(1);
                    }
                    None => eprintln!("{line}"),
                }
            }
        };
        let openlineage = {
            let _runtime = self.runtime.enter();
            // A password in the collector's URL is a secret: masked wherever it would be printed.
            if let Some(url) = &args.openlineage_url {
                crate::secrets::mask_url(url);
            }
            let transport = crate::lineage::openlineage::Transport::new(self.target, args.openlineage_url.as_deref());
            let project_dir = &args.project.project_dir;
            // An unusable `warehouse:` fails the build itself, with its message; the events then name folders.
            let warehouse = Location::of(project_dir, &manifest.project)
                .unwrap_or_else(|_| Location::Folder(project_dir.join(&manifest.project.warehouse)));
            std::sync::Arc::new(crate::lineage::openlineage::Emitter::start(
                transport,
                manifest,
                project_dir,
                &warehouse,
            ))
        };
        let request = BuildRequest {
            manifest,
            project_root: &args.project.project_dir,
            selected: self.selected.to_vec(),
            options: BuildOptions {
                invocation: Some(self.invocation.clone()),
                deferred: self.deferred.clone(),
                threads: self.threads,
                full_refresh: args.full_refresh,
                fail_fast: args.fail_fast,
                memory_limit: args.memory_limit,
                run_id: run_id.clone(),
                render_times: self.render_times.clone(),
                plans: std::sync::Arc::clone(&self.plans),
                event_time: crate::run::materialize::microbatch::EventTimeWindow {
                    start: args.event_time_start,
                    end: args.event_time_end,
                    backfill: self.backfill_id.clone(),
                },
                skip_unchanged,
                events: {
                    let mut events: Vec<std::sync::Arc<dyn run::BuildEvents>> = vec![openlineage.clone()];
                    if !json {
                        events.push(std::sync::Arc::new(ProgressLines(progress.clone())));
                    }
                    events
                },
                settle_interval: args.settle_interval(),
                failpoints: super::failpoints(),
                render_at_build: self.render_at_build.clone(),
                // The gate ran above, before a dry run or a watch could start.
                schema_gate: false,
                register_schemas: !skip_unchanged,
                engine: self.engine.clone(),
            },
            target: Some(self.target),
        };
        let built = self.runtime.block_on(run::build(request, &on_result));
        let delivery = self.runtime.block_on(openlineage.close(args.openlineage_deadline));
        if let (Some(url), true) = (&args.openlineage_url, delivery.failed > 0) {
            let left = match delivery.left_at_deadline {
                0 => String::new(),
                n => format!(
                    "; {n} left undelivered when the {} delivery deadline passed",
                    humantime::format_duration(args.openlineage_deadline)
                ),
            };
            eprintln!(
                "warning: OpenLineage collector {}: {} of {} events not delivered ({}{left}); all are in target/openlineage.ndjson",
                crate::secrets::mask_url(url),
                delivery.failed,
                delivery.events,
                delivery.last_error.as_deref().unwrap_or("unknown error")
            );
        }
        let report = built?;
        let results = &report.results;
        if let Some(bar) = &progress {
            bar.finish_and_clear();
        }
        if !json {
            for test in &results.tests {
                let word = format!("{:?}", test.status).to_uppercase();
                eprintln!("test {word:<5} {:<55} {:>8} {:>6.2}s", test.name, test.failures, test.seconds);
                for line in test.message.iter().flat_map(|m| m.lines()) {
                    eprintln!("             {line}");
                }
            }
        }
        for notice in &report.notices {
            if notice.error {
                eprintln!("error: {}", notice.text);
            } else if !json {
                eprintln!("warning: {}", notice.text);
            }
        }
        let (ok, errors, skipped) =
            (results.count(NodeStatus::Success), results.count(NodeStatus::Error), results.count(NodeStatus::Skipped));
        if json {
            let mut stdout = std::io::stdout().lock();
            for (index, test) in results.tests.iter().enumerate() {
                let line = super::log_json::test_event(test, index + 1, results.tests.len(), &results.run_id);
                let _ = writeln!(stdout, "{}", crate::secrets::mask(&line.to_string()));
            }
            let _ = writeln!(stdout, "{}", super::log_json::stats_event(results));
        } else {
            let rows: u64 = results.results.iter().filter_map(|r| r.rows_written).sum();
            eprintln!("{}", stage_accounting(results, skip_unchanged));
            eprintln!(
                "Done in {:.2}s: {ok} succeeded, {errors} failed, {skipped} skipped; {rows} rows written",
                results.elapsed_seconds
            );
        }
        Ok(report)
    }
}

/// The build's progress inside models (a microbatch model's batches), as lines above the progress bar or on stderr.
#[derive(Debug)]
struct ProgressLines(Option<indicatif::ProgressBar>);

impl run::BuildEvents for ProgressLines {
    fn progress(&self, model: &str, message: &str) {
        let line = crate::secrets::mask(&format!("             {model}: {message}")).into_owned();
        match &self.0 {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// Rows written per stage, bronze -> silver -> gold, and per model with the rows of the tables it read.
/// With `watching` (`--watch`, where each cycle follows new files), the end-to-end latency too: in a one-off build
/// the input files' age says how old the data is, not how fast pipe was (that is `pipe freshness`).
fn stage_accounting(results: &run::RunResults, watching: bool) -> String {
    let mut lines = Vec::new();
    let mut stages = Vec::new();
    for layer in ["bronze", "silver", "gold"] {
        let in_layer: Vec<&NodeResult> = results
            .results
            .iter()
            .filter(|r| r.layer.as_deref() == Some(layer) && r.status == NodeStatus::Success)
            .collect();
        if in_layer.is_empty() {
            continue;
        }
        let written: u64 = in_layer.iter().filter_map(|r| r.rows_written).sum();
        stages.push(format!("{layer} {written} rows ({} models)", in_layer.len()));
        for result in in_layer {
            let read: Vec<String> = result.rows_in.iter().map(|(relation, n)| format!("{relation} {n}")).collect();
            let mut read = if read.is_empty() { String::new() } else { format!(" from {}", read.join(", ")) };
            // What the executed plan removed, from its metrics; `rows_in` then counts the rows it scanned.
            let removed: Vec<String> = [("filtered", result.rows_filtered), ("deduplicated", result.rows_deduplicated)]
                .into_iter()
                .filter_map(|(what, n)| Some(format!("{} {what}", n?)))
                .collect();
            if result.rows_in_scanned && !removed.is_empty() {
                read.push_str(&format!(" ({})", removed.join(", ")));
            }
            lines.push(format!(
                "  {:<40} {:>10} rows written{read}",
                result.relation,
                result.rows_written.unwrap_or(0)
            ));
        }
    }
    if stages.is_empty() {
        return String::new();
    }
    let latencies: Vec<f64> = results.results.iter().filter_map(|r| r.latency_seconds).collect();
    if let Some(worst) = latencies.iter().copied().reduce(f64::max).filter(|_| watching) {
        lines.push(format!("  end-to-end latency (newest input file -> gold committed): up to {worst:.1}s"));
    }
    format!("Rows by stage: {}\n{}", stages.join(" -> "), lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("4 parsecs").is_err());
    }
}
