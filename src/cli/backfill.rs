//! `pipe backfill <selector> --start <ts> --end <ts> [--dry-run]`: reprocess a time range of the selected
//! microbatch models batch by batch (and run the other selected models, e.g. their descendants with `m+`).
//! Each batch commits `pipe.backfill:<id>:<start>` with its rows, where the id is derived from the range and the
//! selection, so running the same command again resumes after the last committed batch.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use sha2::{Digest, Sha256};

use super::build::{run_with, Backfill, BuildArgs, LogFormat, Scope};
use super::{write_stdout, ProjectArgs, SelectArgs};
use crate::manifest::{Manifest, NodeKind};
use crate::run;
use crate::run::materialize::microbatch::{batch_plan, parse_time, BatchPlan, EventTimeWindow, MicrobatchConfig};

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Models to backfill, in the selector grammar; `m+` adds their descendants.
    #[arg(required = true, num_args = 1..)]
    pub select: Vec<String>,
    /// Nodes to leave out.
    #[arg(long, num_args = 1..)]
    pub exclude: Vec<String>,
    /// First event time to reprocess, e.g. `2026-01-01` (UTC).
    #[arg(long, value_parser = parse_time)]
    pub start: DateTime<Utc>,
    /// Reprocess events before this time.
    #[arg(long, value_parser = parse_time)]
    pub end: DateTime<Utc>,
    /// Print the batches that would be rewritten and the input rows they read, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Models run at once, 1 to 256 (default: the number of cores).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
    /// Also POST each OpenLineage event to this collector.
    #[arg(long, env = "OPENLINEAGE_URL")]
    pub openlineage_url: Option<String>,
}

pub(super) fn run(args: &BackfillArgs) -> anyhow::Result<ExitCode> {
    if args.start >= args.end {
        eprintln!("error: `--start` must be before `--end`");
        return Ok(ExitCode::from(2));
    }
    let build = BuildArgs {
        project: args.project.clone(),
        select: SelectArgs { select: args.select.clone(), exclude: args.exclude.clone(), state: None },
        threads: args.threads,
        fail_fast: true,
        full_refresh: false,
        memory_limit: None,
        log_format: LogFormat::Text,
        event_time_start: Some(args.start),
        event_time_end: Some(args.end),
        watch: false,
        allow_breaking: false,
        interval: std::time::Duration::from_secs(10),
        settle: None,
        openlineage_url: args.openlineage_url.clone(),
        openlineage_deadline: std::time::Duration::from_secs(10),
        defer: false,
        favor_state: false,
        defer_warehouse: None,
        engine: None,
        scheduler: None,
    };
    run_with(&build, Scope::Run, Some(Backfill { dry_run: args.dry_run }))
}

/// Names a backfill by its range and selection.
pub(super) fn backfill_id(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>, selected: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{start:?}\0{end:?}").as_bytes());
    for id in selected {
        hasher.update(b"\0");
        hasher.update(id.as_bytes());
    }
    hasher.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Prints, per selected model, the batches a backfill would write and the input rows each reads: upstream rows in
/// the batch's slice when the upstream declares `event_time`, else all its rows.
pub(super) async fn dry_run(
    manifest: &Manifest,
    project: &ProjectArgs,
    selected: &[String],
    window: &EventTimeWindow,
) -> anyhow::Result<ExitCode> {
    let (ctx, warehouse, _) = run::open_session(manifest, &project.project_dir, None).await?;
    // Rows of `relation`, under the slice's filter when there is one.
    let count = |relation: String, slice: Option<(MicrobatchConfig, DateTime<Utc>, DateTime<Utc>)>| {
        let ctx = &ctx;
        async move {
            let frame = ctx.table(relation.as_str()).await.ok()?;
            let frame = match slice {
                Some((config, start, end)) => {
                    let predicate = config.slice_in(start, end, frame.schema());
                    frame.filter(predicate).ok()?
                }
                None => frame,
            };
            frame.count().await.ok().map(|n| n as u64)
        }
    };
    let mut out = String::new();
    let (mut total_batches, mut total_rows) = (0usize, 0u64);
    for id in selected {
        let Some(node) = manifest.nodes.get(id).filter(|n| n.resource_type == NodeKind::Model) else { continue };
        if node.materialized == crate::project::Materialization::Ephemeral {
            continue;
        }
        // Each input relation, with the `event_time` column it declares (if any).
        let inputs: Vec<(String, Option<String>)> = node
            .depends_on
            .nodes
            .iter()
            .filter_map(|up| {
                if let Some(upstream) = manifest.nodes.get(up) {
                    Some((upstream.relation.clone(), upstream.settings.event_time.clone()))
                } else {
                    manifest.sources.get(up).map(|s| {
                        let event_time = s.settings.event_time.clone();
                        (s.relation.clone(), event_time)
                    })
                }
            })
            .collect();
        let read = |slice: Option<(DateTime<Utc>, DateTime<Utc>)>| {
            let inputs = inputs.clone();
            let count = &count;
            async move {
                let mut rows = 0u64;
                for (relation, event_time) in &inputs {
                    let filter = match (slice, event_time) {
                        (Some((start, end)), Some(column)) => {
                            let config = MicrobatchConfig {
                                event_time: column.clone(),
                                begin: start,
                                batch_size: run::materialize::microbatch::BatchSize::Day,
                                lookback: 0,
                                allowed_lateness: None,
                            };
                            Some((config, start, end))
                        }
                        _ => None,
                    };
                    rows += count(relation.clone(), filter).await.unwrap_or(0);
                }
                rows
            }
        };
        let is_microbatch = node.settings.microbatch.is_some();
        if !is_microbatch {
            let rows = read(None).await;
            total_rows += rows;
            out.push_str(&format!(
                "{}: runs as a {} model, reading {rows} input rows\n",
                node.name,
                node.materialized.as_str()
            ));
            continue;
        }
        let config = MicrobatchConfig::of(node)?;
        let table = warehouse.load(&node.relation).await?;
        let slices = match batch_plan(&config, table.as_ref(), window, false).await? {
            BatchPlan::Slices(slices) => slices,
            BatchPlan::Whole { start, end, .. } => vec![(start, end)],
        };
        out.push_str(&format!("{}: {} batches to rewrite\n", node.name, slices.len()));
        for (start, end) in slices {
            let rows = read(Some((start, end))).await;
            total_batches += 1;
            total_rows += rows;
            out.push_str(&format!(
                "  {} .. {}  reads {rows} input rows\n",
                start.format("%Y-%m-%d %H:%M:%S"),
                end.format("%Y-%m-%d %H:%M:%S")
            ));
        }
    }
    out.push_str(&format!("dry run: {total_batches} batches, {total_rows} input rows; nothing was written\n"));
    write_stdout(&out);
    Ok(ExitCode::SUCCESS)
}
