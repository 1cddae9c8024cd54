//! Microbatch models and backfills on real files and Delta tables: slices replaced exactly, late data within
//! `lookback` picked up, late data beyond it left for a backfill, an interrupted backfill resumed, `--dry-run`.

mod support;

use std::path::Path;

use support::{pipe, text};

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["data/events", "models/bronze", "models/silver", "models/gold"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("pipe.yml"), "name: mb\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - name: events\n        format: csv\n        path: data/events/*.csv\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/bronze/brz_events.sql"),
        "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'events') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/silver/slv_events.sql"),
        "{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='ts', \
         begin='2026-01-01', batch_size='day', lookback=1) }}\n\
         select id, cast(ts as timestamp) as ts, amount from {{ ref('brz_events') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/gold/gld_daily.sql"),
        "{{ config(materialized='table') }}\n\
         select cast(ts as date) as day, count(*) as events, sum(amount) as amount\n\
         from {{ ref('slv_events') }} group by 1\n",
    )
    .unwrap();
    write_events(
        root,
        "1.csv",
        &[(1, "2026-01-01 10:00:00", 10), (2, "2026-01-02 11:00:00", 20), (3, "2026-01-03 12:00:00", 30)],
    );
    dir
}

fn write_events(root: &Path, name: &str, rows: &[(u32, &str, u32)]) {
    let mut csv = String::from("id,ts,amount\n");
    for (id, ts, amount) in rows {
        csv.push_str(&format!("{id},{ts},{amount}\n"));
    }
    std::fs::write(root.join("data/events").join(name), csv).unwrap();
}

