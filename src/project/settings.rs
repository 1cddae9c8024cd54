//! A model's (or seed's) config as types: parsed once at compile from the merged config map (folder tree < YAML <
//! in-file `config()`), each value checked, and stored in the manifest. The build reads these fields and never
//! looks a config key up by string; a value that does not parse is a compile error (`SettingProblem`), never a
//! silent default at run time.

use chrono::{DateTime, Datelike, Months, TimeDelta, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ConfigExt, ConfigMap};

mod freshness;
mod snapshot;
pub use freshness::{FreshnessPeriod, FreshnessRule};
pub use snapshot::{HardDeletes, SnapshotColumns, SnapshotSettings, SnapshotStrategy};

/// How an incremental model applies a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncrementalStrategy {
    Append,
    Merge,
    #[serde(rename = "delete+insert")]
    DeleteInsert,
    InsertOverwrite,
    Microbatch,
}

impl IncrementalStrategy {
    pub const ALL: [IncrementalStrategy; 5] = [
        IncrementalStrategy::Append,
        IncrementalStrategy::Merge,
        IncrementalStrategy::DeleteInsert,
        IncrementalStrategy::InsertOverwrite,
        IncrementalStrategy::Microbatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncrementalStrategy::Append => "append",
            IncrementalStrategy::Merge => "merge",
            IncrementalStrategy::DeleteInsert => "delete+insert",
            IncrementalStrategy::InsertOverwrite => "insert_overwrite",
            IncrementalStrategy::Microbatch => "microbatch",
        }
    }

    pub fn parse(text: &str) -> Option<IncrementalStrategy> {
        IncrementalStrategy::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// `on_schema_change`: what an incremental batch whose columns differ from the table's does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaChange {
    #[default]
    Ignore,
    Fail,
    AppendNewColumns,
    SyncAllColumns,
}

impl OnSchemaChange {
    pub fn parse(text: &str) -> Option<OnSchemaChange> {
        Some(match text {
            "ignore" => OnSchemaChange::Ignore,
            "fail" => OnSchemaChange::Fail,
            "append_new_columns" => OnSchemaChange::AppendNewColumns,
            "sync_all_columns" => OnSchemaChange::SyncAllColumns,
            _ => return None,
        })
    }
}

/// `parquet_compression` of a model's data files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParquetCompression {
    /// LZ4_RAW: the default (about 15% faster builds than Snappy here; read by Spark 3.4+, DuckDB, Polars).
    #[default]
    Lz4,
    Snappy,
    Zstd,
    None,
}

impl ParquetCompression {
    pub fn parse(text: &str) -> Option<ParquetCompression> {
        Some(match text {
            "lz4" => ParquetCompression::Lz4,
            "snappy" => ParquetCompression::Snappy,
            "zstd" => ParquetCompression::Zstd,
            "none" => ParquetCompression::None,
            _ => return None,
        })
    }

    /// The name `parse` reads.
    pub fn as_str(self) -> &'static str {
        match self {
            ParquetCompression::Lz4 => "lz4",
            ParquetCompression::Snappy => "snappy",
            ParquetCompression::Zstd => "zstd",
            ParquetCompression::None => "none",
        }
    }
}

/// `on_contract_violation` of a bronze model reading a source with declared types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnContractViolation {
    #[default]
    Fail,
    Quarantine,
}

/// `schema_compatibility`: the changes of a model's columns the schema registry accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaCompatibility {
    #[default]
    Backward,
    Forward,
    Full,
    None,
}

impl SchemaCompatibility {
    pub fn parse(text: &str) -> Option<SchemaCompatibility> {
        Some(match text {
            "backward" => SchemaCompatibility::Backward,
            "forward" => SchemaCompatibility::Forward,
            "full" => SchemaCompatibility::Full,
            "none" => SchemaCompatibility::None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SchemaCompatibility::Backward => "backward",
            SchemaCompatibility::Forward => "forward",
            SchemaCompatibility::Full => "full",
            SchemaCompatibility::None => "none",
        }
    }
}

/// `anomaly_severity`: whether an anomalous row count only warns or refuses the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalySeverity {
    #[default]
    Warn,
    Error,
}

/// A microbatch model's batch length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchSize {
    Hour,
    Day,
    Month,
}

