//! The command line: clap definitions (their doc comments are the flag docs), conversion of flags into stage
//! options, rendering of diagnostics, and the exit code.
//!
//! Exit codes: 0 success; 1 the project or the data failed (compile errors, a failed model); 2 pipe could not do
//! its job (bad usage, an unreadable file, an internal error).
//! **Architecture invariant:** only this module prints, reads environment variables or picks the exit code.

/// Everything pipe prints passes through the secret masker (`crate::secrets`): these shadow the standard macros in
/// `cli` and its submodules.
/// They never panic on a closed stream (`pipe build 2>&1 | head -1`).
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        let text = format!($($arg)*);
        let _ = std::io::Write::write_all(
            &mut std::io::stderr().lock(),
            format!("{}\n", crate::secrets::mask(&text)).as_bytes(),
        );
    }};
}
macro_rules! println {
    ($($arg:tt)*) => {{
        let text = format!($($arg)*);
        crate::cli::write_stdout(&format!("{text}\n"));
    }};
}

mod backfill;
mod build;
mod cluster;
mod debug;
mod deps;
mod docs;
mod init;
mod lineage;
mod log_json;
mod operation;
mod quality;
mod query;
mod watch;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::compile::{compile, Compilation, CompileOptions, PlanCache, SelectableGraph};
use crate::diagnostics::{self, Code, Diagnostic, DiagnosticFormat, SourceMap};
use crate::graph::selector::SelectError;
use crate::manifest::Manifest;

/// pipe: a SQL-first pipeline compiler. Models are SQL files with Jinja; pipe compiles them into a checked
/// dependency graph and builds them into Delta Lake tables with DataFusion.
///
/// Exit codes: 0 success, 1 the project or data failed, 2 pipe could not run (usage or internal error).
#[derive(Debug, Parser)]
#[command(name = "pipe", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render, parse and check every model, then write `target/manifest.json` and `target/compiled/` (also
    /// `pipe parse`).
    #[command(alias = "parse")]
    Compile(CompileArgs),
    /// List selected nodes with their layer, materialization and tags (also `pipe list`).
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove the project's `clean-targets` (default: its target folder).
    Clean(CleanArgs),
    /// Check the project file, the profile and target, the packages and that the warehouse is writable.
    Debug(debug::DebugArgs),
    /// Call a macro outside a build (`pipe run-operation grant_select --args '{role: analyst}'`); it may read the
    /// warehouse, and what it logs is printed.
    RunOperation(operation::RunOperationArgs),
    /// Create a minimal medallion project that compiles as created.
    Init(InitArgs),
    /// Install the `local:` packages of `packages.yml` into `dbt_packages/` (hub and git packages: `dbt deps`).
    Deps(DepsArgs),
    /// Load seeds and run models into the warehouse, in dependency order and in parallel.
    Build(build::BuildArgs),
    /// Run models (not seeds) into the warehouse.
    Run(build::BuildArgs),
    /// Load the CSV seeds into the warehouse.
    Seed(build::SeedArgs),
    /// Run the snapshots: record the changes of their queries' rows as new versions (dbt's snapshots, SCD type 2).
    Snapshot(build::SnapshotArgs),
    /// Run again, with the last run's command and flags, the nodes it left failed or skipped (`run_results.json`).
    Retry(build::RetryArgs),
    /// Print a model's rows.
    Show(query::ShowArgs),
    /// Run SQL over the warehouse and print the result.
    Query(query::QueryArgs),
    /// List a model's table versions: when, which operation, rows added / updated / removed, run and logic.
    History(query::HistoryArgs),
    /// Rows added, removed and changed between two versions of a model's table.
    Diff(query::DiffArgs),
    /// Reprocess a time range of microbatch models, batch by batch, resumably (`--dry-run` to see the cost).
    Backfill(backfill::BackfillArgs),
    /// Run the data tests (YAML generic tests and singular tests) against the warehouse.
    Test(quality::TestArgs),
    /// How old each source's newest data is (`freshness`), and each model's last build (`expect_every`); writes
    /// dbt's `target/sources.json`.
    Freshness(quality::FreshnessArgs),
    /// `pipe source freshness`: dbt's spelling of `pipe freshness`.
    Source(quality::SourceArgs),
    /// The schema registry: `pipe schema diff <model>`.
    Schema(quality::SchemaArgs),
    /// Per model: last run, rows, duration trend, freshness and failing tests, from the run history.
    Status(quality::StatusArgs),
    /// Column-level lineage of a model (and `target/lineage.json` for all).
    Lineage(lineage::LineageArgs),
    /// The docs site: `pipe docs generate` (static, to `target/docs/`), `pipe docs serve [--port P]`.
    Docs(docs::DocsArgs),
    /// Explain a diagnostic code, e.g. `pipe explain P0401` or `pipe explain ref-not-found`.
    Explain(ExplainArgs),
    /// The processes of a Ballista cluster that runs pipe's plans: `pipe ballista scheduler`, `pipe ballista
    /// executor` (in a pipe built with the cargo feature `ballista`).
    Ballista(cluster::BallistaArgs),
}

