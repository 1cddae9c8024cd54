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
    for folder in ["models", "macros", "seeds", "data"] {
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

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
