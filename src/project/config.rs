//! `pipe.yml` (or `dbt_project.yml`) and the config values every node carries.
//!
//! Config precedence, lowest first: the `models:` folder tree of the project file, the model's entry in property
//! YAML, then the model's in-file `config(...)` call (applied by the template stage). `tags` accumulate across
//! levels; every other key is replaced by the more specific level.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A model's config: an open map, as in dbt, with typed accessors for the keys pipe itself reads.
pub type ConfigMap = Map<String, Value>;

/// Medallion layer of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Bronze,
    Silver,
    Gold,
}

impl Layer {
    pub fn parse(text: &str) -> Option<Layer> {
        match text.to_ascii_lowercase().as_str() {
            "bronze" => Some(Layer::Bronze),
            "silver" => Some(Layer::Silver),
            "gold" => Some(Layer::Gold),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Gold => "gold",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How medallion layer violations are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerRules {
    #[default]
    Error,
    Warn,
    Off,
}

/// The project file, with defaults applied.
#[derive(Debug, Clone)]
pub struct ProjectConfig {
    pub name: String,
    /// Which file it was read from: `pipe.yml` or `dbt_project.yml`.
    pub file_name: &'static str,
    pub model_paths: Vec<String>,
    pub macro_paths: Vec<String>,
    pub seed_paths: Vec<String>,
    pub test_paths: Vec<String>,
    pub snapshot_paths: Vec<String>,
    pub target_path: String,
    pub warehouse: String,
    pub vars: BTreeMap<String, Value>,
    pub layer_rules: LayerRules,
    /// The `models:` config tree, as written.
    pub models_tree: Value,
    /// The `seeds:` config tree, as written.
    pub seeds_tree: Value,
    /// The `snapshots:` config tree, as written.
    pub snapshots_tree: Value,
    /// What `pipe clean` removes (`clean-targets`; default: the target folder).
    pub clean_targets: Vec<String>,
    /// Where installed packages are (`packages-install-path`, `dbt_packages` by default).
    pub packages_install_path: String,
    /// `dispatch:`: for a macro namespace, the packages `adapter.dispatch` searches, in order.
    pub dispatch: Vec<DispatchRule>,
    /// The `profiles.yml` profile a dbt project builds with (`profile:`; the project's name when unset).
    pub profile: Option<String>,
    /// The SQL semantics models are written in: `sql_dialect:` (in a dbt project, under `vars:`); unset, DuckDB's
    /// for a dbt project and DataFusion's for a pipe project (`ProjectConfig::dialect`).
    pub sql_dialect: Option<SqlDialect>,
    /// An `sql_dialect` value that is not a dialect, to report.
    pub bad_sql_dialect: Option<String>,
    /// `engine:` and `scheduler:` as written: where models run (`Engine::choose` reads them).
    pub engine: EngineKeys,
}

/// `engine:` (`local` or `ballista`) and `scheduler:` (`df://host:port`), as a project file or a profile target
/// writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineKeys {
    pub engine: Option<String>,
    pub scheduler: Option<String>,
}

/// Where a build runs its models' queries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// In this process (DataFusion).
    #[default]
    Local,
    /// On an Apache DataFusion Ballista cluster whose scheduler listens at `scheduler` (`host:port`).
    Ballista { scheduler: String },
}

impl Engine {
    /// The engine from the first place that names one: the command line's flags, the profile's target, the
    /// project file; `local` when none does. A `scheduler` alone means `ballista`.
    pub fn choose(places: &[(&str, &EngineKeys)]) -> Result<Engine, String> {
        for (place, keys) in places {
            let kind = match (&keys.engine, &keys.scheduler) {
                (None, None) => continue,
                (Some(kind), _) => kind.as_str(),
                (None, Some(_)) => "ballista",
            };
            return match kind {
                "local" => Ok(Engine::Local),
                "ballista" => match &keys.scheduler {
                    Some(address) => Ok(Engine::Ballista { scheduler: scheduler_address(address)? }),
                    None => Err(format!(
                        "{place} says `engine: ballista` without a `scheduler:` (`df://host:port` of a `pipe ballista scheduler`)"
                    )),
                },
                other => Err(format!("{place} says `engine: {other}`; the engines are `local` and `ballista`")),
            };
        }
        Ok(Engine::Local)
    }

