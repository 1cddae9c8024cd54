//! Data safety: no silent loss, no skipped batch, no write outside the warehouse, no leaked secret. One test (or a
//! few) per defect of issue 12, each on real files, real Delta tables and the real binary.

mod support;

use std::path::Path;

use support::{pipe, text};

/// A project with one CSV source `raw.items` (`data/items/*.csv`), a bronze `table` model over it and the models
/// given as `(path under models/, text)`.
fn project(models: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["data/items", "models/bronze", "models/silver", "models/gold"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("pipe.yml"), "name: safety\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - name: items\n        format: csv\n        path: data/items/*.csv\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/bronze/brz_items.sql"),
        "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'items') }}\n",
    )
    .unwrap();
    for (path, sql) in models {
        let path = root.join("models").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, sql).unwrap();
    }
    dir
}

fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Runs pipe and asserts its exit code; returns stderr.
fn run(dir: &Path, args: &[&str], code: i32) -> String {
    let output = pipe(dir, args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "pipe {args:?}\nstdout:\n{}\nstderr:\n{stderr}", text(&output.stdout));
    stderr
}

/// A query's result as CSV.
fn query(dir: &Path, sql: &str) -> String {
    let output = pipe(dir, &["query", sql, "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{sql}: {}", text(&output.stderr));
    text(&output.stdout)
}

// 1. A batch's identity is what it was computed from, not only its rows.

#[test]
fn a_merge_source_going_back_and_forth_ends_at_its_last_value() {
    let dir = project(&[(
        "silver/latest.sql",
        "{{ config(materialized='incremental', unique_key='id') }}\nselect id, value from {{ ref('brz_items') }}\n",
    )]);
    for value in ["a", "b", "a", "b"] {
        write(dir.path(), "data/items/1.csv", &format!("id,value\n1,{value}\n"));
        run(dir.path(), &["build"], 0);
        assert_eq!(query(dir.path(), "select id, value from silver.latest"), format!("id,value\n1,{value}\n"));
    }
}

#[test]
fn an_append_model_selecting_the_same_row_from_new_inputs_appends_it_every_build() {
    let dir = project(&[(
        "silver/seen.sql",
        "{{ config(materialized='incremental', incremental_strategy='append') }}\nselect id, value from {{ ref('brz_items') }}\n",
    )]);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n");
    for builds in 1..=4 {
        run(dir.path(), &["build"], 0);
        assert_eq!(query(dir.path(), "select count(*) as n from silver.seen"), format!("n\n{builds}\n"));
    }
    // The same batch computed again from the same input versions is a retry: found in the log, not applied.
    let stderr = run(dir.path(), &["build", "-s", "seen"], 0);
    assert!(stderr.contains("batch already committed (pipe.batch:1-"), "{stderr}");
    assert_eq!(query(dir.path(), "select count(*) as n from silver.seen"), "n\n4\n");
}

// 6. Test failures reach the run history, from builds and from `pipe test`.

#[test]
fn failing_tests_are_recorded_in_the_run_history_and_shown_by_status() {
    let dir = project(&[
        ("silver/slv_items.sql", "{{ config(materialized='table') }}\nselect id, value from {{ ref('brz_items') }}\n"),
        (
            "silver/schema.yml",
            "models:\n  - name: slv_items\n    columns:\n      - name: id\n        tests: [unique]\n",
        ),
    ]);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n2,b\n");
    run(dir.path(), &["build"], 0);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n1,b\n");
    let stderr = run(dir.path(), &["build"], 1);
    assert!(stderr.contains("not published"), "{stderr}");
    let failing = "select status, failures from pipe.test_runs where status = 'fail'";
    assert_eq!(query(dir.path(), failing), "status,failures\nfail,1\n");
    let node =
        "select tests_failed from pipe.node_runs where unique_id = 'model.safety.slv_items' and status = 'error'";
    assert_eq!(query(dir.path(), node), "tests_failed\n1\n");
    let status = text(&pipe(dir.path(), &["status"]).stdout);
    let line = status.lines().find(|l| l.starts_with("slv_items")).unwrap();
    assert!(line.trim_end().ends_with(" 1"), "one failing test: {status}");
    // `pipe test` runs are history too (the table still holds the good version: the test passes there).
    run(dir.path(), &["test"], 0);
    let runs = "select status, count(*) as n from pipe.test_runs group by status order by status";
    assert_eq!(query(dir.path(), runs), "status,n\nfail,1\npass,2\n");
    let status = text(&pipe(dir.path(), &["status"]).stdout);
    let line = status.lines().find(|l| l.starts_with("slv_items")).unwrap();
    assert!(line.trim_end().ends_with(" 0"), "the latest outcome passed: {status}");
}

// 8. Watch mode rebuilds a table whose compiled SQL changed through `--vars`.

#[test]
fn watch_rebuilds_a_table_when_a_var_changes_its_sql() {
    use std::io::{BufRead, BufReader};
    let dir = project(&[(
        "silver/scaled.sql",
        "{{ config(materialized='table') }}\nselect id, {{ var('factor') }} as factor from {{ ref('brz_items') }}\n",
    )]);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n");
    for factor in ["2", "3"] {
        let vars = format!("{{factor: {factor}}}");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
            .args(["build", "--watch", "--interval", "100ms", "--vars", &vars])
            .current_dir(dir.path())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut seen = Vec::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
            seen.push(line.clone());
            if line.contains("cycle 1:") {
                std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
            }
        }
        assert_eq!(child.wait().unwrap().code(), Some(0), "{}", seen.join("\n"));
        let output = pipe(dir.path(), &["query", "select factor from silver.scaled", "-o", "csv", "--vars", &vars]);
        assert_eq!(text(&output.stdout), format!("factor\n{factor}\n"), "{}", text(&output.stderr));
    }
}

