//! Shared helpers for the CLI and build tests: temporary copies of the example project and fixtures, and running
//! the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from).into_iter().filter_map(Result::ok) {
        let rel = entry.path().strip_prefix(from).unwrap();
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A temporary copy of the example project at the repository root.
pub fn example_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("pipe.yml"), dir.path().join("pipe.yml")).unwrap();
    for folder in ["models", "macros", "seeds", "data", "checks"] {
        copy_dir(&repo().join(folder), &dir.path().join(folder));
    }
    dir
}

pub fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("tests/fixtures").join(name), dir.path());
    dir
}

pub fn pipe(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("pipe")
        .unwrap()
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("PIPE_LOG")
        .args(args)
        .output()
        .unwrap()
}

/// A project whose run fails in one model: `brz_ok` builds, `brz_bad` fails when it runs (not at compile), and
/// `slv_after`, which reads it, is skipped.
pub const FAILING_RUN: &[(&str, &str)] = &[
    ("pipe.yml", "name: failing\n"),
    ("models/bronze/brz_ok.sql", "{{ config(materialized='table') }}\nselect 1 as id\n"),
    ("models/bronze/brz_bad.sql", "{{ config(materialized='table') }}\nselect cast('x' as int) as id\n"),
    ("models/silver/slv_after.sql", "{{ config(materialized='table') }}\nselect * from {{ ref('brz_bad') }}\n"),
];

/// Writes `files` (path relative to `dir`, text) into `dir`, creating folders.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Relations of the example project's persisted models and seed.
pub const RELATIONS: &[&str] = &[
    "seeds.country_codes",
    "bronze.brz_orders",
    "bronze.brz_customers",
    "bronze.brz_events",
    "silver.slv_orders",
    "silver.slv_customers",
    "silver.slv_events",
    "gold.gld_daily_revenue",
    "gold.gld_revenue_by_region",
    "gold.gld_customer_lifetime",
    "gold.gld_funnel",
];

/// Every table as CSV with its rows sorted, so the dump does not depend on file or thread order.
pub fn dump(dir: &Path) -> String {
    dump_with(&|args| pipe(dir, args))
}

/// [`dump`], running `pipe` through `run` (with the arguments it is given).
pub fn dump_with(run: &dyn Fn(&[&str]) -> Output) -> String {
    let mut out = String::new();
    for relation in RELATIONS {
        // Bronze rows carry when and by which run they were loaded: volatile, so left out of the dump.
        let columns = if relation.starts_with("bronze.") { "* exclude (_pipe_loaded_at, _pipe_batch_id)" } else { "*" };
        let output = run(&["query", &format!("select {columns} from {relation}"), "-o", "csv"]);
        assert_eq!(output.status.code(), Some(0), "{relation}: {}", text(&output.stderr));
        let csv = text(&output.stdout);
        let mut lines = csv.lines();
        let header = lines.next().unwrap_or_default().to_string();
        let mut rows: Vec<&str> = lines.collect();
        rows.sort();
        out.push_str(&format!("== {relation}\n{header}\n{}\n", rows.join("\n")));
    }
    out
}
