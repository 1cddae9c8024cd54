//! `pipe retry`: the last run's command and flags again (`run_results.json`), over exactly the nodes it left failed
//! or skipped.

mod support;

use support::{pipe, text};

#[test]
fn retry_reruns_the_failed_and_skipped_nodes_with_the_last_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    support::write_files(root, support::FAILING_RUN);
    support::write_files(root, &[("seeds/codes.csv", "code\na\n")]);

    let out = pipe(root, &["run", "--threads", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("target/run_results.json")).unwrap()).unwrap();
    assert_eq!(results["args"]["which"], "run");
    assert_eq!(results["args"]["threads"], 1);

    support::write_files(
        root,
        &[("models/bronze/brz_bad.sql", "{{ config(materialized='table') }}\nselect 2 as id\n")],
    );
    let out = pipe(root, &["retry"]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("Retrying `pipe run` on 2 node(s): brz_bad, slv_after"), "{said}");
    assert!(said.contains("Running 2 nodes with 1 threads"), "the last run's flags: {said}");
    // `run` builds no seeds, and brz_ok (which succeeded) is not run again.
    assert!(!said.contains("seeds.codes") && !said.contains("brz_ok"), "{said}");
    assert!(root.join("warehouse/silver/slv_after").exists());

    let out = pipe(root, &["retry"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("Nothing to retry"), "{}", text(&out.stderr));
}

#[test]
fn retry_without_a_previous_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    support::write_files(dir.path(), &[("pipe.yml", "name: fresh\n")]);
    let out = pipe(dir.path(), &["retry"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("there is no run to retry"), "{}", text(&out.stderr));
}
