//! Source formats beyond CSV and JSON: Parquet files (by glob) and an existing Delta table, built with the real
//! binary; and a build under a tight `--memory-limit`.

mod support;

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use support::{example_project, pipe, text};

fn batch(ids: &[i64], kinds: &[&str], amounts: &[f64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(kinds.to_vec())),
            Arc::new(Float64Array::from(amounts.to_vec())),
        ],
    )
    .unwrap()
}

#[test]
fn parquet_glob_and_delta_sources() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("data/pq")).unwrap();
    for (i, b) in [batch(&[1, 2], &["a", "b"], &[1.5, 2.5]), batch(&[3], &["a"], &[4.0])].iter().enumerate() {
        let file = std::fs::File::create(root.join(format!("data/pq/part-{i}.parquet"))).unwrap();
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, b.schema(), None).unwrap();
        writer.write(b).unwrap();
        writer.close().unwrap();
    }
    let delta_dir = root.join("data/delta_kinds");
    std::fs::create_dir_all(&delta_dir).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = url::Url::from_directory_path(delta_dir.canonicalize().unwrap()).unwrap();
        let table = deltalake::DeltaTableBuilder::from_url(url).unwrap().build().unwrap();
        table.write(vec![batch(&[10, 20], &["a", "b"], &[0.0, 0.0])]).await.unwrap();
    });
    std::fs::write(root.join("pipe.yml"), "name: formats\n").unwrap();
    std::fs::create_dir_all(root.join("models/bronze")).unwrap();
    std::fs::create_dir_all(root.join("models/silver")).unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - name: facts\n        format: parquet\n        path: data/pq/*.parquet\n      - name: kinds\n        format: delta\n        path: data/delta_kinds\n",
    )
    .unwrap();
    std::fs::write(root.join("models/bronze/brz_facts.sql"), "select * from {{ source('raw', 'facts') }}\n").unwrap();
    std::fs::write(
        root.join("models/bronze/brz_kinds.sql"),
        "select id as kind_id, kind from {{ source('raw', 'kinds') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/silver/by_kind.sql"),
        "select k.kind_id, f.kind, sum(f.amount) as total\nfrom {{ ref('brz_facts') }} f\njoin {{ ref('brz_kinds') }} k on f.kind = k.kind\ngroup by k.kind_id, f.kind\n",
    )
    .unwrap();
    let output = pipe(root, &["build", "--memory-limit", "64MiB"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let output = pipe(root, &["query", "select * from silver.by_kind order by kind_id", "-o", "csv"]);
    assert_eq!(text(&output.stdout), "kind_id,kind,total\n10,a,5.5\n20,b,2.5\n");
}

#[test]
fn example_builds_under_a_small_memory_limit() {
    let dir = example_project();
    let output = pipe(dir.path(), &["build", "--memory-limit", "32MiB", "--threads", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // The keep-first dedupe (which spills) stays on under the limit: `slv_orders` drops the same 2 duplicate rows as
    // without a limit (the window path would count none).
    let deduplicated = |dir: &std::path::Path| {
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("target/run_results.json")).unwrap()).unwrap();
        let node = results["results"].as_array().unwrap().iter().find(|r| r["name"] == "slv_orders").unwrap().clone();
        node["rows_deduplicated"].clone()
    };
    assert_eq!(deduplicated(dir.path()), serde_json::json!(2), "the keep-first operator under the limit");
    let unlimited = example_project();
    assert_eq!(pipe(unlimited.path(), &["build"]).status.code(), Some(0));
    assert_eq!(deduplicated(unlimited.path()), serde_json::json!(2), "the keep-first operator without a limit");
    let output = pipe(dir.path(), &["query", "select sum(revenue) as r from gold.gld_daily_revenue", "-o", "csv"]);
    assert_eq!(text(&output.stdout), "r\n451.19\n");
}
