//! `pipe init <dir>`: scaffolds a minimal medallion project that compiles as created.

use std::path::Path;
use std::process::ExitCode;

use super::InitArgs;

const FILES: &[(&str, &str)] = &[
    (
        "pipe.yml",
        "name: {name}\nmodel-paths: [models]\nmacro-paths: [macros]\nseed-paths: [seeds]\ntarget-path: target\nwarehouse: warehouse\nlayer-rules: error\n\nmodels:\n  {name}:\n    bronze:\n      +materialized: table\n    silver:\n      +materialized: table\n    gold:\n      +materialized: table\n",
    ),
    (
        "data/orders.csv",
        "order_id,customer_id,amount,ordered_at\n1,10,25.00,2026-01-01 09:00:00\n2,11,40.50,2026-01-01 12:30:00\n3,10,12.75,2026-01-02 08:15:00\n",
    ),
    (
        "models/sources.yml",
        "sources:\n  - name: raw\n    description: Raw files as they land\n    tables:\n      - name: orders\n        format: csv\n        path: data/orders.csv\n        columns:\n          - name: order_id\n            data_type: bigint\n          - name: customer_id\n            data_type: bigint\n          - name: amount\n            data_type: double\n          - name: ordered_at\n            data_type: timestamp\n",
    ),
    ("models/bronze/brz_orders.sql", "select * from {{ source('raw', 'orders') }}\n"),
    (
        "models/silver/slv_orders.sql",
        "select distinct\n    cast(order_id as bigint) as order_id,\n    cast(customer_id as bigint) as customer_id,\n    cast(amount as double) as amount,\n    cast(ordered_at as timestamp) as ordered_at\nfrom {{ ref('brz_orders') }}\nwhere order_id is not null\n",
    ),
    (
        "models/gold/gld_daily_revenue.sql",
        "select\n    cast(ordered_at as date) as order_date,\n    count(*) as orders,\n    sum(amount) as revenue\nfrom {{ ref('slv_orders') }}\ngroup by 1\n",
    ),
    (
        "models/schema.yml",
        "models:\n  - name: slv_orders\n    description: One row per order, typed and deduplicated\n    columns:\n      - name: order_id\n        description: Order key\n        data_tests: [not_null, unique]\n  - name: gld_daily_revenue\n    description: Revenue per day\n",
    ),
    ("macros/.gitkeep", ""),
    ("seeds/.gitkeep", ""),
    (".gitignore", "target/\nwarehouse/\n"),
];

pub(super) fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        eprintln!("error: `{}` exists and is not empty\n\nhint: choose a new folder", dir.display());
        return Ok(ExitCode::from(2));
    }
    let name = match &args.name {
        Some(name) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => name.clone(),
        Some(name) => {
            eprintln!(
                "error: {name:?} is not a project name: use letters, digits and `_` (it names the project in YAML and in OpenLineage)"
            );
            return Ok(ExitCode::from(2));
        }
        None => project_name(dir),
    };
    if dir.to_string_lossy().chars().any(char::is_control) {
        eprintln!(
            "error: {:?} is not a folder name pipe creates: it holds a control character",
            dir.display().to_string()
        );
        return Ok(ExitCode::from(2));
    }
    for (path, text) in FILES {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(full, text.replace("{name}", &name))?;
    }
    eprintln!("Created project `{name}` in {}\n\nNext: cd {} && pipe compile", dir.display(), dir.display());
    Ok(ExitCode::SUCCESS)
}

/// A valid project name from a folder name: lower-case letters, digits and underscores.
fn project_name(dir: &Path) -> String {
    let raw = dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let cleaned: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if cleaned.is_empty() || cleaned.starts_with(|c: char| c.is_ascii_digit()) {
        format!("project_{cleaned}")
    } else {
        cleaned
    }
}
