//! Slim CI: `pipe build -s state:modified --defer --state <production target>` builds exactly what a change
//! modified, reading its unselected upstreams from production's warehouse, and writes nothing there.

mod support;

use std::path::Path;

use support::{example_project, pipe, text, RELATIONS};

/// Every table's Delta log: the commits each table has.
fn logs(dir: &Path) -> Vec<(String, usize)> {
    RELATIONS
        .iter()
        .map(|relation| {
            let log = relation.split('.').fold(dir.join("warehouse"), |p, part| p.join(part)).join("_delta_log");
            let commits = std::fs::read_dir(log).map(|entries| entries.count()).unwrap_or(0);
            (relation.to_string(), commits)
        })
        .collect()
}

#[test]
fn a_deferred_build_reads_production_and_writes_only_what_changed() {
    let prod = example_project();
    let out = pipe(prod.path(), &["build"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = logs(prod.path());
    let revenue = |dir: &Path| {
        let out = pipe(
            dir,
            &["query", "select count(*) as days, sum(orders) as orders from gold.gld_daily_revenue", "-o", "csv"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };

    // A pull request changes one gold model; its checkout has no warehouse.
    let pr = example_project();
    let model = pr.path().join("models/gold/gld_daily_revenue.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, sql.replace("-- Revenue and order count per day", "-- Revenue and orders per day")).unwrap();
    let state = prod.path().join("target");
    let state = state.to_str().unwrap();

    // Without `--defer` the model's upstreams are missing here.
    let out = pipe(pr.path(), &["build", "-s", "state:modified", "--state", state]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let out = pipe(pr.path(), &["build", "-s", "state:modified", "--defer", "--state", state]);
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Running 1 nodes"), "only the modified model: {said}");
    assert!(said.contains("gold.gld_daily_revenue"), "{said}");
    assert_eq!(revenue(pr.path()), revenue(prod.path()), "the same rows, from production's inputs");
    // Only the modified model was written here; production is as it was.
    let written: Vec<(String, usize)> = logs(pr.path()).into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(written, [("gold.gld_daily_revenue".to_string(), 1)]);
    assert_eq!(logs(prod.path()), before);
}

#[test]
fn defer_without_state_is_refused() {
    let dir = example_project();
    let out = pipe(dir.path(), &["build", "--defer"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--state"), "{}", text(&out.stderr));
}

#[test]
fn state_modified_says_what_changed_and_result_selects_by_the_last_run() {
    let prod = example_project();
    assert!(pipe(prod.path(), &["compile"]).status.success());
    let pr = example_project();
    // A body change in one model, a config change (in YAML, not the SQL) in another.
    let model = pr.path().join("models/gold/gld_daily_revenue.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, sql.replace("-- Revenue and order count per day", "-- Revenue and orders per day")).unwrap();
    let schema = pr.path().join("models/schema.yml");
    let yaml = std::fs::read_to_string(&schema).unwrap();
    std::fs::write(
        &schema,
        yaml.replacen("  - name: slv_orders\n", "  - name: slv_orders\n    config: {tags: [reviewed]}\n", 1),
    )
    .unwrap();
    let state = prod.path().join("target");
    let ls = |selector: &str| {
        let out = pipe(pr.path(), &["ls", "-s", selector, "--state", state.to_str().unwrap()]);
        assert!(out.status.success(), "{selector}: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ls("state:modified.body"), ["gld_daily_revenue"]);
    assert_eq!(ls("state:modified.configs"), ["slv_orders"]);
    assert_eq!(ls("state:modified"), ["slv_orders", "gld_daily_revenue"]);
    assert!(ls("state:modified.contract").is_empty());

    // `result:` reads the state's run results.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    support::write_files(root, support::FAILING_RUN);
    assert_eq!(pipe(root, &["build"]).status.code(), Some(1));
    let last = root.join("target").to_str().unwrap().to_string();
    let out = pipe(root, &["ls", "-s", "result:error", "result:skipped", "--state", &last]);
    let names: Vec<String> =
        text(&out.stdout).lines().map(|l| l.split_whitespace().next().unwrap_or_default().to_string()).collect();
    assert_eq!(names, ["brz_bad", "slv_after"], "{}", text(&out.stderr));
}

/// An unselected upstream that production built as a view is deferred too: its stored SQL is planned over the
/// other deferred relations, and the selected model reads production's rows through it.
#[test]
fn a_deferred_view_reads_through_to_production_tables() {
    let as_view = |dir: &Path| {
        let model = dir.join("models/silver/int_orders_enriched.sql");
        let sql = std::fs::read_to_string(&model).unwrap();
        std::fs::write(&model, sql.replace("materialized='ephemeral'", "materialized='view'")).unwrap();
    };
    let prod = example_project();
    as_view(prod.path());
    assert!(pipe(prod.path(), &["build"]).status.success());
    let pr = example_project();
    as_view(pr.path());
    let model = pr.path().join("models/gold/gld_daily_revenue.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, sql.replace("-- Revenue and order count per day", "-- Revenue and orders per day")).unwrap();
    let state = prod.path().join("target");
    let out = pipe(pr.path(), &["build", "-s", "state:modified", "--defer", "--state", state.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let query = ["query", "select count(*) as days, sum(orders) as orders from gold.gld_daily_revenue", "-o", "csv"];
    assert_eq!(text(&pipe(pr.path(), &query).stdout), text(&pipe(prod.path(), &query).stdout));
    assert!(!pr.path().join("warehouse/silver/int_orders_enriched").exists(), "the view was not created here");
}