impl BatchSize {
    pub fn parse(text: &str) -> Option<BatchSize> {
        match text {
            "hour" => Some(BatchSize::Hour),
            "day" => Some(BatchSize::Day),
            "month" => Some(BatchSize::Month),
            _ => None,
        }
    }

    /// The start of the batch holding `at`.
    pub fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let date = at.date_naive();
        let start = match self {
            BatchSize::Hour => date.and_hms_opt(at.hour(), 0, 0),
            BatchSize::Day => date.and_hms_opt(0, 0, 0),
            BatchSize::Month => date.with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)),
        };
        start.map_or(at, |s| Utc.from_utc_datetime(&s))
    }

    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            BatchSize::Hour => start + TimeDelta::hours(1),
            BatchSize::Day => start + TimeDelta::days(1),
            BatchSize::Month => start.checked_add_months(Months::new(1)).unwrap_or(start),
        }
    }

    pub fn back(self, start: DateTime<Utc>, batches: u32) -> DateTime<Utc> {
        match self {
            BatchSize::Hour => start - TimeDelta::hours(batches.into()),
            BatchSize::Day => start - TimeDelta::days(batches.into()),
            BatchSize::Month => start.checked_sub_months(Months::new(batches)).unwrap_or(start),
        }
    }

    /// About how many hours one batch covers (a month as 28 days), for bounding batch counts.
    pub fn hours(self) -> i64 {
        match self {
            BatchSize::Hour => 1,
            BatchSize::Day => 24,
            BatchSize::Month => 24 * 28,
        }
    }
}

/// `incremental_strategy='microbatch'` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicrobatchSettings {
    pub event_time: String,
    /// The first time covered, UTC.
    #[serde(with = "utc_time")]
    pub begin: DateTime<Utc>,
    pub batch_size: BatchSize,
    /// Earlier batches a later run reprocesses (default 1).
    pub lookback: u32,
    /// How late an event may arrive and still update its slice (seconds).
    #[serde(default, with = "seconds", skip_serializing_if = "Option::is_none")]
    pub allowed_lateness: Option<TimeDelta>,
}

/// A model's or seed's config, typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSettings {
    /// The incremental strategy in effect: as configured, else `merge` with a `unique_key`, else `append`.
    pub incremental_strategy: Option<IncrementalStrategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique_key: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    pub on_schema_change: OnSchemaChange,
    /// `merge_update_columns`; empty: every column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge_update_columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge_exclude_columns: Vec<String>,
    /// `incremental_predicates`: SQL conditions on `target`/`source` a merge adds (the user's SQL, kept as written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incremental_predicates: Vec<String>,
    /// The model's `event_time` column (microbatch models and their upstreams declare it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microbatch: Option<MicrobatchSettings>,
    pub contract_enforced: bool,
    pub parquet_compression: ParquetCompression,
    /// `parquet_dictionary_page_size` in bytes (default 16 KiB).
    pub parquet_dictionary_page_size: u64,
    pub anomaly_severity: AnomalySeverity,
    pub schema_compatibility: SchemaCompatibility,
    pub on_contract_violation: OnContractViolation,
    /// A bronze model's `settle_interval` (the build's `--settle` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "std_seconds")]
    pub settle_interval: Option<std::time::Duration>,
    /// `expect_every`: how often new rows are expected (`pipe freshness`), seconds.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "seconds")]
    pub expect_every: Option<TimeDelta>,
    /// The model's `version` config, as text (the schema registry keys versions by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// dbt's `full_refresh` config: `false` keeps the model's table through `--full-refresh` (a large incremental
    /// table, raw data), `true` rebuilds it on every run; unset, `--full-refresh` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_refresh: Option<bool>,
    /// dbt-duckdb's `external` materialization: where and how the model's files are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSettings>,
    /// A snapshot's strategy, hard-delete handling and column names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSettings>,
}

/// The files an `external` model is written as (dbt-duckdb's `location`, `format`, `delimiter`, `partition_by`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalSettings {
    /// A file, or with `partition_by` a folder of Hive-style partitions; relative to the project root unless
    /// absolute. Default: `<external_root>/<model>.<format>`.
    pub location: String,
    pub format: ExternalFormat,
    /// CSV's field delimiter.
    pub delimiter: char,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalFormat {
    Parquet,
    Csv,
    Json,
}

