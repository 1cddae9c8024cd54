//! Data tests: generic tests from YAML, custom generic and singular tests, severities, thresholds, `where`,
//! `store_failures`, and write-audit-publish in `pipe build` (a failing test keeps the previous version).

mod support;

use std::path::Path;

use support::{example_project, pipe, text};

fn query(root: &Path, sql: &str) -> String {
    let output = pipe(root, &["query", sql, "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    text(&output.stdout)
}

fn versions(root: &Path, relation: &str) -> usize {
    let log = root.join("warehouse").join(relation.replace('.', "/")).join("_delta_log");
    std::fs::read_dir(log)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
        .count()
}

#[test]
fn the_example_passes_its_tests_in_build_and_in_pipe_test() {
    let dir = example_project();
    let root = dir.path();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("tests: 5 of 5 passed"),
        "slv_orders' own tests (and its ratio to bronze) run on its result: {stderr}"
    );
    // The stage accounting tells rows filtered from rows deduplicated, from the executed plans' metrics: of 16
    // bronze orders, 2 have no customer or are test orders, 2 are older updates of an order; one event is an
    // exact duplicate (`select distinct`).
    assert!(stderr.contains("12 rows written from bronze.brz_orders 16 (2 filtered, 2 deduplicated)"), "{stderr}");
    assert!(stderr.contains("18 rows written from bronze.brz_events 19 (0 filtered, 1 deduplicated)"), "{stderr}");
    assert_eq!(
        query(root, "select rows_read, rows_filtered, rows_deduplicated, rows_written from pipe.node_runs where relation = 'silver.slv_orders'"),
        "rows_read,rows_filtered,rows_deduplicated,rows_written\n16,2,2,12\n"
    );
    // Where the time went: each operator of the executed plan with its metrics, as EXPLAIN ANALYZE gives them.
    assert_eq!(
        query(root, "select operator, output_rows from pipe.operator_runs where relation = 'silver.slv_orders' and operator in ('KeepFirstExec', 'DataSourceExec') order by position"),
        "operator,output_rows\nKeepFirstExec,12\nDataSourceExec,14\n"
    );
    assert_eq!(
        query(root, "select count(*) > 0 as timed from pipe.operator_runs where compute_seconds > 0"),
        "timed\ntrue\n"
    );
    let staged = std::fs::read_dir(root.join("warehouse/_pipe_staging")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(staged, 0, "staged results are removed once published");
    // Tests reading models built in parallel run once those are built.
    assert!(stderr.contains("test PASS  relationships_slv_orders_d32124ef2b1d72c29715b810eec5a337"), "{stderr}");
    assert!(stderr.contains("test PASS  revenue_matches_orders"), "the singular test runs after both models: {stderr}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("target/run_results.json")).unwrap()).unwrap();
    let slv_orders = results["results"].as_array().unwrap().iter().find(|r| r["name"] == "slv_orders").unwrap();
    let names: Vec<&str> =
        slv_orders["tests"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"accepted_values_slv_orders_0b27152bb38a50bbfab4785d11a47664"), "{names:?}");
    let after: Vec<&str> = results["tests"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(after, ["relationships_slv_orders_d32124ef2b1d72c29715b810eec5a337", "revenue_matches_orders"]);

    let output = pipe(root, &["test"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("PASS  positive_gld_daily_revenue_revenue"), "custom generic test: {stderr}");
    assert!(stderr.contains("Done: 19 passed, 0 warned, 0 failed of 19 tests"), "{stderr}");
    let output = pipe(root, &["test", "-s", "slv_customers"]);
    assert!(
        text(&output.stderr).contains("of 3 tests"),
        "two on slv_customers and the relationship into it: {}",
        text(&output.stderr)
    );
}

/// An order with an unknown status arrives: `accepted_values` on `slv_orders` fails on the new result, which is
/// not published; the gold models after it are skipped; the failing row is shown.
#[test]
fn a_failing_test_keeps_the_previous_version_and_skips_descendants() {
    let dir = example_project();
    let root = dir.path();
    assert_eq!(pipe(root, &["build"]).status.code(), Some(0));
    let before = query(root, "select count(*) as n from silver.slv_orders");
    std::fs::write(
        root.join("data/orders/orders_2026-01-09.csv"),
        "order_id,customer_id,order_ts,status,amount,currency,updated_at\n\
         2001,1,2026-01-09 09:00:00,lost,12.00,EUR,2026-01-09 09:00:00\n",
    )
    .unwrap();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("test `accepted_values_slv_orders_0b27152bb38a50bbfab4785d11a47664` failed: 1 failing row(s)"),
        "{stderr}"
    );
    assert!(stderr.contains("| 2001"), "a sample of the failing rows: {stderr}");
    assert!(stderr.contains("the new result was not published"), "{stderr}");
    assert!(stderr.contains("skipped: upstream `slv_orders` failed"), "{stderr}");
    assert_eq!(query(root, "select count(*) as n from silver.slv_orders"), before);
    assert_eq!(versions(root, "silver.slv_orders"), 1, "no version was committed");
    assert!(!root.join("warehouse/_pipe_staging/silver__slv_orders").exists(), "the staged result is removed");
    // The raw row is in bronze: nothing is lost.
    assert!(query(root, "select count(*) as n from bronze.brz_orders where order_id = 2001").contains("\n1\n"));
}

fn small_project(tests_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["data", "models/bronze", "models/silver"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("pipe.yml"), "name: q\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - name: people\n        format: csv\n        path: data/people.csv\n",
    )
    .unwrap();
    std::fs::write(root.join("data/people.csv"), "id,name,age\n1,ada,36\n2,,41\n3,cy,-1\n3,dee,20\n").unwrap();
    std::fs::write(
        root.join("models/bronze/brz_people.sql"),
        "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'people') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/silver/slv_people.sql"),
        "{{ config(materialized='table') }}\nselect id, name, age from {{ ref('brz_people') }}\n",
    )
    .unwrap();
    std::fs::write(root.join("models/schema.yml"), format!("models:\n  - name: slv_people\n{tests_yaml}")).unwrap();
    dir
}

#[test]
fn severity_thresholds_where_and_stored_failures() {
    let dir = small_project(
        "    columns:\n\
         \x20     - name: name\n\
         \x20       data_tests:\n\
         \x20         - not_null:\n\
         \x20             config: {severity: warn}\n\
         \x20     - name: id\n\
         \x20       data_tests:\n\
         \x20         - unique:\n\
         \x20             config: {error_if: '>5', warn_if: '>0', store_failures: true}\n\
         \x20     - name: age\n\
         \x20       data_tests:\n\
         \x20         - expression_is_true:\n\
         \x20             arguments: {expression: '>= 0'}\n\
         \x20             config: {where: 'id <> 3'}\n",
    );
    let root = dir.path();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "warnings do not fail the build: {stderr}");
    assert!(stderr.contains("tests: 1 of 3 passed"), "{stderr}");
    assert!(stderr.contains("test `not_null_slv_people_name` warning: 1 failing row(s)"), "{stderr}");
    assert!(stderr.contains("test `unique_slv_people_id` warning: 1 failing row(s)"), "{stderr}");
    assert_eq!(
        query(root, "select unique_field, n_records from pipe_audit.unique_slv_people_id"),
        "unique_field,n_records\n3,2\n"
    );

    // Without the `where`, the negative age fails the build, and the table was never published.
    let yaml = std::fs::read_to_string(root.join("models/schema.yml")).unwrap();
    std::fs::write(root.join("models/schema.yml"), yaml.replace("config: {where: 'id <> 3'}", "config: {}")).unwrap();
    std::fs::remove_dir_all(root.join("warehouse")).unwrap();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("test `expression_is_true_slv_people_age___0` failed: 1 failing row(s)"), "{stderr}");
    assert!(!root.join("warehouse/silver/slv_people/_delta_log").exists(), "nothing published");
    let output = pipe(root, &["test"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("ERROR"), "the model has no table to test: {}", text(&output.stderr));
}

#[test]
fn unknown_tests_are_compile_errors_with_a_suggestion() {
    let dir = small_project("    columns:\n      - name: id\n        data_tests: [uniqe]\n");
    let output = pipe(dir.path(), &["compile", "--diagnostics", "short"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown test `uniqe`"), "{stderr}");
    assert!(stderr.contains("did you mean `unique`?"), "{stderr}");
}

/// Row-count expectations between stages, the stage accounting printed by `pipe build`, and the default warning
/// for a model that writes nothing from a non-empty input.
#[test]
fn row_count_expectations_fail_a_model_that_drops_rows() {
    let dir = small_project(
        "    data_tests:\n\
         \x20     - row_count: {min: 1}\n\
         \x20     - row_ratio:\n\
         \x20         arguments: {of: \"ref('brz_people')\", min: 0.9}\n\
         \x20     - equal_rows: \"ref('brz_people')\"\n",
    );
    let root = dir.path();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("tests: 3 of 3 passed"), "{stderr}");
    assert!(stderr.contains("Rows by stage: bronze 4 rows (1 models) -> silver 4 rows (1 models)"), "{stderr}");
    assert!(
        stderr.contains("silver.slv_people") && stderr.contains("4 rows written from bronze.brz_people 4"),
        "{stderr}"
    );
    assert!(stderr.contains("from bronze.brz_people 4 (0 filtered, 0 deduplicated)"), "{stderr}");

    // A filter that drops a quarter of the rows: the ratio and equality expectations fail the model.
    let model = root.join("models/silver/slv_people.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, sql.replace("from {{ ref('brz_people') }}", "from {{ ref('brz_people') }} where age > 0"))
        .unwrap();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("test `row_ratio_slv_people_0_9__ref_brz_people_` failed: 1 failing row(s)"), "{stderr}");
    assert!(stderr.contains("| 3 | 4    | 0.75  |"), "the counts and the ratio: {stderr}");
    assert!(stderr.contains("test `equal_rows_slv_people_ref_brz_people_` failed"), "{stderr}");
    assert!(query(root, "select count(*) as n from silver.slv_people").contains("\n4\n"), "previous version kept");

    // Without expectations, writing nothing from a non-empty input is a warning.
    std::fs::write(root.join("models/schema.yml"), "models:\n  - name: slv_people\n").unwrap();
    std::fs::write(&model, sql.replace("from {{ ref('brz_people') }}", "from {{ ref('brz_people') }} where false"))
        .unwrap();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("warning: wrote 0 rows from 4 input rows"), "{stderr}");
}

/// Constraints are enforced on the new result like error-severity tests: a `check` that fails keeps the model
/// unpublished. With an enforced contract, a query that no longer returns a declared column fails at compile.
#[test]
fn constraints_and_contracts_are_enforced() {
    let dir = small_project(
        "    config:\n      contract: {enforced: true}\n    columns:\n\
         \x20     - name: id\n        data_type: bigint\n        constraints: [{type: not_null}]\n\
         \x20     - name: name\n        data_type: varchar\n\
         \x20     - name: age\n        data_type: bigint\n        constraints: [{type: check, expression: \"age >= 0\"}]\n",
    );
    let root = dir.path();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("test `constraint_check_slv_people_age` failed: 1 failing row(s)"), "{stderr}");
    assert!(!root.join("warehouse/silver/slv_people/_delta_log").exists(), "nothing published");

    let model = root.join("models/silver/slv_people.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, sql.replace("select id, name, age", "select id, name, abs(age) as age, 1 as extra"))
        .unwrap();
    let output = pipe(root, &["compile", "--diagnostics", "short"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error[P0305]: model `slv_people` does not match its contract (1 difference(s))"),
        "{stderr}"
    );
    std::fs::write(&model, sql.replace("select id, name, age", "select id, name, abs(age) as age")).unwrap();
    let output = pipe(root, &["build"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

/// A source contract at ingestion: a value that is not of its declared type fails the ingestion with the row
/// shown, or, with `on_contract_violation: quarantine`, goes unmodified with its reason to a quarantine table
/// while the other rows are ingested. Nothing is dropped silently.
#[test]
fn source_contract_violations_fail_or_go_to_quarantine() {
    let dir = payments_project("csv");
    let root = dir.path();
    let model = root.join("models/bronze/brz_payments.sql");
    let quarantine = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, quarantine.replace(", on_contract_violation='quarantine'", "")).unwrap();
    std::fs::write(root.join("data/1.csv"), "id,amount\n1,9.5\n2,abc\n3,\n").unwrap();

    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 row(s) break the contract of source `raw.payments`; nothing was ingested"), "{stderr}");
    assert!(stderr.contains("amount: abc is not double"), "{stderr}");
    assert!(!root.join("warehouse/bronze/brz_payments/_delta_log").exists());

    std::fs::write(&model, quarantine).unwrap();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("1 row(s) broke the source contract and went to `bronze.brz_payments__quarantine`"),
        "{stderr}"
    );
    // The stage accounting counts what was read from the file, the quarantined row included.
    assert!(stderr.contains("2 rows written from raw.payments 3"), "{stderr}");
    assert_eq!(query(root, "select id, amount from bronze.brz_payments order by id"), "id,amount\n1,9.5\n3,\n");
    assert_eq!(
        query(root, "select id, amount, _pipe_reason, _pipe_source_file from bronze.brz_payments__quarantine"),
        "id,amount,_pipe_reason,_pipe_source_file\n2,abc,amount: abc is not double; ,data/1.csv\n"
    );
    // A rerun ingests nothing and quarantines nothing twice.
    assert_eq!(pipe(root, &["build"]).status.code(), Some(0));
    assert!(query(root, "select count(*) as n from bronze.brz_payments__quarantine").contains("\n1\n"));
}

/// Every build is recorded in `pipe.runs` / `pipe.node_runs`; a model whose row count leaves the range of its last
/// runs (median ± 3 scaled MADs) is reported.
#[test]
fn run_history_is_queryable_and_row_count_anomalies_are_reported() {
    let dir = small_project("    description: people\n");
    let root = dir.path();
    for _ in 0..5 {
        let output = pipe(root, &["build"]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        assert!(!text(&output.stderr).contains("anomaly"), "{}", text(&output.stderr));
    }
    let model = root.join("models/silver/slv_people.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, sql.replace("from {{ ref('brz_people') }}", "from {{ ref('brz_people') }} where id = 1"))
        .unwrap();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "an anomaly is a warning: {stderr}");
    assert!(
        stderr.contains("warning: anomaly: `silver.slv_people` rows written 1, outside its normal range 3..5 (median 4 over its last 5 runs)"),
        "{stderr}"
    );
    assert_eq!(query(root, "select count(*) as runs, sum(failed) as failed from pipe.runs"), "runs,failed\n6,0\n");
    assert_eq!(
        query(root, "select distinct column_name from pipe.schemas where relation = 'silver.slv_people' order by 1"),
        "column_name\nage\nid\nname\n"
    );
    // With `anomaly_severity: error` the same deviation is refused before it is published.
    let before = versions(root, "silver.slv_people");
    let config = "{{ config(materialized='table', anomaly_severity='error') }}";
    let sql = std::fs::read_to_string(&model).unwrap().replace("{{ config(materialized='table') }}", config);
    std::fs::write(&model, sql).unwrap();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: anomaly: `silver.slv_people` rows written 1"), "{stderr}");
    assert!(stderr.contains("the new result was not published"), "{stderr}");
    assert!(stderr.contains("code: P0610"), "the refusal's code: {stderr}");
    assert_eq!(versions(root, "silver.slv_people"), before, "no version was committed");
}

/// `pipe freshness`: a source's newest file against `warn_after` / `error_after`, a model's last build against
/// `expect_every`.
#[test]
fn freshness_of_sources_and_models() {
    let dir = small_project("    config:\n      expect_every: 1 hour\n");
    let root = dir.path();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - name: people\n        format: csv\n        path: data/people.csv\n\
         \x20       freshness:\n          warn_after: {count: 2, period: hour}\n          error_after: {count: 1, period: day}\n",
    )
    .unwrap();
    assert_eq!(pipe(root, &["build"]).status.code(), Some(0));
    let output = pipe(root, &["freshness"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("PASS  source raw.people"), "{stderr}");
    assert!(stderr.contains("PASS  model silver.slv_people"), "{stderr}");

    let touch = |ago: &str| {
        let status =
            std::process::Command::new("touch").args(["-d", ago, "data/people.csv"]).current_dir(root).status();
        assert!(status.unwrap().success());
    };
    touch("3 hours ago");
    let output = pipe(root, &["freshness"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("WARN  source raw.people")
            && stderr.contains("newest 3h00m ago (warn after 2h00m, error after 24h00m)"),
        "{stderr}"
    );
    touch("2 days ago");
    let output = pipe(root, &["freshness"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("ERROR source raw.people"), "{}", text(&output.stderr));
}

/// The schema registry: a compatible change (a nullable column) builds and registers a new version; a breaking one
/// (a removed column) stops the build before anything runs unless the model's version is bumped or
/// `--allow-breaking` is given; `pipe schema diff` shows the changes; a drifted source is reported.
#[test]
fn schema_registry_blocks_breaking_changes() {
    let dir = small_project("    description: people\n");
    let root = dir.path();
    assert_eq!(pipe(root, &["build"]).status.code(), Some(0));
    let model = root.join("models/silver/slv_people.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    let write = |select: &str, config: &str| {
        let text = sql.replace("select id, name, age", select).replace("materialized='table'", config);
        std::fs::write(&model, text).unwrap();
    };

    write("select id, name, age, upper(name) as shout", "materialized='table'");
    let output = pipe(root, &["build"]);
    assert_eq!(output.status.code(), Some(0), "a nullable column is backward compatible: {}", text(&output.stderr));

    write("select id, name", "materialized='table'");
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("error: model `slv_people` changes its schema in a way `backward` compatibility does not allow:"),
        "{stderr}"
    );
    assert!(stderr.contains("- `age` Int64") && stderr.contains("- `shout` Utf8View"), "{stderr}");
    assert!(!stderr.contains("Running"), "nothing ran: {stderr}");
    let output = pipe(root, &["schema", "diff", "slv_people"]);
    let diff = text(&output.stdout);
    assert!(diff.contains("silver.slv_people: registered version 2 -> the project now"), "{diff}");
    assert!(diff.contains("- `age` Int64  (breaks `backward`)"), "{diff}");

    assert_eq!(pipe(root, &["build", "--allow-breaking"]).status.code(), Some(0));
    write("select id", "materialized='table', version=2");
    let output = pipe(root, &["build"]);
    assert_eq!(output.status.code(), Some(0), "a new version may break: {}", text(&output.stderr));

    std::fs::write(root.join("data/people.csv"), "id,name,age,city\n1,ada,36,Paris\n").unwrap();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("warning: source `raw.people` drifted since its last registered schema: + `city`"),
        "{stderr}"
    );
}

/// `pipe status` reads the run history: never-built models say so; built ones show their last run.
#[test]
fn status_shows_each_models_last_run() {
    let dir = small_project("    description: people\n");
    let root = dir.path();
    let output = pipe(root, &["status"]);
    assert!(
        text(&output.stdout).lines().any(|l| l.starts_with("slv_people") && l.contains("never")),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(pipe(root, &["build"]).status.code(), Some(0));
    let output = pipe(root, &["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let line =
        text(&output.stdout).lines().find(|l| l.starts_with("slv_people")).map(str::to_string).unwrap_or_default();
    assert!(line.contains("success") && line.contains(" 4 "), "{line}");
}

/// A project with one `payments` source of `format` (declared `id bigint`, `amount double`) under `data/`, ingested
/// by a bronze model that quarantines the rows breaking the contract.
fn payments_project(format: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("models/bronze")).unwrap();
    std::fs::write(root.join("pipe.yml"), "name: payments\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        format!(
            "sources:\n  - name: raw\n    tables:\n      - name: payments\n        format: {format}\n        path: data/*.{format}\n\
             \x20       columns:\n          - {{name: id, data_type: bigint}}\n          - {{name: amount, data_type: double}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("models/bronze/brz_payments.sql"),
        "{{ config(materialized='incremental', on_contract_violation='quarantine') }}\nselect * from {{ source('raw', 'payments') }}\n",
    )
    .unwrap();
    dir
}

/// The source contract holds for newline-delimited JSON too: a value of another type goes to quarantine.
#[test]
fn json_source_contract_violations_go_to_quarantine() {
    let dir = payments_project("json");
    let root = dir.path();
    std::fs::write(
        root.join("data/p1.json"),
        "{\"id\": 1, \"amount\": \"9.5\"}\n{\"id\": 2, \"amount\": \"abc\"}\n{\"id\": 3}\n",
    )
    .unwrap();
    let output = pipe(root, &["build"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(query(root, "select id, amount from bronze.brz_payments order by id"), "id,amount\n1,9.5\n3,\n");
    assert_eq!(query(root, "select id, amount from bronze.brz_payments__quarantine"), "id,amount\n2,abc\n");
}

/// Parquet sources are held to their declared types too: a file whose column holds text where a number is
/// declared has its unconvertible rows quarantined, the rest ingested with the declared types.
#[test]
fn parquet_source_contract_violations_go_to_quarantine() {
    let dir = payments_project("parquet");
    let root = dir.path();
    let file = root.join("data/p1.parquet");
    let copy = format!(
        "copy (select * from (values (1, '9.5'), (2, 'abc'), (3, null)) as t(id, amount)) to '{}' stored as parquet",
        file.display()
    );
    assert_eq!(pipe(root, &["query", &copy]).status.code(), Some(0));
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("1 row(s) broke the source contract"), "{stderr}");
    assert_eq!(query(root, "select id, amount from bronze.brz_payments order by id"), "id,amount\n1,9.5\n3,\n");
    assert_eq!(
        query(root, "select id, amount, _pipe_reason from bronze.brz_payments__quarantine"),
        "id,amount,_pipe_reason\n2,abc,amount: abc is not double; \n"
    );
}