/// Options every command that reads a project shares.
#[derive(Debug, Args, Clone)]
pub struct ProjectArgs {
    /// The project folder (holding `pipe.yml` or `dbt_project.yml`).
    #[arg(long, default_value = ".", global = true)]
    pub project_dir: PathBuf,
    /// Variables for `var()`, as YAML or JSON: `--vars '{start: 2024-01-01}'`. They override `vars:` in the project.
    #[arg(long, global = true)]
    pub vars: Option<String>,
    /// How diagnostics are printed on stderr.
    #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human, global = true)]
    pub diagnostics: DiagnosticFormat,
    /// Skip type-checking models with DataFusion: render, parse and check the graph only.
    #[arg(long, global = true)]
    pub no_plan: bool,
    /// The `profiles.yml` target to build for (default: the profile's `target:`).
    #[arg(long = "target", short = 't', id = "profile_target", global = true)]
    pub target: Option<String>,
    /// The folder holding `profiles.yml` (default: `DBT_PROFILES_DIR`, the project folder, then `~/.dbt`).
    #[arg(long, global = true)]
    pub profiles_dir: Option<PathBuf>,
}

/// Node selection, in dbt's grammar.
#[derive(Debug, Args, Clone, Default)]
pub struct SelectArgs {
    /// Nodes to include: names, globs (`stg_*`), `+m`, `m+`, `2+m`, `m+1`, `@m`, `tag:x`, `layer:silver`,
    /// `path:models/silver`, `config.materialized:incremental`, `source:s.t+`, `state:modified`, `state:new`.
    /// Space-separated terms are a union; commas intersect.
    #[arg(short, long, num_args = 1.., value_delimiter = None)]
    pub select: Vec<String>,
    /// Nodes to leave out, in the same grammar.
    #[arg(long, num_args = 1..)]
    pub exclude: Vec<String>,
    /// A previous `target/` folder whose `manifest.json` `state:` methods compare against.
    #[arg(long)]
    pub state: Option<PathBuf>,
}

impl ProjectArgs {
    fn plan(&self) -> bool {
        !self.no_plan
    }
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print the compiled SQL of a query written as a model is (`ref`, `source`, macros), as dbt's
    /// `compile --inline "select * from {{ ref('orders') }}"`.
    #[arg(long)]
    pub inline: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// `text`: one node per line; `json`: a JSON array.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Only nodes of these types: `model`, `seed`, `snapshot`, `source` (any number).
    #[arg(long = "resource-type", alias = "resource-types", num_args = 1..)]
    pub resource_type: Vec<String>,
    /// With `--output json`: only these keys of each node (`name`, `unique_id`, `resource_type`, `layer`,
    /// `materialized`, `tags`, `path`), as dbt's `--output-keys`.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub output_keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// The project folder (holding `pipe.yml` or `dbt_project.yml`).
    #[arg(long, default_value = ".")]
    pub project_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder to create; must not exist or be empty.
    pub dir: PathBuf,
    /// Project name (default: the folder name).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct DepsArgs {
    /// The project folder (holding `pipe.yml` or `dbt_project.yml`).
    #[arg(long, default_value = ".")]
    pub project_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A code such as `P0401`, or its name such as `ref-not-found`; without one, every code is listed.
    pub code: Option<String>,
}