    /// The scheduler's `host:port`, when models run on a cluster.
    pub fn scheduler(&self) -> Option<&str> {
        match self {
            Engine::Local => None,
            Engine::Ballista { scheduler } => Some(scheduler),
        }
    }
}

/// `df://host:port` (Ballista's form) or `host:port`, as `host:port`.
fn scheduler_address(text: &str) -> Result<String, String> {
    let address = text.strip_prefix("df://").unwrap_or(text).trim_end_matches('/');
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(address.to_string()),
        _ => Err(format!("`scheduler: {text}` is not a scheduler address (`df://host:port`)")),
    }
}

/// Whose SQL semantics a project's models are written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlDialect {
    /// DataFusion's own: integer division, float literals, ...
    #[default]
    DataFusion,
    /// DuckDB's (what dbt-duckdb projects are written for), on DataFusion: `sql::duckdb`.
    DuckDb,
}

impl SqlDialect {
    pub fn parse(text: &str) -> Option<SqlDialect> {
        match text.trim().to_ascii_lowercase().as_str() {
            "duckdb" => Some(SqlDialect::DuckDb),
            "datafusion" => Some(SqlDialect::DataFusion),
            _ => None,
        }
    }

    pub fn is_duckdb(self) -> bool {
        self == SqlDialect::DuckDb
    }
}

/// One entry of `dispatch:` in the project file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DispatchRule {
    pub macro_namespace: String,
    pub search_order: Vec<String>,
}

/// `pipe.yml` as written. Keys shared with `dbt_project.yml` use dbt's spelling, so dbt projects load unmodified.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct RawProjectConfig {
    pub name: String,
    #[serde(default)]
    pub model_paths: Option<Vec<String>>,
    #[serde(default)]
    pub macro_paths: Option<Vec<String>>,
    #[serde(default)]
    pub seed_paths: Option<Vec<String>>,
    #[serde(default)]
    pub test_paths: Option<Vec<String>>,
    #[serde(default)]
    pub snapshot_paths: Option<Vec<String>>,
    #[serde(default)]
    pub target_path: Option<String>,
    #[serde(default)]
    pub warehouse: Option<String>,
    #[serde(default)]
    pub vars: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub layer_rules: Option<LayerRules>,
    #[serde(default)]
    pub models: Option<Value>,
    #[serde(default)]
    pub seeds: Option<Value>,
    #[serde(default)]
    pub snapshots: Option<Value>,
    #[serde(default, rename = "clean-targets")]
    pub clean_targets: Option<Vec<String>>,
    #[serde(default)]
    pub packages_install_path: Option<String>,
    #[serde(default)]
    pub dispatch: Option<Vec<DispatchRule>>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default, rename = "sql_dialect")]
    pub sql_dialect: Option<String>,
    #[serde(default)]
    pub engine: Option<String>,
    #[serde(default)]
    pub scheduler: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// The project keys pipe reads (as written in the file).
pub(crate) const PROJECT_KEYS: &[&str] = &[
    "name",
    "model-paths",
    "macro-paths",
    "seed-paths",
    "test-paths",
    "snapshot-paths",
    "target-path",
    "warehouse",
    "vars",
    "layer-rules",
    "models",
    "seeds",
    "packages-install-path",
    "dispatch",
    "profile",
    "sql_dialect",
    "engine",
    "scheduler",
];

/// dbt project keys pipe accepts and does not use; they are not reported as unknown.
pub(crate) const DBT_ONLY_PROJECT_KEYS: &[&str] = &[
    "version",
    "config-version",
    "analysis-paths",
    "docs-paths",
    "asset-paths",
    "clean-targets",
    "require-dbt-version",
    "snapshots",
    "tests",
    "data_tests",
    "sources",
    "on-run-start",
    "on-run-end",
    "quoting",
    "flags",
    "query-comment",
    "log-path",
    "packages",
];

