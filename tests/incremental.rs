//! Incremental models: each strategy applied to a second batch of real files, checked by reading the Delta table.

mod support;

use std::path::Path;

use support::{pipe, text};

fn project(strategy_config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["data/updates", "models/bronze", "models/silver"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("pipe.yml"), "name: inc\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - name: updates\n        format: csv\n        path: data/updates/*.csv\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/bronze/brz_updates.sql"),
        "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'updates') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/silver/customers.sql"),
        format!(
            "{{{{ config(materialized='incremental', {strategy_config}) }}}}\nselect id, day, name, cast(updated_at as timestamp) as updated_at\nfrom {{{{ ref('brz_updates') }}}}\n{{% if is_incremental() %}}\nwhere cast(updated_at as timestamp) > (select max(updated_at) from {{{{ this }}}})\n{{% endif %}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("data/updates/1.csv"),
        "id,day,name,updated_at\n1,d1,ada,2026-01-01 10:00:00\n2,d1,bo,2026-01-01 11:00:00\n3,d2,cy,2026-01-02 09:00:00\n",
    )
    .unwrap();
    dir
}

fn rows(dir: &Path) -> String {
    let output = pipe(dir, &["query", "select id, day, name from silver.customers order by id, name", "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    text(&output.stdout)
}

fn build(dir: &Path) -> String {
    let output = pipe(dir, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    stderr
}

const SECOND_BATCH: &str = "id,day,name,updated_at\n1,d1,ada2,2026-01-03 10:00:00\n4,d2,dee,2026-01-03 11:00:00\n";

#[test]
fn merge_updates_matches_and_inserts_the_rest() {
    let dir = project("unique_key='id'");
    build(dir.path());
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n2,d1,bo\n3,d2,cy\n");
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    let stderr = build(dir.path());
    assert!(stderr.contains("merge: 2 rows in the batch"), "{stderr}");
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada2\n2,d1,bo\n3,d2,cy\n4,d2,dee\n");
    // A rerun with no new rows writes nothing: no new Delta version.
    let stderr = build(dir.path());
    assert!(stderr.contains("empty batch: nothing written"), "{stderr}");
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada2\n2,d1,bo\n3,d2,cy\n4,d2,dee\n");
    let log = dir.path().join("warehouse/silver/customers/_delta_log");
    assert_eq!(
        std::fs::read_dir(log)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count(),
        2
    );
}

#[test]
fn duplicate_keys_in_a_batch_are_refused_before_writing() {
    let dir = project("unique_key='id'");
    build(dir.path());
    std::fs::write(
        dir.path().join("data/updates/2.csv"),
        "id,day,name,updated_at\n5,d3,x,2026-01-04 10:00:00\n5,d3,y,2026-01-04 11:00:00\n",
    )
    .unwrap();
    let output = pipe(dir.path(), &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the batch has more than one row for key (id=5)"), "{stderr}");
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n2,d1,bo\n3,d2,cy\n");
}

#[test]
fn append_adds_the_batch() {
    let dir = project("incremental_strategy='append'");
    build(dir.path());
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    build(dir.path());
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n1,d1,ada2\n2,d1,bo\n3,d2,cy\n4,d2,dee\n");
}

/// Each batch commits its identity (a digest of its inputs, watermark and rows) as a Delta application transaction:
/// a batch that comes again from the same inputs, as with this inclusive watermark (`>=`) after a run whose commit
/// already landed, is not applied twice.
#[test]
fn a_batch_already_committed_is_not_appended_again() {
    let dir = project("incremental_strategy='append'");
    let model = dir.path().join("models/silver/customers.sql");
    let sql = std::fs::read_to_string(&model).unwrap().replace("> (select max", ">= (select max");
    std::fs::write(&model, sql).unwrap();
    build(dir.path());
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    let stderr = build(dir.path());
    assert!(stderr.contains("append: 3 rows in the batch"), "{stderr}");
    let after = "id,day,name\n1,d1,ada\n1,d1,ada2\n2,d1,bo\n3,d2,cy\n3,d2,cy\n4,d2,dee\n";
    assert_eq!(rows(dir.path()), after, "the row at the watermark is selected again once, as the SQL says");
    // The next batch is the row at the new watermark (dee), appended once more. Run again on the same inputs
    // (only the model, so its upstream keeps its version), the same batch is a retry: its transaction is found in
    // the log. (A full build rebuilds the upstream: a new input version, so a new batch, appended as the SQL says.)
    let stderr = build(dir.path());
    assert!(stderr.contains("append: 1 rows in the batch"), "{stderr}");
    let once_more = rows(dir.path());
    assert_eq!(once_more.matches("4,d2,dee").count(), 2, "{once_more}");
    let output = pipe(dir.path(), &["build", "-s", "customers"]);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("batch already committed (pipe.batch:1-"), "{stderr}");
    assert_eq!(rows(dir.path()), once_more);
}

#[test]
fn delete_insert_replaces_rows_by_key() {
    let dir = project("unique_key='id', incremental_strategy='delete+insert'");
    build(dir.path());
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    build(dir.path());
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada2\n2,d1,bo\n3,d2,cy\n4,d2,dee\n");
}

/// A batch row without a key matches no row of the table (as in dbt) and is inserted once; a keyed row still
/// replaces its key's rows.
#[test]
fn delete_insert_inserts_a_row_without_a_key_once() {
    let dir = project("unique_key='id', incremental_strategy='delete+insert'");
    build(dir.path());
    std::fs::write(
        dir.path().join("data/updates/2.csv"),
        "id,day,name,updated_at\n,d3,nokey,2026-01-04 10:00:00\n2,d1,bo2,2026-01-04 11:00:00\n",
    )
    .unwrap();
    build(dir.path());
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n2,d1,bo2\n3,d2,cy\n,d3,nokey\n");
}

#[test]
fn insert_overwrite_replaces_the_batch_partitions() {
    let dir = project("incremental_strategy='insert_overwrite', partition_by='day'");
    build(dir.path());
    // The batch holds only day d2: d2's rows are replaced by the batch, d1 is untouched.
    std::fs::write(dir.path().join("data/updates/2.csv"), "id,day,name,updated_at\n9,d2,zed,2026-01-05 10:00:00\n")
        .unwrap();
    build(dir.path());
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n2,d1,bo\n9,d2,zed\n");
    // `partition_by` makes Delta partitions: one folder per day.
    assert!(dir.path().join("warehouse/silver/customers/day=d1").is_dir());
}

#[test]
fn full_refresh_rebuilds_from_upstream() {
    let dir = project("incremental_strategy='append'");
    build(dir.path());
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    build(dir.path());
    assert_eq!(pipe(dir.path(), &["build", "--full-refresh"]).status.code(), Some(0));
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n1,d1,ada2\n2,d1,bo\n3,d2,cy\n4,d2,dee\n");
}

/// dbt's `full_refresh: false`: `--full-refresh` does not rebuild the model, whose rows would be lost when its
/// upstream no longer holds them (here the first file is gone); it runs incrementally instead.
#[test]
fn full_refresh_false_keeps_the_table_through_full_refresh() {
    let dir = project("incremental_strategy='append', full_refresh=false");
    build(dir.path());
    std::fs::remove_file(dir.path().join("data/updates/1.csv")).unwrap();
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    let output = pipe(dir.path(), &["build", "--full-refresh"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n1,d1,ada2\n2,d1,bo\n3,d2,cy\n4,d2,dee\n");
}

/// Adds a column to the model, then builds a second batch.
fn add_column_and_build(dir: &Path) -> std::process::Output {
    let model = dir.join("models/silver/customers.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, sql.replace("select id, day, name,", "select id, day, name, upper(name) as shout,"))
        .unwrap();
    std::fs::write(dir.join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    pipe(dir, &["build"])
}

#[test]
fn on_schema_change_ignore_drops_new_columns() {
    let dir = project("incremental_strategy='append'");
    build(dir.path());
    let output = add_column_and_build(dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let output = pipe(dir.path(), &["query", "select * from silver.customers where id = 4", "-o", "csv"]);
    assert_eq!(text(&output.stdout), "id,day,name,updated_at\n4,d2,dee,2026-01-03T11:00:00\n");
}

#[test]
fn on_schema_change_fail_refuses_and_keeps_the_table() {
    let dir = project("incremental_strategy='append', on_schema_change='fail'");
    build(dir.path());
    let output = add_column_and_build(dir.path());
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the batch's columns differ from the table's (new columns: shout; missing columns: none)"),
        "{stderr}"
    );
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n2,d1,bo\n3,d2,cy\n");
}

#[test]
fn on_schema_change_append_new_columns_adds_them() {
    let dir = project("unique_key='id', on_schema_change='append_new_columns'");
    build(dir.path());
    let output = add_column_and_build(dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let output = pipe(dir.path(), &["query", "select id, name, shout from silver.customers order by id", "-o", "csv"]);
    assert_eq!(text(&output.stdout), "id,name,shout\n1,ada2,ADA2\n2,bo,\n3,cy,\n4,dee,DEE\n");
}

/// `sync_all_columns`: the table takes the batch's columns (here `day` dropped, `shout` added) in one commit;
/// rows the merge does not touch keep their values and get null in the new column.
#[test]
fn on_schema_change_sync_all_columns_takes_the_batch_columns() {
    let dir = project("unique_key='id', on_schema_change='sync_all_columns'");
    build(dir.path());
    let model = dir.path().join("models/silver/customers.sql");
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, sql.replace("select id, day, name,", "select id, name, upper(name) as shout,")).unwrap();
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    // Dropping `day` breaks the registered schema's backward compatibility: the build says so first.
    let output = pipe(dir.path(), &["build"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("- `day` Utf8View"), "{}", text(&output.stderr));
    let output = pipe(dir.path(), &["build", "--allow-breaking"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let output = pipe(dir.path(), &["query", "select * from silver.customers order by id", "-o", "csv"]);
    assert_eq!(
        text(&output.stdout),
        "id,name,shout,updated_at\n1,ada2,ADA2,2026-01-03T10:00:00\n2,bo,,2026-01-01T11:00:00\n\
         3,cy,,2026-01-02T09:00:00\n4,dee,DEE,2026-01-03T11:00:00\n"
    );
    let output = pipe(dir.path(), &["history", "customers", "-o", "csv"]);
    assert_eq!(text(&output.stdout).lines().count(), 3, "one commit per build: {}", text(&output.stdout));
}

/// A bronze model over a file source ingests each file exactly once, with pipe's lineage columns.
fn bronze_project() -> tempfile::TempDir {
    let dir = project("incremental_strategy='append'");
    std::fs::write(
        dir.path().join("models/bronze/brz_updates.sql"),
        "{{ config(materialized='incremental') }}\nselect * from {{ source('raw', 'updates') }}\n",
    )
    .unwrap();
    dir
}

fn ingested(dir: &Path) -> String {
    let sql = "select _pipe_source_file as file, count(*) as n, count(distinct _pipe_batch_id) as batches from bronze.brz_updates group by 1 order by 1";
    let output = pipe(dir, &["query", sql, "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
fn bronze_ingests_each_file_exactly_once() {
    let dir = bronze_project();
    let stderr = build(dir.path());
    assert!(stderr.contains("ingested 1 new file(s)"), "{stderr}");
    assert_eq!(ingested(dir.path()), "file,n,batches\ndata/updates/1.csv,3,1\n");
    // No new file: nothing is read or written, and no version is added.
    let stderr = build(dir.path());
    assert!(stderr.contains("no new files (1 already ingested)"), "{stderr}");
    let log = dir.path().join("warehouse/bronze/brz_updates/_delta_log");
    let versions = || {
        std::fs::read_dir(&log)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count()
    };
    assert_eq!(versions(), 1);
    // A file that arrives later is picked up by the next build, alone.
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    let stderr = build(dir.path());
    assert!(stderr.contains("ingested 1 new file(s)"), "{stderr}");
    assert_eq!(ingested(dir.path()), "file,n,batches\ndata/updates/1.csv,3,1\ndata/updates/2.csv,2,1\n");
    assert_eq!(versions(), 2);
    // The ledger is in the Delta log, as application transactions committed with the rows.
    let second_commit = std::fs::read_to_string(log.join("00000000000000000001.json")).unwrap();
    assert!(second_commit.contains(r#""appId":"pipe.ingest:data/updates/2.csv""#), "{second_commit}");
    // Downstream models read the bronze table as usual.
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n1,d1,ada2\n2,d1,bo\n3,d2,cy\n4,d2,dee\n");
}

/// An incremental model's watermark subquery is computed before its batch is planned, so the upstream's files
/// older than the watermark are skipped by their statistics: the run reads the batch's rows only, and says so.
#[test]
fn an_incremental_batch_reads_only_the_new_rows_of_its_upstream() {
    let dir = bronze_project();
    std::fs::write(
        dir.path().join("models/silver/customers.sql"),
        "{{ config(materialized='incremental', incremental_strategy='append') }}
         select id, day, name, _pipe_loaded_at from {{ ref('brz_updates') }} where name <> 'bo'
         {% if is_incremental() %} and _pipe_loaded_at > (select max(_pipe_loaded_at) from {{ this }}) {% endif %}
",
    )
    .unwrap();
    build(dir.path());
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    build(dir.path());
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada\n1,d1,ada2\n3,d2,cy\n4,d2,dee\n");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/run_results.json")).unwrap()).unwrap();
    let silver = results["results"].as_array().unwrap().iter().find(|r| r["name"] == "customers").unwrap();
    assert_eq!(silver["rows_in"], serde_json::json!({"bronze.brz_updates": 2}), "{silver}");
    assert_eq!(silver["rows_in_scanned"], true);
    assert_eq!(silver["rows_filtered"], 0, "{silver}");
    assert_eq!(silver["rows_written"], 2);
}

/// `pipe history`, `--as-of`, `VERSION AS OF` / `TIMESTAMP AS OF` and `pipe diff` over a merged table's versions.
#[test]
fn history_time_travel_and_diff_follow_the_versions() {
    let dir = project("unique_key='id'");
    let root = dir.path();
    build(root);
    std::fs::write(root.join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    build(root);

    let output = pipe(root, &["history", "customers", "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let history = text(&output.stdout);
    let lines: Vec<Vec<&str>> = history.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        lines[0],
        ["version", "timestamp", "operation", "rows", "added", "updated", "removed", "run_id", "checksum"]
    );
    // version, operation, rows, added, updated, removed
    let summary: Vec<String> = lines[1..].iter().map(|l| [l[0], l[2], l[3], l[4], l[5], l[6]].join(" ")).collect();
    assert_eq!(summary, ["1 MERGE 4 1 1 0", "0 CREATE TABLE 3 3 0 0"], "{history}");
    assert!(lines[1][7] != lines[2][7] && lines[1][8] == lines[2][8], "two runs, one logic: {history}");

    let query = |sql: &str| {
        let output = pipe(root, &["query", sql, "-o", "csv"]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let first = "id,name\n1,ada\n2,bo\n3,cy\n";
    assert_eq!(query("select id, name from silver.customers VERSION AS OF 0 order by id"), first);
    // The time of version 0's commit names version 0; the latest version is still read without AS OF.
    let v0_time = lines[2][1];
    let sql = format!("select id, name from silver.customers TIMESTAMP AS OF '{v0_time}' order by id");
    assert_eq!(query(&sql), first);
    assert_eq!(query("select count(*) as n from silver.customers"), "n\n4\n");
    let output = pipe(root, &["show", "customers", "--as-of", "0", "-o", "csv"]);
    assert_eq!(text(&output.stdout).lines().count(), 4, "{}", text(&output.stderr));
    let output = pipe(root, &["query", "select * from silver.customers VERSION AS OF 7"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("silver.customers"), "{}", text(&output.stderr));

    // With `unique_key`, id 1 changed rather than one row removed and one added.
    let output = pipe(root, &["diff", "customers", "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("from version 0 to version 1: 1 added, 0 removed, 1 changed"),
        "{}",
        text(&output.stderr)
    );
    let mut rows: Vec<String> =
        text(&output.stdout).lines().skip(1).map(|l| l.split(',').take(4).collect::<Vec<_>>().join(",")).collect();
    rows.sort();
    assert_eq!(rows, ["added,4,d2,dee", "changed (new),1,d1,ada2", "changed (old),1,d1,ada"]);
    let output = pipe(root, &["diff", "customers", "--from", "1", "--to", "0"]);
    assert!(text(&output.stderr).contains("0 added, 1 removed, 1 changed"), "{}", text(&output.stderr));
}

/// With `anomaly_severity: error`, a batch whose size is far outside the model's last runs is refused before it is
/// applied: the incremental table keeps its version, and the next build with a normal batch goes on.
#[test]
fn an_anomalous_batch_is_refused_before_it_is_applied() {
    let dir = bronze_project();
    std::fs::write(
        dir.path().join("models/silver/customers.sql"),
        "{{ config(materialized='incremental', incremental_strategy='append', anomaly_severity='error') }}\n\
         select id, day, name, _pipe_loaded_at from {{ ref('brz_updates') }}\n\
         {% if is_incremental() %} where _pipe_loaded_at > (select max(_pipe_loaded_at) from {{ this }}) {% endif %}\n",
    )
    .unwrap();
    let file = |n: usize, rows: usize| {
        let body: String = (0..rows).map(|i| format!("{},d{n},x{i},2026-02-01 10:00:00\n", 100 * n + i)).collect();
        std::fs::write(dir.path().join(format!("data/updates/{n}.csv")), format!("id,day,name,updated_at\n{body}"))
            .unwrap();
    };
    build(dir.path());
    for n in 2..7 {
        file(n, 2);
        build(dir.path());
    }
    let versions = || {
        std::fs::read_dir(dir.path().join("warehouse/silver/customers/_delta_log"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count()
    };
    let before = versions();
    file(7, 40);
    let output = pipe(dir.path(), &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("anomaly: `silver.customers` rows written 40"), "{stderr}");
    assert!(stderr.contains("the new result was not published"), "{stderr}");
    assert_eq!(versions(), before, "the batch was not applied");
    assert_eq!(rows(dir.path()).lines().count(), 1 + 3 + 5 * 2);
}

fn query_csv(dir: &Path, sql: &str) -> String {
    let output = pipe(dir, &["query", sql, "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    text(&output.stdout)
}

/// `merge_update_columns`: a matched row takes only those columns from the batch.
#[test]
fn merge_update_columns_update_only_those_columns() {
    let dir = project("unique_key='id', merge_update_columns=['name']");
    build(dir.path());
    std::fs::write(dir.path().join("data/updates/2.csv"), SECOND_BATCH).unwrap();
    build(dir.path());
    let sql = "select id, name, cast(updated_at as varchar) as updated_at from silver.customers order by id";
    assert_eq!(
        query_csv(dir.path(), sql),
        "id,name,updated_at\n1,ada2,2026-01-01T10:00:00\n2,bo,2026-01-01T11:00:00\n3,cy,2026-01-02T09:00:00\n4,dee,2026-01-03T11:00:00\n",
        "id 1 took the new name and kept its old updated_at; id 4 was inserted whole"
    );
}

/// `merge_exclude_columns`: a matched row takes every column from the batch but those.
#[test]
fn merge_exclude_columns_keep_those_columns() {
    let dir = project("unique_key='id', merge_exclude_columns=['day']");
    build(dir.path());
    std::fs::write(dir.path().join("data/updates/2.csv"), "id,day,name,updated_at\n1,d9,ada3,2026-01-05 10:00:00\n")
        .unwrap();
    build(dir.path());
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada3\n2,d1,bo\n3,d2,cy\n");
}

/// `incremental_predicates` narrow the target rows the merge matches: a key outside them is not matched, so its
/// batch row is inserted (as in dbt, where the predicates are the user's promise about the batch).
#[test]
fn incremental_predicates_narrow_the_rows_a_merge_matches() {
    let dir = project("unique_key='id', incremental_predicates=[\"target.day = 'd1'\"]");
    build(dir.path());
    std::fs::write(
        dir.path().join("data/updates/2.csv"),
        "id,day,name,updated_at\n1,d1,ada2,2026-01-05 10:00:00\n3,d2,cy2,2026-01-05 11:00:00\n",
    )
    .unwrap();
    build(dir.path());
    assert_eq!(rows(dir.path()), "id,day,name\n1,d1,ada2\n2,d1,bo\n3,d2,cy\n3,d2,cy2\n");
}

/// A batch too large for its share of `--memory-limit`'s pool is staged on disk (and says so), and every strategy
/// applies it from there exactly as it applies a batch held in memory: the same table as a build without a limit.
#[test]
fn a_batch_staged_on_disk_under_a_memory_limit_gives_the_same_table() {
    // 60,000 new rows over 50 days (two of which the first batch has).
    let mut batch = String::from("id,day,name,updated_at\n");
    for i in 0..60_000 {
        batch.push_str(&format!("{},d{},name number {i} of the batch,2026-02-01 10:00:00\n", i + 4, i % 50));
    }
    for strategy in [
        "unique_key='id'",
        "incremental_strategy='delete+insert', unique_key='id'",
        "incremental_strategy='append'",
        "incremental_strategy='insert_overwrite', partition_by='day'",
    ] {
        let table = |limit: Option<&str>| {
            let dir = project(strategy);
            build(dir.path());
            std::fs::write(dir.path().join("data/updates/2.csv"), &batch).unwrap();
            let mut args = vec!["build"];
            args.extend(limit.iter().flat_map(|l| ["--memory-limit", *l]));
            let output = pipe(dir.path(), &args);
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(0), "{strategy}: {stderr}");
            (rows(dir.path()), stderr)
        };
        let (unlimited, stderr) = table(None);
        assert!(!stderr.contains("staged on disk"), "{strategy}: {stderr}");
        let (bounded, stderr) = table(Some("8MiB"));
        assert!(stderr.contains("60000 rows in the batch (staged on disk: "), "{strategy}: {stderr}");
        // With the header: the first batch's 3 rows, except where `insert_overwrite` replaced their days, and the 60,000.
        let expected = if strategy.contains("overwrite") { 60_001 } else { 60_004 };
        assert_eq!(unlimited.lines().count(), expected, "{strategy}");
        assert!(bounded == unlimited, "{strategy}: the tables differ");
    }
}

/// Bronze ingestion of new files too large for their share of `--memory-limit`'s pool: each file's rows (checked
/// against the source's declared types) are staged on disk, then appended in one commit, with the same rows and
/// ledger as without a limit.
#[test]
fn bronze_ingestion_staged_on_disk_under_a_memory_limit_gives_the_same_table() {
    let big = |from: usize| {
        let mut csv = String::from("id,day,name,updated_at\n");
        for i in from..from + 40_000 {
            csv.push_str(&format!("{i},d{},a rather long name for row {i},2026-02-01 10:00:00\n", i % 9));
        }
        csv
    };
    let table = |limit: Option<&str>| {
        let dir = bronze_project();
        std::fs::write(
            dir.path().join("models/sources.yml"),
            "sources:\n  - name: raw\n    tables:\n      - name: updates\n        format: csv\n        path: data/updates/*.csv\n        columns:\n          - {name: id, data_type: bigint}\n          - {name: updated_at, data_type: timestamp}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("data/updates/2.csv"), big(10)).unwrap();
        std::fs::write(dir.path().join("data/updates/3.csv"), big(50_010)).unwrap();
        let mut args = vec!["build"];
        args.extend(limit.iter().flat_map(|l| ["--memory-limit", *l]));
        let output = pipe(dir.path(), &args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        let sums = "select count(*) as n, sum(id) as ids, count(distinct name) as names, min(updated_at) as first \
                    from bronze.brz_updates";
        let output = pipe(dir.path(), &["query", sums, "-o", "csv"]);
        (format!("{}{}", ingested(dir.path()), text(&output.stdout)), stderr)
    };
    let (unlimited, stderr) = table(None);
    assert!(stderr.contains("ingested 3 new file(s)"), "{stderr}");
    assert!(!stderr.contains("staged on disk"), "{stderr}");
    assert!(unlimited.contains("data/updates/3.csv,40000,1\nn,ids,names,first\n80003,"), "{unlimited}");
    let (bounded, stderr) = table(Some("8MiB"));
    assert!(stderr.contains("ingested 3 new file(s) (staged on disk: "), "{stderr}");
    assert_eq!(bounded, unlimited);
}
