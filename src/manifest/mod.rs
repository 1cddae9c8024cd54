//! **API boundary.** `Manifest` is the contract between compiling and running: every node's compiled SQL (both
//! `is_incremental()` variants where the model has them), config, materialization, edges, columns and logic
//! checksum, written to `target/manifest.json` with a `manifest_version`.
//!
//! **Architecture invariant:** the manifest is a pure function of the project folder and vars: maps are sorted, and
//! nothing volatile (wall-clock time, absolute paths, run ids) is stored in it, so identical input gives a
//! byte-identical file. `run` needs nothing but the manifest and the warehouse.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::project::{ConfigMap, Layer, Materialization, SourceFormat};

/// Bumped whenever a field changes meaning or is removed.
pub const MANIFEST_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub project: ProjectInfo,
    /// Models and seeds by unique id.
    pub nodes: BTreeMap<String, Node>,
    pub sources: BTreeMap<String, SourceNode>,
    pub macros: BTreeMap<String, MacroNode>,
    /// Every dependency edge, `(upstream, downstream)`, sorted.
    pub edges: Vec<(String, String)>,
    /// Models, seeds and sources in a deterministic topological order.
    pub order: Vec<String>,
    /// Data tests by unique id (`test.<project>.<name>`).
    #[serde(default)]
    pub tests: BTreeMap<String, TestNode>,
    /// Models that did not compile (render, parse, plan, config), by unique id, with the first error: the build
    /// fails them and skips their descendants, and builds everything else.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compile_errors: BTreeMap<String, CompileError>,
}

/// What a failing test does to the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warn,
}

/// A data test: a query returning the rows that fail it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestNode {
    pub unique_id: String,
    pub name: String,
    /// `not_null`, `unique`, `accepted_values`, `relationships`, `expression_is_true`, a custom generic test's
    /// name, or `singular`.
    pub test: String,
    /// The model, seed or source the test is declared on (for a singular test: the one it reads, if only one).
    pub attached_node: Option<String>,
    pub column_name: Option<String>,
    pub severity: Severity,
    /// Failure-count conditions, as dbt writes them (`!=0`, `>10`, `>=5`), parsed at compile.
    pub warn_if: Threshold,
    pub error_if: Threshold,
    /// Write the failing rows to `pipe_audit.<test name>` in the warehouse.
    pub store_failures: bool,
    /// The query returning the failing rows.
    pub compiled_sql: String,
    /// dbt's `fail_calc`: the failure count as an aggregate over the test's rows (default: the number of rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_calc: Option<String>,
    pub depends_on: DependsOn,
    /// The file that declares the test.
    pub path: String,
    /// A test whose render asks the warehouse (`dbt_utils.equality` without `compare_columns` reads the model's
    /// columns): rendered again when it runs, as dbt renders tests at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_at_build: Option<TestTemplate>,
    /// A unit test (`test` is `unit`): what it runs instead of a query of failing rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitTest>,
}

/// A dbt unit test (`unit_tests:`): the model's SQL run on given rows in place of every relation it reads, its rows
/// compared with the expected ones. It runs before the model builds; a failure keeps the model from building.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitTest {
    /// The model's unique id.
    pub model: String,
    /// The SQL run: the model's compiled SQL, or its `is_incremental()` variant when the test overrides the macro.
    pub sql: String,
    /// Every relation the SQL reads, with the rows it reads there (none when the test gives none).
    pub inputs: Vec<UnitInput>,
    pub expect: UnitRows,
}

/// What a unit test's SQL reads under one relation's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitInput {
    pub relation: String,
    /// The relation's planned columns, which the given rows are typed by (a row lists only the columns it needs);
    /// empty when unknown (the rows' own values decide).
    pub columns: Vec<PlannedColumn>,
    pub rows: UnitRows,
}

/// Rows of a unit test, in the test's format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "format", content = "rows")]
pub enum UnitRows {
    /// A list of mappings, column to value.
    Dict(Vec<serde_json::Map<String, Value>>),
    /// CSV with a header (inline or from a fixture file).
    Csv(String),
    /// A query whose result is the rows.
    Sql(String),
}

/// What a test rendered at run time is rendered from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestTemplate {
    /// The Jinja call of the test's macro with its arguments.
    pub text: String,
    /// The relation the test is declared on, and its `where` config, applied to the rendered SQL.
    pub relation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// A failure-count condition as dbt writes it: `!=0`, `>10`, `>=5`, `=0`, `<3`, `<=2`.
/// Stored in the manifest as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    op: &'static str,
    count: u64,
}

