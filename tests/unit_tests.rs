//! dbt's unit tests (`unit_tests:`) on real files: the model's SQL runs on the given rows (`dict`, `csv` inline or
//! from a fixture, `sql`), typed by the inputs' planned columns, and its rows must be the expected ones. In `pipe
//! build` they run before the model: a failing one keeps the model and what reads it from building and shows the
//! rows that differ. `pipe test -s test_type:unit` runs them alone; `overrides: {macros: {is_incremental: true}}`
//! runs the model's incremental variant with `this` given.

mod support;

use std::path::Path;

use support::{pipe, text};

const FILES: &[(&str, &str)] = &[
    ("pipe.yml", "name: units\n"),
    (
        "models/sources.yml",
        "sources:\n  - name: raw\n    tables:\n      - name: orders\n        format: csv\n        path: data/orders.csv\n",
    ),
    ("data/orders.csv", "id,customer,amount,ordered_on\n1,ann,10.5,2024-01-01\n2,bob,3,2024-01-02\n3,ann,7,2024-01-03\n"),
    (
        "models/bronze/brz_orders.sql",
        "{{ config(materialized='table') }}\n\
         select id, customer, cast(amount as decimal(10, 2)) as amount, cast(ordered_on as date) as ordered_on \
         from {{ source('raw', 'orders') }}\n",
    ),
    (
        "models/silver/slv_big_orders.sql",
        "{{ config(materialized='incremental', unique_key='id') }}\n\
         select id, customer, amount, amount >= 5 as big from {{ ref('brz_orders') }}\n\
         {% if is_incremental() %}where id > (select coalesce(max(id), 0) from {{ this }}){% endif %}\n",
    ),
    (
        "models/gold/gld_customers.sql",
        "{{ config(materialized='table') }}\n\
         select customer, sum(amount) as total, count(*) as orders from {{ ref('slv_big_orders') }} group by customer\n",
    ),
    ("tests/fixtures/two_orders.csv", "id,customer,amount\n1,ann,10.5\n2,ann,1.25\n"),
    (
        "models/gold/units.yml",
        "unit_tests:\n\
         \x20 - name: totals_per_customer\n\
         \x20   model: gld_customers\n\
         \x20   given:\n\
         \x20     - input: ref('slv_big_orders')\n\
         \x20       format: csv\n\
         \x20       fixture: two_orders\n\
         \x20   expect:\n\
         \x20     rows:\n\
         \x20       - {customer: ann, total: 11.75, orders: 2}\n\
         \x20 - name: big_is_five_or_more\n\
         \x20   model: slv_big_orders\n\
         \x20   given:\n\
         \x20     - input: ref('brz_orders')\n\
         \x20       rows:\n\
         \x20         - {id: 1, amount: 5}\n\
         \x20         - {id: 2, amount: 4.99}\n\
         \x20         - {id: 3}\n\
         \x20   expect:\n\
         \x20     rows:\n\
         \x20       - {id: 1, big: true}\n\
         \x20       - {id: 2, big: false}\n\
         \x20       - {id: 3, big: null}\n\
         \x20 - name: incremental_reads_only_new_ids\n\
         \x20   model: slv_big_orders\n\
         \x20   overrides:\n\
         \x20     macros: {is_incremental: true}\n\
         \x20   given:\n\
         \x20     - input: ref('brz_orders')\n\
         \x20       format: sql\n\
         \x20       rows: |\n\
         \x20         select 1 as id, 'ann' as customer, cast(9 as decimal(10, 2)) as amount, date '2024-01-01' as ordered_on\n\
         \x20         union all select 2, 'bob', cast(1 as decimal(10, 2)), date '2024-01-02'\n\
         \x20     - input: this\n\
         \x20       rows: [{id: 1}]\n\
         \x20   expect:\n\
         \x20     format: csv\n\
         \x20     rows: |\n\
         \x20       id,customer,big\n\
         \x20       2,bob,false\n",
    ),
];

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    support::write_files(dir.path(), FILES);
    dir
}

