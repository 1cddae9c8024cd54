//! The embedded warehouse: a local folder where each persisted model is a Delta Lake table at
//! `<warehouse>/<schema>/<name>/`, readable by any Delta reader, and each view's definition is a JSON file under
//! `<warehouse>/_pipe/views/`.
//!
//! **Architecture invariant:** a table changes only through one Delta commit per model write, carrying pipe's commit
//! metadata (run id, model unique id, logic checksum); a view definition changes only by an atomic file rename.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use url::Url;

pub mod catalog;
mod error;
pub mod files_scan;
pub mod results;
pub mod runs;
pub mod session;

pub use error::{clean_datafusion_message, write_cause, RunError, SchemaBreak};
pub use session::{count_rows, with_overrides};

/// Schemas pipe keeps for itself in every session and warehouse: staged results awaiting their audit, stored
/// failing rows of tests, and the run history.
pub const STAGING_SCHEMA: &str = "_pipe_staging";
pub const AUDIT_SCHEMA: &str = "pipe_audit";
pub use runs::RUNS_SCHEMA;
pub const RESERVED_SCHEMAS: [&str; 3] = [STAGING_SCHEMA, AUDIT_SCHEMA, RUNS_SCHEMA];

/// A number from a commit's `operationMetrics`; Delta writers report them as numbers or as strings.
pub fn operation_metric(info: &deltalake::kernel::CommitInfo, key: &str) -> Option<u64> {
    let value = info.info.get("operationMetrics")?.get(key)?;
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// Keys of the commit metadata pipe writes with every commit.
pub const META_RUN_ID: &str = "pipe.run_id";
pub const META_MODEL: &str = "pipe.model";
pub const META_CHECKSUM: &str = "pipe.checksum";
/// A digest of the input versions a write read (see `run::input_fingerprint`).
pub const META_INPUTS: &str = "pipe.inputs";

#[derive(Debug, Clone)]
pub struct Warehouse {
    root: PathBuf,
    /// `provider` gives [`files_scan::DeltaFiles`] (plans another process can run) instead of delta-rs's scan.
    files_scan: bool,
}

/// A stored view definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewDefinition {
    pub relation: String,
    pub unique_id: String,
    pub sql: String,
    pub checksum: String,
    pub run_id: String,
}

/// Where an `external` model's files are and how to read them back, stored when it is built: later builds and
/// `pipe query` register its relation from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalDefinition {
    pub relation: String,
    pub unique_id: String,
    /// The file, or the folder of Hive-style partitions, as an absolute path.
    pub location: PathBuf,
    /// `parquet`, `csv` or `json`.
    pub format: String,
    pub delimiter: char,
    pub partition_by: Vec<String>,
    /// The columns as written, in the model's order: (name, Arrow type as text).
    pub columns: Vec<(String, String)>,
    pub checksum: String,
    pub run_id: String,
}

/// pipe's metadata on the latest commit of a table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitMeta {
    pub version: i64,
    pub run_id: Option<String>,
    pub checksum: Option<String>,
    pub rows_added: Option<u64>,
    pub inputs: Option<String>,
    /// Time spent executing the plan and writing data files, from the commit's operation metrics.
    pub execute_time: Option<std::time::Duration>,
}

/// `root` joined with `parts`, each checked to be one plain folder or file name (`crate::project::name_problem`):
/// no path separator, `..`, NUL or control character can take a path the warehouse touches outside `root`. Every
/// path under the warehouse is made here.
pub fn join_inside(root: &Path, parts: &[&str]) -> Result<PathBuf, RunError> {
    let mut path = root.to_path_buf();
    for part in parts {
        if let Some(problem) = crate::project::name_problem(part) {
            return Err(RunError::BadRelation(format!(
                "`{}` is not a relation name the warehouse can hold: {problem}",
                parts.join(".").escape_debug()
            )));
        }
        path.push(part);
    }
    Ok(path)
}

/// The folder of `relation`'s Delta table under the warehouse folder `root`: `<root>/<schema>/<name>`.
pub fn relation_dir(root: &Path, relation: &str) -> Result<PathBuf, RunError> {
    join_inside(root, &relation.split('.').collect::<Vec<_>>())
}

