//! Snapshots (dbt's SCD type 2) on real files and Delta tables: three changes of a source (a row changed, one
//! deleted, one new; then one back), with `timestamp` and `check` strategies, `hard_deletes` `invalidate` and
//! `new_record`, a composite key, a YAML-defined snapshot with renamed columns and `dbt_valid_to_current`, and a
//! model reading a snapshot; a build killed before and after a snapshot's commit, then run again, leaves the same
//! tables as builds never interrupted; every version of a snapshot's table stays readable.

mod support;

use std::path::Path;

use support::{pipe, text};

const VERSIONS: [&str; 3] = [
    "id,name,status,updated_at\n1,ann,active,2024-01-01 00:00:00\n2,bob,active,2024-01-01 00:00:00\n3,cid,trial,2024-01-01 00:00:00\n",
    // ann changed, cid deleted, dan new
    "id,name,status,updated_at\n1,ann,churned,2024-02-01 00:00:00\n2,bob,active,2024-01-01 00:00:00\n4,dan,active,2024-02-01 00:00:00\n",
    // bob changed, cid back (changed), dan deleted
    "id,name,status,updated_at\n1,ann,churned,2024-02-01 00:00:00\n2,bob,paused,2024-03-01 00:00:00\n3,cid,paid,2024-03-01 00:00:00\n",
];

const FILES: &[(&str, &str)] = &[
    ("pipe.yml", "name: snaps\n"),
    (
        "models/sources.yml",
        "sources:\n  - name: raw\n    tables:\n      - name: customers\n        format: csv\n        path: data/customers.csv\n",
    ),
    (
        "snapshots/customers.sql",
        "{% snapshot customers %}\n\
         {{ config(unique_key='id', strategy='timestamp', updated_at='updated_at', hard_deletes='invalidate') }}\n\
         select id, name, status, cast(updated_at as timestamp) as updated_at from {{ source('raw', 'customers') }}\n\
         {% endsnapshot %}\n",
    ),
    (
        "snapshots/statuses.sql",
        "{% snapshot statuses %}\n\
         {{ config(unique_key=['id', 'name'], strategy='check', check_cols=['status'], hard_deletes='new_record') }}\n\
         select id, name, status from {{ source('raw', 'customers') }}\n\
         {% endsnapshot %}\n",
    ),
    (
        "snapshots/properties.yml",
        "snapshots:\n  - name: customers_yaml\n    relation: source('raw', 'customers')\n    config:\n      \
         unique_key: id\n      strategy: timestamp\n      updated_at: updated_at\n      \
         dbt_valid_to_current: \"'9999-12-31'\"\n      \
         snapshot_meta_column_names: {dbt_valid_from: valid_from, dbt_valid_to: valid_to}\n",
    ),
    (
        "models/gold/gld_current_customers.sql",
        "{{ config(materialized='table') }}\nselect count(*) as customers from {{ ref('customers') }} where dbt_valid_to is null\n",
    ),
];

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    support::write_files(dir.path(), FILES);
    dir
}

fn land(dir: &Path, version: usize) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/customers.csv"), VERSIONS[version]).unwrap();
}

fn query(dir: &Path, sql: &str) -> String {
    let output = pipe(dir, &["query", sql, "-o", "csv"]);
    assert!(output.status.success(), "{sql}: {}", text(&output.stderr));
    text(&output.stdout)
}

/// The snapshots' tables without the times a run takes from the clock (a deletion's, a `check` version's), which
/// differ between two runs of the same changes.
fn dump(dir: &Path) -> String {
    let closed = "case when dbt_valid_to is null then 'current' when dbt_valid_to > timestamp '2025-01-01' \
                  then 'deleted' else cast(dbt_valid_to as varchar) end";
    [
        format!("select id, name, status, dbt_valid_from, {closed} as valid_to from snapshots.customers order by id, dbt_valid_from"),
        "select id, name, status, dbt_valid_to is null as current, dbt_is_deleted from snapshots.statuses \
         order by id, dbt_is_deleted, dbt_valid_to nulls last, status"
            .to_string(),
        "select id, status, valid_from, valid_to from snapshots.customers_yaml order by id, valid_from".to_string(),
        "select * from gold.gld_current_customers".to_string(),
    ]
    .iter()
    .map(|sql| query(dir, sql))
    .collect::<Vec<_>>()
    .join("\n")
}

fn build(dir: &Path, failpoint: Option<&str>) -> std::process::Output {
    let mut command = assert_cmd::Command::cargo_bin("pipe").unwrap();
    command.current_dir(dir).env("NO_COLOR", "1").args(["build", "--threads", "1"]);
    if let Some(failpoint) = failpoint {
        command.env("PIPE_FAILPOINTS", failpoint);
    }
    command.output().unwrap()
}

