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
