//! `pipe build --watch`: continuous mode by micro-batches. Every `--interval` it lists the files of the sources the
//! selection reads; when a file is new or changed it runs the selection again (bronze ingests the new files exactly
//! once; `table` models whose inputs did not change are left as they are) and records the cycle's latency, from the
//! newest file's modification time to the end of the cycle's last commit, in `target/watch_log.jsonl`.
//!
//! Ctrl-C (or SIGTERM) lets the running cycle finish and stops; a second one stops at once. Either way nothing
//! half-written is visible: every write is one Delta commit, and files of an uncommitted write are never read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::build::Cycle;
use crate::run::NodeStatus;

/// Path -> (size, modification time) of the files of every source the selection reads, directly or not.
fn source_files(cycle: &Cycle<'_>) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let ids = cycle.selected.iter().map(String::as_str);
    crate::run::sources::upstream_files(cycle.manifest, &cycle.args.project.project_dir, ids)
}

pub(super) fn watch(cycle: &Cycle<'_>) -> anyhow::Result<ExitCode> {
    let interrupts = Arc::new(AtomicUsize::new(0));
    {
        let interrupts = Arc::clone(&interrupts);
        cycle.runtime.spawn(async move {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                let terminated = async {
                    match terminate.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminated => {}
                }
                if interrupts.fetch_add(1, Ordering::SeqCst) == 0 {
                    eprintln!("stopping after the current cycle (press Ctrl-C again to stop now)");
                } else {
                    eprintln!("stopped; the current cycle's uncommitted writes are discarded");
                    std::process::exit(130);
                }
            }
        });
    }
    let log_path = cycle.target.join("watch_log.jsonl");
    std::fs::create_dir_all(cycle.target)?;
    let interval = cycle.args.interval;
    eprintln!("Watching {} source file(s) every {:?}; Ctrl-C stops", source_files(cycle).len(), interval);
    let mut seen: BTreeMap<PathBuf, (u64, SystemTime)> = BTreeMap::new();
    let mut cycles = 0usize;
    let mut failed = false;
    // A file changed within the settle interval may still be being written: it starts a cycle once it settles.
    let settle = cycle.args.settle_interval();
    let watching = Instant::now();
    while interrupts.load(Ordering::SeqCst) == 0 {
        let files = source_files(cycle);
        let now = SystemTime::now();
        let settled = |mtime: &SystemTime| now.duration_since(*mtime).unwrap_or_default() >= settle;
        let changed: Vec<(&PathBuf, SystemTime)> = files
            .iter()
            .filter(|(path, meta)| seen.get(*path) != Some(meta) && settled(&meta.1))
            .map(|(p, (_, mtime))| (p, *mtime))
            .collect();
        let unsettled = files.iter().any(|(path, meta)| seen.get(path) != Some(meta) && !settled(&meta.1));
        // The first cycle waits (a bounded while) for the files being written as pipe starts.
        if cycles == 0 && unsettled && watching.elapsed() < settle * 2 {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if changed.is_empty() && cycles > 0 {
            let slept = Instant::now();
            while slept.elapsed() < interval && interrupts.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(50).min(interval));
            }
            continue;
        }
        cycles += 1;
        let newest = changed.iter().map(|(_, mtime)| *mtime).max();
        let started = Instant::now();
        let results = cycle.run(true)?.results;
        let finished = SystemTime::now();
        let latency = newest.and_then(|t| finished.duration_since(t).ok()).map(|d| d.as_secs_f64());
        let (errors, skipped) = (results.count(NodeStatus::Error), results.count(NodeStatus::Skipped));
        failed |= errors + skipped > 0;
        let unchanged =
            results.results.iter().filter(|r| r.message.as_deref() == Some(crate::run::UNCHANGED_INPUTS_NOTE)).count();
        let record = serde_json::json!({
            "cycle": cycles,
            "run_id": results.run_id,
            "started_at": results.started_at,
            "changed_files": changed.len(),
            "nodes": results.results.len(),
            "not_rebuilt": unchanged,
            "errors": errors,
            "seconds": started.elapsed().as_secs_f64(),
            "latency_seconds": latency,
        });
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        writeln!(log, "{record}")?;
        let latency = latency.map(|l| format!(", latency {l:.2}s (file written -> committed)")).unwrap_or_default();
        eprintln!(
            "cycle {cycles}: {} changed file(s), {} node(s), {unchanged} not rebuilt (inputs unchanged){latency}",
            changed.len(),
            results.results.len()
        );
        seen = files.into_iter().filter(|(_, meta)| settled(&meta.1)).collect();
    }
    eprintln!("Stopped after {cycles} cycle(s)");
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