impl ExternalFormat {
    pub fn parse(text: &str) -> Option<ExternalFormat> {
        match text.to_ascii_lowercase().as_str() {
            "parquet" => Some(ExternalFormat::Parquet),
            "csv" => Some(ExternalFormat::Csv),
            "json" | "ndjson" => Some(ExternalFormat::Json),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExternalFormat::Parquet => "parquet",
            ExternalFormat::Csv => "csv",
            ExternalFormat::Json => "json",
        }
    }
}

/// The `external` settings of model `name`: `format` (else the location's extension, else Parquet), `location`
/// (else under `external_root`), `delimiter` and `partition_by`, each also read from dbt-duckdb's `options`.
fn external(
    name: &str,
    config: &ConfigMap,
    partition_by: &[String],
    problem: &mut impl FnMut(&'static str, String, &str),
) -> ExternalSettings {
    let options = config.get("options").and_then(Value::as_object);
    let text = |key: &str| {
        config.str_value(key).or_else(|| options.and_then(|o| o.get(key)).and_then(Value::as_str)).map(str::to_string)
    };
    let location = text("location");
    let from_extension =
        location.as_deref().and_then(|l| l.rsplit_once('.')).and_then(|(_, ext)| ExternalFormat::parse(ext));
    let format = match text("format") {
        Some(written) => ExternalFormat::parse(&written).unwrap_or_else(|| {
            problem(
                "format",
                format!("`format: {written}` of external model `{name}` is not `parquet`, `csv` or `json`"),
                "write `format: parquet` (the default), `csv` or `json`",
            );
            ExternalFormat::Parquet
        }),
        None => from_extension.unwrap_or(ExternalFormat::Parquet),
    };
    let root = text("external_root").unwrap_or_else(|| ".".to_string());
    let location = location.unwrap_or_else(|| format!("{}/{name}.{}", root.trim_end_matches('/'), format.extension()));
    let delimiter = match text("delimiter").or_else(|| text("delim")).or_else(|| text("sep")) {
        None => ',',
        Some(d) if d.len() == 1 && d.is_ascii() => d.chars().next().unwrap_or(','),
        Some(d) if d == "\\t" => '\t',
        Some(d) => {
            problem(
                "delimiter",
                format!("`delimiter: {d:?}` of external model `{name}` is not one ASCII character"),
                "write it like `delimiter: '|'`",
            );
            ','
        }
    };
    let partition_by = match options.and_then(|o| o.get("partition_by")) {
        Some(Value::String(columns)) => {
            columns.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
        }
        Some(Value::Array(columns)) => columns.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => partition_by.to_vec(),
    };
    ExternalSettings { location, format, delimiter, partition_by }
}

/// A source table's reading options, typed (from the keys of its YAML entry pipe reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSettings {
    /// A CSV source's first line is a header (default true).
    pub header: bool,
    /// A CSV source's field delimiter (default `,`), one ASCII character.
    pub delimiter: char,
    /// The source's event-time column (backfills count a slice's input rows with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
}

impl Default for SourceSettings {
    fn default() -> SourceSettings {
        SourceSettings { header: true, delimiter: ',', event_time: None }
    }
}

impl SourceSettings {
    /// Parses the options of the source table `name` (`source.table`).
    pub fn parse(
        name: &str,
        options: &std::collections::BTreeMap<String, Value>,
    ) -> (SourceSettings, Vec<SettingProblem>) {
        let mut problems = Vec::new();
        let mut settings = SourceSettings::default();
        match options.get("header") {
            None => {}
            Some(Value::Bool(header)) => settings.header = *header,
            Some(other) => problems.push(SettingProblem {
                key: "header",
                message: format!("`header: {other}` of source `{name}` is not true or false"),
                help: "write `header: false` for a CSV file without a header line".into(),
            }),
        }
        match options.get("delimiter") {
            None => {}
            Some(Value::String(text)) if text.len() == 1 && text.is_ascii() => {
                settings.delimiter = text.chars().next().unwrap_or(',');
            }
            Some(other) => problems.push(SettingProblem {
                key: "delimiter",
                message: format!("`delimiter: {other}` of source `{name}` is not one ASCII character"),
                help: "write it like `delimiter: ';'` or `delimiter: \"\\t\"`".into(),
            }),
        }
        match options.get("event_time") {
            None => {}
            Some(Value::String(column)) => settings.event_time = Some(column.clone()),
            Some(other) => problems.push(SettingProblem {
                key: "event_time",
                message: format!("`event_time: {other}` of source `{name}` is not a column name"),
                help: "write it like `event_time: ordered_at`".into(),
            }),
        }
        (settings, problems)
    }

