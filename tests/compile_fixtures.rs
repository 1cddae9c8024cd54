//! One tiny project per compile case under `tests/fixtures/<case>/`, broken ones included. Each case's rendered
//! diagnostics (code frame and one-line form) and compiled SQL are pinned with insta: a new case is a new folder.

use std::fmt::Write as _;
use std::path::Path;

use pipe::compile::{compile, CompileOptions};
use pipe::diagnostics::{render_human, render_short};
use pipe::manifest::NodeKind;

fn options() -> CompileOptions {
    CompileOptions {
        run_started_at: "2026-01-01 00:00:00".into(),
        invocation_id: "00000000-0000-0000-0000-000000000000".into(),
        target_name: "dev".into(),
        plan: true,
        ..CompileOptions::default()
    }
}

/// Everything a user sees of one compile: diagnostics in both forms, then the compiled SQL of each model.
fn check_compile(root: &Path) -> String {
    let compilation = compile(root, &options());
    let mut out = String::new();
    let project = compilation.project.as_ref().expect("fixture has a project file");
    if !compilation.diagnostics.is_empty() {
        out.push_str("--- diagnostics ---\n");
        for diagnostic in &compilation.diagnostics {
            out.push_str(&render_human(diagnostic, &project.files, false));
            out.push('\n');
        }
        out.push_str("--- short ---\n");
        for diagnostic in &compilation.diagnostics {
            out.push_str(&render_short(diagnostic, &project.files));
        }
    }
    match &compilation.manifest {
        None => out.push_str("--- no manifest ---\n"),
        Some(manifest) => {
            out.push_str("--- compiled ---\n");
            for id in &manifest.order {
                let Some(node) = manifest.nodes.get(id) else {
                    continue;
                };
                if node.resource_type != NodeKind::Model {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "-- {} [{} {} {}]\n{}",
                    node.path,
                    node.layer.map_or("-", |l| l.as_str()),
                    node.materialized.as_str(),
                    node.relation,
                    node.compiled_sql.trim_end()
                );
                if let Some(incremental) = &node.compiled_sql_incremental {
                    let _ = writeln!(out, "-- {} (incremental)\n{}", node.path, incremental.trim_end());
                }
            }
        }
    }
    out
}

#[test]
fn compile_fixtures() {
    insta::glob!("fixtures/*/{pipe,dbt_project}.yml", |path| {
        let root = path.parent().expect("project file is in a folder");
        insta::assert_snapshot!(check_compile(root));
    });
}

#[test]
fn manifest_of_ok_basic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ok_basic");
    let manifest = compile(&root, &options()).manifest.expect("ok_basic compiles");
    insta::assert_snapshot!(manifest.to_json());
}

#[test]
fn manifest_is_byte_identical_across_compiles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let first = compile(root, &options()).manifest.expect("example project compiles").to_json();
    let second = compile(root, &options()).manifest.expect("example project compiles").to_json();
    assert_eq!(first, second);
    // The same project in another folder, compiled at another time by another invocation: the same bytes (no
    // absolute path, clock or run id in the manifest).
    let elsewhere = tempfile::tempdir().unwrap();
    for entry in walkdir::WalkDir::new(root).into_iter().filter_map(Result::ok) {
        let relative = entry.path().strip_prefix(root).unwrap();
        let top = relative.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
        if !matches!(top.as_deref(), None | Some("pipe.yml" | "models" | "macros" | "seeds" | "data" | "checks")) {
            continue;
        }
        let to = elsewhere.path().join(relative);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    let later = CompileOptions {
        run_started_at: "2031-06-15 12:34:56".into(),
        invocation_id: "11111111-2222-3333-4444-555555555555".into(),
        ..options()
    };
    let third = compile(elsewhere.path(), &later).manifest.expect("the copy compiles").to_json();
    assert_eq!(first, third);
}