/// Runs the CLI and returns the process exit code.
/// Stack of every thread pipe parses, renders or plans on: deep expressions (thousands of terms, dozens of nested
/// `CASE`s) recurse deeply in sqlparser and DataFusion, and must plan or fail with a message, never overflow.
pub const STACK_SIZE: usize = 256 << 20;

/// The most models run at once, and the most threads asked of the operating system.
pub const MAX_THREADS: usize = 256;

/// `--threads`: 1 to `MAX_THREADS`.
pub(crate) fn parse_threads(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a thread count from 1 to {MAX_THREADS}")),
    }
}

/// What the binary does to hold the process to a memory limit beyond DataFusion's pool (its allocator returns freed
/// memory at once); set by `main.rs`, which owns the allocator, and called when a build has `--memory-limit`.
pub static BOUNDED_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// The most memory rendering templates may add to the process. No real model's render comes near it; a template that
/// doubles a string in a loop passes it within a second (fuel counts instructions, and each doubling is one).
pub const RENDER_MEMORY: u64 = 2 << 30;

/// Stops the process with a compile error when renders grow it by more than `RENDER_MEMORY`, naming the file. A
/// render cannot be interrupted from outside and minijinja has no allocation limit, so exiting is the one bound
/// there is; nothing has been written yet at render time (the manifest is written after, atomically).
fn watch_render_memory() {
    let watch = || {
        let mut baseline: Option<u64> = None;
        loop {
            std::thread::sleep(std::time::Duration::from_millis(10));
            let rendering = crate::template::rendering_now();
            let Some(file) = rendering.first() else {
                baseline = None;
                continue;
            };
            let Some(resident) = resident_bytes() else { return };
            let start = *baseline.get_or_insert(resident);
            if resident > start + RENDER_MEMORY {
                eprintln!(
                    "error[P0203]: rendering {file} used more than {} GiB of memory and was stopped\n  help: look \
                     for a string or list that grows in a loop (`{{% set ns.s = ns.s ~ ns.s %}}`)",
                    RENDER_MEMORY >> 30
                );
                std::process::exit(1);
            }
        }
    };
    let _ = std::thread::Builder::new().name("pipe-render-memory".into()).spawn(watch);
}

/// The process's resident memory, where the platform tells it (Linux's `VmRSS` in `/proc/self/status`).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

// The library's option enums, as the CLI's flag values: the library does not depend on clap.
impl clap::ValueEnum for DiagnosticFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[DiagnosticFormat::Human, DiagnosticFormat::Short, DiagnosticFormat::Json, DiagnosticFormat::Github]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            DiagnosticFormat::Human => PossibleValue::new("human").help("Code frames for people"),
            DiagnosticFormat::Short => {
                PossibleValue::new("short").help("One `file:line:col: severity[code]: message` line per diagnostic")
            }
            DiagnosticFormat::Json => PossibleValue::new("json").help("One JSON object per line"),
            DiagnosticFormat::Github => {
                PossibleValue::new("github").help("GitHub Actions annotations (`::error file=...,line=...::...`)")
            }
        })
    }
}

pub fn main() -> ExitCode {
    // The command runs on a thread with a large stack; rayon's workers get the same.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(STACK_SIZE).build_global();
    watch_render_memory();
    match std::thread::Builder::new().name("pipe".into()).stack_size(STACK_SIZE).spawn(run_main) {
        Ok(thread) => thread.join().unwrap_or_else(|_| ExitCode::from(2)),
        Err(_) => run_main(),
    }
}

/// A tokio runtime for a command: `threads` workers (at least 2, at most the cores), each with a large stack.
pub(crate) fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.unwrap_or(cores).clamp(2, cores.max(2)))
        .thread_stack_size(STACK_SIZE)
        .enable_all()
        .build()
}