    /// The delimiter as the byte the CSV reader takes.
    pub fn delimiter_byte(&self) -> u8 {
        u8::try_from(self.delimiter).unwrap_or(b',')
    }
}

/// A config value that does not parse: the message names the key, the value and the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    pub key: &'static str,
    pub message: String,
    pub help: String,
}

/// Config keys pipe or dbt give a meaning to on a model or seed. Any other key is kept (dbt keeps arbitrary keys,
/// for `meta` and adapters); one that is a near miss of a known key is reported as a likely typo.
pub const KNOWN_MODEL_KEYS: &[&str] = &[
    "materialized",
    "layer",
    "schema",
    "alias",
    "database",
    "tags",
    "enabled",
    "meta",
    "docs",
    "persist_docs",
    "grants",
    "full_refresh",
    "pre-hook",
    "post-hook",
    "pre_hook",
    "post_hook",
    "contract",
    "constraints",
    "incremental_strategy",
    "unique_key",
    "partition_by",
    "on_schema_change",
    "merge_update_columns",
    "merge_exclude_columns",
    "incremental_predicates",
    "event_time",
    "begin",
    "batch_size",
    "lookback",
    "allowed_lateness",
    "parquet_compression",
    "parquet_dictionary_page_size",
    "anomaly_severity",
    "schema_compatibility",
    "on_contract_violation",
    "settle_interval",
    "expect_every",
    "version",
    "group",
    "access",
    "sql_header",
    "quote_columns",
    "column_types",
    "delimiter",
    "concurrent_batches",
    "on_configuration_change",
    "location",
    "format",
    "file_format",
    "packages",
    "severity",
    "store_failures",
    "where",
    "limit",
    "warn_if",
    "error_if",
    "cluster_by",
    "unlogged",
    "indexes",
    "quoting",
    "latest_version",
    "options",
    "external_root",
    "strategy",
    "updated_at",
    "check_cols",
    "hard_deletes",
    "invalidate_hard_deletes",
    "dbt_valid_to_current",
    "snapshot_meta_column_names",
    "target_schema",
    "target_database",
];

/// Keys of `config` that look like a misspelt known key: `(key, the known key it is close to)`.
pub fn likely_typos(config: &ConfigMap) -> Vec<(String, &'static str)> {
    config
        .keys()
        .filter(|key| !KNOWN_MODEL_KEYS.contains(&key.as_str()))
        .filter_map(|key| {
            let close = crate::suggest::did_you_mean(key, KNOWN_MODEL_KEYS.iter().copied())?;
            Some((key.clone(), close))
        })
        .collect()
}

/// The default `parquet_dictionary_page_size`: a column with few distinct values still gets its dictionary, one
/// with many falls back to plain encoding after 16 KiB (about 15% less build time on the 10M-event benchmark).
pub const DEFAULT_DICTIONARY_PAGE_SIZE: u64 = 16 * 1024;