#[test]
fn snapshots_record_three_changes_and_converge_after_kills() {
    let reference = project();
    for version in 0..3 {
        land(reference.path(), version);
        let output = build(reference.path(), None);
        assert!(output.status.success(), "change {version}: {}{}", text(&output.stdout), text(&output.stderr));
    }
    let expected = dump(reference.path());
    let customers = expected.split("\n\n").next().unwrap_or_default().to_string();
    assert_eq!(
        query(reference.path(), "select id, name, status, dbt_valid_from, case when dbt_valid_to is null then 'current' when dbt_valid_to > timestamp '2025-01-01' then 'deleted' else cast(dbt_valid_to as varchar) end as valid_to from snapshots.customers order by id, dbt_valid_from"),
        "id,name,status,dbt_valid_from,valid_to\n\
         1,ann,active,2024-01-01T00:00:00,2024-02-01T00:00:00\n\
         1,ann,churned,2024-02-01T00:00:00,current\n\
         2,bob,active,2024-01-01T00:00:00,2024-03-01T00:00:00\n\
         2,bob,paused,2024-03-01T00:00:00,current\n\
         3,cid,trial,2024-01-01T00:00:00,deleted\n\
         3,cid,paid,2024-03-01T00:00:00,current\n\
         4,dan,active,2024-02-01T00:00:00,deleted\n",
        "{customers}"
    );
    assert!(expected.contains("4,active,2024-02-01T00:00:00,9999-12-31T00:00:00"), "the YAML snapshot: {expected}");
    // `new_record`: dan's deletion is a version of its own; cid's marker is closed when cid comes back.
    assert!(expected.contains("4,dan,active,true,True"), "statuses: {expected}");
    assert!(expected.contains("3,cid,trial,false,True"), "statuses: {expected}");

    // The same changes, with the build killed before the snapshot's commit at the second change and after it at the
    // third; each killed build is run again.
    let crashed = project();
    land(crashed.path(), 0);
    assert!(build(crashed.path(), None).status.success());
    for (version, failpoint) in [(1, "abort@customers:before-commit"), (2, "abort@customers:after-commit")] {
        land(crashed.path(), version);
        let killed = build(crashed.path(), Some(failpoint));
        assert_eq!(killed.status.code(), None, "{failpoint}: the process ended at the failpoint");
        let output = build(crashed.path(), None);
        assert!(output.status.success(), "after {failpoint}: {}", text(&output.stderr));
    }
    assert_eq!(dump(crashed.path()), expected);

    // Every version of a snapshot's table is readable: the first held the first change's three rows.
    assert_eq!(query(reference.path(), "select count(*) as n from snapshots.customers version as of 0"), "n\n3\n");
    assert_eq!(query(reference.path(), "select count(*) as n from snapshots.customers"), "n\n7\n");
}

#[test]
fn a_snapshot_run_with_nothing_changed_commits_nothing() {
    let dir = project();
    land(dir.path(), 0);
    assert!(pipe(dir.path(), &["snapshot"]).status.success());
    let output = pipe(dir.path(), &["snapshot", "-s", "customers"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(said.contains("no changes: nothing written"), "{said}");
    let log = dir.path().join("warehouse/snapshots/customers/_delta_log");
    let commits = std::fs::read_dir(log)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(commits, 1, "one commit: the first run's");
}

#[test]
fn a_snapshot_without_its_settings_fails_at_compile() {
    let dir = project();
    land(dir.path(), 0);
    std::fs::write(
        dir.path().join("snapshots/statuses.sql"),
        "{% snapshot statuses %}\n{{ config(unique_key='id', strategy='check') }}\nselect 1 as id\n{% endsnapshot %}\n",
    )
    .unwrap();
    let output = pipe(dir.path(), &["compile"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("snapshot `statuses` uses the `check` strategy but has no `check_cols`"), "{stderr}");
}

/// A snapshot whose query and changes are too large for their share of `--memory-limit`'s pool stages them on
/// disk (the note says so) and records the same versions as without a limit.
#[test]
fn a_snapshot_staged_on_disk_under_a_memory_limit_records_the_same_versions() {
    let version = |changed: bool| {
        let mut csv = String::from("id,name,status,updated_at\n");
        for id in 0..90_000 {
            let (status, at) = match changed && id % 3 == 0 {
                true => ("churned", "2024-02-01 00:00:00"),
                false => ("active", "2024-01-01 00:00:00"),
            };
            csv.push_str(&format!("{id},customer number {id},{status},{at}\n"));
        }
        csv
    };
    let versions = |limit: Option<&str>| {
        let dir = project();
        let mut stderr = String::new();
        for changed in [false, true] {
            std::fs::create_dir_all(dir.path().join("data")).unwrap();
            std::fs::write(dir.path().join("data/customers.csv"), version(changed)).unwrap();
            let mut args = vec!["snapshot", "--select", "customers"];
            args.extend(limit.iter().flat_map(|l| ["--memory-limit", *l]));
            let output = pipe(dir.path(), &args);
            stderr = text(&output.stderr);
            assert!(output.status.success(), "{stderr}");
        }
        let sql = "select count(*) as versions, count(dbt_valid_to) as closed, sum(id) as ids, \
                   count(distinct dbt_scd_id) as scd_ids, min(dbt_valid_to) as first_closed from snapshots.customers";
        (query(dir.path(), sql), stderr)
    };
    let (unlimited, stderr) = versions(None);
    assert!(!stderr.contains("staged on disk"), "{stderr}");
    assert!(unlimited.contains("\n120000,30000,"), "{unlimited}");
    let (bounded, stderr) = versions(Some("32MiB"));
    assert!(stderr.contains("30000 versions inserted, 30000 closed ("), "{stderr}");
    assert!(stderr.contains("staged on disk: "), "{stderr}");
    assert_eq!(bounded, unlimited);
}