// 12. Time travel outside a table's history is an error naming the versions that exist.

#[test]
fn time_travel_outside_the_history_names_the_versions_that_exist() {
    let dir = project(&[]);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n");
    run(dir.path(), &["build"], 0);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n2,b\n");
    run(dir.path(), &["build"], 0);
    let before = pipe(dir.path(), &["show", "brz_items", "--as-of", "2001-01-01"]);
    let stderr = text(&before.stderr);
    assert_ne!(before.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("`bronze.brz_items` did not exist at 2001-01-01 00:00:00 UTC"), "{stderr}");
    assert!(stderr.contains("its first version (0) was committed at"), "{stderr}");
    let past = pipe(dir.path(), &["query", "select * from bronze.brz_items VERSION AS OF 99999999999"]);
    let stderr = text(&past.stderr);
    assert_ne!(past.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("has no version 99999999999: its versions are 0 to 1"), "{stderr}");
    // Inside the history both still answer.
    assert_eq!(query(dir.path(), "select count(*) as n from bronze.brz_items VERSION AS OF 0"), "n\n1\n");
    let now = chrono_like_now();
    assert_eq!(
        query(dir.path(), &format!("select count(*) as n from bronze.brz_items TIMESTAMP AS OF '{now}'")),
        "n\n2\n"
    );
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS`, a second ahead (commits happened before it).
fn chrono_like_now() -> String {
    let output =
        std::process::Command::new("date").args(["-u", "-d", "+1 second", "+%Y-%m-%d %H:%M:%S"]).output().unwrap();
    text(&output.stdout).trim().to_string()
}

// 4. `schema`, `alias` and `database` are identifiers: a path is a compile error and nothing is written outside.

#[test]
fn relation_names_that_are_paths_are_refused_at_compile_and_nothing_leaves_the_warehouse() {
    let outside = tempfile::tempdir().unwrap();
    let keep = outside.path().join("precious");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("data.txt"), "keep me").unwrap();
    let escape = outside.path().display().to_string();
    for config in [
        format!("schema='{escape}'"),
        "alias='../../../escaped'".to_string(),
        "schema='..'".to_string(),
        "alias='a\\nb'".to_string(),
        "database='x/y'".to_string(),
    ] {
        let dir = project(&[
            (
                "silver/slv_items.sql",
                &format!(
                    "{{{{ config(materialized='table', {config}) }}}}\nselect id from {{{{ ref('brz_items') }}}}\n"
                ),
            ),
            (
                "silver/schema.yml",
                "models:\n  - name: slv_items\n    columns:\n      - name: id\n        tests: [unique]\n",
            ),
        ]);
        write(dir.path(), "data/items/1.csv", "id,value\n1,a\n");
        let stderr = run(dir.path(), &["build"], 1);
        assert!(stderr.contains("is not a valid name"), "{config}: {stderr}");
        assert!(stderr.contains("P0103"), "{config}: {stderr}");
        assert!(!dir.path().join("escaped").exists() && !outside.path().join("escaped").exists());
        let entries: Vec<_> = std::fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("precious")], "{config}");
        assert_eq!(std::fs::read_to_string(keep.join("data.txt")).unwrap(), "keep me");
    }
}

// 11. Tests and per-file bronze reads point at their relations in the plan, never by rewriting SQL text.

/// A project whose bronze model ingests `data/items/*.csv` file by file (incremental), with `columns` declared on
/// the source (YAML lines under the table).
fn ingesting_project(columns: &str, bronze_sql: &str) -> tempfile::TempDir {
    let dir = project(&[]);
    write(
        dir.path(),
        "models/sources.yml",
        &format!("sources:\n  - name: raw\n    tables:\n      - name: items\n        format: csv\n        path: data/items/*.csv\n{columns}"),
    );
    write(dir.path(), "models/bronze/brz_items.sql", bronze_sql);
    dir
}

#[test]
fn a_string_literal_naming_the_relation_is_left_alone() {
    // Bronze ingestion reads each file as the source; the literal `'raw.items'` stays a literal.
    let dir = ingesting_project(
        "",
        "{{ config(materialized='incremental') }}\nselect id, value, 'raw.items' as origin from {{ source('raw', 'items') }}\n",
    );
    write(
        dir.path(),
        "models/silver/slv_items.sql",
        "{{ config(materialized='table') }}\nselect id, value from {{ ref('brz_items') }} where value <> 'silver.slv_items_archive'\n",
    );
    // The audit reads the staged result under `silver.slv_items`; the accepted values name that relation as text.
    write(
        dir.path(),
        "models/silver/schema.yml",
        "models:\n  - name: slv_items\n    columns:\n      - name: value\n        tests:\n          - accepted_values:\n              values: ['silver.slv_items', 'b']\n",
    );
    write(dir.path(), "data/items/1.csv", "id,value\n1,silver.slv_items\n2,b\n");
    run(dir.path(), &["build"], 0);
    assert_eq!(query(dir.path(), "select distinct origin from bronze.brz_items"), "origin\nraw.items\n");
    assert_eq!(query(dir.path(), "select count(*) as n from silver.slv_items"), "n\n2\n");
}

#[test]
fn a_declared_type_is_a_type_never_sql() {
    let dir = ingesting_project(
        "        columns:\n          - name: id\n            data_type: bigint\n          - name: value\n            data_type: \"double) is null) or (1=1) or ((1\"\n",
        "{{ config(materialized='incremental') }}\nselect id, value from {{ source('raw', 'items') }}\n",
    );
    write(dir.path(), "data/items/1.csv", "id,value\n1,2.5\n2,3.5\n");
    let stderr = run(dir.path(), &["build"], 1);
    assert!(
        stderr.contains("declares the type \"double) is null) or (1=1) or ((1\", which pipe does not know"),
        "{stderr}"
    );
    assert!(!dir.path().join("warehouse/bronze/brz_items/_delta_log").exists(), "nothing ingested");
    // With a real type the rows that hold it are ingested and the others refused by the contract.
    write(dir.path(), "models/sources.yml", "sources:\n  - name: raw\n    tables:\n      - name: items\n        format: csv\n        path: data/items/*.csv\n        columns:\n          - name: id\n            data_type: bigint\n          - name: value\n            data_type: double\n");
    run(dir.path(), &["build"], 0);
    assert_eq!(query(dir.path(), "select id, value from bronze.brz_items order by id"), "id,value\n1,2.5\n2,3.5\n");
}

// 5. Write-audit-publish on every path: a failing error-severity test leaves no new version.

/// The number of commits in a relation's Delta log (0: no table).
fn versions(dir: &Path, relation: &str) -> usize {
    let log = dir.join("warehouse").join(relation.replace('.', "/")).join("_delta_log");
    match std::fs::read_dir(log) {
        Ok(entries) => entries.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json")).count(),
        Err(_) => 0,
    }
}

const UNIQUE_ID: &str = "    columns:\n      - name: id\n        tests: [unique]\n";

#[test]
fn an_incremental_models_first_build_and_full_refresh_are_audited() {
    let dir = project(&[
        (
            "silver/slv_items.sql",
            "{{ config(materialized='incremental', unique_key='id') }}\nselect id, value from {{ ref('brz_items') }}\n",
        ),
        ("silver/schema.yml", &format!("models:\n  - name: slv_items\n{UNIQUE_ID}")),
    ]);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n1,b\n");
    let stderr = run(dir.path(), &["build"], 1);
    assert!(stderr.contains("not published"), "{stderr}");
    assert_eq!(versions(dir.path(), "silver.slv_items"), 0, "the first build published nothing");
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n2,b\n");
    run(dir.path(), &["build"], 0);
    assert_eq!(versions(dir.path(), "silver.slv_items"), 1);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n1,b\n");
    let stderr = run(dir.path(), &["build", "--full-refresh"], 1);
    assert!(stderr.contains("not published"), "{stderr}");
    assert_eq!(versions(dir.path(), "silver.slv_items"), 1, "the full refresh published nothing");
    assert_eq!(query(dir.path(), "select id, value from silver.slv_items order by id"), "id,value\n1,a\n2,b\n");
}

#[test]
fn a_seed_failing_its_tests_is_not_loaded() {
    let dir = project(&[]);
    write(dir.path(), "seeds/codes.csv", "id,name\n1,a\n1,b\n");
    write(dir.path(), "models/seeds.yml", &format!("seeds:\n  - name: codes\n{UNIQUE_ID}"));
    let stderr = run(dir.path(), &["seed"], 1);
    assert!(stderr.contains("not published"), "{stderr}");
    assert_eq!(versions(dir.path(), "seeds.codes"), 0);
}

#[test]
fn a_microbatch_models_first_build_and_its_slices_are_audited() {
    let dir = project(&[
        (
            "silver/slv_events.sql",
            "{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='ts', begin='2026-01-01', batch_size='day', lookback=1) }}\nselect cast(id as bigint) as id, cast(value as timestamp) as ts from {{ ref('brz_items') }}\n",
        ),
        ("silver/schema.yml", &format!("models:\n  - name: slv_events\n{UNIQUE_ID}")),
    ]);
    write(dir.path(), "data/items/1.csv", "id,value\n1,2026-01-01 10:00:00\n1,2026-01-02 10:00:00\n");
    let stderr = run(dir.path(), &["build"], 1);
    assert!(stderr.contains("not published"), "{stderr}");
    assert_eq!(versions(dir.path(), "silver.slv_events"), 0);
    write(dir.path(), "data/items/1.csv", "id,value\n1,2026-01-01 10:00:00\n2,2026-01-02 10:00:00\n");
    run(dir.path(), &["build"], 0);
    assert_eq!(versions(dir.path(), "silver.slv_events"), 1);
    // A slice whose result breaks the test (id 1 again, on another day) is not committed.
    write(dir.path(), "data/items/2.csv", "id,value\n1,2026-01-03 10:00:00\n");
    let window = ["build", "--event-time-start", "2026-01-03", "--event-time-end", "2026-01-04"];
    let stderr = run(dir.path(), &window, 1);
    assert!(stderr.contains("not published"), "{stderr}");
    assert_eq!(versions(dir.path(), "silver.slv_events"), 1);
    // A slice that keeps the table valid is.
    write(dir.path(), "data/items/2.csv", "id,value\n3,2026-01-03 10:00:00\n");
    run(dir.path(), &window, 0);
    assert_eq!(versions(dir.path(), "silver.slv_events"), 2);
    assert_eq!(query(dir.path(), "select id from silver.slv_events order by id"), "id\n1\n2\n3\n");
}

// 7. Secrets (`DBT_ENV_SECRET_*`, `PIPE_SECRET_*`) are used in the SQL that runs and written or printed nowhere.

const SECRET: &str = "s3cr3t-T0KEN-4711";

fn pipe_with_secret(dir: &Path, args: &[&str]) -> std::process::Output {
    assert_cmd::Command::cargo_bin("pipe")
        .unwrap()
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("DBT_ENV_SECRET_TOKEN", SECRET)
        .env("PIPE_LOG", "debug")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn secrets_are_masked_everywhere_pipe_writes_or_prints() {
    let dir = project(&[
        (
            "silver/slv_checked.sql",
            "{{ config(materialized='table') }}\nselect id from {{ ref('brz_items') }} where '{{ env_var('DBT_ENV_SECRET_TOKEN') }}' <> ''\n",
        ),
        (
            "silver/slv_view.sql",
            "{{ config(materialized='view') }}\nselect id from {{ ref('brz_items') }} where '{{ env_var('DBT_ENV_SECRET_TOKEN') }}' like 's3%'\n",
        ),
        (
            "gold/gld_broken.sql",
            "{{ config(materialized='table') }}\nselect cast('{{ env_var('DBT_ENV_SECRET_TOKEN') }}' || cast(id as varchar) as int) as x from {{ ref('slv_checked') }}\n",
        ),
    ]);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n2,b\n");
    let mut printed = String::new();
    for args in [
        vec!["build", "--openlineage-url", "http://user:pw-4711-secret@127.0.0.1:9/api/v1/lineage"],
        vec!["build", "--log-format", "json"],
        vec!["compile"],
        vec!["docs", "generate"],
        vec!["query", "select * from silver.slv_view"],
    ] {
        let output = pipe_with_secret(dir.path(), &args);
        printed.push_str(&text(&output.stdout));
        printed.push_str(&text(&output.stderr));
    }
    // The secret was used: the models reading it through `env_var()` built with their rows.
    let count = pipe_with_secret(dir.path(), &["query", "select count(*) as n from silver.slv_checked", "-o", "csv"]);
    assert_eq!(text(&count.stdout), "n\n2\n", "{}", text(&count.stderr));
    assert!(printed.contains("gld_broken"), "{printed}");
    for needle in [SECRET, "pw-4711-secret"] {
        assert!(!printed.contains(needle), "printed: {printed}");
        for entry in walkdir::WalkDir::new(dir.path()).into_iter().filter_map(Result::ok) {
            if entry.file_type().is_file() {
                let bytes = std::fs::read(entry.path()).unwrap();
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
                assert!(!found, "`{needle}` in {}", entry.path().display());
            }
        }
    }
    assert!(printed.contains("*****"), "{printed}");
    // The history tables, read with another value in the variable (so nothing masks the answer).
    let unmasked = |sql: &str| {
        let output = assert_cmd::Command::cargo_bin("pipe")
            .unwrap()
            .current_dir(dir.path())
            .env("DBT_ENV_SECRET_TOKEN", "another-value")
            .args(["query", sql, "-o", "csv"])
            .output()
            .unwrap();
        text(&output.stdout)
    };
    for table in ["pipe.node_runs", "pipe.runs"] {
        let rows = unmasked(&format!("select * from {table}"));
        assert!(rows.lines().count() > 1 && !rows.contains(SECRET), "{table}: {rows}");
    }
    let messages = unmasked("select message from pipe.node_runs where status = 'error'");
    assert!(messages.contains("*****"), "{messages}");
}

/// Two silver models on one bronze model, and a gold model on the first: a failure in `slv_a` skips `gld_a` only.
const TWO_BRANCHES: &[(&str, &str)] = &[
    ("silver/slv_a.sql", "{{ config(materialized='table') }}\nselect id from {{ ref('brz_items') }}\n"),
    ("silver/slv_b.sql", "{{ config(materialized='table') }}\nselect id, value from {{ ref('brz_items') }}\n"),
    ("gold/gld_a.sql", "{{ config(materialized='table') }}\nselect count(*) as n from {{ ref('slv_a') }}\n"),
];

// 10. One table's broken log fails what reads it, not the warehouse.

#[test]
fn a_table_with_a_broken_log_fails_only_what_reads_it() {
    let dir = project(TWO_BRANCHES);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n2,b\n");
    run(dir.path(), &["build"], 0);
    run(dir.path(), &["build"], 0);
    let missing = dir.path().join("warehouse/silver/slv_a/_delta_log/00000000000000000000.json");
    std::fs::remove_file(&missing).unwrap();

    run(dir.path(), &["build", "-s", "slv_b"], 0);
    assert_eq!(query(dir.path(), "select count(*) as n from silver.slv_b"), "n\n2\n");
    assert_eq!(query(dir.path(), "select n from gold.gld_a"), "n\n2\n");

    let stderr = run(dir.path(), &["build"], 1);
    assert!(stderr.contains("table `silver.slv_a` cannot be read: its log is missing"), "{stderr}");
    assert!(stderr.contains("00000000000000000000.json"), "{stderr}");
    assert!(stderr.contains("--full-refresh"), "{stderr}");
    assert!(stderr.contains("1 failed, 1 skipped"), "{stderr}");
    let output = pipe(dir.path(), &["query", "select * from silver.slv_a"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("note: warehouse: table `silver.slv_a` cannot be read"), "{stderr}");
}

// 2. A landed file is read once per byte: appended bytes are ingested, a rewrite is reported, a file still being
//    written waits for the settle interval.

const BRONZE_INGEST: &str =
    "{{ config(materialized='incremental') }}\nselect id, value from {{ source('raw', 'items') }}\n";

fn bronze_rows(dir: &Path) -> String {
    query(dir, "select id, value, _pipe_source_file as file from bronze.brz_items order by id, value")
}

#[test]
fn bytes_appended_to_an_ingested_file_are_ingested_once() {
    let dir = ingesting_project("", BRONZE_INGEST);
    let file = dir.path().join("data/items/1.csv");
    std::fs::write(&file, "id,value\n1,a\n2,b\n").unwrap();
    run(dir.path(), &["build"], 0);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"3,c\n4,d\n"))
        .unwrap();
    let stderr = run(dir.path(), &["build"], 0);
    assert!(stderr.contains("the bytes appended to 1 file(s)"), "{stderr}");
    let expected =
        "id,value,file\n1,a,data/items/1.csv\n2,b,data/items/1.csv\n3,c,data/items/1.csv\n4,d,data/items/1.csv\n";
    assert_eq!(bronze_rows(dir.path()), expected);
    let stderr = run(dir.path(), &["build"], 0);
    assert!(stderr.contains("no new files (1 already ingested)"), "{stderr}");
    // A file without a final newline, appended to later.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"5,e"))
        .unwrap();
    run(dir.path(), &["build"], 0);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\n6,f\n"))
        .unwrap();
    run(dir.path(), &["build"], 0);
    assert_eq!(
        query(dir.path(), "select count(*) as n, count(distinct id) as ids from bronze.brz_items"),
        "n,ids\n6,6\n"
    );
}

#[test]
fn a_file_rewritten_after_ingestion_is_reported_and_not_read_again() {
    let dir = ingesting_project("", BRONZE_INGEST);
    let file = dir.path().join("data/items/1.csv");
    std::fs::write(&file, "id,value\n1,a\n2,b\n").unwrap();
    run(dir.path(), &["build"], 0);
    std::fs::write(&file, "id,value\n7,x\n8,y\n9,z\n").unwrap();
    let stderr = run(dir.path(), &["build"], 0);
    assert!(stderr.contains("warning: `data/items/1.csv` changed after it was ingested"), "{stderr}");
    assert!(stderr.contains("NOT ingested"), "{stderr}");
    assert_eq!(query(dir.path(), "select count(*) as n from bronze.brz_items"), "n\n2\n");
    std::fs::write(&file, "id,value\n1,a\n").unwrap();
    let stderr = run(dir.path(), &["build"], 0);
    assert!(stderr.contains("shorter than the"), "{stderr}");
}

#[test]
fn a_file_changed_within_the_settle_interval_waits() {
    let dir = ingesting_project("", BRONZE_INGEST);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n");
    let stderr = run(dir.path(), &["build", "--settle", "1h"], 0);
    assert!(stderr.contains("may still be being written, left for a later build: data/items/1.csv"), "{stderr}");
    assert_eq!(versions(dir.path(), "bronze.brz_items"), 0);
    // The model's own `settle_interval` wins over the flag.
    write(
        dir.path(),
        "models/bronze/brz_items.sql",
        &BRONZE_INGEST.replace("materialized='incremental'", "materialized='incremental', settle_interval='0s'"),
    );
    run(dir.path(), &["build", "--settle", "1h"], 0);
    assert_eq!(query(dir.path(), "select count(*) as n from bronze.brz_items"), "n\n1\n");
}

#[test]
fn watch_ingests_files_written_in_chunks_completely_and_once() {
    let dir = ingesting_project("", BRONZE_INGEST);
    write(dir.path(), "data/items/0.csv", "id,value\n0,start\n");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["build", "--watch", "--interval", "100ms", "--settle", "400ms"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n")
    });
    // Five files, each written in four chunks 150 ms apart (less than the settle interval), then one appended to.
    let mut id = 1;
    for chunk in 0..4 {
        for n in 1..=5 {
            let path = dir.path().join(format!("data/items/{n}.csv"));
            let mut text = if chunk == 0 { "id,value\n".to_string() } else { String::new() };
            for _ in 0..3 {
                text.push_str(&format!("{id},f{n}\n"));
                id += 1;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    let expected = format!("n,ids\n{id},{id}\n");
    let count = "select count(*) as n, count(distinct id) as ids from bronze.brz_items";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while try_query(dir.path(), count) != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(query(dir.path(), count), expected);
    // Bytes appended later are ingested too, once.
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("data/items/3.csv"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{id},late\n").as_bytes()))
        .unwrap();
    let expected = format!("n,ids\n{},{}\n", id + 1, id + 1);
    while try_query(dir.path(), count) != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(1000));
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    let printed = lines.join().unwrap();
    assert_eq!(query(dir.path(), count), expected, "{printed}");
    assert_eq!(status.code(), Some(0), "{printed}");
}

/// A query's result as CSV, or nothing when it fails (the table may not exist yet).
fn try_query(dir: &Path, sql: &str) -> String {
    text(&pipe(dir, &["query", sql, "-o", "csv"]).stdout)
}

// 3. The ledger names a file by its path relative to the project, however the source spells it.

#[test]
fn a_source_path_spelled_absolute_does_not_ingest_again() {
    let dir = ingesting_project("", BRONZE_INGEST);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n2,b\n");
    run(dir.path(), &["build"], 0);
    let absolute = dir.path().join("data/items/*.csv").display().to_string();
    let dotted = "./data/../data/items/*.csv".to_string();
    for path in [absolute, dotted] {
        write(
            dir.path(),
            "models/sources.yml",
            &format!("sources:\n  - name: raw\n    tables:\n      - name: items\n        format: csv\n        path: {path}\n"),
        );
        let stderr = run(dir.path(), &["build"], 0);
        assert!(stderr.contains("no new files (1 already ingested)"), "{path}: {stderr}");
        assert_eq!(query(dir.path(), "select count(*) as n from bronze.brz_items"), "n\n2\n", "{path}");
    }
}

// 9. A panic in one model's task fails that node; the rest of the build finishes and is recorded.

#[test]
fn a_panicking_model_fails_alone_and_the_build_finishes() {
    let dir = project(TWO_BRANCHES);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n");
    let output = assert_cmd::Command::cargo_bin("pipe")
        .unwrap()
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("PIPE_FAILPOINTS", "panic@slv_a")
        .args(["build"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pipe failed inside this model (a panic: failpoint panic@slv_a)"), "{stderr}");
    assert!(stderr.contains("2 succeeded, 1 failed, 1 skipped"), "{stderr}");
    assert_eq!(query(dir.path(), "select count(*) as n from silver.slv_b"), "n\n1\n");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap()).unwrap();
    let statuses: Vec<String> =
        results["results"].as_array().unwrap().iter().map(|r| format!("{}={}", r["name"], r["status"])).collect();
    assert!(statuses.contains(&"\"slv_a\"=\"error\"".to_string()), "{statuses:?}");
    assert!(statuses.contains(&"\"gld_a\"=\"skipped\"".to_string()), "{statuses:?}");
    assert_eq!(
        query(dir.path(), "select status, count(*) as n from pipe.node_runs group by 1 order by 1"),
        "status,n\nerror,1\nskipped,1\nsuccess,2\n"
    );
}

/// Under `--memory-limit`, models running at once share one memory pool: a model that runs out of it while others
/// run is run again alone (nothing else starts meanwhile) before it is failed, and says so; alone (`--threads 1`)
/// the same failure is final.
#[test]
fn a_model_out_of_the_shared_memory_pool_runs_again_alone() {
    let dir = project(TWO_BRANCHES);
    write(dir.path(), "data/items/1.csv", "id,value\n1,a\n");
    let build = |threads: &str| {
        let output = assert_cmd::Command::cargo_bin("pipe")
            .unwrap()
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("PIPE_FAILPOINTS", "exhausted@slv_a")
            .args(["build", "--memory-limit", "1GiB", "--threads", threads, "--full-refresh"])
            .output()
            .unwrap();
        (output.status.code(), text(&output.stderr))
    };
    let (code, stderr) = build("2");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("ran again alone: the memory pool ran out while other models shared it"), "{stderr}");
    assert!(stderr.contains("4 succeeded, 0 failed, 0 skipped"), "{stderr}");
    assert_eq!(query(dir.path(), "select n from gold.gld_a"), "n\n1\n");
    let (code, stderr) = build("1");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Resources exhausted: failpoint"), "{stderr}");
}
