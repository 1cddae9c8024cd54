//! A model that compiles builds, with the types compile reported: for models that mix types (UNION branches,
//! `coalesce` and CASE over decimals and literals, decimal arithmetic, averages, windows, date math, lists, an
//! incremental model's second run), the columns compile writes to the manifest are the columns of the Delta table
//! the build writes, in both SQL dialects, whether the build re-uses compile's plan or plans the SQL itself (compile
//! took the plan from `target/plan_cache.json`).

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::datatypes::DataType;
use support::{pipe, text};

const ORDERS: &str = "id,customer,amount,qty,ordered_at,status\n\
1,ann,10.50,2,2024-01-01 10:00:00,ok\n\
2,bob,3,1,2024-01-02 11:30:00,late\n\
3,ann,,3,,ok\n\
4,cid,7.25,,2024-01-04 09:15:00,\n";

const SOURCES: &str =
    "sources:\n  - name: raw\n    tables:\n      - name: orders\n        format: csv\n        path: data/orders.csv\n";

/// Models both dialects plan.
const COMMON: &[(&str, &str)] = &[
    (
        "models/bronze/brz_orders.sql",
        "select id, customer, cast(amount as decimal(10, 2)) as amount, qty, cast(ordered_at as timestamp) as ordered_at, \
         status from {{ source('raw', 'orders') }}",
    ),
    (
        "models/silver/slv_union.sql",
        "select id, amount from {{ ref('brz_orders') }}\n\
         union all select id, 1 as amount from {{ ref('brz_orders') }}\n\
         union all select id, 2.5 from {{ ref('brz_orders') }}",
    ),
    (
        "models/silver/slv_text_union.sql",
        "select id, null as note from {{ ref('brz_orders') }} union all select id, status from {{ ref('brz_orders') }}",
    ),
    (
        "models/silver/slv_mixed.sql",
        "select id, coalesce(amount, 0) as amount_or_zero, case when qty > 1 then amount else 0 end as amount_if_many,\n\
         amount * 1.1 as amount_taxed, amount / qty as unit_price, qty / 2 as half_qty, greatest(qty, 0) as qty_floor,\n\
         ordered_at + interval '1' day as next_day, cast(ordered_at as varchar) as ordered_text,\n\
         status like 'ok%' as ok, cast(qty as smallint) as small_qty, cast(amount as real) as amount_real\n\
         from {{ ref('brz_orders') }}",
    ),
    (
        "models/gold/gld_customer.sql",
        "select customer, sum(amount) as total, avg(amount) as avg_amount, avg(qty) as avg_qty, count(*) as n,\n\
         count(distinct status) as statuses, max(ordered_at) as last_at, bool_or(qty > 2) as any_big,\n\
         string_agg(status, ',') as status_list, array_agg(id) as ids, sum(qty) as total_qty, min(amount) as least\n\
         from {{ ref('brz_orders') }} group by customer",
    ),
    (
        "models/gold/gld_window.sql",
        "select id, sum(amount) over (partition by customer order by id) as running,\n\
         row_number() over (order by id) as rn, lag(amount) over (order by id) as previous,\n\
         avg(amount) over (partition by customer) as customer_avg, rank() over (order by amount) as amount_rank\n\
         from {{ ref('brz_orders') }}",
    ),
    (
        "models/silver/slv_incremental.sql",
        "{{ config(materialized='incremental', unique_key='id') }}\n\
         select id, amount, ordered_at, coalesce(amount, 0) * 2 as doubled from {{ ref('brz_orders') }}\n\
         {% if is_incremental() %}\n\
         where ordered_at > (select coalesce(max(ordered_at), cast('1900-01-01' as timestamp)) from {{ this }})\n\
         {% endif %}",
    ),
];

/// Models only DuckDB's dialect plans.
const DUCKDB: &[(&str, &str)] = &[
    (
        "models/silver/slv_duckdb.sql",
        "select id, qty // 2 as whole_half, coalesce(ordered_at, '1900-01-01') as ordered_or_epoch,\n\
         date_diff('day', ordered_at, timestamp '2024-12-31') as days_left, strftime(ordered_at, '%Y-%m') as month,\n\
         status ilike 'OK%' as ok, epoch(ordered_at) as seconds, date_trunc('month', ordered_at) as month_start,\n\
         ordered_at::date as ordered_on, last_day(ordered_at::date) as month_end, amount::double as amount_double,\n\
         0.06 + 0.01 as rate, amount::varchar(20) as amount_text\n\
         from {{ ref('brz_orders') }}",
    ),
    (
        "models/gold/gld_duckdb.sql",
        "select customer, min_by(id, amount) as cheapest, max_by(status, ordered_at) as last_status,\n\
         list(id order by id) as ids, listagg(status, '|') as statuses, count_star() as n, any_value(qty) as some_qty\n\
         from {{ ref('brz_orders') }} group by all",
    ),
];