impl Threshold {
    pub fn parse(text: &str) -> Option<Threshold> {
        let text = text.trim();
        let op = ["!=", ">=", "<=", "==", "=", ">", "<"].into_iter().find(|op| text.starts_with(op))?;
        let count = text[op.len()..].trim().parse().ok()?;
        Some(Threshold { op, count })
    }

    pub fn matches(&self, failures: u64) -> bool {
        match self.op {
            "!=" => failures != self.count,
            ">=" => failures >= self.count,
            "<=" => failures <= self.count,
            ">" => failures > self.count,
            "<" => failures < self.count,
            _ => failures == self.count,
        }
    }
}

impl Default for Threshold {
    /// dbt's default for both `warn_if` and `error_if`: any failing row.
    fn default() -> Threshold {
        Threshold { op: "!=", count: 0 }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.op, self.count)
    }
}

impl Serialize for Threshold {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Threshold, D::Error> {
        let text = String::deserialize(deserializer)?;
        Threshold::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a threshold")))
    }
}

/// Why a model did not compile: its first error's code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectInfo {
    pub name: String,
    /// Warehouse folder, relative to the project root unless absolute in `pipe.yml`.
    pub warehouse: String,
    pub target_path: String,
    /// The SQL semantics the models are planned and run with.
    #[serde(default)]
    pub sql_dialect: crate::project::SqlDialect,
    /// How to reach a warehouse in a bucket (the profile target's S3 settings; its credentials are not written).
    #[serde(default, skip_serializing_if = "crate::project::profiles::BucketSettings::is_unset")]
    pub bucket: crate::project::profiles::BucketSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Model,
    Seed,
    /// A dbt snapshot (`Materialization::Snapshot`): a model-like node whose table keeps its query's history.
    Snapshot,
}

impl NodeKind {
    /// dbt's name of the resource type: `model`, `seed`, `snapshot`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Model => "model",
            NodeKind::Seed => "seed",
            NodeKind::Snapshot => "snapshot",
        }
    }
}

/// A model or a seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub unique_id: String,
    pub name: String,
    pub resource_type: NodeKind,
    pub layer: Option<Layer>,
    /// Path of the `.sql` (or seed `.csv`) file, relative to the project root.
    pub path: String,
    pub schema: String,
    /// The name `ref()` renders to and the warehouse registers, e.g. `silver.orders`.
    pub relation: String,
    pub materialized: Materialization,
    pub tags: Vec<String>,
    pub description: Option<String>,
    /// The config as written (merged from folders, YAML and `config()`), for `meta`, docs and selection.
    pub config: ConfigMap,
    /// The same config parsed into types at compile: what the build reads.
    pub settings: crate::project::ModelSettings,
    pub raw_sql: String,
    /// SQL with refs resolved and ephemeral models inlined as CTEs (the full-refresh variant).
    pub compiled_sql: String,
    /// The `is_incremental()` variant, when the model calls it.
    pub compiled_sql_incremental: Option<String>,
    pub columns: BTreeMap<String, Column>,
    /// Output columns from static analysis; `None` with `--no-plan` or when an input could not be read.
    pub planned_columns: Option<Vec<PlannedColumn>>,
    pub depends_on: DependsOn,
    /// Tests declared on the model itself (not on a column), as written in YAML.
    pub tests: Vec<Value>,
    pub constraints: Vec<Value>,
    /// sha256 of the logic: raw SQL, effective config and the text of every macro the model uses.
    pub checksum: String,
    /// The model's render asks the warehouse (`execute`, `run_query`, the adapter's columns): its compiled SQL is
    /// what dbt's parse gives, and the build renders it again just before running it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub render_at_build: bool,
    /// Which version of a versioned model (dbt's `versions:`) this node is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<crate::project::VersionOf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DependsOn {
    /// Unique ids of upstream models, seeds and sources.
    pub nodes: Vec<String>,
    pub macros: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub description: Option<String>,
    pub data_type: Option<String>,
    pub tests: Vec<Value>,
    pub constraints: Vec<Value>,
}

/// One output column as static analysis planned it: name, Arrow type, nullability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedColumn {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