impl Warehouse {
    /// Opens (creating if needed) the warehouse at `root`; relative paths are made absolute.
    pub fn open(root: &Path) -> Result<Warehouse, RunError> {
        std::fs::create_dir_all(root).map_err(|e| RunError::io(root, e))?;
        let root = root.canonicalize().map_err(|e| RunError::io(root, e))?;
        Ok(Warehouse { root, files_scan: false })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<warehouse>/<schema>/<name>` for a relation `schema.name`; an error for a name that is not one.
    pub fn table_dir(&self, relation: &str) -> Result<PathBuf, RunError> {
        relation_dir(&self.root, relation)
    }

    pub(super) fn table_url(&self, relation: &str) -> Result<Url, RunError> {
        let dir = self.table_dir(relation)?;
        Url::from_directory_path(&dir)
            .map_err(|()| RunError::Internal(format!("not an absolute path: {}", dir.display())))
    }

    /// Whether a Delta table exists for `relation`: its log holds at least one commit. A process killed while
    /// creating a table can leave a log folder without a commit, which is no table.
    pub fn has_table(&self, relation: &str) -> bool {
        let Ok(dir) = self.table_dir(relation) else { return false };
        let Ok(entries) = std::fs::read_dir(dir.join("_delta_log")) else { return false };
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") || name.ends_with(".checkpoint.parquet")
        })
    }

    /// Holds an exclusive lock on `relation` for as long as the returned file lives, so two processes never write
    /// one table at once (delta-rs does not detect two concurrent full overwrites as a conflict). The lock is the
    /// operating system's: a killed process releases it.
    pub fn lock(&self, relation: &str) -> Result<std::fs::File, RunError> {
        let path = join_inside(&self.root, &["_pipe", "locks", &format!("{relation}.lock")])?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| RunError::io(dir, e))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| RunError::io(&path, e))?;
        file.lock().map_err(|e| RunError::io(&path, e))?;
        Ok(file)
    }

    /// The table for `relation`, loaded at its latest version; `None` when it does not exist yet. A log that
    /// cannot be read is an error naming the table, what is wrong with its log and how to recover.
    pub async fn load(&self, relation: &str) -> Result<Option<DeltaTable>, RunError> {
        if !self.has_table(relation) {
            return Ok(None);
        }
        match deltalake::open_table(self.table_url(relation)?).await {
            Ok(table) => Ok(Some(table)),
            Err(err) => Err(self.broken(relation, &err)),
        }
    }

    /// The error for a table whose log cannot be read: the commit files missing from it when that is the cause,
    /// else the first line of Delta's error, with the ways to recover.
    fn broken(&self, relation: &str, err: &deltalake::DeltaTableError) -> RunError {
        let dir = self.table_dir(relation).unwrap_or_else(|_| self.root.clone());
        let log = dir.join("_delta_log");
        let missing = missing_commits(&log);
        let cause = match missing.as_slice() {
            [] => err.to_string().lines().next().unwrap_or_default().to_string(),
            files => format!(
                "its log is missing {}",
                files.iter().map(|f| format!("`{}`", log.join(f).display())).collect::<Vec<_>>().join(", ")
            ),
        };
        let message = format!(
            "table `{relation}` cannot be read: {cause}\nto recover, restore the missing file(s) from a backup, or remove `{}` and rebuild it with `pipe build -s {} --full-refresh` (its history is then lost)",
            dir.display(),
            relation.rsplit('.').next().unwrap_or(relation)
        );
        RunError::BrokenTable { relation: relation.to_string(), message }
    }

    /// The table for `relation` to write to: loaded when it exists, else an empty handle that a write creates.
    pub async fn table_for_write(&self, relation: &str) -> Result<DeltaTable, RunError> {
        let dir = self.table_dir(relation)?;
        std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
        if self.has_table(relation) {
            return deltalake::open_table(self.table_url(relation)?).await.map_err(|err| self.broken(relation, &err));
        }
        Ok(deltalake::DeltaTableBuilder::from_url(self.table_url(relation)?)?.build()?)
    }

    /// A DataFusion provider over the loaded version of `table`.
    pub async fn provider(&self, table: &DeltaTable) -> Result<Arc<dyn TableProvider>, RunError> {
        if self.files_scan {
            let files = files_scan::DeltaFiles::new(table)
                .await
                .map_err(|e| RunError::Internal(format!("cannot list the files of {}: {e}", table.table_url())))?;
            return Ok(Arc::new(files));
        }
        Ok(table.table_provider().await?)
    }

    /// This warehouse with its tables read as the Parquet files of their versions ([`files_scan::DeltaFiles`]):
    /// for plans that run on a cluster.
    pub fn scanning_files(self) -> Warehouse {
        Warehouse { files_scan: true, ..self }
    }

    /// Rows in the table's loaded version, summed from the file statistics of the Delta log: nothing is scanned.
    pub fn row_count(table: &DeltaTable) -> Result<u64, RunError> {
        Ok(table.snapshot()?.log_data().iter().map(|f| f.num_records().unwrap_or(0) as u64).sum())
    }

    /// pipe's metadata on the latest commit.
    pub async fn last_commit(&self, table: &DeltaTable) -> Result<CommitMeta, RunError> {
        let version = table.version().map_or(-1, |v| v as i64);
        let history: Vec<_> = table.history(Some(1)).try_collect().await?;
        let Some(info) = history.into_iter().next() else {
            return Ok(CommitMeta { version, ..CommitMeta::default() });
        };
        let text = |key: &str| info.info.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let metric = |key: &str| operation_metric(&info, key);
        let rows_added = metric("num_added_rows");
        // delta-rs's writes and merges report `execution_time_ms`.
        let execute_time = metric("execution_time_ms").map(std::time::Duration::from_millis);
        Ok(CommitMeta {
            version,
            run_id: text(META_RUN_ID),
            checksum: text(META_CHECKSUM),
            rows_added,
            inputs: text(META_INPUTS),
            execute_time,
        })
    }

    fn views_dir(&self) -> PathBuf {
        self.root.join("_pipe").join("views")
    }

    pub fn read_view(&self, relation: &str) -> Option<ViewDefinition> {
        let path = join_inside(&self.views_dir(), &[&format!("{relation}.json")]).ok()?;
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Stores a view definition with a write to a temporary file and a rename, so readers see the old or the new one.
    pub fn write_view(&self, view: &ViewDefinition) -> Result<(), RunError> {
        let dir = self.views_dir();
        std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
        let path = join_inside(&dir, &[&format!("{}.json", view.relation)])?;
        let tmp = join_inside(&dir, &[&format!(".{}.json.{}", view.relation, std::process::id())])?;
        // A secret in the view's SQL is masked here; the build plans views from the manifest's SQL, which holds it.
        let text = serde_json::to_string_pretty(view).map_err(|e| RunError::Internal(e.to_string()))?;
        let text = crate::secrets::mask(&text);
        std::fs::write(&tmp, text.as_bytes()).map_err(|e| RunError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| RunError::io(&path, e))
    }

    fn externals_dir(&self) -> PathBuf {
        self.root.join("_pipe").join("externals")
    }

    pub fn read_external(&self, relation: &str) -> Option<ExternalDefinition> {
        let path = join_inside(&self.externals_dir(), &[&format!("{relation}.json")]).ok()?;
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Stores an external model's definition (a temporary file and a rename, as for views).
    pub fn write_external(&self, external: &ExternalDefinition) -> Result<(), RunError> {
        let dir = self.externals_dir();
        std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
        let path = join_inside(&dir, &[&format!("{}.json", external.relation)])?;
        let tmp = join_inside(&dir, &[&format!(".{}.json.{}", external.relation, std::process::id())])?;
        let text = serde_json::to_string_pretty(external).map_err(|e| RunError::Internal(e.to_string()))?;
        std::fs::write(&tmp, text.as_bytes()).map_err(|e| RunError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| RunError::io(&path, e))
    }

    /// Commit metadata pipe attaches to a write.
    pub fn commit_metadata(run_id: &str, unique_id: &str, checksum: &str) -> HashMap<String, serde_json::Value> {
        HashMap::from([
            (META_RUN_ID.to_string(), serde_json::Value::String(run_id.to_string())),
            (META_MODEL.to_string(), serde_json::Value::String(unique_id.to_string())),
            (META_CHECKSUM.to_string(), serde_json::Value::String(checksum.to_string())),
            ("pipe.version".to_string(), serde_json::Value::String(env!("CARGO_PKG_VERSION").to_string())),
        ])
    }
}

/// The commit files (`NNNNNNNNNNNNNNNNNNNN.json`) missing between the newest checkpoint (or version 0) and the
/// newest commit of a Delta log folder.
fn missing_commits(log: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(log) else { return Vec::new() };
    let mut commits = std::collections::BTreeSet::new();
    let mut checkpoint: Option<u64> = None;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name.split('.').next().and_then(|v| v.parse::<u64>().ok()) else { continue };
        if name.ends_with(".checkpoint.parquet") {
            checkpoint = checkpoint.max(Some(version));
        } else if name.ends_with(".json") && name.len() == 25 {
            commits.insert(version);
        }
    }
    let Some(&newest) = commits.last() else { return Vec::new() };
    let first = checkpoint.map_or(0, |c| c + 1);
    (first..=newest).filter(|v| !commits.contains(v)).map(|v| format!("{v:020}.json")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_inside_the_warehouse_only() {
        let root = Path::new("/w");
        assert_eq!(relation_dir(root, "silver.orders").unwrap(), Path::new("/w/silver/orders"));
        for relation in ["/tmp/x.orders", "silver./etc", "..", "silver...orders", "a\nb.c", "s.a\\b", "s.a\0b"] {
            assert!(relation_dir(root, relation).is_err(), "{relation:?}");
        }
        assert!(join_inside(root, &["_pipe", "locks", "../../x.lock"]).is_err());
        assert!(join_inside(root, &["_pipe", "locks", "silver.orders.lock"]).is_ok());
    }
}