impl ModelSettings {
    /// Parses `config` of the model or seed `name`. Every problem is returned; the settings hold defaults where a
    /// value did not parse (the compile fails on the problems, so they never reach a build).
    pub fn parse(name: &str, config: &ConfigMap) -> (ModelSettings, Vec<SettingProblem>) {
        let mut problems = Vec::new();
        let mut problem = |key: &'static str, message: String, help: &str| {
            problems.push(SettingProblem { key, message, help: help.to_string() });
        };
        let mut columns = |key: &'static str| match columns_of(config.get(key), key != "incremental_predicates") {
            Ok(columns) => columns,
            Err(found) => {
                problem(
                    key,
                    format!("`{key}` of model `{name}` is {found}, not a column name or a list of them"),
                    &format!("write it like `{key}='id'` or `{key}=['a', 'b']`"),
                );
                Vec::new()
            }
        };
        let unique_key = columns("unique_key");
        let partition_by = columns("partition_by");
        let merge_update_columns = columns("merge_update_columns");
        let merge_exclude_columns = columns("merge_exclude_columns");
        let incremental_predicates = columns("incremental_predicates");
        let materialized = config.str_value("materialized");
        let incremental_strategy = match config.str_value("incremental_strategy") {
            Some(text) => match IncrementalStrategy::parse(text) {
                Some(strategy) => Some(strategy),
                None => {
                    problem(
                        "incremental_strategy",
                        format!("unknown incremental strategy `{text}` on model `{name}`"),
                        "use one of `append`, `merge`, `delete+insert`, `insert_overwrite`, `microbatch`",
                    );
                    None
                }
            },
            None if materialized == Some("incremental") => {
                Some(if unique_key.is_empty() { IncrementalStrategy::Append } else { IncrementalStrategy::Merge })
            }
            None => None,
        };
        if materialized == Some("incremental") {
            match incremental_strategy {
                Some(strategy @ (IncrementalStrategy::Merge | IncrementalStrategy::DeleteInsert))
                    if unique_key.is_empty() =>
                {
                    problem(
                        "unique_key",
                        format!("incremental strategy `{}` on model `{name}` needs `unique_key`", strategy.as_str()),
                        "add `unique_key='id'` (or a list of columns) to its config",
                    );
                }
                Some(IncrementalStrategy::InsertOverwrite) if partition_by.is_empty() => problem(
                    "partition_by",
                    format!("incremental strategy `insert_overwrite` on model `{name}` needs `partition_by`"),
                    "add `partition_by='day'` (the partitions a batch replaces) to its config",
                ),
                _ => {}
            }
        }
        let mut choice = |key: &'static str, allowed: &str, help: &str| -> Option<String> {
            let text = config.str_value(key)?;
            if allowed.split(',').any(|a| a == text) {
                return Some(text.to_string());
            }
            let verb = if key == "on_schema_change" { "unsupported" } else { "unknown" };
            problem(key, format!("{verb} `{key}: {text}` on model `{name}`"), help);
            None
        };
        let on_schema_change = choice(
            "on_schema_change",
            "ignore,fail,append_new_columns,sync_all_columns",
            "use one of `ignore`, `fail`, `append_new_columns`, `sync_all_columns`",
        )
        .and_then(|t| OnSchemaChange::parse(&t))
        .unwrap_or_default();
        let parquet_compression =
            choice("parquet_compression", "lz4,snappy,zstd,none", "use one of `lz4`, `snappy`, `zstd`, `none`")
                .and_then(|t| ParquetCompression::parse(&t))
                .unwrap_or_default();
        let on_contract_violation =
            match choice("on_contract_violation", "fail,quarantine", "use `fail` (the default) or `quarantine`") {
                Some(t) if t == "quarantine" => OnContractViolation::Quarantine,
                _ => OnContractViolation::Fail,
            };
        let anomaly_severity =
            match choice("anomaly_severity", "warn,error", "use `warn` (the default) or `error`").as_deref() {
                Some("error") => AnomalySeverity::Error,
                _ => AnomalySeverity::Warn,
            };
        let schema_compatibility = choice(
            "schema_compatibility",
            "backward,forward,full,none",
            "use one of `backward` (the default), `forward`, `full`, `none`",
        )
        .and_then(|t| SchemaCompatibility::parse(&t))
        .unwrap_or_default();
        let parquet_dictionary_page_size = match config.get("parquet_dictionary_page_size") {
            None => DEFAULT_DICTIONARY_PAGE_SIZE,
            Some(value) => match value.as_u64().filter(|n| *n > 0) {
                Some(bytes) => bytes,
                None => {
                    problem(
                        "parquet_dictionary_page_size",
                        format!("`parquet_dictionary_page_size: {value}` of model `{name}` is not a size in bytes"),
                        "write a whole number of bytes, e.g. `16384`",
                    );
                    DEFAULT_DICTIONARY_PAGE_SIZE
                }
            },
        };
        let settle_interval =
            config.str_value("settle_interval").and_then(|text| match humantime::parse_duration(text) {
                Ok(duration) => Some(duration),
                Err(e) => {
                    problem(
                        "settle_interval",
                        format!("`settle_interval` of `{name}` is not a duration such as `5s`: {e}"),
                        "write it like `5s`, `2m` or `1h`",
                    );
                    None
                }
            });
        let expect_every = config.str_value("expect_every").and_then(|text| match super::parse_duration(text) {
            Some(every) => Some(every),
            None => {
                problem(
                    "expect_every",
                    format!("`expect_every: {text}` of model `{name}` is not a duration"),
                    "write it like `1 hour` or `2 days`",
                );
                None
            }
        });
        let contract_enforced =
            config.get("contract").and_then(|c| c.get("enforced")).and_then(Value::as_bool).unwrap_or(false);
        let version = config.get("version").map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        let event_time = config.str_value("event_time").map(str::to_string);
        let full_refresh = match config.get("full_refresh") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(value)) => Some(*value),
            Some(other) => {
                problem(
                    "full_refresh",
                    format!("`full_refresh: {other}` of model `{name}` is not true or false"),
                    "write `full_refresh: false` to keep the table through `--full-refresh`",
                );
                None
            }
        };
        let external = (materialized == Some("external")).then(|| external(name, config, &partition_by, &mut problem));
        let microbatch = match incremental_strategy {
            Some(IncrementalStrategy::Microbatch) => microbatch(name, config, &mut problem),
            _ => None,
        };
        let snapshot =
            (materialized == Some("snapshot")).then(|| snapshot::snapshot(name, config, &unique_key, &mut problem));
        let settings = ModelSettings {
            incremental_strategy,
            unique_key,
            partition_by,
            on_schema_change,
            merge_update_columns,
            merge_exclude_columns,
            incremental_predicates,
            event_time,
            microbatch,
            contract_enforced,
            parquet_compression,
            parquet_dictionary_page_size,
            anomaly_severity,
            schema_compatibility,
            on_contract_violation,
            settle_interval,
            expect_every,
            version,
            full_refresh,
            external,
            snapshot: snapshot.flatten(),
        };
        (settings, problems)
    }
}