fn write_project(dir: &Path, dialect: &str) {
    let mut files: Vec<(&str, String)> = vec![
        ("pipe.yml", format!("name: types\nsql_dialect: {dialect}\nlayer-rules: warn\n")),
        ("models/sources.yml", SOURCES.to_string()),
        ("data/orders.csv", ORDERS.to_string()),
    ];
    let models = COMMON.iter().chain(if dialect == "duckdb" { DUCKDB } else { &[] });
    for (path, sql) in models {
        let sql = match sql.starts_with("{{ config") {
            true => sql.to_string(),
            false => format!("{{{{ config(materialized='table') }}}}\n{sql}\n"),
        };
        files.push((path, sql));
    }
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// A Delta type (from a table's `schemaString`) as text: `long`, `decimal(22,2)`, `array<long>`.
fn delta_type_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(name) => name.clone(),
        serde_json::Value::Object(map) if map["type"] == "array" => {
            format!("array<{}>", delta_type_text(&map["elementType"]))
        }
        other => other.to_string(),
    }
}

/// The Delta type a planned Arrow type is stored as.
fn stored_as(arrow: &DataType) -> String {
    match arrow {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "byte".into(),
        DataType::Int16 => "short".into(),
        DataType::Int32 => "integer".into(),
        // Delta has no unsigned types: a count or a row number (UInt64) is stored as a long.
        DataType::Int64 | DataType::UInt64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "string".into(),
        DataType::Date32 => "date".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Timestamp(_, None) => "timestamp_ntz".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp".into(),
        DataType::List(item) | DataType::LargeList(item) => format!("array<{}>", stored_as(item.data_type())),
        other => format!("unmapped {other}"),
    }
}

/// Each table's columns and their Delta types, from the last schema in its log.
fn table_columns(dir: &Path, relation: &str) -> Vec<(String, String)> {
    let log = dir.join("warehouse").join(relation.replace('.', "/")).join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .unwrap_or_else(|e| panic!("{relation}: no table ({e})"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    commits.sort();
    let mut schema = None;
    for commit in commits {
        for line in std::fs::read_to_string(commit).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(text) = action["metaData"]["schemaString"].as_str() {
                schema = Some(serde_json::from_str::<serde_json::Value>(text).unwrap());
            }
        }
    }
    let schema = schema.unwrap_or_else(|| panic!("{relation}: no schema in its log"));
    schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_string(), delta_type_text(&f["type"])))
        .collect()
}

/// Every model's planned columns (as the Delta types they are stored as) against its table's columns.
fn disagreements(dir: &Path) -> Vec<String> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("target/manifest.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut checked = BTreeMap::new();
    for node in manifest["nodes"].as_object().unwrap().values() {
        let Some(planned) = node["planned_columns"].as_array() else { continue };
        let relation = format!("{}.{}", node["schema"].as_str().unwrap(), node["name"].as_str().unwrap());
        let planned: Vec<(String, String)> = planned
            .iter()
            .map(|c| {
                let ty = c["data_type"].as_str().unwrap();
                let parsed = ty.parse::<DataType>().map(|t| stored_as(&t)).unwrap_or_else(|_| format!("unparsed {ty}"));
                (c["name"].as_str().unwrap().to_string(), parsed)
            })
            .collect();
        let table = table_columns(dir, &relation);
        if planned != table {
            out.push(format!("{relation}:\n  compile: {planned:?}\n  table:   {table:?}"));
        }
        checked.insert(relation, planned.len());
    }
    assert!(checked.len() >= 7, "too few models checked: {checked:?}");
    out
}

fn check_dialect(dialect: &str) {
    let dir = tempfile::tempdir().unwrap();
    write_project(dir.path(), dialect);
    let mut problems = Vec::new();
    // Compile plans every model and caches the plans' columns; the first build re-uses none of those plans (they
    // came from the cache), the second runs the incremental model's `is_incremental()` branch.
    let compile = pipe(dir.path(), &["compile"]);
    assert!(compile.status.success(), "{dialect}: compile failed:\n{}", text(&compile.stderr));
    for round in ["first build", "second build"] {
        let build = pipe(dir.path(), &["build"]);
        if !build.status.success() {
            problems.push(format!("{dialect}, {round} failed:\n{}{}", text(&build.stdout), text(&build.stderr)));
            break;
        }
        problems.extend(disagreements(dir.path()).into_iter().map(|d| format!("{dialect}, {round}: {d}")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn compiled_types_are_the_built_types_in_duckdb_mode() {
    check_dialect("duckdb");
}

#[test]
fn compiled_types_are_the_built_types_in_datafusion_mode() {
    check_dialect("datafusion");
}