fn output(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = pipe(dir, args);
    (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

#[test]
fn passing_unit_tests_let_their_models_build() {
    let dir = project();
    let (code, said) = output(dir.path(), &["build"]);
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = output(dir.path(), &["test", "-s", "test_type:unit"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("Done: 3 passed, 0 warned, 0 failed of 3 tests"), "{said}");
    // Only unit tests: the model's generic tests are other test types.
    let (_, said) = output(dir.path(), &["test", "-s", "test_type:singular"]);
    assert!(said.contains("of 0 tests"), "{said}");
}

#[test]
fn a_failing_unit_test_keeps_its_model_and_readers_from_building() {
    let dir = project();
    let units = dir.path().join("models/gold/units.yml");
    let yaml = std::fs::read_to_string(&units).unwrap().replace("{id: 2, big: false}", "{id: 2, big: true}");
    std::fs::write(&units, yaml).unwrap();
    let (code, said) = output(dir.path(), &["build"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("unit test `big_is_five_or_more` failed"), "{said}");
    assert!(said.contains("- id=2, big=true (expected, not returned)"), "{said}");
    assert!(said.contains("+ id=2, big=false (returned, not expected)"), "{said}");
    assert!(said.contains("the model was not built"), "{said}");
    assert!(said.contains("skipped: upstream `slv_big_orders` failed"), "{said}");
    assert!(!dir.path().join("warehouse/silver/slv_big_orders").exists(), "the model's table was not written");
    let (code, said) = output(dir.path(), &["test", "-s", "test_type:unit", "slv_big_orders"]);
    assert_eq!(code, Some(1), "{said}");
}

#[test]
fn a_unit_test_of_an_input_the_model_does_not_read_fails_at_compile() {
    let dir = project();
    let units = dir.path().join("models/gold/units.yml");
    let yaml =
        std::fs::read_to_string(&units).unwrap().replace("input: ref('slv_big_orders')", "input: ref('brz_orders')");
    std::fs::write(&units, yaml).unwrap();
    let (code, said) = output(dir.path(), &["compile"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("unit test `totals_per_customer` gives rows for"), "{said}");
    assert!(said.contains("`ref('brz_orders')`, which model") && said.contains("does not read"), "{said}");
}

/// `overrides.vars` and `overrides.env_vars`: the test runs the model rendered with them, not the project's.
#[test]
fn overrides_of_vars_and_env_vars_render_the_model_with_them() {
    let dir = project();
    support::write_files(
        dir.path(),
        &[
            (
                "models/silver/slv_large.sql",
                "{{ config(materialized='table') }}\n\
                 select id, '{{ env_var('PIPE_UNIT_REGION', 'eu') }}' as region from {{ ref('brz_orders') }}\n\
                 where amount >= {{ var('large_from', 100) }}\n",
            ),
            (
                "models/silver/large_units.yml",
                "unit_tests:\n\
                 \x20 - name: large_from_an_overridden_var\n\
                 \x20   model: slv_large\n\
                 \x20   overrides:\n\
                 \x20     vars: {large_from: 7}\n\
                 \x20     env_vars: {PIPE_UNIT_REGION: us}\n\
                 \x20   given:\n\
                 \x20     - input: ref('brz_orders')\n\
                 \x20       rows: [{id: 1, amount: 10.5}, {id: 2, amount: 3}, {id: 3, amount: 7}]\n\
                 \x20   expect:\n\
                 \x20     rows: [{id: 1, region: us}, {id: 3, region: us}]\n",
            ),
        ],
    );
    let (code, said) = output(dir.path(), &["test", "-s", "test_type:unit", "slv_large"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("PASS  large_from_an_overridden_var"), "{said}");
    // The model itself is built with the project's values: no order reaches 100, the region is the default.
    let (code, said) = output(dir.path(), &["build", "-s", "+slv_large"]);
    assert_eq!(code, Some(0), "{said}");
    let (_, rows) = output(dir.path(), &["query", "select count(*) as n from silver.slv_large", "-o", "csv"]);
    assert!(rows.starts_with("n\n0\n"), "{rows}");
    // Without the overrides the expectation fails: the overrides are what made it pass.
    let units = dir.path().join("models/silver/large_units.yml");
    let yaml = std::fs::read_to_string(&units).unwrap().replace("vars: {large_from: 7}", "vars: {}");
    std::fs::write(&units, yaml).unwrap();
    let (code, said) = output(dir.path(), &["test", "-s", "test_type:unit", "slv_large"]);
    assert_eq!(code, Some(1), "{said}");
}