/// The microbatch settings, or `None` with a problem for each missing or unparsable key.
fn microbatch(
    name: &str,
    config: &ConfigMap,
    problem: &mut impl FnMut(&'static str, String, &str),
) -> Option<MicrobatchSettings> {
    let mut missing = false;
    for (key, example) in [("event_time", "event_time='ordered_at'"), ("begin", "begin='2026-01-01'")] {
        if config.str_value(key).is_none() {
            problem(
                key,
                format!("microbatch model `{name}` has no `{key}`"),
                &format!("add `{example}` to its config"),
            );
            missing = true;
        }
    }
    let begin = config.str_value("begin").and_then(|begin| match super::parse_utc_time(begin) {
        Ok(at) => Some(at),
        Err(_) => {
            problem(
                "begin",
                format!("`begin: {begin}` of microbatch model `{name}` is not a time"),
                "write it like `2026-01-01` or `2026-01-01 10:00:00` (UTC)",
            );
            None
        }
    });
    let allowed_lateness = match config.str_value("allowed_lateness") {
        None => None,
        Some(text) => match super::parse_duration(text) {
            Some(lateness) => Some(lateness),
            None => {
                problem(
                    "allowed_lateness",
                    format!("`allowed_lateness: {text}` of microbatch model `{name}` is not a duration"),
                    "write it like `2 hours` or `1 day`",
                );
                missing = true;
                None
            }
        },
    };
    let batch_size = config.str_value("batch_size").and_then(BatchSize::parse);
    if batch_size.is_none() {
        problem(
            "batch_size",
            format!("microbatch model `{name}` needs `batch_size` `hour`, `day` or `month`"),
            "add `batch_size='day'` to its config",
        );
    }
    let lookback = match config.get("lookback") {
        None => 1,
        Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => n,
            None => {
                problem(
                    "lookback",
                    format!("`lookback: {value}` of microbatch model `{name}` is not a number of batches"),
                    "write a whole number, e.g. `lookback=1`",
                );
                missing = true;
                1
            }
        },
    };
    if missing {
        return None;
    }
    Some(MicrobatchSettings {
        event_time: config.str_value("event_time")?.to_string(),
        begin: begin?,
        batch_size: batch_size?,
        lookback,
        allowed_lateness,
    })
}

/// A config value naming columns: one name (`split`: or several separated by commas, `'a, b'`) or a list of them.
/// `Err` describes what was there instead.
fn columns_of(value: Option<&Value>, split: bool) -> Result<Vec<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) if split => {
            Ok(text.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect())
        }
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or_else(|| format!("a list holding {item}")))
            .collect(),
        Some(other) => Err(other.to_string()),
    }
}

/// `DateTime<Utc>` as RFC 3339 text.
mod utc_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }
}

