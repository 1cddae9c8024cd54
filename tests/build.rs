//! Build tests: the real `pipe` binary builds temporary copies of the example project into real Delta tables,
//! which are read back through `pipe query` and straight from the Delta log.

mod support;

use std::path::Path;

use support::{dump, example_project, pipe, text};

/// Version numbers of the Delta log files of a table.
fn versions(dir: &Path, relation: &str) -> Vec<u64> {
    let log = relation.split('.').fold(dir.join("warehouse"), |p, part| p.join(part)).join("_delta_log");
    let mut versions: Vec<u64> = std::fs::read_dir(log)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
        .collect();
    versions.sort();
    versions
}

#[test]
fn build_example_project_exact_contents() {
    let dir = example_project();
    let output = pipe(dir.path(), &["build", "--threads", "2"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    insta::assert_snapshot!(dump(dir.path()));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap()).unwrap();
    let by_name =
        |name: &str| results["results"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(by_name("slv_orders")["rows_written"], 12);
    assert_eq!(by_name("slv_orders")["status"], "success");
    assert_eq!(by_name("slv_orders")["delta_version"], 0);
    assert_eq!(results["results"].as_array().unwrap().len(), 11, "ephemeral models do not run");
    // A cold build executes the compile's plans: every model is planned once, the file-ingesting bronze ones too
    // (their plan is bound to one file at a time). Timings split what the time went to.
    let reused: Vec<(String, bool)> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["materialized"] != "seed")
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["plan_reused"].as_bool().unwrap()))
        .collect();
    assert!(reused.iter().all(|(_, reused)| *reused), "{reused:?}");
    let timing = &by_name("slv_orders")["timing"];
    // Every part is a measured duration, and the parts fit in the node's total.
    let part = |key: &str| timing[key].as_f64().unwrap_or_else(|| panic!("{key} is a number: {timing}"));
    let parts = part("plan_seconds") + part("execute_seconds") + part("commit_seconds");
    assert!(part("total_seconds") > 0.0 && parts <= part("total_seconds") + 1e-6, "{timing}");
    assert!(timing["render_seconds"].as_f64().unwrap() > 0.0, "{timing}");
    assert!(timing["total_seconds"].as_f64().unwrap() >= timing["execute_seconds"].as_f64().unwrap(), "{timing}");
}

#[test]
fn rebuild_is_idempotent_and_versions_only_what_must_change() {
    let dir = example_project();
    assert_eq!(pipe(dir.path(), &["build"]).status.code(), Some(0));
    let first = dump(dir.path());
    let output = pipe(dir.path(), &["build"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(dump(dir.path()), first);
    // `table` semantics replace the table (a new version); an unchanged seed is not written again.
    assert_eq!(versions(dir.path(), "silver.slv_orders"), [0, 1]);
    assert_eq!(versions(dir.path(), "seeds.country_codes"), [0]);
    assert!(text(&output.stderr).contains("note: unchanged"), "{}", text(&output.stderr));
}

#[test]
fn commits_carry_run_id_model_and_checksum() {
    let dir = example_project();
    assert_eq!(pipe(dir.path(), &["build", "-s", "+slv_orders"]).status.code(), Some(0));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/manifest.json")).unwrap()).unwrap();
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap()).unwrap();
    let log =
        std::fs::read_to_string(dir.path().join("warehouse/silver/slv_orders/_delta_log/00000000000000000000.json"))
            .unwrap();
    let commit_info: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("commitInfo").cloned())
        .expect("a commitInfo action");
    assert_eq!(commit_info["pipe.model"], "model.shop.slv_orders");
    assert_eq!(commit_info["pipe.checksum"], manifest["nodes"]["model.shop.slv_orders"]["checksum"]);
    assert_eq!(commit_info["pipe.run_id"], results["run_id"]);
}