fn build(root: &Path, end: &str) -> String {
    let output = pipe(root, &["build", "--event-time-end", end]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    stderr
}

fn query(root: &Path, sql: &str) -> String {
    let output = pipe(root, &["query", sql, "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    text(&output.stdout)
}

fn events(root: &Path) -> String {
    query(root, "select id, amount from silver.slv_events order by id")
}

#[test]
fn batches_replace_their_slices_and_pick_up_late_rows_within_lookback() {
    let dir = project();
    let root = dir.path();
    let stderr = build(root, "2026-01-04");
    assert!(stderr.contains("microbatch: 3 batches from 2026-01-01 00:00:00 in one commit"), "{stderr}");
    assert_eq!(events(root), "id,amount\n1,10\n2,20\n3,30\n");

    // A late row for 01-02 (inside lookback), a new day, and a row for 01-01 (beyond lookback).
    write_events(root, "2.csv", &[(4, "2026-01-02 23:00:00", 40), (5, "2026-01-04 08:00:00", 50)]);
    write_events(root, "3.csv", &[(6, "2026-01-01 09:00:00", 60)]);
    let stderr = build(root, "2026-01-05");
    // The ledger says 01-03 was the last day covered: lookback 1 reprocesses from 01-02.
    assert!(stderr.contains("microbatch: 3 batches, 2026-01-02 00:00:00 to 2026-01-05 00:00:00"), "{stderr}");
    assert!(stderr.contains("slv_events: batch 1 of 3: 2026-01-02 00:00:00 (2 rows)"), "{stderr}");
    assert_eq!(events(root), "id,amount\n1,10\n2,20\n3,30\n4,40\n5,50\n", "id 6 is beyond lookback");
    assert_eq!(
        query(root, "select day, events, amount from gold.gld_daily order by day"),
        "day,events,amount\n2026-01-01,1,10\n2026-01-02,2,60\n2026-01-03,1,30\n2026-01-04,1,50\n"
    );

    // Running the same window again replaces the same slices: nothing doubles.
    build(root, "2026-01-05");
    assert_eq!(events(root), "id,amount\n1,10\n2,20\n3,30\n4,40\n5,50\n");

    // The dry run names the batches and what they read, and writes nothing.
    let args = ["backfill", "slv_events+", "--start", "2026-01-01", "--end", "2026-01-03", "--dry-run"];
    let output = pipe(root, &args);
    let plan = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(plan.contains("slv_events: 2 batches to rewrite"), "{plan}\n{}", text(&output.stderr));
    assert!(plan.contains("  2026-01-01 00:00:00 .. 2026-01-02 00:00:00  reads 6 input rows"), "{plan}");
    assert!(plan.contains("gld_daily: runs as a table model"), "{plan}");
    assert!(plan.contains("dry run: 2 batches"), "{plan}");
    assert_eq!(events(root), "id,amount\n1,10\n2,20\n3,30\n4,40\n5,50\n");

    // The backfill picks up the row beyond lookback and rebuilds the descendant.
    let output = pipe(root, &["backfill", "slv_events+", "--start", "2026-01-01", "--end", "2026-01-03"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("slv_events: batch 1 of 2: 2026-01-01 00:00:00 (2 rows)"), "{stderr}");
    assert_eq!(events(root), "id,amount\n1,10\n2,20\n3,30\n4,40\n5,50\n6,60\n");
    assert!(query(root, "select events from gold.gld_daily where day = '2026-01-01'").contains("\n2\n"));

    // The same backfill again finds its batches committed and rewrites none.
    let output = pipe(root, &["backfill", "slv_events+", "--start", "2026-01-01", "--end", "2026-01-03", "--dry-run"]);
    assert!(text(&output.stdout).contains("slv_events: 0 batches to rewrite"), "{}", text(&output.stdout));
}

/// A backfill killed (SIGKILL) after its first committed batch resumes with the batches it had not committed,
/// and ends with the same table as an uninterrupted one.
#[test]
fn a_killed_backfill_resumes_where_it_stopped() {
    use std::io::{BufRead, BufReader};
    let dir = project();
    let root = dir.path();
    let days: Vec<(u32, String, u32)> = (1..=28).map(|d| (d, format!("2026-02-{d:02} 12:00:00"), d * 10)).collect();
    let rows: Vec<(u32, &str, u32)> = days.iter().map(|(id, ts, amount)| (*id + 100, ts.as_str(), *amount)).collect();
    write_events(root, "feb.csv", &rows);
    build(root, "2026-01-04");
    let args = ["backfill", "slv_events", "--start", "2026-02-01", "--end", "2026-03-01", "--threads", "1"];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(root)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains("batch 1 of 28") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let dry_run = [&args[..], &["--dry-run"]].concat();
    let output = pipe(root, &dry_run);
    let plan = text(&output.stdout);
    let pending: usize = plan
        .lines()
        .find_map(|l| l.strip_prefix("slv_events: ")?.strip_suffix(" batches to rewrite")?.parse().ok())
        .unwrap_or_else(|| panic!("{plan}"));
    assert!((1..28).contains(&pending), "the first batch is committed, the last is not: {plan}");
    assert!(!plan.contains("2026-02-01 00:00:00 .."), "{plan}");

    let output = pipe(root, &args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("batch {pending} of {pending}")), "{stderr}");
    let february = query(root, "select count(*) as n, sum(amount) as total from silver.slv_events where id > 100");
    assert_eq!(february, "n,total\n28,4060\n");
}

#[test]
fn microbatch_config_is_checked_at_compile() {
    let dir = project();
    let root = dir.path();
    std::fs::write(
        root.join("models/silver/slv_events.sql"),
        "{{ config(materialized='incremental', incremental_strategy='microbatch', begin='yesterday') }}\n\
         select id from {{ ref('brz_events') }}\n",
    )
    .unwrap();
    let output = pipe(root, &["compile"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("microbatch model `slv_events` has no `event_time`"), "{stderr}");
    assert!(stderr.contains("`begin: yesterday` of microbatch model `slv_events` is not a time"), "{stderr}");
    assert!(stderr.contains("needs `batch_size` `hour`, `day` or `month`"), "{stderr}");
}

/// Hourly tumbling windows over bronze events with `allowed_lateness='2 hours'`: a late event within it updates its
/// window on the next run; one beyond it is counted and reported, stays in bronze, and a backfill applies it.
#[test]
fn late_events_within_allowed_lateness_update_their_window_and_later_ones_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["data/clicks", "models/bronze", "models/silver"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("pipe.yml"), "name: windows\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - name: clicks\n        format: csv\n        path: data/clicks/*.csv\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/bronze/brz_clicks.sql"),
        "{{ config(materialized='incremental', event_time='ts') }}\nselect id, ts from {{ source('raw', 'clicks') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/silver/slv_clicks_hourly.sql"),
        "{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='window_start', \
         begin='2026-01-01', batch_size='hour', allowed_lateness='2 hours') }}\n\
         select {{ pipe.tumble('ts', '1 hour') }} as window_start, count(*) as clicks\n\
         from {{ ref('brz_clicks') }} group by 1\n",
    )
    .unwrap();
    let clicks = |name: &str, times: &[&str]| {
        let rows: String = times.iter().enumerate().map(|(i, t)| format!("{name}{i},2026-01-01 {t}\n")).collect();
        std::fs::write(root.join("data/clicks").join(format!("{name}.csv")), format!("id,ts\n{rows}")).unwrap();
    };
    let hourly =
        || query(root, "select date_part('hour', window_start) as h, clicks from silver.slv_clicks_hourly order by 1");
    clicks("a", &["10:05:00", "10:20:00", "11:10:00", "12:30:00"]);
    build(root, "2026-01-01 13:00:00");
    assert_eq!(hourly(), "h,clicks\n10,2\n11,1\n12,1\n");

    // 11:45 is within two hours of 13:00; 09:15 is not; 13:10 is on time.
    clicks("b", &["11:45:00", "09:15:00", "13:10:00"]);
    let stderr = build(root, "2026-01-01 14:00:00");
    assert!(stderr.contains("1 late rows beyond allowed_lateness: not applied"), "{stderr}");
    assert_eq!(hourly(), "h,clicks\n10,2\n11,2\n12,1\n13,1\n");
    assert_eq!(query(root, "select count(*) as n from bronze.brz_clicks"), "n\n7\n", "kept in bronze");

    let output = pipe(
        root,
        &["backfill", "slv_clicks_hourly", "--start", "2026-01-01 09:00:00", "--end", "2026-01-01 10:00:00"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(hourly(), "h,clicks\n9,1\n10,2\n11,2\n12,1\n13,1\n");
}

/// `pipe.hop` and `pipe.session` run on real rows: each event lands in every sliding window that holds it, and a
/// session ends when its key is quiet for longer than the gap.
#[test]
fn hop_and_session_windows_compute_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["data", "models/bronze", "models/silver"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("pipe.yml"), "name: windows\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - name: clicks\n        format: csv\n        path: data/clicks.csv\n",
    )
    .unwrap();
    std::fs::write(
        root.join("data/clicks.csv"),
        "user_id,ts\n1,2026-01-01 10:00:00\n1,2026-01-01 10:10:00\n2,2026-01-01 10:05:00\n1,2026-01-01 11:00:00\n1,2026-01-01 10:40:00\n2,2026-01-01 10:40:00\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/bronze/brz_clicks.sql"),
        "{{ config(materialized='table') }}\nselect user_id, cast(ts as timestamp) as ts from {{ source('raw', 'clicks') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/silver/slv_hops.sql"),
        "{{ config(materialized='table') }}\nselect cast(window_start as varchar) as window_start, count(*) as n\nfrom (select {{ pipe.hop('ts', '1 hour', '30 minutes') }} as window_start from {{ ref('brz_clicks') }} where user_id = 1)\ngroup by 1\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/silver/slv_sessions.sql"),
        "{{ config(materialized='table') }}\nselect user_id, session_id, count(*) as clicks, cast(min(session_start) as varchar) as started\nfrom {{ pipe.session(ref('brz_clicks'), 'ts', 'user_id', '30 minutes') }} as s\ngroup by 1, 2\n",
    )
    .unwrap();
    let output = pipe(root, &["build"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let query = |sql: &str| {
        let output = pipe(root, &["query", sql, "-o", "csv"]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    // User 1 clicks at 10:00, 10:10, 10:40, 11:00; one-hour windows every 30 minutes.
    assert_eq!(
        query("select window_start, n from silver.slv_hops order by 1"),
        "window_start,n\n2026-01-01T09:30:00,2\n2026-01-01T10:00:00,3\n2026-01-01T10:30:00,2\n2026-01-01T11:00:00,1\n"
    );
    // User 1: 10:00, 10:10, then 30 minutes quiet to 10:40 (not more than the gap), then 11:00: one session of 4.
    // User 2: 10:05, then 35 minutes quiet (more than the gap): two sessions.
    assert_eq!(
        query("select user_id, clicks, started from silver.slv_sessions order by 1, 3"),
        "user_id,clicks,started\n1,4,2026-01-01T10:00:00\n2,1,2026-01-01T10:05:00\n2,1,2026-01-01T10:40:00\n"
    );
}

/// Slices too large for their share of `--memory-limit`'s pool are staged on disk (the note says how many), then
/// audited and written from there: the same table as without a limit.
#[test]
fn slices_staged_on_disk_under_a_memory_limit_give_the_same_table() {
    let events: Vec<(u32, String, u32)> =
        (0..40_000u32).map(|i| (100 + i, format!("2026-01-0{} {:02}:00:00", 5 + i % 2, i % 24), i % 97)).collect();
    let rows: Vec<(u32, &str, u32)> = events.iter().map(|(id, ts, amount)| (*id, ts.as_str(), *amount)).collect();
    let table = |limit: Option<&str>| {
        let dir = project();
        let root = dir.path();
        build(root, "2026-01-04");
        write_events(root, "2.csv", &rows);
        let mut args = vec!["build", "--event-time-end", "2026-01-07"];
        args.extend(limit.iter().flat_map(|l| ["--memory-limit", *l]));
        let output = pipe(root, &args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        let table = query(root, "select count(*) as n, sum(id) as ids, sum(amount) as amount from silver.slv_events");
        (table, query(root, "select * from gold.gld_daily order by day"), stderr)
    };
    let (unlimited, daily, stderr) = table(None);
    assert!(!stderr.contains("staged on disk"), "{stderr}");
    assert!(unlimited.starts_with("n,ids,amount\n40003,"), "{unlimited}");
    let (bounded, bounded_daily, stderr) = table(Some("1MiB"));
    assert!(stderr.contains("batch(es) staged on disk ("), "{stderr}");
    assert_eq!(bounded, unlimited);
    assert_eq!(bounded_daily, daily);
}