impl ProjectConfig {
    /// The `profiles.yml` profile the project builds with: `profile:`, else the project's name.
    pub fn profile_name(&self) -> &str {
        self.profile.as_deref().unwrap_or(&self.name)
    }

    pub(crate) fn from_raw(raw: RawProjectConfig, file_name: &'static str) -> ProjectConfig {
        let or = |v: Option<Vec<String>>, d: &str| v.unwrap_or_else(|| vec![d.to_string()]);
        // `sql_dialect:` in `pipe.yml`; under `vars:` in `dbt_project.yml`, where top-level keys are dbt's.
        let from_vars =
            raw.vars.as_ref().and_then(|v| v.get("sql_dialect")).and_then(Value::as_str).map(str::to_string);
        let dialect = raw.sql_dialect.clone().or(from_vars);
        let target_path = raw.target_path.clone().unwrap_or_else(|| "target".into());
        ProjectConfig {
            name: raw.name,
            file_name,
            model_paths: or(raw.model_paths, "models"),
            macro_paths: or(raw.macro_paths, "macros"),
            seed_paths: or(raw.seed_paths, "seeds"),
            test_paths: or(raw.test_paths, "tests"),
            snapshot_paths: or(raw.snapshot_paths, "snapshots"),
            target_path: target_path.clone(),
            warehouse: raw.warehouse.unwrap_or_else(|| "warehouse".into()),
            vars: raw.vars.unwrap_or_default(),
            layer_rules: raw.layer_rules.unwrap_or_default(),
            models_tree: raw.models.unwrap_or(Value::Null),
            seeds_tree: raw.seeds.unwrap_or(Value::Null),
            snapshots_tree: raw.snapshots.unwrap_or(Value::Null),
            clean_targets: raw.clean_targets.unwrap_or_else(|| vec![target_path.clone()]),
            packages_install_path: raw.packages_install_path.unwrap_or_else(|| "dbt_packages".into()),
            dispatch: raw.dispatch.unwrap_or_default(),
            profile: raw.profile,
            sql_dialect: dialect.as_deref().and_then(SqlDialect::parse),
            bad_sql_dialect: dialect.filter(|d| SqlDialect::parse(d).is_none()),
            engine: EngineKeys { engine: raw.engine, scheduler: raw.scheduler },
        }
    }

    /// The dialect in effect: as set, else DuckDB's for a dbt project (dbt-duckdb's), else DataFusion's.
    pub fn dialect(&self) -> SqlDialect {
        self.sql_dialect.unwrap_or(match self.file_name {
            "dbt_project.yml" => SqlDialect::DuckDb,
            _ => SqlDialect::DataFusion,
        })
    }

    /// Config from the folder tree for a node whose path, relative to its model path, has these folders.
    /// As in dbt, the tree may be keyed by the project name first; `+key` entries are configs at that level.
    pub fn tree_config(&self, tree: &Value, folders: &[&str]) -> ConfigMap {
        tree_config(tree, &self.name, folders)
    }
}

/// Config from a `models:` / `seeds:` tree for a node of project `project` whose path has these folders: the
/// tree's top-level `+` keys, then (when the tree is keyed by project) that project's level and its folders.
/// A package's nodes get their package's tree, then the root project's tree read with the package's name.
pub fn tree_config(tree: &Value, project: &str, folders: &[&str]) -> ConfigMap {
    let mut config = ConfigMap::new();
    let Some(mut level) = tree.as_object() else {
        return config;
    };
    if let Some(Value::Object(inner)) = level.get(project) {
        apply_level(&mut config, level);
        level = inner;
    }
    apply_level(&mut config, level);
    for folder in folders {
        match level.get(*folder) {
            Some(Value::Object(inner)) => {
                level = inner;
                apply_level(&mut config, level);
            }
            _ => break,
        }
    }
    config
}

/// dbt config keys that may be written without `+` in the folder tree.
const PLAIN_CONFIG_KEYS: &[&str] = &[
    "materialized",
    "tags",
    "layer",
    "schema",
    "enabled",
    "unique_key",
    "incremental_strategy",
    "partition_by",
    "on_schema_change",
    "contract",
    "meta",
    "docs",
    "persist_docs",
    "full_refresh",
    "alias",
];

