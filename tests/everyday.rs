//! The small commands dbt users type every day: `list` (with `--resource-type` and `--output-keys`), `parse`,
//! `clean`, `explain` with no code, `debug`, `run-operation`, `compile --inline` / `show --inline`, `source
//! freshness` with dbt's `sources.json` and `source_status:fresher`, and dbt commands pipe lacks saying what to use
//! instead.

mod support;

use support::{example_project, pipe, text};

#[test]
fn list_filters_by_resource_type_and_keeps_the_keys_asked_for() {
    let dir = example_project();
    let out =
        pipe(dir.path(), &["list", "--resource-type", "seed", "-o", "json", "--output-keys", "name,resource_type"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(row["resource_type"], "seed");
        assert_eq!(row.as_object().unwrap().len(), 2, "only the keys asked for: {row}");
    }
}

#[test]
fn parse_writes_the_manifest_and_clean_removes_the_target_folder_only() {
    let dir = example_project();
    assert!(pipe(dir.path(), &["parse"]).status.success());
    assert!(dir.path().join("target/manifest.json").exists());
    let out = pipe(dir.path(), &["clean"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.path().join("target").exists());
    assert!(dir.path().join("models").exists());
    // A clean target outside the project is refused.
    let outside = tempfile::tempdir().unwrap();
    let name = outside.path().file_name().unwrap().to_string_lossy().to_string();
    let config = std::fs::read_to_string(dir.path().join("pipe.yml")).unwrap();
    std::fs::write(dir.path().join("pipe.yml"), format!("{config}\nclean-targets: ['../{name}']\n")).unwrap();
    let out = pipe(dir.path(), &["clean"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a folder inside the project"), "{}", text(&out.stderr));
    assert!(outside.path().exists());
}

#[test]
fn explain_lists_every_code_and_dbt_commands_say_what_to_use() {
    let out = pipe(std::path::Path::new("."), &["explain"]);
    assert!(out.status.success());
    let listed = text(&out.stdout);
    assert!(listed.contains("P0401  ref-not-found"), "{listed}");
    let out = pipe(std::path::Path::new("."), &["clone"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`clone` is a dbt command"), "{}", text(&out.stderr));
}

#[test]
fn ci_output_github_annotations_and_a_junit_report() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    support::write_files(root, support::FAILING_RUN);
    support::write_files(
        root,
        &[
            (
                "models/bronze/props.yml",
                "models:\n  - name: brz_ok\n    columns:\n      - name: id\n        tests: [not_null, {accepted_values: {values: [2]}}]\n",
            ),
            ("models/silver/slv_missing.sql", "select * from\n  {{ ref('nowhere') }}\n"),
        ],
    );

    let out = pipe(root, &["compile", "--diagnostics", "github"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("::error file=models/silver/slv_missing.sql,line=2,")
            && l.contains("title=P0401 ref-not-found::")),
        "{stderr}"
    );

    let out = pipe(root, &["build"]);
    assert_eq!(out.status.code(), Some(1));
    let junit = std::fs::read_to_string(root.join("target/junit.xml")).unwrap();
    assert!(junit.starts_with("<?xml"), "{junit}");
    assert!(junit.contains("<testsuite name=\"pipe build\""), "{junit}");
    assert!(junit.contains("name=\"bronze.brz_bad\"") && junit.contains("<failure message="), "{junit}");
    assert!(junit.contains("name=\"silver.slv_after\"") && junit.contains("<skipped message="), "{junit}");
    assert!(junit.contains("accepted_values"), "the tests are test cases: {junit}");

    std::fs::remove_file(root.join("target/junit.xml")).unwrap();
    let out = pipe(root, &["test"]);
    assert_eq!(out.status.code(), Some(1));
    let junit = std::fs::read_to_string(root.join("target/junit.xml")).unwrap();
    assert!(junit.contains("<testsuite name=\"pipe test\""), "{junit}");
    assert!(junit.contains("<failure"), "the accepted_values test fails: {junit}");
}

#[test]
fn compile_with_a_selection_prints_the_compiled_sql() {
    let dir = example_project();
    let out = pipe(dir.path(), &["compile", "-s", "gld_daily_revenue"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sql = text(&out.stdout);
    assert!(sql.contains("group by order_date"), "{sql}");
    assert!(!sql.contains("{{"), "rendered: {sql}");
    // Without a selection, compile prints no SQL.
    let out = pipe(dir.path(), &["compile"]);
    assert!(text(&out.stdout).trim().is_empty(), "{}", text(&out.stdout));
}

#[test]
fn debug_checks_the_project_profile_and_warehouse() {
    let dir = example_project();
    let out = pipe(dir.path(), &["debug"]);
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    for line in ["project file [OK pipe.yml found and valid]", "DataFusion version: ", "All checks passed!"] {
        assert!(said.contains(line), "{said}");
    }
    assert!(!dir.path().join("warehouse").exists(), "debug leaves the project as it found it");
    // A profile that names no such target fails the check, and the command.
    std::fs::write(dir.path().join("profiles.yml"), "shop:\n  target: prod\n  outputs:\n    dev: {type: duckdb}\n")
        .unwrap();
    let out = pipe(dir.path(), &["debug"]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("profiles.yml file [ERROR profile `shop` in") && said.contains("has no target `prod`"),
        "{said}"
    );
    let out = pipe(dir.path(), &["debug", "--target", "dev"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Profile `shop`, target `dev`"), "{}", text(&out.stderr));
}

#[test]
fn run_operation_calls_a_macro_that_reads_the_warehouse_and_writes_nothing() {
    let dir = example_project();
    support::write_files(
        dir.path(),
        &[(
            "macros/operations.sql",
            "{% macro report_rows(model, at_least=0) %}\n\
             {% set result = run_query('select count(*) as n from ' ~ ref(model)) %}\n\
             {% if execute %}\n\
             {% set n = result.columns[0].values()[0] %}\n\
             {{ log('rows in ' ~ model ~ ': ' ~ n, info=True) }}\n\
             {% if n < at_least %}{{ exceptions.raise_compiler_error('too few rows in ' ~ model) }}{% endif %}\n\
             {% endif %}\n\
             {% endmacro %}\n\
             {% macro drop_orders() %}{% do run_query('drop table silver.slv_orders') %}{% endmacro %}\n",
        )],
    );
    assert!(pipe(dir.path(), &["build"]).status.success());
    let out = pipe(dir.path(), &["run-operation", "report_rows", "--args", "{model: slv_orders}"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "rows in slv_orders: 12\n");
    let out = pipe(dir.path(), &["run-operation", "report_rows", "--args", "{model: slv_orders, at_least: 100}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("too few rows in slv_orders"), "{}", text(&out.stderr));
    // A statement that would change the warehouse is refused, and the table is still there.
    let out = pipe(dir.path(), &["run-operation", "drop_orders"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("`drop` is not run"), "{}", text(&out.stderr));
    let count = pipe(dir.path(), &["query", "select count(*) as n from silver.slv_orders", "-o", "csv"]);
    assert_eq!(text(&count.stdout), "n\n12\n");
    let out = pipe(dir.path(), &["run-operation", "report_row"]);
    assert!(text(&out.stderr).contains("did you mean `report_rows`?"), "{}", text(&out.stderr));
}

#[test]
fn inline_queries_compile_and_show_as_models_do() {
    let dir = example_project();
    let inline = "select status, count(*) as n from {{ ref('slv_orders') }} group by status order by status";
    let out = pipe(dir.path(), &["compile", "--inline", inline]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "select status, count(*) as n from silver.slv_orders group by status order by status\n"
    );
    assert!(pipe(dir.path(), &["build"]).status.success());
    let out = pipe(dir.path(), &["show", "--inline", inline, "--limit", "2", "-o", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "status,n\ncancelled,1\ncompleted,10\n");
    let out = pipe(dir.path(), &["show", "-s", "slv_orders", "--limit", "1", "-o", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = pipe(dir.path(), &["show", "--inline", "select * from {{ ref('slv_order') }}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("slv_order"), "{}", text(&out.stderr));
}

/// `pipe source freshness` writes dbt's `sources.json`; after new data lands, `source_status:fresher+` against the
/// production run's `sources.json` selects the sources that got it and what reads them, nothing else.
#[test]
fn source_freshness_writes_sources_json_and_fresher_sources_select_their_models() {
    let dir = example_project();
    let out = pipe(dir.path(), &["source", "freshness"]);
    // The example's orders are months old: stale past `error_after`, exit 1, and the file is written all the same.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/sources.json")).unwrap()).unwrap();
    let result = &json["results"][0];
    assert_eq!(result["unique_id"], "source.shop.raw.orders");
    assert_eq!(result["status"], "error");
    assert_eq!(result["criteria"]["warn_after"], serde_json::json!({"count": 1, "period": "day"}));
    assert_eq!(result["max_loaded_at"], "2026-01-02T19:05:00.000000Z");
    // Production's state: its manifest and this sources.json.
    assert!(pipe(dir.path(), &["compile"]).status.success());
    let prod = tempfile::tempdir().unwrap();
    for file in ["manifest.json", "sources.json"] {
        std::fs::copy(dir.path().join("target").join(file), prod.path().join(file)).unwrap();
    }
    let state = prod.path().to_str().unwrap();
    // No new data: nothing is fresher.
    let out = pipe(dir.path(), &["ls", "-s", "source_status:fresher+", "--state", state]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    // A new file of orders lands.
    std::fs::write(
        dir.path().join("data/orders/orders_2026-01-03.csv"),
        "order_id,customer_id,order_ts,status,amount,currency,updated_at\n\
         1013,1,2026-01-03 08:00:00,completed,5.00,EUR,2026-01-03 08:00:00\n",
    )
    .unwrap();
    assert_eq!(pipe(dir.path(), &["source", "freshness", "-s", "source:raw.orders"]).status.code(), Some(1));
    let out = pipe(
        dir.path(),
        &["ls", "-s", "source_status:fresher+", "--state", state, "-o", "json", "--output-keys", "name"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"raw.orders".to_string()) && names.contains(&"brz_orders".to_string()), "{names:?}");
    assert!(names.contains(&"gld_daily_revenue".to_string()), "{names:?}");
    assert!(!names.contains(&"brz_customers".to_string()), "{names:?}");
    // Without production's sources.json the selector says what it needs.
    std::fs::remove_file(prod.path().join("sources.json")).unwrap();
    let out = pipe(dir.path(), &["ls", "-s", "source_status:fresher+", "--state", state]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs `sources.json`"), "{}", text(&out.stderr));
}
