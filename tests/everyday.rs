//! The small commands dbt users type every day: `list` (with `--resource-type` and `--output-keys`), `parse`,
//! `clean`, `explain` with no code, and dbt commands pipe lacks saying what to use instead.

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
    let out = pipe(std::path::Path::new("."), &["run-operation", "grant_select"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`run-operation` is a dbt command"), "{}", text(&out.stderr));
    let out = pipe(std::path::Path::new("."), &["source", "freshness"]);
    assert!(text(&out.stderr).contains("use `pipe freshness`"), "{}", text(&out.stderr));
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