fn apply_level(config: &mut ConfigMap, level: &Map<String, Value>) {
    for (key, value) in level {
        if let Some(name) = key.strip_prefix('+') {
            merge_config_key(config, name, value.clone());
        } else if PLAIN_CONFIG_KEYS.contains(&key.as_str()) && !value.is_object() {
            merge_config_key(config, key, value.clone());
        }
    }
}

/// Sets one config key with dbt's precedence: tags accumulate, everything else is replaced.
pub fn merge_config_key(config: &mut ConfigMap, key: &str, value: Value) {
    if key == "tags" {
        let mut tags: Vec<Value> = config.get("tags").map(tags_of).unwrap_or_default();
        for tag in tags_of(&value) {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        config.insert("tags".into(), Value::Array(tags));
    } else {
        config.insert(key.to_string(), value);
    }
}

pub fn merge_config(config: &mut ConfigMap, more: &ConfigMap) {
    for (key, value) in more {
        merge_config_key(config, key, value.clone());
    }
}

fn tags_of(value: &Value) -> Vec<Value> {
    match value {
        Value::String(_) => vec![value.clone()],
        Value::Array(items) => items.iter().filter(|v| v.is_string()).cloned().collect(),
        _ => Vec::new(),
    }
}

/// Materializations pipe knows. Chosen per model by `config(materialized=...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialization {
    View,
    Table,
    Ephemeral,
    Incremental,
    /// dbt-duckdb's `external`: files at a location (Parquet, CSV or JSON), read back as a table.
    External,
    /// A dbt snapshot: the history of a query's rows (slowly changing dimension, type 2), kept as a Delta table.
    Snapshot,
}

impl Materialization {
    pub fn parse(text: &str) -> Option<Materialization> {
        match text {
            "view" => Some(Materialization::View),
            "table" => Some(Materialization::Table),
            "ephemeral" => Some(Materialization::Ephemeral),
            "incremental" => Some(Materialization::Incremental),
            "external" => Some(Materialization::External),
            "snapshot" => Some(Materialization::Snapshot),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Materialization::View => "view",
            Materialization::Table => "table",
            Materialization::Ephemeral => "ephemeral",
            Materialization::Incremental => "incremental",
            Materialization::External => "external",
            Materialization::Snapshot => "snapshot",
        }
    }
}

/// Typed reads of the config keys pipe acts on.
pub trait ConfigExt {
    fn str_value(&self, key: &str) -> Option<&str>;
    fn tags(&self) -> Vec<String>;
    fn enabled(&self) -> bool;
}

impl ConfigExt for ConfigMap {
    fn str_value(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .get("tags")
            .map(tags_of)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }

    fn enabled(&self) -> bool {
        self.get("enabled").and_then(Value::as_bool).unwrap_or(true)
    }
}

/// The values the `parquet_compression` config accepts (`lz4` is the default).
pub const PARQUET_COMPRESSIONS: &[&str] = &["lz4", "snappy", "zstd", "none"];

/// A UTC time written as `2026-11-26`, `2026-11-26 10:00:00`, `2026-11-26T10:00:00` or RFC 3339, as in the
/// `begin` config, `--event-time-start` and `--as-of`.
pub fn parse_utc_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
    let text = text.trim().trim_matches('\'');
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Utc.from_utc_datetime(&time));
        }
    }
    match NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)) {
        Some(midnight) => Ok(Utc.from_utc_datetime(&midnight)),
        None => Err(format!("`{text}` is not a time like `2026-01-01` or `2026-01-01 10:00:00` (UTC)")),
    }
}

