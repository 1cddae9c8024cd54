//! Column-level lineage over a corpus of tricky queries (`tests/lineage_corpus/models/`): CTEs, derived tables,
//! joins, `select *` and `exclude`, aggregates, windows, unions, `case`, scalar, `in`, `exists` and correlated
//! subqueries, ephemeral models, macros, rollups. Each model's lineage is pinned by an insta snapshot: per output
//! column, its source columns and how it derives from them; then the columns that only filter or join.

use std::fmt::Write as _;
use std::path::Path;

use pipe::compile::{compile, CompileOptions};
use pipe::lineage::graph::ProjectLineage;

fn corpus() -> ProjectLineage {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lineage_corpus");
    let options = CompileOptions { plan: true, keep_plans: true, ..CompileOptions::default() };
    let compilation = compile(&root, &options);
    assert!(compilation.diagnostics.is_empty(), "{:?}", compilation.diagnostics);
    let manifest = compilation.manifest.as_ref().expect("the corpus compiles");
    ProjectLineage::build(manifest, &compilation.plans)
}

fn render(lineage: &ProjectLineage, name: &str) -> String {
    let node = lineage.find(name).unwrap();
    let mut out = String::new();
    for column in &node.columns {
        let sources: Vec<String> = column
            .sources
            .iter()
            .map(|s| format!("{} {}.{}", s.kind.as_str(), lineage.nodes[&s.node].name, s.column))
            .collect();
        let sources = if sources.is_empty() { "(no column)".to_string() } else { sources.join(", ") };
        let _ = writeln!(out, "{} <- {sources}", column.name);
    }
    if !node.row_deciders.is_empty() {
        let deciders: Vec<String> =
            node.row_deciders.iter().map(|d| format!("{}.{}", lineage.nodes[&d.node].name, d.column)).collect();
        let _ = writeln!(out, "rows decided by: {}", deciders.join(", "));
    }
    out
}

#[test]
fn column_lineage_of_the_corpus() {
    let lineage = corpus();
    let mut names: Vec<&str> = lineage
        .nodes
        .values()
        .filter(|n| n.resource_type == "model" && n.materialized.as_deref() != Some("ephemeral"))
        .map(|n| n.name.as_str())
        .collect();
    names.sort();
    assert!(names.len() >= 30, "{names:?}");
    for name in names {
        insta::assert_snapshot!(name, render(&lineage, name));
    }
}
