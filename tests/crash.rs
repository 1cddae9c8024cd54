//! Crash safety and concurrency with real processes: a `pipe build` killed with SIGKILL at several moments and then
//! rerun, and two builds started at once on one warehouse, must leave the same tables as one uninterrupted build.

mod support;

use std::time::Duration;

use support::{dump, example_project, pipe, text};

fn binary() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("pipe")
}

#[test]
fn killed_builds_converge_to_the_uninterrupted_result() {
    let reference = example_project();
    assert_eq!(pipe(reference.path(), &["build"]).status.code(), Some(0));
    let expected = dump(reference.path());
    // Spread over startup, compile, mid-build (tables half written) and the end; measured here a debug build writes
    // its first table at about 50 ms and its last at about 110 ms.
    for delay_ms in [5u64, 25, 40, 55, 70, 85, 100, 150, 250] {
        let dir = example_project();
        let mut child = std::process::Command::new(binary())
            .args(["build"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let output = pipe(dir.path(), &["build"]);
        assert_eq!(output.status.code(), Some(0), "after a kill at {delay_ms} ms: {}", text(&output.stderr));
        assert_eq!(dump(dir.path()), expected, "after a kill at {delay_ms} ms");
    }
}

#[test]
fn two_concurrent_builds_never_ingest_a_file_twice() {
    let reference = example_project();
    assert_eq!(pipe(reference.path(), &["build"]).status.code(), Some(0));
    let expected = dump(reference.path());
    let dir = example_project();
    let spawn = || {
        std::process::Command::new(binary())
            .args(["build"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()];
    // The loser of a commit race may fail with a message; a rerun then completes the work.
    let output = pipe(dir.path(), &["build"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n--- concurrent runs ---\n{}\n{}",
        text(&output.stderr),
        text(&outputs[0].stderr),
        text(&outputs[1].stderr)
    );
    assert_eq!(dump(dir.path()), expected);
}

/// Kills at exact moments instead of after sleeps (which stop hitting mid-write on a faster machine): a build
/// ended right after a model's data files are written but before its commit leaves files no version references;
/// one ended right after a commit, before the run's results and history, leaves the commit. Either way the next
/// build converges to the uninterrupted result.
#[test]
fn builds_ended_at_exact_moments_converge() {
    let reference = example_project();
    assert_eq!(pipe(reference.path(), &["build"]).status.code(), Some(0));
    let expected = dump(reference.path());
    for (model, moment) in [
        ("slv_orders", "before-commit"),
        ("slv_orders", "after-commit"),
        ("gld_daily_revenue", "before-commit"),
        ("brz_orders", "after-commit"),
        ("gld_customer_lifetime", "after-commit"),
    ] {
        let dir = example_project();
        let status = std::process::Command::new(binary())
            .args(["build", "--threads", "1"])
            .current_dir(dir.path())
            .env("PIPE_FAILPOINTS", format!("abort@{model}:{moment}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), None, "{model}:{moment}: the process ended at the failpoint");
        let table = dir.path().join("warehouse").join(if model.starts_with("gld") {
            format!("gold/{model}")
        } else if model.starts_with("slv") {
            format!("silver/{model}")
        } else {
            format!("bronze/{model}")
        });
        let commits = std::fs::read_dir(table.join("_delta_log"))
            .map(|entries| {
                entries.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count()
            })
            .unwrap_or(0);
        let data_files = std::fs::read_dir(&table)
            .map(|entries| {
                entries.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".parquet")).count()
            })
            .unwrap_or(0);
        match moment {
            "before-commit" => {
                assert!(commits == 0 && data_files > 0, "{model}: {commits} commits, {data_files} files")
            }
            _ => assert_eq!(commits, 1, "{model}: the commit landed"),
        }
        let output = pipe(dir.path(), &["build"]);
        assert_eq!(output.status.code(), Some(0), "after {model}:{moment}: {}", text(&output.stderr));
        assert_eq!(dump(dir.path()), expected, "after {model}:{moment}");
    }
}