/// `90 seconds`, `15 minutes`, `2 hours`, `1 day`, `1 week`.
pub fn parse_duration(text: &str) -> Option<chrono::TimeDelta> {
    let mut parts = text.split_whitespace();
    let (n, unit) = (parts.next()?.parse::<i64>().ok()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    match unit.trim_end_matches('s') {
        "second" => Some(chrono::TimeDelta::seconds(n)),
        "minute" => Some(chrono::TimeDelta::minutes(n)),
        "hour" => Some(chrono::TimeDelta::hours(n)),
        "day" => Some(chrono::TimeDelta::days(n)),
        "week" => Some(chrono::TimeDelta::weeks(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(tree: Value) -> ProjectConfig {
        let raw = RawProjectConfig {
            name: "shop".into(),
            model_paths: None,
            macro_paths: None,
            seed_paths: None,
            test_paths: None,
            snapshot_paths: None,
            target_path: None,
            warehouse: None,
            vars: None,
            layer_rules: None,
            models: Some(tree),
            seeds: None,
            snapshots: None,
            clean_targets: None,
            packages_install_path: None,
            dispatch: None,
            profile: None,
            sql_dialect: None,
            engine: None,
            scheduler: None,
            other: BTreeMap::new(),
        };
        ProjectConfig::from_raw(raw, "pipe.yml")
    }

    /// The first place naming an engine wins; `df://` is optional; a scheduler alone means Ballista; bad values
    /// say where they are.
    #[test]
    fn engine_choice() {
        use super::{Engine, EngineKeys};
        let keys = |engine: Option<&str>, scheduler: Option<&str>| EngineKeys {
            engine: engine.map(str::to_string),
            scheduler: scheduler.map(str::to_string),
        };
        let (none, local) = (keys(None, None), keys(Some("local"), None));
        let cluster = keys(Some("ballista"), Some("df://10.0.0.5:50050"));
        assert_eq!(Engine::choose(&[("flags", &none), ("pipe.yml", &none)]), Ok(Engine::Local));
        assert_eq!(
            Engine::choose(&[("flags", &none), ("pipe.yml", &cluster)]),
            Ok(Engine::Ballista { scheduler: "10.0.0.5:50050".into() })
        );
        assert_eq!(Engine::choose(&[("flags", &local), ("pipe.yml", &cluster)]), Ok(Engine::Local));
        assert_eq!(
            Engine::choose(&[("flags", &keys(None, Some("h:1")))]),
            Ok(Engine::Ballista { scheduler: "h:1".into() })
        );
        let no_scheduler = Engine::choose(&[("the profile", &keys(Some("ballista"), None))]).unwrap_err();
        assert!(
            no_scheduler.starts_with("the profile says `engine: ballista` without a `scheduler:`"),
            "{no_scheduler}"
        );
        let unknown = Engine::choose(&[("pipe.yml", &keys(Some("spark"), None))]).unwrap_err();
        assert!(unknown.contains("`engine: spark`"), "{unknown}");
        let bad = Engine::choose(&[("pipe.yml", &keys(Some("ballista"), Some("df://nowhere")))]).unwrap_err();
        assert!(bad.contains("not a scheduler address"), "{bad}");
    }

    #[test]
    fn folder_tree_precedence() {
        let project = config(json!({
            "shop": {
                "+materialized": "view",
                "+tags": ["all"],
                "silver": {"+materialized": "table", "+tags": "clean", "marts": {"materialized": "incremental"}},
            }
        }));
        let cases: &[(&[&str], Value)] = &[
            (&[], json!({"materialized": "view", "tags": ["all"]})),
            (&["bronze"], json!({"materialized": "view", "tags": ["all"]})),
            (&["silver"], json!({"materialized": "table", "tags": ["all", "clean"]})),
            (&["silver", "marts"], json!({"materialized": "incremental", "tags": ["all", "clean"]})),
        ];
        for (folders, expected) in cases {
            let got = project.tree_config(&project.models_tree, folders);
            assert_eq!(Value::Object(got), *expected, "folders {folders:?}");
        }
    }

    #[test]
    fn tree_without_project_key() {
        let project = config(json!({"+materialized": "table", "gold": {"+layer": "gold"}}));
        let got = project.tree_config(&project.models_tree, &["gold"]);
        assert_eq!(Value::Object(got), json!({"materialized": "table", "layer": "gold"}));
    }
}