fn run_main() -> ExitCode {
    init_logging();
    // A panic is pipe's bug, never the user's: one line saying so, without Rust's backtrace hint. A panic inside
    // a model's task fails that model (`run::build`), and the build goes on.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        // A library's background task that panics as the disk fills (object_store's "Already shut down") is
        // caught by tokio; the write it served fails with the real cause, which the model's result names.
        let ours = info.location().is_some_and(|l| l.file().starts_with("src/"));
        let worker = std::thread::current().name().is_some_and(|n| n.starts_with("tokio-r"));
        if !ours && worker {
            tracing::debug!("panic in a library task{location}: {message}");
            return;
        }
        eprintln!("internal error in pipe{location}: {message}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return parse_error(err),
    };
    let result = match cli.command {
        Command::Compile(args) => run_compile(&args),
        Command::Ls(args) => run_ls(&args),
        Command::Clean(args) => run_clean(&args),
        Command::Debug(args) => debug::run(&args),
        Command::RunOperation(args) => operation::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Deps(args) => deps::run(&args),
        Command::Build(args) => build::run(&args, build::Scope::Build),
        Command::Run(args) => build::run(&args, build::Scope::Run),
        Command::Seed(args) => build::run(&args.build_args(), build::Scope::Seed),
        Command::Snapshot(args) => build::run(&args.build_args(), build::Scope::Snapshot),
        Command::Retry(args) => build::retry(&args),
        Command::Show(args) => query::show(&args),
        Command::Query(args) => query::query(&args),
        Command::History(args) => query::history(&args),
        Command::Diff(args) => query::diff(&args),
        Command::Backfill(args) => backfill::run(&args),
        Command::Test(args) => quality::run(&args),
        Command::Freshness(args) => quality::freshness(&args),
        Command::Source(args) => {
            let quality::SourceCommand::Freshness(args) = &args.command;
            quality::freshness(args)
        }
        Command::Schema(args) => quality::schema(&args),
        Command::Status(args) => quality::status(&args),
        Command::Lineage(args) => lineage::run(&args),
        Command::Docs(args) => docs::run(&args),
        Command::Explain(args) => run_explain(&args),
        Command::Ballista(args) => cluster::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    // delta-rs warns on every write of a DataFusion nanosecond timestamp (Delta stores microseconds); pipe's own
    // messages say what matters, so library logs show only errors unless `PIPE_LOG` asks for more.
    let filter = tracing_subscriber::EnvFilter::try_from_env("PIPE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("error,pipe=warn,deltalake_core=error,buoyant_kernel=off")
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| MaskedStderr).try_init();
}

fn use_color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Prints diagnostics on stderr; returns whether any is an error.
fn report(diagnostics: &[Diagnostic], sources: &SourceMap, format: DiagnosticFormat, summary: Option<&str>) -> bool {
    let color = use_color();
    let mut stderr = std::io::stderr().lock();
    for diagnostic in diagnostics {
        let text = diagnostics::render(diagnostic, sources, format, color);
        let _ = stderr.write_all(crate::secrets::mask(&text).as_bytes());
        if format == DiagnosticFormat::Human {
            let _ = stderr.write_all(b"\n");
        }
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if let (Some(what), DiagnosticFormat::Human, true) = (summary, format, errors > 0) {
        let _ = writeln!(stderr, "error: {what} failed with {errors} error(s) and {warnings} warning(s)");
    }
    errors > 0
}

pub(crate) fn parse_vars(text: Option<&str>) -> anyhow::Result<BTreeMap<String, Value>> {
    match text {
        None => Ok(BTreeMap::new()),
        Some(text) if text.trim().is_empty() => Ok(BTreeMap::new()),
        Some(text) => serde_saphyr::from_str(text)
            .map_err(|e| anyhow::anyhow!("`--vars` is not a YAML or JSON mapping: {}", e.without_snippet())),
    }
}

fn compile_options(args: &ProjectArgs) -> anyhow::Result<CompileOptions> {
    let now = chrono::Utc::now();
    let env_vars: BTreeMap<String, String> = std::env::vars().collect();
    crate::secrets::register(&env_vars);
    Ok(CompileOptions {
        plan: !args.no_plan,
        // Read by a compile (`compile_reported_with`), not by the renders of `run-operation` and `--inline`.
        plan_cache: PlanCache::default(),
        keep_plans: false,
        vars: parse_vars(args.vars.as_deref())?,
        env_vars,
        run_started_at: now.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string(),
        invocation_id: uuid::Uuid::new_v4().to_string(),
        target_name: std::env::var("PIPE_TARGET").unwrap_or_else(|_| "dev".into()),
        command: String::new(),
        full_refresh: false,
        profiles_dirs: crate::project::profiles::search_dirs(
            args.profiles_dir.as_deref(),
            std::env::var("DBT_PROFILES_DIR").ok().as_deref(),
            &args.project_dir,
            std::env::var("HOME").ok().as_deref(),
        ),
        target: args.target.clone(),
    })
}

/// The plan cache lives in the default target folder; a project's `target-path` is only known after loading.
fn plan_cache_path(args: &ProjectArgs) -> PathBuf {
    args.project_dir.join("target").join("plan_cache.json")
}

/// Compiles and reports diagnostics; `Err(exit code)` when the compile failed.
fn compile_reported(args: &ProjectArgs) -> anyhow::Result<Result<(Compilation, Manifest), ExitCode>> {
    compile_reported_with(args, false, Partial::No)
}

/// What a command does when some models do not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partial {
    /// Fail (`pipe compile`, `ls`): every error is reported and the command exits 1.
    No,
    /// Build everything else (`build`, `run`, `test`, ...).
    Build,
    /// Read the warehouse as it is (`query`, `show`, `history`, `status`, ...): nothing is built.
    Read,
}

/// [`compile_reported`], keeping the models' logical plans for a build to execute when `keep_plans`.
/// Compiles and reports the diagnostics. With `partial` (a build), models that did not compile do not stop the
/// command: the manifest lists them (`compile_errors`), and the build fails them and skips their descendants.
fn compile_reported_with(
    args: &ProjectArgs,
    keep_plans: bool,
    mode: Partial,
) -> anyhow::Result<Result<(Compilation, Manifest), ExitCode>> {
    // `flags.WHICH`: a partial compile is a build's.
    let command = if mode == Partial::Build { "build" } else { "compile" }.to_string();
    let partial = mode != Partial::No;
    let plan_cache = if args.no_plan { PlanCache::default() } else { PlanCache::read(&plan_cache_path(args)) };
    let options = CompileOptions { keep_plans, command, plan_cache, ..compile_options(args)? };
    let mut compilation = compile(&args.project_dir, &options);
    // What models said with `log(..., info=True)` or `print`, as dbt shows it.
    for line in &compilation.logs {
        eprintln!("{}", crate::secrets::mask(line));
    }
    let sources = compilation.sources();
    let partial = partial && compilation.partial.is_some();
    let summary = if partial { None } else { Some("compile") };
    let failed = report(&compilation.diagnostics, sources, args.diagnostics, summary);
    if partial {
        compilation.manifest = compilation.partial.take();
    }
    if let (true, Some(manifest)) = (partial, &compilation.manifest) {
        let names: Vec<&str> = manifest.compile_errors.keys().filter_map(|id| id.rsplit('.').next()).collect();
        if !names.is_empty() {
            let consequence = match mode {
                Partial::Read => "the warehouse is read as it is",
                _ => "they and the models downstream of them are not built; everything else is",
            };
            eprintln!("warning: {} model(s) did not compile ({}): {consequence}", names.len(), names.join(", "));
        }
    }
    match compilation.manifest.take() {
        Some(manifest) if !failed || partial => {
            if args.plan() {
                let path = plan_cache_path(args);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                compilation.plan_cache.write(&path)?;
            }
            Ok(Ok((compilation, manifest)))
        }
        _ => Ok(Err(ExitCode::from(1))),
    }
}

fn target_dir(compilation: &Compilation, args: &ProjectArgs) -> PathBuf {
    let target = compilation.project.as_ref().map_or("target", |p| p.config.target_path.as_str());
    args.project_dir.join(target)
}

/// The `--state` folder: the path given, or the folder of the manifest file given.
fn state_folder(select: &SelectArgs) -> Option<PathBuf> {
    let dir = select.state.as_ref()?;
    if dir.is_dir() {
        Some(dir.clone())
    } else {
        dir.parent().map(Path::to_path_buf)
    }
}

fn read_state(select: &SelectArgs) -> anyhow::Result<Option<Manifest>> {
    let Some(dir) = &select.state else {
        return Ok(None);
    };
    let path = if dir.is_dir() { dir.join("manifest.json") } else { dir.clone() };
    Manifest::read(&path).map(Some).map_err(|e| anyhow::anyhow!("cannot read state manifest `{}`: {e}", path.display()))
}

/// The `--state` run's result per node (`run_results.json` beside the state's manifest): `success`, `error`,
/// `skipped`, or `fail` / `warn` when a test of the node failed or warned.
fn read_state_results(select: &SelectArgs) -> Option<BTreeMap<String, String>> {
    let dir = state_folder(select)?;
    let results: crate::run::RunResults =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run_results.json")).ok()?).ok()?;
    Some(
        results
            .results
            .iter()
            .map(|r| {
                let test = |status| r.tests.iter().any(|t| t.status == status);
                let word = if test(crate::quality::TestStatus::Fail) {
                    "fail"
                } else if r.status == crate::run::NodeStatus::Error {
                    "error"
                } else if r.status == crate::run::NodeStatus::Skipped {
                    "skipped"
                } else if test(crate::quality::TestStatus::Warn) {
                    "warn"
                } else {
                    "success"
                };
                (r.unique_id.clone(), word.to_string())
            })
            .collect(),
    )
}

/// The sources whose newest data is later in this project's `sources.json` (the last `pipe source freshness`)
/// than in the `--state` folder's: what `source_status:fresher` selects. `None` when either file is missing.
fn read_fresher_sources(select: &SelectArgs, target: &Path) -> Option<std::collections::BTreeSet<String>> {
    use crate::quality::freshness::read_sources_json;
    let dir = state_folder(select)?;
    let previous = read_sources_json(&std::fs::read_to_string(dir.join("sources.json")).ok()?)?;
    let current = read_sources_json(&std::fs::read_to_string(target.join("sources.json")).ok()?)?;
    Some(
        current
            .into_iter()
            .filter(|(id, loaded)| previous.get(id).is_none_or(|before| loaded > before))
            .map(|(id, _)| id)
            .collect(),
    )
}

/// Selected unique ids in topological order, or the exit code after reporting a selector error.
fn selected_ids(
    manifest: &Manifest,
    select: &SelectArgs,
    project: &ProjectArgs,
) -> anyhow::Result<Result<Vec<String>, ExitCode>> {
    let format = project.diagnostics;
    let state = read_state(select)?;
    let graph = SelectableGraph::new(manifest);
    let sources = SourceMap::default();
    let results = read_state_results(select);
    let target = project.project_dir.join(&manifest.project.target_path);
    let fresher = read_fresher_sources(select, &target);
    match graph.select(manifest, &select.select, &select.exclude, state.as_ref(), results.as_ref(), fresher.as_ref()) {
        Ok(selection) => {
            let warnings: Vec<Diagnostic> = selection
                .unmatched
                .iter()
                .map(|term| {
                    Diagnostic::warning(Code::SelectorNoMatch, format!("selector `{term}` matched nothing"))
                        .with_help("`pipe ls` lists every node")
                })
                .collect();
            report(&warnings, &sources, format, None);
            Ok(Ok(selection.nodes.iter().map(|n| graph.ids[n.index()].clone()).collect()))
        }
        Err(SelectError::Invalid { selector, reason }) => {
            let diagnostic =
                Diagnostic::error(Code::SelectorInvalid, format!("invalid selector `{selector}`: {reason}"))
                    .with_help("see `pipe ls --help` for the grammar");
            report(&[diagnostic], &sources, format, None);
            Ok(Err(ExitCode::from(2)))
        }
        Err(SelectError::StateMissing { selector }) if selector.contains("source_status:") => {
            let diagnostic = Diagnostic::error(
                Code::StateMissing,
                format!("`{selector}` needs `sources.json` in both `--state <dir>` and this project's target folder"),
            )
            .with_help("run `pipe source freshness` in production (its target is the state) and again here");
            report(&[diagnostic], &sources, format, None);
            Ok(Err(ExitCode::from(2)))
        }
        Err(SelectError::StateMissing { selector }) => {
            let diagnostic = Diagnostic::error(Code::StateMissing, format!("`{selector}` needs `--state <dir>`"))
                .with_help("pass the `target/` folder of a previous compile, e.g. `--state prod-target/`");
            report(&[diagnostic], &sources, format, None);
            Ok(Err(ExitCode::from(2)))
        }
    }
}

fn run_compile(args: &CompileArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (compilation, manifest) = match compile_reported(&args.project)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let selected = match selected_ids(&manifest, &args.select, &args.project)? {
        Ok(ids) => ids,
        Err(code) => return Ok(code),
    };
    let target = target_dir(&compilation, &args.project);
    manifest.write(&target).map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", target.display()))?;
    let models = manifest.nodes.values().filter(|n| n.resource_type == crate::manifest::NodeKind::Model).count();
    let stats = compilation.plan_stats;
    let planned = if args.project.no_plan {
        String::new()
    } else {
        format!(", {} planned, {} from cache", stats.planned, stats.cached)
    };
    eprintln!(
        "Compiled {models} models, {} tests, {} sources, {} macros ({} selected{planned}) in {:.2}s -> {}",
        manifest.tests.len(),
        manifest.sources.len(),
        manifest.macros.len(),
        selected.len(),
        started.elapsed().as_secs_f64(),
        display_path(&target.join("manifest.json"))
    );
    if let Some(text) = &args.inline {
        return Ok(match query::render_inline(&compilation, &manifest, &args.project, text, None)? {
            Ok(sql) => {
                write_stdout(&format!("{}\n", sql.trim_end()));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        });
    }
    // `pipe compile -s m`: the selected models' compiled SQL on stdout, as `dbt compile -s m` prints it.
    if !args.select.select.is_empty() {
        let mut out = String::new();
        for node in selected.iter().filter_map(|id| manifest.nodes.get(id)) {
            if node.resource_type == crate::manifest::NodeKind::Seed {
                continue;
            }
            if selected.len() > 1 {
                out.push_str(&format!("-- {}\n", node.unique_id));
            }
            out.push_str(node.compiled_sql.trim_end());
            out.push_str("\n\n");
        }
        write_stdout(&crate::secrets::mask(out.trim_end()));
        if !out.is_empty() {
            write_stdout("\n");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn display_path(path: &Path) -> String {
    path.strip_prefix("./").unwrap_or(path).display().to_string()
}

#[derive(serde::Serialize)]
struct LsRow<'a> {
    unique_id: &'a str,
    name: &'a str,
    resource_type: &'a str,
    layer: Option<&'a str>,
    materialized: Option<&'a str>,
    tags: &'a [String],
    path: &'a str,
}

/// dbt's commands pipe does not have, and what to use instead.
const DBT_COMMANDS: &[(&str, &str)] = &[
    ("clone", "pipe has no `clone`: a deferred build reads production tables where they are"),
    ("environment", "pipe has no `environment` command"),
];

/// A command line clap refused: a dbt command pipe lacks says what pipe offers instead.
fn parse_error(err: clap::Error) -> ExitCode {
    if err.kind() == clap::error::ErrorKind::InvalidSubcommand {
        let asked = std::env::args().nth(1).unwrap_or_default();
        if let Some((_, instead)) = DBT_COMMANDS.iter().find(|(name, _)| *name == asked) {
            eprintln!("error: `{asked}` is a dbt command; {instead}");
            return ExitCode::from(2);
        }
    }
    let _ = err.print();
    match err.use_stderr() {
        true => ExitCode::from(2),
        false => ExitCode::SUCCESS,
    }
}

/// Removes the project's `clean-targets` (dbt's key; default: the target folder). A path outside the project, or
/// the warehouse unless it is listed by name, is never removed.
fn run_clean(args: &CleanArgs) -> anyhow::Result<ExitCode> {
    let (project, diagnostics) = crate::project::load_project(&args.project_dir);
    let Ok(project) = project else {
        for diagnostic in diagnostics.iter().filter(|d| d.is_error()) {
            eprintln!("error: {}", diagnostic.message);
        }
        return Ok(ExitCode::from(2));
    };
    let root = project.root.canonicalize()?;
    let mut code = ExitCode::SUCCESS;
    for target in &project.config.clean_targets {
        let path = root.join(target);
        let Ok(resolved) = path.canonicalize() else {
            eprintln!("{target}: not there, nothing to remove");
            continue;
        };
        if !resolved.starts_with(&root) || resolved == root {
            eprintln!("error: `{target}` is not a folder inside the project; it was not removed");
            code = ExitCode::from(1);
            continue;
        }
        std::fs::remove_dir_all(&resolved)?;
        eprintln!("removed {target}");
    }
    Ok(code)
}

fn run_ls(args: &LsArgs) -> anyhow::Result<ExitCode> {
    let (_compilation, manifest) = match compile_reported(&args.project)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let selected = match selected_ids(&manifest, &args.select, &args.project)? {
        Ok(ids) => ids,
        Err(code) => return Ok(code),
    };
    let no_tags: Vec<String> = Vec::new();
    let rows: Vec<LsRow<'_>> = selected
        .iter()
        .map(|id| match manifest.nodes.get(id) {
            Some(node) => LsRow {
                unique_id: &node.unique_id,
                name: &node.name,
                resource_type: node.resource_type.as_str(),
                layer: node.layer.map(|l| l.as_str()),
                materialized: Some(node.materialized.as_str()),
                tags: &node.tags,
                path: &node.path,
            },
            None => {
                let source = &manifest.sources[id];
                LsRow {
                    unique_id: &source.unique_id,
                    name: &source.relation,
                    resource_type: "source",
                    layer: None,
                    materialized: None,
                    tags: &no_tags,
                    path: &source.declared_in,
                }
            }
        })
        .filter(|row| args.resource_type.is_empty() || args.resource_type.iter().any(|t| t == row.resource_type))
        .collect();
    let mut out = String::new();
    match args.output {
        OutputFormat::Json if !args.output_keys.is_empty() => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    let full = serde_json::to_value(row).unwrap_or_default();
                    let kept = args.output_keys.iter().filter_map(|k| Some((k.clone(), full.get(k)?.clone())));
                    serde_json::Value::Object(kept.collect())
                })
                .collect();
            out = serde_json::to_string_pretty(&rows)?;
            out.push('\n');
        }
        OutputFormat::Json => {
            out = serde_json::to_string_pretty(&rows)?;
            out.push('\n');
        }
        OutputFormat::Text => {
            let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
            for row in &rows {
                let tags = if row.tags.is_empty() { String::new() } else { format!("  [{}]", row.tags.join(", ")) };
                let line = format!(
                    "{:<width$}  {:<6}  {:<6}  {:<11}{tags}",
                    row.name,
                    row.resource_type,
                    row.layer.unwrap_or("-"),
                    row.materialized.unwrap_or("-"),
                );
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
    }
    write_stdout(&out);
    Ok(ExitCode::SUCCESS)
}

/// Writes data to stdout; a closed pipe (`pipe ls | head`) ends quietly.
pub(crate) fn write_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(crate::secrets::mask(text).as_bytes()).and_then(|()| stdout.flush()).is_err() {
        std::process::exit(0);
    }
}

fn run_explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let Some(asked) = &args.code else {
        let mut out = String::new();
        for code in Code::ALL {
            let summary = code.explanation().lines().next().unwrap_or_default();
            out.push_str(&format!("{}  {:<28}  {summary}\n", code.id(), code.name()));
        }
        write_stdout(&out);
        return Ok(ExitCode::SUCCESS);
    };
    match Code::from_str_any(asked) {
        Some(code) => {
            write_stdout(&format!("{} ({})\n\n{}\n", code.id(), code.name(), code.explanation()));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("error: unknown diagnostic code `{asked}` (`pipe explain` lists them all)");
            Ok(ExitCode::from(2))
        }
    }
}

/// Log lines on stderr with secrets masked (`crate::secrets`).
struct MaskedStderr;

impl Write for MaskedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(crate::secrets::mask(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Failures to inject, for tests only: `PIPE_FAILPOINTS=panic@<model>,...` (see `run::BuildOptions::failpoints`).
fn failpoints() -> Vec<String> {
    std::env::var("PIPE_FAILPOINTS")
        .map(|v| v.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect())
        .unwrap_or_default()
}
