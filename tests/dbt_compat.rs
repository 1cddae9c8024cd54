//! dbt projects as their users write them: fixture projects under `tests/dbt_compat/<name>/`, in dbt's own layout
//! (`dbt_project.yml`, `seeds/`, `models/<folder>/`), built unmodified with the real `pipe` binary. Each test
//! checks the tables against the rows dbt's documented semantics give, written down here.

mod support;

use std::path::Path;

use support::{copy_dir, pipe, repo, text};

/// A fresh copy of the fixture project `name`.
fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("tests/dbt_compat").join(name), dir.path());
    dir
}

fn query(root: &Path, sql: &str) -> String {
    let output = pipe(root, &["query", sql, "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    text(&output.stdout)
}

/// Raw data loaded as seeds and read through `source()` (jaffle-shop style): a source table with no files of its
/// own names a seed (by `identifier`, else its name); the build loads the seed first, and the source reads it.
#[test]
fn sources_that_are_seeds_are_read_after_the_seeds_load() {
    let dir = fixture("seeds_as_sources");
    let root = dir.path();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("5 succeeded, 0 failed, 0 skipped"), "{stderr}");
    // Each customer's orders (a left join keeps customers without orders) and the completed ones.
    assert_eq!(
        query(root, "select customer_id, first_name, orders, completed from main.customer_orders order by 1"),
        "customer_id,first_name,orders,completed\n1,Ada,2,2\n2,Alan,1,0\n3,Grace,2,1\n"
    );
    // The source is queryable under its own name too, and the manifest records which seed it is.
    assert_eq!(query(root, "select count(*) as n from jaffle_shop.customers"), "n\n3\n");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("target/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["sources"]["source.shop_seeds.jaffle_shop.customers"]["seed"], "seed.shop_seeds.raw_customers");
    // `source()` orders the model after the seed: a model selected with its upstreams builds from nothing.
    let fresh = fixture("seeds_as_sources");
    let output = pipe(fresh.path(), &["build", "-s", "+stg_orders"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(query(fresh.path(), "select count(*) as n from main.stg_orders"), "n\n5\n");
}

/// dbt's cross-database macros (`dbt.dateadd`, `datediff`, `concat`, `safe_cast`, ...), rendered as DataFusion
/// SQL, give the values dbt's default implementations give. Also a regression: a column the executed plan calls
/// non-null and the planned schema nullable (`split_part` of literals) is written, not refused.
#[test]
fn cross_database_macros_compute_what_dbt_computes() {
    let dir = fixture("cross_db_macros");
    let root = dir.path();
    let output = pipe(root, &["build"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let row = query(root, "select * from main.macro_values");
    let mut lines = row.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let values: Vec<&str> = lines.next().unwrap().split(',').collect();
    let value = |name: &str| values[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(value("month_start"), "2024-01-01T00:00:00");
    assert_eq!(value("plus_two_days"), "2024-02-02T10:00:00");
    // A month after January 31st is the last day of February (2024 is a leap year), as in Postgres.
    assert_eq!(value("plus_a_month"), "2024-02-29T10:00:00");
    // Boundaries crossed between 2024-01-31 10:00 and 2024-03-02 08:00.
    assert_eq!((value("days"), value("months"), value("hours")), ("31", "2", "742"));
    assert_eq!(value("last_of_month"), "2024-01-31");
    assert_eq!(value("shouted"), "O'Brien!");
    assert_eq!((value("second_part"), value("b_at"), value("name_tail")), ("b", "2", "Brien"));
    assert_eq!(value("not_a_number"), "", "safe_cast gives null");
    assert_eq!((value("translated"), value("bits_for_five")), ("42", "3"));
    assert_eq!(value("hashed"), "0cc175b9c0f1b6a831c399e269772661", "md5 of 'a'");
    assert_eq!((value("flag_text"), value("quoted")), ("true", "it's"));
    // `config.get` reads the model's config as the project file sets it.
    assert_eq!(value("materialized"), "table");
    assert_eq!((value("half"), value("exact")), ("3.5", "true"));
    assert_eq!(value("started_text"), "2024-01-31 10:00:00");
    // `date_spine` stops before its end (2024 is a leap year); `generate_series` counts from 1.
    assert_eq!(
        query(root, "select * from main.days_in_range order by 1"),
        "date_day,generated_number\n2024-02-27,1\n2024-02-28,2\n2024-02-29,3\n2024-03-01,4\n"
    );
    // A seed's capitalised header (`CustomerID`) is found whatever case a model writes it in, as in DuckDB.
    assert_eq!(query(root, "select * from main.people_lookup"), "CustomerID,first_name\n1,Ada\n");
    // `exceptions.warn` is shown, and the model builds.
    assert!(text(&output.stderr).contains("warning: days_in_range is a spine"), "{}", text(&output.stderr));
}

/// Installed packages (`dbt_packages/<name>`) and `local:` packages: their macros are called as `package.macro`,
/// run through the package's own `adapter.dispatch` (the project's implementation first, as its `dispatch:`
/// search order says), return values with `return()`, build lists and dicts in place (`append`, `update`), and
/// their `{% test %}` blocks are generic tests named `package.test` (rendered when they run if they introspect); their
/// models and seeds build with the project.
#[test]
fn package_macros_and_tests_run_through_dispatch() {
    let dir = fixture("packages");
    let root = dir.path();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("tests: 3 of 3 passed"), "{stderr}");
    // md5 of `<id>-<last_name>`, with null as `_null_`; `label` is the project's `default__label` (lower), not the
    // package's (upper); the excluded column is left out and the others lower-cased, in order.
    assert_eq!(
        query(root, "select * from main.people order by id"),
        "person_key,label,initials,id,first_name,score\n\
         1ec646c168480eac3b5633f8e1b55823,ada,AL,1,Ada,90\n\
         c9a466cdba760eb9fd529a9ab6c55564,alan,AT,2,Alan,75\n\
         5a9f0cc922291a1b25b1bbf6926cee03,grace,G,3,Grace,60\n"
    );
    // A package's seed and model build with the project's: configured by the package's project file, then by the
    // root project's `text_helpers:` level (a table in `<target>_helpers`, not the package's view), and its bare
    // macro names find the package's macros first (`shout` is upper there, lower in the project).
    assert!(stderr.contains("OK    table       main_helpers.stg_country_codes"), "{stderr}");
    // A test that asks the warehouse for the model's columns is rendered when it runs, against the built tables:
    // `people` has one row `people_top` lacks (a warning, by its severity), `people_top` none `people` lacks.
    assert!(stderr.contains("WARN  my_utils_same_rows_as_people_ref_people_top_"), "{stderr}");
    assert!(stderr.contains("| 5a9f0cc922291a1b25b1bbf6926cee03 | grace | G"), "{stderr}");
    let output = pipe(root, &["test", "-s", "people_top"]);
    let stdout = text(&output.stdout) + &text(&output.stderr);
    assert!(stdout.contains("PASS  my_utils_same_rows_as_people_top_ref_people_"), "{stdout}");
    assert_eq!(
        query(root, "select * from main.countries order by 1"),
        "code,name,quiet\nGB,UNITED KINGDOM,united kingdom\nUS,UNITED STATES,united states\n"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("target/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["nodes"]["model.text_helpers.stg_country_codes"]["depends_on"]["nodes"][0],
        "seed.text_helpers.country_codes"
    );
    let macros = manifest["nodes"]["model.shop_pkgs.people"]["depends_on"]["macros"].to_string();
    for id in ["macro.my_utils.default__surrogate_key", "macro.shop_pkgs.default__label", "macro.text_helpers.initials"]
    {
        assert!(macros.contains(id), "{id} not in {macros}");
    }
    // A package test that finds rows fails, named after the package's test.
    let schema = root.join("models/marts/schema.yml");
    std::fs::write(&schema, std::fs::read_to_string(&schema).unwrap().replace("min_value: 50", "min_value: 70"))
        .unwrap();
    let output = pipe(root, &["test"]);
    let stdout = text(&output.stdout) + &text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("my_utils_at_least_people_score__70"), "dbt's name for the test: {stdout}");
    // A test's undeclared keyword arguments are its `kwargs`, and its `fail_calc` counts the failures.
    std::fs::write(&schema, std::fs::read_to_string(&schema).unwrap().replace("min_rows: 3", "min_rows: 4")).unwrap();
    let output = pipe(root, &["test"]);
    let stdout = text(&output.stdout) + &text(&output.stderr);
    assert!(stdout.contains("FAIL  my_utils_row_count_at_least_people_4"), "{stdout}");
    assert!(stdout.contains("1 failing row") || stdout.contains("1 row"), "{stdout}");
    // `pipe deps` copies the `local:` package into `dbt_packages/`.
    let output = pipe(root, &["deps"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("Installed text_helpers from vendor/text_helpers"),
        "{}",
        text(&output.stdout)
    );
    assert!(root.join("dbt_packages/text_helpers/macros/initials.sql").is_file());
}

/// Introspection: `execute`, `adapter.get_columns_in_relation`, `{% call statement %}` with `load_result`, and
/// `run_query`. At compile, as in dbt's parse, `execute` is false and there are no answers (a model's SQL may not
/// even parse then, and that is not an error); the build renders these models again just before running them,
/// when their upstreams are in the warehouse.
#[test]
fn introspective_models_are_rendered_when_the_build_runs_them() {
    let dir = fixture("introspection");
    let root = dir.path();
    let output = pipe(root, &["compile"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("target/manifest.json")).unwrap()).unwrap();
    let stg = &manifest["nodes"]["model.shop_intro.stg_orders"];
    assert_eq!(stg["render_at_build"], true);
    assert!(stg["compiled_sql"].as_str().unwrap().starts_with("select *"), "{}", stg["compiled_sql"]);
    assert!(manifest["nodes"]["seed.shop_intro.raw_orders"].get("render_at_build").is_none());

    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("6 succeeded, 0 failed, 0 skipped"), "{stderr}");
    // `star` left out the excluded column (compared without case, as dbt_utils does).
    assert_eq!(
        query(root, "select * from main.stg_orders order by id"),
        "id,status,amount\n1,placed,10\n2,shipped,20\n3,placed,5\n4,returned,7\n"
    );
    // One column per distinct status, in the order the statement returned them.
    assert_eq!(
        query(root, "select * from main.orders_by_status"),
        "placed_amount,returned_amount,shipped_amount\n15,7,20\n"
    );
    assert_eq!(query(root, "select * from main.order_count"), "counted,actual\n4,4\n");
    // A union over the superset of the relations' columns, built from `Column` objects (`is_string()`,
    // `data_type`) kept in dicts of lists changed in place: a missing column is a typed null.
    assert_eq!(
        query(root, "select * from main.all_orders order by id"),
        "source_relation,id,status,amount,note\nstg_orders,1,placed,10,\nstg_orders,2,shipped,20,\nstg_orders,3,placed,5,\nstg_orders,4,returned,7,\nlegacy_orders,5,placed,,old\n"
    );
}

/// dbt-duckdb's `external_location` sources: set once on the source (inherited by its tables) or on a table, in
/// `meta:` or `config:`, with `{name}` / `{identifier}` filled per table, as a path or a `read_csv(...)` call
/// whose options (`header`, `delim`) are the source's. A JSON file holding one array is read as its rows.
#[test]
fn external_location_sources_read_their_files() {
    let dir = fixture("external_sources");
    let root = dir.path();
    let output = pipe(root, &["build"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        query(root, "select * from main.customer_totals order by 1"),
        "customer_id,name,total,refunded\n1,Ada,15.0,2.5\n2,Alan,7.0,1.5\n"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("target/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["sources"]["source.shop_external.landing.payments"]["path"], "data/payments_2024.json");
    assert_eq!(manifest["sources"]["source.shop_external.landing.customers"]["path"], "data/customers.csv");
}

/// `profiles.yml` and dbt's schema naming: the profile's target gives `target.*` and the default schema; a custom
/// `+schema` is `<target schema>_<custom>`; `alias` names the table; `--target` switches target; a project that
/// defines `generate_schema_name` decides the schema itself.
#[test]
fn targets_and_schemas_follow_dbt() {
    let dir = fixture("targets");
    let root = dir.path();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for relation in ["analytics.raw_things", "analytics_staging.stg_things", "analytics.all_things"] {
        assert!(stderr.contains(relation), "{relation} not built: {stderr}");
    }
    assert_eq!(
        query(root, "select target_name, target_schema, target_type from analytics.all_things where id = 1"),
        "target_name,target_schema,target_type\ndev,analytics,duckdb\n"
    );
    let output = pipe(root, &["build", "--target", "prod"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reporting_staging.stg_things"), "{stderr}");
    let output = pipe(root, &["compile", "-t", "qa"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("has no target `qa`; its targets are `dev`, `prod`"),
        "{}",
        text(&output.stderr)
    );

    // The common override: a custom schema is used as written.
    std::fs::create_dir_all(root.join("macros")).unwrap();
    std::fs::write(
        root.join("macros/schema.sql"),
        "{% macro generate_schema_name(custom_schema_name, node) -%}\n{%- if custom_schema_name is none -%}{{ default__generate_schema_name(none, node) }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}\n{%- endmacro %}\n",
    )
    .unwrap();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(" staging.stg_things"), "{stderr}");
    assert!(stderr.contains("analytics.all_things"), "{stderr}");
}

/// dbt's model versions: each version is its own table (`<model>_v<v>`, or its alias), an unpinned `ref()` reads
/// `latest_version` (v2, in the unsuffixed file), `ref(m, v=1)` / `version=3` a pinned one; a version's columns
/// (and so its tests) follow `include`/`exclude`; `-s dim_customers` selects every version.
#[test]
fn model_versions_build_side_by_side_and_refs_pick_the_right_one() {
    let dir = fixture("model_versions");
    let root = dir.path();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let tables = query(root, "select table_name from information_schema.tables where table_schema = 'main' order by 1");
    assert_eq!(
        tables,
        "table_name\ncustomers_by_country\ndim_customers_preview\ndim_customers_v1\ndim_customers_v2\nlegacy_names\n\
         preview_domestic\nraw_customers\n"
    );
    // v1 drops `country`, so its accepted_values test is not generated: 2 tests, not 3.
    assert!(stderr.contains("main.dim_customers_v1"), "{stderr}");
    let v1_tests = stderr.lines().skip_while(|l| !l.contains("main.dim_customers_v1")).nth(1).unwrap_or_default();
    assert!(v1_tests.contains("2 of 2 passed"), "{stderr}");
    assert_eq!(query(root, "select * from main.customers_by_country order by 1"), "country,customers\nGB,2\nUS,1\n");
    assert_eq!(query(root, "select count(*) as n from main.legacy_names"), "n\n3\n");
    assert_eq!(query(root, "select * from main.preview_domestic"), "domestic\n2\n");

    // Selecting the model by its name selects all of its versions (and their tests), nothing else.
    let fresh = fixture("model_versions");
    let output = pipe(fresh.path(), &["build", "-s", "raw_customers", "dim_customers"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("4 succeeded, 0 failed, 0 skipped"), "{stderr}");

    // A version that does not exist is a compile error naming the versions there are.
    std::fs::write(root.join("models/bad.sql"), "select * from {{ ref('dim_customers', v=9) }}\n").unwrap();
    let output = pipe(root, &["compile"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("model `dim_customers` has no version 9 (its versions: 1, 2, 3)"),
        "{}",
        text(&output.stderr)
    );
}

/// dbt-duckdb's `external` materialization: the model is written as files at `location` (Parquet by default, CSV
/// with its `delimiter`, a folder of Hive partitions with `partition_by`; without a location, under the profile's
/// `external_root`), and read back under its relation by downstream models and by `pipe query` in a later process.
/// A failed rebuild leaves the previous files as they were.
#[test]
fn external_models_are_files_read_back_as_relations() {
    let dir = fixture("external_models");
    let root = dir.path();
    let output = pipe(root, &["build"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("6 succeeded, 0 failed, 0 skipped"), "{stderr}");
    assert!(root.join("exports/orders.parquet").is_file());
    assert_eq!(
        std::fs::read_to_string(root.join("exports/orders_csv.csv")).unwrap(),
        "order_id|customer|amount\n1|ada|10.5\n2|alan|4.0\n3|ada|7.5\n4|grace|12.0\n"
    );
    let mut partitions: Vec<String> = std::fs::read_dir(root.join("exports/by_month"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    partitions.sort();
    assert_eq!(partitions, ["month=1", "month=2"]);
    // Downstream models read the files; so does a query in a new process, with the model's column order and types.
    assert_eq!(query(root, "select * from main.totals order by 1"), "customer,total\nada,18.0\nalan,4.0\ngrace,12.0\n");
    assert_eq!(query(root, "select * from main.monthly order by 1"), "month,orders,amount\n1,2,14.5\n2,2,19.5\n");
    assert_eq!(
        query(root, "select * from main.orders_by_month where month = 2 order by 1"),
        "order_id,amount,month_start,month\n3,7.5,2024-02-01T00:00:00,2\n4,12.0,2024-02-01T00:00:00,2\n"
    );
    // A rebuild that fails keeps the files of the last good build.
    let before = std::fs::read(root.join("exports/orders.parquet")).unwrap();
    std::fs::write(
        root.join("models/orders_parquet.sql"),
        "{{ config(materialized='external', location='exports/orders.parquet', partition_by='no_such_column') }}\n\
         select 1 as order_id\n",
    )
    .unwrap();
    let output = pipe(root, &["build", "-s", "orders_parquet"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("`partition_by` names `no_such_column`, which is not a column of the model"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(std::fs::read(root.join("exports/orders.parquet")).unwrap(), before);
}
