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

use super::RunError;

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

/// The folder of `relation`'s Delta table under the warehouse folder `root`: `<root>/<schema>/<name>`.
pub fn relation_dir(root: &Path, relation: &str) -> PathBuf {
    relation.split('.').fold(root.to_path_buf(), |path, part| path.join(part))
}

impl Warehouse {
    /// Opens (creating if needed) the warehouse at `root`; relative paths are made absolute.
    pub fn open(root: &Path) -> Result<Warehouse, RunError> {
        std::fs::create_dir_all(root).map_err(|e| RunError::io(root, e))?;
        let root = root.canonicalize().map_err(|e| RunError::io(root, e))?;
        Ok(Warehouse { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<warehouse>/<schema>/<name>` for a relation `schema.name`.
    pub fn table_dir(&self, relation: &str) -> PathBuf {
        relation_dir(&self.root, relation)
    }

    pub(super) fn table_url(&self, relation: &str) -> Result<Url, RunError> {
        let dir = self.table_dir(relation);
        Url::from_directory_path(&dir)
            .map_err(|()| RunError::Warehouse(format!("not an absolute path: {}", dir.display())))
    }

    /// Whether a Delta table exists for `relation`: its log holds at least one commit. A process killed while
    /// creating a table can leave a log folder without a commit, which is no table.
    pub fn has_table(&self, relation: &str) -> bool {
        let Ok(entries) = std::fs::read_dir(self.table_dir(relation).join("_delta_log")) else { return false };
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
        let dir = self.root.join("_pipe").join("locks");
        std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
        let path = dir.join(format!("{relation}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| RunError::io(&path, e))?;
        file.lock().map_err(|e| RunError::io(&path, e))?;
        Ok(file)
    }

    /// The table for `relation`, loaded at its latest version; `None` when it does not exist yet.
    pub async fn load(&self, relation: &str) -> Result<Option<DeltaTable>, RunError> {
        if !self.has_table(relation) {
            return Ok(None);
        }
        let table = deltalake::open_table(self.table_url(relation)?).await?;
        Ok(Some(table))
    }

    /// The table for `relation` to write to: loaded when it exists, else an empty handle that a write creates.
    pub async fn table_for_write(&self, relation: &str) -> Result<DeltaTable, RunError> {
        let dir = self.table_dir(relation);
        std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
        if self.has_table(relation) {
            return Ok(deltalake::open_table(self.table_url(relation)?).await?);
        }
        Ok(deltalake::DeltaTableBuilder::from_url(self.table_url(relation)?)?.build()?)
    }

    /// A DataFusion provider over the latest version of `relation`.
    pub async fn provider(&self, table: &DeltaTable) -> Result<Arc<dyn TableProvider>, RunError> {
        Ok(table.table_provider().await?)
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
        let text = std::fs::read_to_string(self.views_dir().join(format!("{relation}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Stores a view definition with a write to a temporary file and a rename, so readers see the old or the new one.
    pub fn write_view(&self, view: &ViewDefinition) -> Result<(), RunError> {
        let dir = self.views_dir();
        std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
        let path = dir.join(format!("{}.json", view.relation));
        let tmp = dir.join(format!(".{}.json.{}", view.relation, std::process::id()));
        let text = serde_json::to_string_pretty(view).map_err(|e| RunError::Warehouse(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| RunError::io(&tmp, e))?;
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