#[test]
fn runtime_error_keeps_previous_version_and_skips_descendants() {
    let dir = example_project();
    assert_eq!(pipe(dir.path(), &["build"]).status.code(), Some(0));
    let before = dump(dir.path());
    // Planning succeeds; the cast fails while rows stream, after the write has started.
    let model = dir.path().join("models/silver/slv_orders.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(
        &model,
        sql.replace("cast(order_id as bigint) as order_id", "cast(concat('x', order_id) as bigint) as order_id"),
    )
    .unwrap();
    let output = pipe(dir.path(), &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ERROR table       silver.slv_orders"), "{stderr}");
    for skipped in ["gold.gld_daily_revenue", "gold.gld_revenue_by_region", "gold.gld_customer_lifetime"] {
        assert!(stderr.contains(&format!("SKIP  table       {skipped}")), "{skipped}: {stderr}");
    }
    assert!(stderr.contains("Done in") && stderr.contains("7 succeeded, 1 failed, 3 skipped"), "{stderr}");
    // The error carries a code `pipe explain` knows, on the line and in the results file.
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap()).unwrap();
    let failed = results["results"].as_array().unwrap().iter().find(|r| r["name"] == "slv_orders").unwrap();
    let code = failed["code"].as_str().expect("an error has a code");
    assert!(["P0601", "P0602"].contains(&code), "a query or write failure: {code}");
    assert!(stderr.contains(&format!("code: {code} (`pipe explain {code}`)")), "{stderr}");
    let explained = pipe(dir.path(), &["explain", code]);
    assert_eq!(explained.status.code(), Some(0));
    assert!(text(&explained.stdout).contains("Fix:"), "{}", text(&explained.stdout));
    // Unrelated models were rebuilt; the failed model and its descendants keep their previous version.
    assert_eq!(versions(dir.path(), "silver.slv_orders"), [0]);
    assert_eq!(versions(dir.path(), "gold.gld_daily_revenue"), [0]);
    assert_eq!(versions(dir.path(), "gold.gld_funnel"), [0, 1]);
    std::fs::write(&model, sql).unwrap();
    assert_eq!(dump(dir.path()), before);
}

#[test]
fn thread_count_does_not_change_results() {
    let one = example_project();
    let four = example_project();
    assert_eq!(pipe(one.path(), &["build", "--threads", "1"]).status.code(), Some(0));
    assert_eq!(pipe(four.path(), &["build", "--threads", "4"]).status.code(), Some(0));
    assert_eq!(dump(one.path()), dump(four.path()));
}

