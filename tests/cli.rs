//! CLI tests: the real `pipe` binary on temporary copies of the example project and of fixtures.

mod support;

use std::path::Path;
use std::process::Output;

use support::{example_project, fixture, pipe, repo, text};

/// Exit code, stdout and stderr together, with the elapsed time redacted.
fn transcript(output: &Output) -> String {
    let stderr = text(&output.stderr);
    let stderr: String = stderr
        .lines()
        .map(|line| match line.find(" in ") {
            Some(i) if line.starts_with("Compiled ") => {
                let rest = &line[i + 4..];
                let after = rest.find('s').map_or("", |j| &rest[j + 1..]);
                format!("{} in [ELAPSED]s{after}", &line[..i])
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "exit: {}\n--- stdout ---\n{}--- stderr ---\n{stderr}\n",
        output.status.code().unwrap_or(-1),
        text(&output.stdout)
    )
}

#[test]
fn compile_example_project() {
    let dir = example_project();
    let output = pipe(dir.path(), &["compile"]);
    insta::assert_snapshot!(transcript(&output));
    let manifest = std::fs::read_to_string(dir.path().join("target/manifest.json")).unwrap();
    let compiled =
        std::fs::read_to_string(dir.path().join("target/compiled/models/gold/gld_daily_revenue.sql")).unwrap();
    assert!(compiled.starts_with("with __pipe_cte__int_orders_enriched as ("), "{compiled}");
    // A second compile of the same input writes the same bytes.
    assert_eq!(pipe(dir.path(), &["compile"]).status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(dir.path().join("target/manifest.json")).unwrap(), manifest);
}

#[test]
fn compile_errors_exit_1_and_write_nothing() {
    let dir = fixture("many_errors");
    let output = pipe(dir.path(), &["compile", "--diagnostics", "short"]);
    insta::assert_snapshot!(transcript(&output));
    assert!(!dir.path().join("target").exists());
}

#[test]
fn ls_selection_in_topological_order() {
    let dir = example_project();
    let output = pipe(dir.path(), &["ls", "-s", "+gld_daily_revenue", "--exclude", "resource_type:seed"]);
    insta::assert_snapshot!(transcript(&output));
    let output = pipe(dir.path(), &["ls", "-s", "layer:gold,tag:reporting", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gld_funnel", "gld_customer_lifetime", "gld_daily_revenue", "gld_revenue_by_region"]);
}

#[test]
fn ls_selector_errors() {
    let dir = example_project();
    let output = pipe(dir.path(), &["ls", "-s", "colour:red"]);
    insta::assert_snapshot!(transcript(&output));
    let output = pipe(dir.path(), &["ls", "-s", "state:modified"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("`state:modified` needs `--state <dir>`"), "{}", text(&output.stderr));
    let output = pipe(dir.path(), &["ls", "-s", "no_such_model"]);
    assert_eq!((output.status.code(), text(&output.stdout)), (Some(0), String::new()));
    assert!(text(&output.stderr).contains("selector `no_such_model` matched nothing"));
}

#[test]
fn state_modified_marks_exactly_what_changed() {
    let dir = example_project();
    assert_eq!(pipe(dir.path(), &["compile"]).status.code(), Some(0));
    let state = dir.path().join("prod-target");
    std::fs::rename(dir.path().join("target"), &state).unwrap();
    let state_arg = state.to_str().unwrap();
    let modified = |dir: &Path| {
        let output = pipe(dir, &["ls", "-s", "state:modified", "--state", state_arg, "-o", "json"]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    // Unchanged project, reordered and re-indented YAML: nothing is modified.
    let schema = std::fs::read_to_string(dir.path().join("models/schema.yml")).unwrap();
    std::fs::write(dir.path().join("models/schema.yml"), format!("# reformatted\n{}\n\n", schema.replace("  - name: brz_orders\n    description: Every order line as received, including duplicates and test orders.\n", "")) + "  - name: brz_orders\n    description: Every order line as received, including duplicates and test orders.\n").unwrap();
    assert_eq!(modified(dir.path()), Vec::<String>::new());
    // Editing a macro marks exactly the models that use it, directly or through another macro.
    let money = dir.path().join("macros/money.sql");
    let text_before = std::fs::read_to_string(&money).unwrap();
    std::fs::write(
        &money,
        text_before.replace("round(cast({{ column }} as double), 2)", "round(cast({{ column }} as double), 3)"),
    )
    .unwrap();
    assert_eq!(modified(dir.path()), ["slv_orders"]);
    std::fs::write(&money, &text_before).unwrap();
    let dedupe = dir.path().join("macros/dedupe.sql");
    let dedupe_text = std::fs::read_to_string(&dedupe).unwrap();
    std::fs::write(&dedupe, dedupe_text.replace("desc)", "desc, 1)")).unwrap();
    assert_eq!(modified(dir.path()), ["slv_customers", "slv_orders"]);
    std::fs::write(&dedupe, dedupe_text).unwrap();
    // A config change in the folder tree marks the models it applies to; a new model is new and modified.
    let project = std::fs::read_to_string(dir.path().join("pipe.yml")).unwrap();
    std::fs::write(dir.path().join("pipe.yml"), project.replace("+tags: [reporting]", "+tags: [reporting, finance]"))
        .unwrap();
    std::fs::write(dir.path().join("models/gold/gld_new.sql"), "select 1 as x from {{ ref('slv_orders') }}\n").unwrap();
    assert_eq!(
        modified(dir.path()),
        ["gld_funnel", "gld_customer_lifetime", "gld_new", "gld_daily_revenue", "gld_revenue_by_region"]
    );
    let output = pipe(dir.path(), &["ls", "-s", "state:new", "--state", state_arg]);
    assert_eq!(text(&output.stdout).split_whitespace().next(), Some("gld_new"));
}

#[test]
fn init_creates_a_project_that_compiles() {
    let dir = tempfile::tempdir().unwrap();
    let output = pipe(dir.path(), &["init", "my-shop"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let output = pipe(&dir.path().join("my-shop"), &["compile"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr)
            .starts_with("Compiled 3 models, 2 tests, 1 sources, 0 macros (3 selected, 3 planned, 0 from cache)"),
        "{}",
        text(&output.stderr)
    );
    let output = pipe(&dir.path().join("my-shop"), &["ls"]);
    assert_eq!(
        text(&output.stdout),
        "brz_orders         model   bronze  table\nslv_orders         model   silver  table\ngld_daily_revenue  model   gold    table\n"
    );
    // Refuses a non-empty folder.
    assert_eq!(pipe(dir.path(), &["init", "my-shop"]).status.code(), Some(2));
}

#[test]
fn explain_prints_the_code_docs() {
    let output = pipe(&repo(), &["explain", "ref-not-found"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        text(&output.stdout).starts_with("P0401 (ref-not-found)\n\n`ref('name')` names a model that does not exist.")
    );
    assert_eq!(pipe(&repo(), &["explain", "P9999"]).status.code(), Some(2));
}

#[test]
fn missing_project_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let output = pipe(dir.path(), &["compile", "--diagnostics", "short"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).starts_with("error[P0001]: no `pipe.yml` or `dbt_project.yml` in `.`"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn planning_is_cached_by_logic_and_input_schemas() {
    let dir = example_project();
    let compiled = |dir: &Path| {
        let output = pipe(dir, &["compile"]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let stderr = text(&output.stderr);
        let start = stderr.find("selected, ").unwrap() + "selected, ".len();
        stderr[start..stderr.find(") in").unwrap()].to_string()
    };
    assert_eq!(compiled(dir.path()), "10 planned, 0 from cache");
    assert_eq!(compiled(dir.path()), "0 planned, 10 from cache");
    // A change that keeps the output schema re-plans only the edited model.
    let gold = dir.path().join("models/gold/gld_funnel.sql");
    std::fs::write(
        &gold,
        std::fs::read_to_string(&gold).unwrap().replace("where customer_id is not null", "where customer_id > 0"),
    )
    .unwrap();
    assert_eq!(compiled(dir.path()), "1 planned, 9 from cache");
    // A new output column in silver re-plans it and its three gold readers (two read it through an ephemeral model).
    let silver = dir.path().join("models/silver/slv_customers.sql");
    std::fs::write(
        &silver,
        std::fs::read_to_string(&silver)
            .unwrap()
            .replace("select customer_id, customer_name,", "select customer_id, customer_name, 1 as extra,"),
    )
    .unwrap();
    assert_eq!(compiled(dir.path()), "4 planned, 6 from cache");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/manifest.json")).unwrap()).unwrap();
    let columns = &manifest["nodes"]["model.shop.gld_daily_revenue"]["planned_columns"];
    assert_eq!(
        *columns,
        serde_json::json!([
            {"name": "order_date", "data_type": "Date32", "nullable": true},
            {"name": "orders", "data_type": "Int64", "nullable": false},
            {"name": "revenue", "data_type": "Float64", "nullable": true},
        ])
    );
}

/// Model- and column-level lineage from the models' plans, through the inlined ephemeral model, upstream and
/// downstream, in each output format; the whole graph in `target/lineage.json`.
#[test]
fn lineage_traces_columns_to_their_sources() {
    let dir = example_project();
    let lineage = |args: &[&str]| {
        let output = pipe(dir.path(), &[&["lineage"], args].concat());
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    assert_eq!(
        lineage(&["gld_daily_revenue.revenue"]),
        "gld_daily_revenue.revenue\n  <- slv_orders.amount (aggregated)\n    <- brz_orders.amount (transformed)\n      <- raw.orders.amount (copied)\n"
    );
    assert_eq!(
        lineage(&["slv_orders", "--column", "amount", "--depth", "1"]),
        "slv_orders.amount\n  <- brz_orders.amount (transformed)\n"
    );
    assert_eq!(
        lineage(&["slv_orders.amount", "--downstream"]),
        "slv_orders.amount\n  -> gld_customer_lifetime.lifetime_spend (aggregated)\n  -> gld_daily_revenue.revenue (aggregated)\n  -> gld_revenue_by_region.revenue (aggregated)\n"
    );
    assert_eq!(
        lineage(&["slv_orders", "--downstream", "--depth", "1", "--format", "mermaid"]),
        "flowchart LR\n  n0[\"slv_orders\"]\n  n1[\"gld_customer_lifetime\"]\n  n2[\"int_orders_enriched\"]\n  n0 --> n1\n  n0 --> n2\n"
    );
    let dot = lineage(&["gld_daily_revenue.revenue", "--format", "dot", "--depth", "1"]);
    assert!(dot.starts_with("digraph lineage {\n  rankdir=LR;"), "{dot}");
    assert!(dot.contains("\"slv_orders.amount\" -> \"gld_daily_revenue.revenue\" [label=\"aggregated\"];"), "{dot}");
    let json: serde_json::Value =
        serde_json::from_str(&lineage(&["gld_daily_revenue.revenue", "--format", "json"])).unwrap();
    assert_eq!(json["edges"].as_array().unwrap().len(), 3);
    assert_eq!(json["edges"][0]["kind"], "aggregated");
    // Columns that only filter or join are told apart from those that flow into a column.
    let filters = lineage(&["brz_orders.customer_id", "--downstream", "--depth", "1"]);
    assert!(filters.contains("-> slv_orders (filters/joins)"), "{filters}");

    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("target/lineage.json")).unwrap()).unwrap();
    let lifetime = &file["nodes"]["model.shop.gld_customer_lifetime"];
    assert_eq!(lifetime["layer"], "gold");
    let customer_id = lifetime["columns"].as_array().unwrap().iter().find(|c| c["name"] == "customer_id").unwrap();
    assert_eq!(
        customer_id["sources"][0],
        serde_json::json!({"node": "model.shop.slv_customers", "column": "customer_id", "kind": "copied"})
    );
    let output = pipe(dir.path(), &["lineage", "slv_orders.nope"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("`slv_orders` has no column `nope`; its columns: order_id,"),
        "{}",
        text(&output.stderr)
    );
}