impl PlannedColumn {
    pub fn from_schema(schema: &Schema) -> Vec<PlannedColumn> {
        schema
            .fields()
            .iter()
            .map(|f| PlannedColumn {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect()
    }

    /// The Arrow schema of planned columns; a type name Arrow does not parse falls back to text.
    pub fn to_schema(columns: &[PlannedColumn]) -> Schema {
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.parse::<DataType>().unwrap_or(DataType::Utf8), c.nullable))
            .collect();
        Schema::new(fields)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceNode {
    pub unique_id: String,
    pub source_name: String,
    pub name: String,
    /// The name `source()` renders to: `<source>.<table>`.
    pub relation: String,
    pub format: Option<SourceFormat>,
    /// Path or glob of the raw files, relative to the project root.
    pub path: Option<String>,
    /// The other keys of the source table's YAML entry, as written.
    pub options: BTreeMap<String, Value>,
    /// The reading options among them, typed at compile: what the build reads.
    pub settings: crate::project::SourceSettings,
    /// A source table with no files that names a seed (by its `identifier` or name): the seed's unique id. Models
    /// read the seed's relation through `source()` and are built after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    pub description: Option<String>,
    pub columns: BTreeMap<String, Column>,
    /// Columns read from the files with declared types applied; `None` when the files could not be read.
    pub planned_columns: Option<Vec<PlannedColumn>>,
    pub freshness: Option<crate::project::FreshnessRule>,
    pub loaded_at_field: Option<String>,
    pub tests: Vec<Value>,
    /// The YAML file that declares it.
    pub declared_in: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MacroNode {
    pub unique_id: String,
    pub name: String,
    pub path: String,
    pub checksum: String,
}

/// Columns pipe adds to every row a bronze model ingests from files: the file, when it was loaded, and the batch
/// (the run) that loaded it.
pub fn ingest_fields() -> Vec<Field> {
    vec![
        Field::new("_pipe_source_file", DataType::Utf8, false),
        Field::new(
            "_pipe_loaded_at",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("_pipe_batch_id", DataType::Utf8, false),
    ]
}

/// The file source a bronze model ingests, file by file and exactly once: a bronze `incremental` model that
/// reads exactly one source with a file format (CSV, JSON, Parquet).
pub fn file_ingest_source<'a>(manifest: &'a Manifest, node: &Node) -> Option<&'a SourceNode> {
    if node.layer != Some(Layer::Bronze) || node.materialized != Materialization::Incremental {
        return None;
    }
    let [upstream] = node.depends_on.nodes.as_slice() else { return None };
    let source = manifest.sources.get(upstream)?;
    matches!(source.format, Some(SourceFormat::Csv | SourceFormat::Json | SourceFormat::Parquet)).then_some(source)
}

impl SourceNode {
    /// Declared column types, column name -> SQL type.
    pub fn declared_types(&self) -> BTreeMap<String, String> {
        self.columns.values().filter_map(|c| Some((c.name.clone(), c.data_type.clone()?))).collect()
    }
}

impl Manifest {
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        let mut text = serde_json::to_string_pretty(self).expect("manifest is plain data");
        text.push('\n');
        text
    }

    pub fn read(path: &Path) -> io::Result<Manifest> {
        let text = std::fs::read_to_string(path)?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if manifest.manifest_version != MANIFEST_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("manifest version {} is not {MANIFEST_VERSION}; recompile it", manifest.manifest_version),
            ));
        }
        Ok(manifest)
    }

    /// Writes `manifest.json` and `compiled/<path>.sql` under `target`. Each file is written to a temporary name
    /// and renamed, so a reader never sees a half-written file; a compiled file whose content is unchanged is not
    /// rewritten (rewriting ten thousand files costs more than compiling them), and stale ones are removed.
    pub fn write(&self, target: &Path) -> io::Result<()> {
        let compiled = target.join("compiled");
        std::fs::create_dir_all(&compiled)?;
        let mut expected = std::collections::BTreeSet::new();
        for node in self.nodes.values().filter(|n| n.resource_type == NodeKind::Model) {
            let path = compiled.join(&node.path);
            expected.insert(path.clone());
            // Secrets used through `env_var()` are in the SQL that executes, never in a file.
            let sql = crate::secrets::mask(&node.compiled_sql);
            if std::fs::read(&path).is_ok_and(|old| old == sql.as_bytes()) {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            crate::files::write_atomic(&path, sql.as_bytes())?;
        }
        for entry in walkdir::WalkDir::new(&compiled).into_iter().filter_map(Result::ok) {
            // Another pipe process's write in progress is not stale; a file already gone is fine.
            let in_progress = entry.file_name().to_string_lossy().ends_with(".tmp");
            if entry.file_type().is_file() && !expected.contains(entry.path()) && !in_progress {
                match std::fs::remove_file(entry.path()) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                    _ => {}
                }
            }
        }
        crate::files::write_atomic(&target.join("manifest.json"), crate::secrets::mask(&self.to_json()).as_bytes())
    }
}

/// Upstreams of an edge's source, looking through ephemeral models (which never run).
pub fn effective_upstreams<'a>(manifest: &'a Manifest, id: &'a str) -> Vec<&'a str> {
    match manifest.nodes.get(id) {
        Some(node) if node.materialized == crate::project::Materialization::Ephemeral => {
            node.depends_on.nodes.iter().flat_map(|up| effective_upstreams(manifest, up)).collect()
        }
        _ => vec![id],
    }
}
