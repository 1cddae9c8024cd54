//! `pipe test`: runs the data tests of the selected nodes against the warehouse as it is.

use std::process::ExitCode;

use clap::Args;

use super::{compile_reported_with, selected_ids, Partial, ProjectArgs, SelectArgs};
use crate::manifest::Severity;
use crate::quality::{run_tests, TestStatus};
use crate::run;

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Test the selected models, seeds and sources (default: all); tests are selected by what they read.
    #[command(flatten)]
    pub select: SelectArgs,
}

pub(super) fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    // A partial compile, as for a build: tests of the models that compiled run; those reading a model that did not
    // are reported as not run.
    let (compilation, manifest) = match compile_reported_with(&args.project, false, Partial::Build)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    // `test_type:unit|data|generic|singular` selects tests by kind; the other terms select what they read.
    let (types, terms): (Vec<&String>, Vec<&String>) =
        args.select.select.iter().partition(|term| term.starts_with("test_type:"));
    let mut select = args.select.clone();
    select.select = terms.into_iter().cloned().collect();
    let types: Vec<&str> = types.iter().filter_map(|t| t.strip_prefix("test_type:")).collect();
    if let Some(unknown) = types.iter().find(|t| !["unit", "data", "generic", "singular"].contains(t)) {
        eprintln!(
            "error: unknown test type `{unknown}`: use `unit`, `data` (generic and singular), `generic` or `singular`"
        );
        return Ok(ExitCode::from(2));
    }
    let of_type = |test: &crate::manifest::TestNode| {
        let kind = match (&test.unit, test.test.as_str()) {
            (Some(_), _) => "unit",
            (None, "singular") => "singular",
            _ => "generic",
        };
        types.is_empty() || types.iter().any(|t| *t == kind || (*t == "data" && kind != "unit"))
    };
    let selected = if select.select.is_empty() && select.exclude.is_empty() {
        None
    } else {
        match selected_ids(&manifest, &select, &args.project)? {
            Ok(ids) => Some(ids),
            Err(code) => return Ok(code),
        }
    };
    let (tests, blocked): (Vec<_>, Vec<_>) = manifest
        .tests
        .values()
        .filter(|t| of_type(t))
        .filter(|t| selected.as_ref().is_none_or(|ids| t.depends_on.nodes.iter().any(|d| ids.contains(d))))
        .partition(|t| !t.depends_on.nodes.iter().any(|d| manifest.compile_errors.contains_key(d)));
    let runtime = super::runtime(None)?;
    let started_at = chrono::Utc::now();
    let started = std::time::Instant::now();
    let (outcomes, warehouse) = runtime.block_on(async {
        let (ctx, warehouse, _) = run::open_session(&manifest, &args.project.project_dir, None).await?;
        let renderer = compilation.render_at_build.as_ref();
        Ok::<_, run::RunError>((run_tests(&ctx, Some(&warehouse), &tests, &[], renderer).await, warehouse))
    })?;
    // A test run joins the run history like a build: `pipe.runs` and `pipe.test_runs`.
    let results = run::RunResults {
        run_id: uuid::Uuid::new_v4().to_string(),
        started_at: started_at.to_rfc3339(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        results: Vec::new(),
        tests: outcomes.clone(),
        args: None,
    };
    // The outcomes as a JUnit report too, for CI systems.
    let target = super::target_dir(&compilation, &args.project);
    if let Err(err) = results.write_junit(&target) {
        eprintln!("warning: `junit.xml` not written: {err}");
    }
    if let Err(err) = runtime.block_on(crate::warehouse::runs::record(&warehouse, &results)) {
        eprintln!("warning: test run not recorded in `pipe.test_runs`: {err}");
    }
    let (mut passed, mut warned, mut failed, mut errored) = (0, 0, 0, 0);
    for (outcome, test) in outcomes.iter().zip(&tests) {
        let word = match outcome.status {
            TestStatus::Pass => {
                passed += 1;
                "PASS"
            }
            TestStatus::Warn => {
                warned += 1;
                "WARN"
            }
            TestStatus::Error if test.severity == Severity::Warn => {
                warned += 1;
                "WARN"
            }
            TestStatus::Fail => {
                failed += 1;
                "FAIL"
            }
            // The test's query could not run (a table that cannot be read): not a verdict on the data.
            TestStatus::Error => {
                errored += 1;
                "ERROR"
            }
        };
        eprintln!("{word:<5} {:<60} {:>8} {:>6.2}s", outcome.name, outcome.failures, outcome.seconds);
        if let Some(message) = &outcome.message {
            for line in message.lines() {
                eprintln!("      {line}");
            }
        }
    }
    for test in &blocked {
        errored += 1;
        let upstream = test.depends_on.nodes.iter().find(|d| manifest.compile_errors.contains_key(*d));
        let model = upstream.and_then(|id| id.rsplit('.').next()).unwrap_or_default();
        eprintln!("{:<5} {:<60} {:>8} {:>6.2}s", "ERROR", test.name, 0, 0.0);
        eprintln!("      not run: `{model}` did not compile");
    }
    let errored_text = match errored {
        0 => String::new(),
        n => format!(", {n} could not run"),
    };
    let total = outcomes.len() + blocked.len();
    eprintln!("Done: {passed} passed, {warned} warned, {failed} failed{errored_text} of {total} tests");
    // A model that did not compile fails the command even when no test reads it, as `pipe compile` would.
    let broken = !manifest.compile_errors.is_empty();
    Ok(if failed + errored > 0 || broken { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[derive(Debug, Args)]
pub struct FreshnessArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Check only the selected sources and models (`-s source:raw.orders`, `-s source:raw+`); default: all.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Where to write dbt's `sources.json` (default: `<target>/sources.json`).
    #[arg(long, short = 'o')]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    #[command(subcommand)]
    pub command: SourceCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SourceCommand {
    /// How old each source's newest data is against its `freshness:`, as `dbt source freshness`; writes
    /// `target/sources.json`.
    Freshness(FreshnessArgs),
}

/// `pipe freshness` (`pipe source freshness`): sources against `warn_after` / `error_after`, models against
/// `expect_every`; the sources' results are written as dbt's `sources.json`.
pub(super) fn freshness(args: &FreshnessArgs) -> anyhow::Result<ExitCode> {
    use crate::quality::freshness::{check, sources_json, FreshnessStatus};
    let (compilation, manifest) = match compile_reported_with(&args.project, false, Partial::Read)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let selected = if args.select.select.is_empty() && args.select.exclude.is_empty() {
        None
    } else {
        // A bare selection of sources: `-s source:raw` names them, and `+` reaches their models' checks.
        match selected_ids(&manifest, &args.select, &args.project)? {
            Ok(ids) => Some(ids),
            Err(code) => return Ok(code),
        }
    };
    let runtime = super::runtime(None)?;
    let started = std::time::Instant::now();
    let results = runtime.block_on(async {
        let (ctx, warehouse, _) = run::open_session(&manifest, &args.project.project_dir, None).await?;
        Ok::<_, run::RunError>(check(&manifest, &args.project.project_dir, &ctx, &warehouse, chrono::Utc::now()).await)
    })?;
    let results: Vec<_> =
        results.into_iter().filter(|r| selected.as_ref().is_none_or(|ids| ids.contains(&r.unique_id))).collect();
    let (mut errors, mut failed_queries) = (0, 0);
    for result in &results {
        let word = match result.status {
            FreshnessStatus::Pass => "PASS",
            FreshnessStatus::Warn => "WARN",
            FreshnessStatus::Error => {
                errors += 1;
                "ERROR"
            }
            FreshnessStatus::RuntimeError => {
                failed_queries += 1;
                "ERROR"
            }
        };
        eprintln!("{word:<5} {:<50} {}", result.name, result.detail);
    }
    let output =
        args.output.clone().unwrap_or_else(|| super::target_dir(&compilation, &args.project).join("sources.json"));
    let json = sources_json(&results, &uuid::Uuid::new_v4().to_string(), started.elapsed().as_secs_f64());
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    crate::files::write_atomic(&output, serde_json::to_string_pretty(&json)?.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", output.display()))?;
    let unread = match failed_queries {
        0 => String::new(),
        n => format!(", {n} could not be checked"),
    };
    eprintln!(
        "Checked the freshness of {} sources and models: {errors} stale past `error_after`{unread} -> {}",
        results.len(),
        super::display_path(&output)
    );
    Ok(if errors + failed_queries > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    pub command: SchemaCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// A model's or source's schema changes: the project's planned columns against the latest registered version
    /// (or, when they match, the latest version against the one before).
    Diff(SchemaDiffArgs),
}

#[derive(Debug, Args)]
pub struct SchemaDiffArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// A model name, or a source as `source.table`.
    pub name: String,
}

pub(super) fn schema(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    use crate::quality::registry;
    let SchemaCommand::Diff(args) = &args.command;
    let (_compilation, manifest) = match compile_reported_with(&args.project, false, Partial::Read)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let found = manifest
        .nodes
        .values()
        .find(|n| n.name == args.name)
        .map(|n| (n.relation.clone(), n.planned_columns.clone(), Some(n.settings.schema_compatibility)))
        .or_else(|| {
            manifest
                .sources
                .values()
                .find(|s| s.relation == args.name)
                .map(|s| (s.relation.clone(), s.planned_columns.clone(), None))
        });
    let Some((relation, planned, mode)) = found else {
        eprintln!("error: no model or source named `{}`", args.name);
        return Ok(ExitCode::from(2));
    };
    let location = crate::warehouse::Location::of(&args.project.project_dir, &manifest.project)?;
    let warehouse = crate::warehouse::Warehouse::open_at(&location)?;
    let mut versions = super::runtime(None)?.block_on(registry::versions(&warehouse, &relation));
    let Some(latest) = versions.pop() else {
        println!("`{relation}` has no registered schema yet (it is registered when it is built)");
        return Ok(ExitCode::SUCCESS);
    };
    let (label, changes) =
        match planned.as_ref().map(|p| registry::changes(&latest.columns, p)).filter(|c| !c.is_empty()) {
            Some(changes) => (format!("registered version {} -> the project now", latest.version), changes),
            None => match versions.pop() {
                Some(before) => (
                    format!("registered version {} -> {}", before.version, latest.version),
                    registry::changes(&before.columns, &latest.columns),
                ),
                None => (format!("registered version {} (the only one)", latest.version), Vec::new()),
            },
        };
    let mode = mode.unwrap_or_default();
    let breaking = registry::breaking(mode, &changes);
    let mode = mode.as_str();
    let mut out = format!("{relation}: {label}\n");
    if changes.is_empty() {
        out.push_str("  no changes\n");
    }
    for change in &changes {
        let flag = if breaking.contains(change) { format!("  (breaks `{mode}`)") } else { String::new() };
        out.push_str(&format!("  {change}{flag}\n"));
    }
    super::write_stdout(&out);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
}

/// One model's recent runs, newest first.
/// `pipe status`: per model, the last run (status, when, rows, duration and its trend), freshness and failing tests.
pub(super) fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let (_compilation, manifest) = match compile_reported_with(&args.project, false, Partial::Read)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let runtime = super::runtime(None)?;
    let (histories, freshness, latest_tests) = runtime.block_on(async {
        let (ctx, warehouse, _) = run::open_session(&manifest, &args.project.project_dir, None).await?;
        let histories = crate::warehouse::runs::node_history(&ctx).await;
        let latest_tests = crate::warehouse::runs::latest_tests(&ctx).await;
        let freshness = crate::quality::freshness::check(
            &manifest,
            &args.project.project_dir,
            &ctx,
            &warehouse,
            chrono::Utc::now(),
        )
        .await;
        Ok::<_, run::RunError>((histories, freshness, latest_tests))
    })?;
    let mut out = format!(
        "{:<32} {:<8} {:<19} {:>10} {:>8}  {:<28} {:<10} {}\n",
        "model", "status", "last run", "rows", "seconds", "duration trend", "freshness", "failing tests"
    );
    for id in &manifest.order {
        let Some(node) =
            manifest.nodes.get(id).filter(|n| n.materialized != crate::project::Materialization::Ephemeral)
        else {
            continue;
        };
        let fresh = freshness
            .iter()
            .find(|f| f.name == format!("model {}", node.relation))
            .map(|f| format!("{:?}", f.status).to_lowercase())
            .unwrap_or_else(|| "-".into());
        let Some(runs) = histories.get(id).filter(|h| !h.is_empty()) else {
            out.push_str(&format!(
                "{:<32} {:<8} {:<19} {:>10} {:>8}  {:<28} {:<10} -\n",
                node.name, "never", "-", "-", "-", "-", fresh
            ));
            continue;
        };
        let last = &runs[0];
        let (at, status, rows, seconds) = (&last.at, &last.status, last.rows, &last.seconds);
        // The model's tests whose latest outcome (from a build or `pipe test`) is a failure.
        let failed = manifest
            .tests
            .values()
            .filter(|t| t.attached_node.as_ref() == Some(id))
            .filter(|t| {
                latest_tests.get(&t.unique_id).is_some_and(|(status, _, _)| status == "fail" || status == "error")
            })
            .count();
        // The duration against the median of the runs before; where it changed, the first run of the new level.
        let mut before: Vec<f64> = runs.iter().skip(1).take(10).map(|r| r.seconds).collect();
        let trend = if before.len() < 3 {
            "-".to_string()
        } else {
            before.sort_by(|a, b| a.total_cmp(b));
            let median = before[before.len() / 2];
            let ratio = if median > 0.0 { seconds / median } else { 1.0 };
            // Sub-second differences are noise, whatever the ratio.
            let steady = |s: f64| {
                (0.67..=1.5).contains(&(if median > 0.0 { s / median } else { 1.0 })) || (s - median).abs() < 0.5
            };
            if steady(*seconds) {
                format!("steady (median {median:.2}s)")
            } else {
                let changed = runs.iter().take_while(|r| !steady(r.seconds)).last();
                let since = changed.map(|r| r.run_id.chars().take(8).collect::<String>()).unwrap_or_default();
                format!("{ratio:.1}x median since run {since}")
            }
        };
        let rows = rows.map_or("-".to_string(), |r| r.to_string());
        out.push_str(&format!(
            "{:<32} {:<8} {:<19} {:>10} {:>8.2}  {:<28} {:<10} {}\n",
            node.name, status, at, rows, seconds, trend, fresh, failed
        ));
    }
    super::write_stdout(&out);
    Ok(ExitCode::SUCCESS)
}