/// `--log-format json` lines are dbt's structured logs: `info.name`/`code`/`msg`/`level`, `data.node_info`.
#[test]
fn json_log_format_is_one_dbt_shaped_event_per_node() {
    let dir = example_project();
    let output = pipe(dir.path(), &["run", "-s", "slv_orders+", "--log-format", "json"]);
    // `run` skips seeds and the upstream bronze tables do not exist yet: slv_orders fails and its readers skip.
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<serde_json::Value> =
        text(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let events: Vec<(&str, &str, &str)> = lines[..lines.len() - 1]
        .iter()
        .map(|l| {
            let info = &l["info"];
            (
                info["name"].as_str().unwrap(),
                l["data"]["node_info"]["node_name"].as_str().unwrap(),
                info["level"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(events[0], ("LogModelResult", "slv_orders", "error"));
    assert_eq!(events.len(), 4);
    assert!(events[1..].iter().all(|(name, _, _)| *name == "SkippingDetails"), "{events:?}");
    assert!(lines[0]["info"]["msg"]
        .as_str()
        .unwrap()
        .starts_with("1 of 4 ERROR creating sql table model silver.slv_orders"));
    assert_eq!(lines[0]["info"]["code"], "Q012");
    assert_eq!(lines[0]["data"]["node_info"]["node_status"], "error");
    let stats = lines.last().unwrap();
    assert_eq!(stats["info"]["name"], "StatsLine");
    assert_eq!(stats["info"]["msg"], "Done. PASS=0 WARN=0 ERROR=1 SKIP=3 TOTAL=4");
}

/// A `table` model is written by one Parquet writer per partition of its query (one or more, as DataFusion splits the scan), all
/// files in one commit: the first build creates the table with them, a rebuild removes every old file and adds
/// the new ones in one `WRITE`. Timestamps are stored in microseconds, as Delta keeps them, with file statistics.
#[test]
fn a_table_is_written_by_parallel_writers_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["data", "models/staging"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("pipe.yml"), "name: par\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - {name: events, format: csv, path: data/*.csv}\n",
    )
    .unwrap();
    for part in 0..4 {
        let rows: String =
            (0..500).map(|i| format!("{},e{i},2026-01-0{} 10:00:00.123456\n", part * 1000 + i, part + 1)).collect();
        std::fs::write(root.join(format!("data/{part}.csv")), format!("id,name,at\n{rows}")).unwrap();
    }
    std::fs::write(
        root.join("models/staging/events.sql"),
        "{{ config(materialized='table') }}\nselect id, name, cast(at as timestamp) as at from {{ source('raw', 'events') }}\n",
    )
    .unwrap();
    let output = pipe(root, &["build", "--threads", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let query = |sql: &str| text(&pipe(root, &["query", sql, "-o", "csv"]).stdout);
    let summary = "select count(*) as n, count(distinct id) as ids, min(at) as first, max(at) as last from main.events";
    let expected = "n,ids,first,last\n2000,2000,2026-01-01T10:00:00.123456,2026-01-04T10:00:00.123456\n";
    assert_eq!(query(summary), expected);
    let log = root.join("warehouse/main/events/_delta_log");
    let first = std::fs::read_to_string(log.join("00000000000000000000.json")).unwrap();
    // Written by pipe's writers (delta-rs's own write would record `WRITE`), with the files' statistics.
    assert!(first.contains("\"operation\":\"CREATE TABLE\""), "{first}");
    assert!(first.contains("timestamp_ntz"), "{first}");
    let records: u64 = first
        .lines()
        .filter(|l| l.starts_with("{\"add\""))
        .map(|l| {
            let add: serde_json::Value = serde_json::from_str(l).unwrap();
            let stats: serde_json::Value = serde_json::from_str(add["add"]["stats"].as_str().unwrap()).unwrap();
            stats["numRecords"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(records, 2000);
    let adds = first.lines().filter(|l| l.starts_with("{\"add\"")).count();

    let output = pipe(root, &["build", "--threads", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(query(summary), expected, "a rebuild gives the same table");
    let second = std::fs::read_to_string(log.join("00000000000000000001.json")).unwrap();
    assert!(second.contains("\"operation\":\"WRITE\""), "{second}");
    assert_eq!(second.lines().filter(|l| l.starts_with("{\"remove\"")).count(), adds, "every old file removed");
    // As many new files as the query had non-empty partitions this time (it varies with the machine's load).
    assert!(second.lines().any(|l| l.starts_with("{\"add\"")), "{second}");
    assert_eq!(query("select count(*) as n from main.events VERSION AS OF 0"), "n\n2000\n");
}

/// A view's readers inline its plan with their filters pushed into its scans: reading one partition of the table
/// under a view scans that partition only.
#[test]
fn filters_on_a_view_reach_the_scans_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["data", "models/staging"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("pipe.yml"), "name: views\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - {name: items, format: csv, path: data/items.csv}\n",
    )
    .unwrap();
    std::fs::write(root.join("data/items.csv"), "id,part\n1,a\n2,a\n3,a\n4,b\n5,b\n6,b\n").unwrap();
    let model = |name: &str, sql: &str| std::fs::write(root.join(format!("models/staging/{name}.sql")), sql).unwrap();
    model(
        "items",
        "{{ config(materialized='table', partition_by='part') }}\nselect * from {{ source('raw', 'items') }}\n",
    );
    model("items_view", "select * from {{ ref('items') }}\n");
    model("part_a", "{{ config(materialized='table') }}\nselect id from {{ ref('items_view') }} where part = 'a'\n");
    let output = pipe(root, &["build", "--threads", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("target/run_results.json")).unwrap()).unwrap();
    let part_a = results["results"].as_array().unwrap().iter().find(|r| r["name"] == "part_a").unwrap();
    assert_eq!(part_a["rows_written"], 3);
    assert_eq!(part_a["rows_in"], serde_json::json!({"main.items": 3}), "only partition a is scanned: {part_a}");
}

/// A view read by two models is computed once for the run (said on its line), and both readers get its rows.
#[test]
fn a_view_read_by_two_models_is_computed_once() {
    let dir = example_project();
    let root = dir.path();
    std::fs::write(
        root.join("models/silver/slv_big_orders.sql"),
        "{{ config(materialized='view') }}\nselect order_id, amount from {{ ref('slv_orders') }} where amount > 20\n",
    )
    .unwrap();
    for (name, sql) in [
        ("gld_big_count", "select count(*) as n from {{ ref('slv_big_orders') }}"),
        ("gld_big_total", "select sum(amount) as total from {{ ref('slv_big_orders') }}"),
    ] {
        std::fs::write(
            root.join(format!("models/gold/{name}.sql")),
            format!("{{{{ config(materialized='table') }}}}\n{sql}\n"),
        )
        .unwrap();
    }
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let line =
        stderr.lines().skip_while(|l| !l.contains("silver.slv_big_orders")).take(2).collect::<Vec<_>>().join("\n");
    assert!(line.contains("computed once for this run"), "{line}");
    let count = pipe(root, &["query", "select n from gold.gld_big_count", "-o", "csv"]);
    let direct = pipe(root, &["query", "select count(*) as n from silver.slv_orders where amount > 20", "-o", "csv"]);
    assert_eq!(text(&count.stdout), text(&direct.stdout));
    assert_ne!(text(&count.stdout), "n\n0\n", "the filter keeps some orders");
}

/// A partial build: a model that does not render and one that does not parse fail alone, with their diagnostics;
/// the models downstream of them are skipped and everything else builds. `pipe compile` still fails on them, and a
/// selection that does not need them builds cleanly.
#[test]
fn models_that_do_not_compile_fail_alone_and_everything_else_builds() {
    let dir = example_project();
    let root = dir.path();
    let orders = root.join("models/silver/slv_orders.sql");
    let sql = std::fs::read_to_string(&orders).unwrap();
    std::fs::write(&orders, format!("{sql}\n{{{{ a_macro_that_does_not_exist() }}}}\n")).unwrap();
    std::fs::write(root.join("models/gold/gld_funnel.sql"), "select from from\n").unwrap();

    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 model(s) did not compile (gld_funnel, slv_orders)"), "{stderr}");
    assert!(stderr.contains("ERROR table       silver.slv_orders"), "{stderr}");
    assert!(stderr.contains("ERROR table       gold.gld_funnel"), "{stderr}");
    for skipped in ["gold.gld_daily_revenue", "gold.gld_revenue_by_region", "gold.gld_customer_lifetime"] {
        assert!(stderr.contains(&format!("SKIP  table       {skipped}")), "{skipped}: {stderr}");
    }
    assert!(stderr.contains("6 succeeded, 2 failed, 3 skipped"), "{stderr}");
    // The diagnostics are printed as `pipe compile` prints them, at the user's file.
    assert!(stderr.contains("models/silver/slv_orders.sql"), "{stderr}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("target/run_results.json")).unwrap()).unwrap();
    let code_of = |name: &str| {
        let result = results["results"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap();
        result["code"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(code_of("slv_orders"), "P0202", "an undefined macro");
    assert_eq!(code_of("gld_funnel"), "P0304", "a query that does not plan");
    assert!(root.join("warehouse/silver/slv_customers/_delta_log").exists(), "an unrelated model was built");
    assert!(!root.join("warehouse/silver/slv_orders").exists(), "the broken model wrote nothing");

    // `pipe compile` reports both and fails; a selection that needs neither builds and succeeds.
    assert_eq!(pipe(root, &["compile"]).status.code(), Some(1));
    let selected = pipe(root, &["build", "-s", "slv_customers+"]);
    let stderr = text(&selected.stderr);
    assert_eq!(selected.status.code(), Some(1), "gld_customer_lifetime reads slv_orders: {stderr}");
    let unrelated = pipe(root, &["build", "-s", "+slv_events"]);
    assert_eq!(unrelated.status.code(), Some(0), "{}", text(&unrelated.stderr));
}

/// A model reading a view that an earlier run stored, built by a fresh compile (a clean CI checkout has no plan
/// cache): the view's joins are inlined into the reader's plan, not optimized twice (DataFusion's `join_selection`
/// refused that).
#[test]
fn a_fresh_compile_builds_a_reader_of_a_view_from_an_earlier_run() {
    let dir = example_project();
    let model = dir.path().join("models/silver/int_orders_enriched.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, sql.replace("materialized='ephemeral'", "materialized='view'")).unwrap();
    assert!(pipe(dir.path(), &["build"]).status.success());
    std::fs::remove_dir_all(dir.path().join("target")).unwrap();
    let out = pipe(dir.path(), &["build", "-s", "gld_daily_revenue"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