/// An optional `TimeDelta` as whole seconds.
mod seconds {
    use chrono::TimeDelta;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(delta: &Option<TimeDelta>, serializer: S) -> Result<S::Ok, S::Error> {
        match delta {
            Some(delta) => serializer.serialize_i64(delta.num_seconds()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<TimeDelta>, D::Error> {
        Ok(Option::<i64>::deserialize(deserializer)?.map(TimeDelta::seconds))
    }
}

/// An optional `std::time::Duration` as seconds (fractional).
mod std_seconds {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Option<std::time::Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_f64(duration.as_secs_f64()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<std::time::Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.map(std::time::Duration::from_secs_f64))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(config: Value) -> (ModelSettings, Vec<SettingProblem>) {
        ModelSettings::parse("m", config.as_object().unwrap())
    }

    #[test]
    fn defaults_follow_dbt() {
        let (settings, problems) = parse(json!({"materialized": "incremental", "unique_key": "id"}));
        assert!(problems.is_empty());
        assert_eq!(settings.incremental_strategy, Some(IncrementalStrategy::Merge));
        assert_eq!(settings.unique_key, ["id"]);
        let (settings, _) = parse(json!({"materialized": "incremental"}));
        assert_eq!(settings.incremental_strategy, Some(IncrementalStrategy::Append));
        assert_eq!(parse(json!({})).0.incremental_strategy, None);
        assert_eq!(parse(json!({})).0.parquet_dictionary_page_size, DEFAULT_DICTIONARY_PAGE_SIZE);
        let (settings, _) = parse(json!({"unique_key": "a, b", "incremental_predicates": "target.d = coalesce(x, 1)"}));
        assert_eq!(settings.unique_key, ["a", "b"]);
        assert_eq!(settings.incremental_predicates, ["target.d = coalesce(x, 1)"]);
    }

    #[test]
    fn values_that_do_not_parse_are_problems_not_defaults() {
        for (config, key) in [
            (json!({"incremental_strategy": "upsert"}), "incremental_strategy"),
            (json!({"parquet_compression": "brotli"}), "parquet_compression"),
            (json!({"anomaly_severity": "loud"}), "anomaly_severity"),
            (json!({"schema_compatibility": "sideways"}), "schema_compatibility"),
            (json!({"settle_interval": "soonish"}), "settle_interval"),
            (json!({"unique_key": 3}), "unique_key"),
            (json!({"expect_every": "often"}), "expect_every"),
            (json!({"parquet_dictionary_page_size": "big"}), "parquet_dictionary_page_size"),
        ] {
            let problems = parse(config.clone()).1;
            assert_eq!(problems.len(), 1, "{config}: {problems:?}");
            assert_eq!(problems[0].key, key);
            assert!(problems[0].message.contains('m'), "{problems:?}");
        }
    }

    #[test]
    fn near_misses_of_known_keys_are_typos_other_keys_are_kept() {
        let config = json!({"materialised": "table", "unqiue_key": "id", "my_team_owner": "data", "tags": ["a"]});
        let typos = likely_typos(config.as_object().unwrap());
        assert_eq!(typos, [("materialised".to_string(), "materialized"), ("unqiue_key".to_string(), "unique_key")]);
    }

    #[test]
    fn microbatch_settings_parse_and_round_trip() {
        let config = json!({"materialized": "incremental", "incremental_strategy": "microbatch", "event_time": "ts",
            "begin": "2026-01-01", "batch_size": "day", "lookback": 2, "allowed_lateness": "2 hours"});
        let (settings, problems) = parse(config);
        assert!(problems.is_empty(), "{problems:?}");
        let microbatch = settings.microbatch.clone().unwrap();
        assert_eq!(microbatch.batch_size, BatchSize::Day);
        assert_eq!(microbatch.lookback, 2);
        assert_eq!(microbatch.allowed_lateness, Some(TimeDelta::hours(2)));
        let text = serde_json::to_string(&settings).unwrap();
        assert_eq!(serde_json::from_str::<ModelSettings>(&text).unwrap(), settings);

        let (settings, problems) =
            parse(json!({"materialized": "incremental", "incremental_strategy": "microbatch", "begin": "soon"}));
        assert!(settings.microbatch.is_none());
        let keys: Vec<&str> = problems.iter().map(|p| p.key).collect();
        assert_eq!(keys, ["event_time", "begin", "batch_size"]);
    }
}
