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
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use url::Url;

pub use crate::project::profiles::BucketSettings;

pub mod catalog;
mod error;
pub mod files_scan;
pub mod lease;
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
    root: Root,
    /// `provider` gives [`files_scan::DeltaFiles`] (plans another process can run) instead of delta-rs's scan.
    files_scan: bool,
}

/// Where a warehouse keeps its tables and pipe's own files.
#[derive(Debug, Clone)]
enum Root {
    /// A local folder (absolute).
    Folder(PathBuf),
    /// A prefix of an object store (`s3://bucket/prefix/`); `store`'s paths are relative to it. `options` are the
    /// store options every table in it is opened with (the bucket settings of the profile target).
    Bucket { url: Url, store: Arc<dyn deltalake::ObjectStore>, options: Vec<(String, String)> },
}

/// Where a warehouse is: the project's `warehouse:` as written, resolved against the project folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    Folder(PathBuf),
    /// An object-store prefix, `s3://bucket/prefix/` (always with the trailing slash), and how to reach it.
    Bucket(Url, BucketSettings),
}

/// The URL schemes a warehouse can be stored at (S3 and S3-compatible servers).
pub const BUCKET_SCHEMES: [&str; 2] = ["s3", "s3a"];

impl Location {
    /// `written` (`warehouse:` in `pipe.yml`) as a location: a URL with a scheme is an object-store prefix, anything
    /// else a folder relative to `project_dir`. An error names a URL pipe cannot store a warehouse at.
    pub fn resolve(project_dir: &Path, written: &str) -> Result<Location, RunError> {
        let Some((scheme, _)) = written.split_once("://") else {
            return Ok(Location::Folder(project_dir.join(written)));
        };
        if scheme == "file" {
            let url = Url::parse(written).map_err(|e| RunError::BadRelation(format!("warehouse `{written}`: {e}")))?;
            let path = url
                .to_file_path()
                .map_err(|()| RunError::BadRelation(format!("warehouse `{written}` is not a local folder")))?;
            return Ok(Location::Folder(path));
        }
        if !BUCKET_SCHEMES.contains(&scheme) {
            return Err(RunError::BadRelation(format!(
                "warehouse `{written}`: pipe stores a warehouse in a folder or at `s3://bucket/prefix`, not at a `{scheme}://` URL"
            )));
        }
        if !cfg!(feature = "s3") {
            return Err(RunError::BadRelation(format!(
                "warehouse `{written}` is on S3: that needs a pipe built with the `s3` feature (`cargo install --features s3`)"
            )));
        }
        let mut url = Url::parse(written).map_err(|e| RunError::BadRelation(format!("warehouse `{written}`: {e}")))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(RunError::BadRelation(format!("warehouse `{written}` names no bucket")));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(Location::Bucket(url, BucketSettings::default()))
    }

    /// Where a compiled project's warehouse is (its `warehouse:`, resolved against `project_dir`), reached with the
    /// bucket settings of its target.
    pub fn of(project_dir: &Path, project: &crate::manifest::ProjectInfo) -> Result<Location, RunError> {
        Ok(match Location::resolve(project_dir, &project.warehouse)? {
            Location::Bucket(url, _) => Location::Bucket(url, project.bucket.clone()),
            folder => folder,
        })
    }

    /// Where `relation`'s table is, as text: its folder's absolute path, or its URL (no trailing slash).
    pub fn table_address(&self, relation: &str) -> Option<String> {
        let parts: Vec<&str> = relation.split('.').collect();
        check_parts(&parts).ok()?;
        match self {
            Location::Folder(root) => {
                let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
                Some(join_inside(&root, &parts).ok()?.to_string_lossy().into_owned())
            }
            Location::Bucket(url, _) => Some(bucket_url_of(url, &parts)?.to_string()),
        }
    }

    /// The folder, for a local warehouse.
    pub fn folder(&self) -> Option<&Path> {
        match self {
            Location::Folder(path) => Some(path),
            Location::Bucket(..) => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Folder(path) => write!(f, "{}", path.display()),
            Location::Bucket(url, _) => write!(f, "{url}"),
        }
    }
}

/// A table's write lock: in a folder the operating system's file lock (a killed process releases it), in a bucket
/// a [`lease::Lease`] (a killed process's expires). Give it back with [`TableLock::release`].
#[derive(Debug)]
pub enum TableLock {
    File(std::fs::File),
    Lease(lease::Lease),
}

impl TableLock {
    pub async fn release(self) {
        match self {
            TableLock::File(file) => drop(file),
            TableLock::Lease(lease) => lease.release().await,
        }
    }
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
    check_parts(parts)?;
    let mut path = root.to_path_buf();
    path.extend(parts);
    Ok(path)
}

fn check_parts(parts: &[&str]) -> Result<(), RunError> {
    for part in parts {
        if let Some(problem) = crate::project::name_problem(part) {
            return Err(RunError::BadRelation(format!(
                "`{}` is not a relation name the warehouse can hold: {problem}",
                parts.join(".").escape_debug()
            )));
        }
    }
    Ok(())
}

/// `url` (a bucket prefix, with its trailing slash) with `parts` appended as path segments, each percent-encoded.
fn bucket_url_of(url: &Url, parts: &[&str]) -> Option<Url> {
    let mut joined = url.clone();
    joined.path_segments_mut().ok()?.pop_if_empty().extend(parts);
    Some(joined)
}

/// The root of the bucket `url` is in (`s3://bucket/`): where an object store for its files is registered.
pub(crate) fn bucket_root(url: &Url) -> Result<Url, url::ParseError> {
    Url::parse(&format!("{}://{}/", url.scheme(), url.authority()))
}

/// The object path of `parts` under a bucket warehouse's prefix, each checked as [`join_inside`] checks them.
fn object_path(parts: &[&str]) -> Result<deltalake::Path, RunError> {
    check_parts(parts)?;
    Ok(deltalake::Path::from_iter(parts.iter().copied()))
}

/// The folder of `relation`'s Delta table under the warehouse folder `root`: `<root>/<schema>/<name>`.
pub fn relation_dir(root: &Path, relation: &str) -> Result<PathBuf, RunError> {
    join_inside(root, &relation.split('.').collect::<Vec<_>>())
}

impl Warehouse {
    /// Opens (creating if needed) the warehouse folder `root`; relative paths are made absolute.
    pub fn open(root: &Path) -> Result<Warehouse, RunError> {
        std::fs::create_dir_all(root).map_err(|e| RunError::io(root, e))?;
        let root = root.canonicalize().map_err(|e| RunError::io(root, e))?;
        Ok(Warehouse { root: Root::Folder(root), files_scan: false })
    }

    /// Opens the warehouse at `location`. A bucket's endpoint, region and credentials come from its settings (the
    /// profile target's), and what they leave unset from the standard AWS variables (`AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...), as delta-rs reads them.
    pub fn open_at(location: &Location) -> Result<Warehouse, RunError> {
        match location {
            Location::Folder(path) => Warehouse::open(path),
            Location::Bucket(url, settings) => {
                let options = settings.store_options();
                let store = deltalake::logstore::store_for(url, options.iter().cloned())
                    .map_err(|e| RunError::BadRelation(format!("warehouse `{url}` cannot be opened: {e}")))?;
                Ok(Warehouse { root: Root::Bucket { url: url.clone(), store, options }, files_scan: false })
            }
        }
    }

    /// Registers the store of the warehouse's bucket (its root, reached with the warehouse's options) with `runtime`,
    /// so every scan of the tables' files (delta-rs's, [`files_scan::DeltaFiles`]) reaches the bucket as the
    /// warehouse does, not with the AWS variables alone. Nothing to do for a folder.
    pub fn register_store(&self, runtime: &datafusion::execution::runtime_env::RuntimeEnv) -> Result<(), RunError> {
        if let Root::Bucket { url, options, .. } = &self.root {
            let root = bucket_root(url).map_err(|e| RunError::Internal(format!("the bucket of {url}: {e}")))?;
            let store = deltalake::logstore::store_for(&root, options.iter().cloned())
                .map_err(|e| RunError::BadRelation(format!("warehouse `{url}` cannot be opened: {e}")))?;
            runtime.register_object_store(&root, store);
        }
        Ok(())
    }

    /// A builder of `relation`'s table, with the store options of the warehouse's bucket.
    pub fn table_builder(&self, relation: &str) -> Result<deltalake::DeltaTableBuilder, RunError> {
        let builder = deltalake::DeltaTableBuilder::from_url(self.table_url(relation)?)?;
        Ok(match &self.root {
            Root::Folder(_) => builder,
            Root::Bucket { options, .. } => builder.with_storage_options(options.iter().cloned().collect()),
        })
    }

    /// The warehouse folder; `None` for a warehouse in a bucket.
    pub fn folder(&self) -> Option<&Path> {
        match &self.root {
            Root::Folder(path) => Some(path),
            Root::Bucket { .. } => None,
        }
    }

    /// The relation whose table holds the scanned file at `location` (an object-store path, as a plan's metrics
    /// name it), when the file is one of this warehouse's.
    pub fn relation_of_file(&self, location: &str) -> Option<String> {
        let inside: Vec<String> = match &self.root {
            Root::Folder(root) => {
                let path = Path::new("/").join(location);
                let inside = path.strip_prefix(root).ok()?;
                inside.components().take(2).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect()
            }
            Root::Bucket { url, .. } => {
                // A path in the bucket (`prefix/schema/name/file`), maybe as a URL or led by the bucket's name.
                let prefix = url.path().trim_start_matches('/');
                let bucket = url.host_str().unwrap_or_default();
                let path = location.split_once("://").map_or(location, |(_, rest)| rest).trim_start_matches('/');
                let rest = path
                    .strip_prefix(prefix)
                    .or_else(|| path.strip_prefix(bucket)?.strip_prefix('/')?.strip_prefix(prefix))?;
                rest.split('/').take(2).map(str::to_string).collect()
            }
        };
        (inside.len() == 2).then(|| inside.join("."))
    }

    /// `<warehouse>/<schema>/<name>` for a relation `schema.name` in a warehouse folder; an error for a name that is
    /// not one, or in a bucket.
    fn table_dir(&self, relation: &str) -> Result<PathBuf, RunError> {
        match &self.root {
            Root::Folder(root) => relation_dir(root, relation),
            Root::Bucket { url, .. } => Err(RunError::Internal(format!("the warehouse at {url} has no folders"))),
        }
    }

    /// The URL of `relation`'s Delta table, with a trailing slash.
    pub fn table_url(&self, relation: &str) -> Result<Url, RunError> {
        match &self.root {
            Root::Folder(root) => {
                let dir = relation_dir(root, relation)?;
                Url::from_directory_path(&dir)
                    .map_err(|()| RunError::Internal(format!("not an absolute path: {}", dir.display())))
            }
            Root::Bucket { url, .. } => {
                let parts: Vec<&str> = relation.split('.').collect();
                check_parts(&parts)?;
                let mut table = bucket_url_of(url, &parts)
                    .ok_or_else(|| RunError::Internal(format!("{url} cannot hold a table `{relation}`")))?;
                table.set_path(&format!("{}/", table.path()));
                Ok(table)
            }
        }
    }

    /// Whether a Delta table exists for `relation`: its log holds at least one commit. A process killed while
    /// creating a table can leave a log folder without a commit, which is no table.
    pub async fn has_table(&self, relation: &str) -> bool {
        let is_commit = |name: &str| name.ends_with(".json") || name.ends_with(".checkpoint.parquet");
        match &self.root {
            Root::Folder(root) => {
                let Ok(dir) = relation_dir(root, relation) else { return false };
                let Ok(entries) = std::fs::read_dir(dir.join("_delta_log")) else { return false };
                entries.filter_map(Result::ok).any(|e| is_commit(&e.file_name().to_string_lossy()))
            }
            Root::Bucket { store, .. } => {
                let mut parts: Vec<&str> = relation.split('.').collect();
                parts.push("_delta_log");
                let Ok(log) = object_path(&parts) else { return false };
                let mut listing = store.list(Some(&log));
                while let Ok(Some(object)) = listing.try_next().await {
                    if object.location.filename().is_some_and(is_commit) {
                        return true;
                    }
                }
                false
            }
        }
    }

    /// Waits for and takes the write lock of `relation`, so two processes never write one table at once
    /// (delta-rs does not detect two concurrent full overwrites as a conflict, and a write deletes the files of
    /// writes that never committed).
    pub async fn lock(&self, relation: &str) -> Result<TableLock, RunError> {
        let name = format!("{relation}.lock");
        match &self.root {
            Root::Folder(root) => {
                let path = join_inside(root, &["_pipe", "locks", &name])?;
                let dir = path.parent().unwrap_or(root).to_path_buf();
                std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| RunError::io(&path, e))?;
                // Blocking: taken on a blocking thread so the runtime's workers keep running other models.
                let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                    .await
                    .map_err(|e| RunError::Internal(format!("lock task failed: {e}")))?
                    .map_err(|e| RunError::io(&path, e))?;
                Ok(TableLock::File(file))
            }
            Root::Bucket { store, .. } => {
                let path = object_path(&["_pipe", "locks", &name])?;
                Ok(TableLock::Lease(lease::Lease::acquire(Arc::clone(store), path, relation).await?))
            }
        }
    }

    /// The table for `relation`, loaded at its latest version; `None` when it does not exist yet. A log that
    /// cannot be read is an error naming the table, what is wrong with its log and how to recover.
    pub async fn load(&self, relation: &str) -> Result<Option<DeltaTable>, RunError> {
        if !self.has_table(relation).await {
            return Ok(None);
        }
        match self.table_builder(relation)?.load().await {
            Ok(table) => Ok(Some(table)),
            Err(err) => Err(self.broken(relation, &err)),
        }
    }

    /// The error for a table whose log cannot be read: the commit files missing from it when that is the cause,
    /// else the first line of Delta's error, with the ways to recover.
    fn broken(&self, relation: &str, err: &deltalake::DeltaTableError) -> RunError {
        let first_line = || err.to_string().lines().next().unwrap_or_default().to_string();
        let (cause, place) = match self.table_dir(relation) {
            Ok(dir) => {
                let log = dir.join("_delta_log");
                let cause = match missing_commits(&log).as_slice() {
                    [] => first_line(),
                    files => format!(
                        "its log is missing {}",
                        files.iter().map(|f| format!("`{}`", log.join(f).display())).collect::<Vec<_>>().join(", ")
                    ),
                };
                (cause, dir.display().to_string())
            }
            Err(_) => (first_line(), self.table_url(relation).map_or_else(|_| relation.to_string(), |u| u.to_string())),
        };
        let message = format!(
            "table `{relation}` cannot be read: {cause}\nto recover, restore the missing file(s) from a backup, or remove `{place}` and rebuild it with `pipe build -s {} --full-refresh` (its history is then lost)",
            relation.rsplit('.').next().unwrap_or(relation)
        );
        RunError::BrokenTable { relation: relation.to_string(), message }
    }

    /// The table for `relation` to write to: loaded when it exists, else an empty handle that a write creates.
    pub async fn table_for_write(&self, relation: &str) -> Result<DeltaTable, RunError> {
        if let Root::Folder(root) = &self.root {
            let dir = relation_dir(root, relation)?;
            std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
        }
        if self.has_table(relation).await {
            return self.table_builder(relation)?.load().await.map_err(|err| self.broken(relation, &err));
        }
        Ok(self.table_builder(relation)?.build()?)
    }

    /// Removes `relation`'s table, files and log (a staged result that has served its purpose).
    pub async fn drop_table(&self, relation: &str) -> Result<(), RunError> {
        match &self.root {
            Root::Folder(root) => {
                let dir = relation_dir(root, relation)?;
                match std::fs::remove_dir_all(&dir) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(RunError::io(&dir, err)),
                    _ => Ok(()),
                }
            }
            Root::Bucket { store, url, .. } => {
                let prefix = object_path(&relation.split('.').collect::<Vec<_>>())?;
                let objects: Vec<_> = store
                    .list(Some(&prefix))
                    .map_ok(|o| o.location)
                    .try_collect()
                    .await
                    .map_err(|e| RunError::Internal(format!("cannot list {url}{prefix}: {e}")))?;
                for object in objects {
                    store
                        .delete(&object)
                        .await
                        .map_err(|e| RunError::Internal(format!("cannot delete {object}: {e}")))?;
                }
                Ok(())
            }
        }
    }

    /// A document pipe keeps beside the tables (`_pipe/...`: view and external definitions, the schema registry);
    /// `None` when there is none.
    pub async fn read_document(&self, parts: &[&str]) -> Option<Vec<u8>> {
        match &self.root {
            Root::Folder(root) => std::fs::read(join_inside(root, parts).ok()?).ok(),
            Root::Bucket { store, .. } => {
                let result = store.get(&object_path(parts).ok()?).await.ok()?;
                result.bytes().await.ok().map(|b| b.to_vec())
            }
        }
    }

    /// Stores a document so readers see the old or the new one: a temporary file and a rename in a folder, one
    /// PUT (atomic) in a bucket.
    pub async fn write_document(&self, parts: &[&str], bytes: Vec<u8>) -> Result<(), RunError> {
        match &self.root {
            Root::Folder(root) => {
                let path = join_inside(root, parts)?;
                let dir = path.parent().unwrap_or(root);
                std::fs::create_dir_all(dir).map_err(|e| RunError::io(dir, e))?;
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let tmp = dir.join(format!(".{name}.{}", std::process::id()));
                std::fs::write(&tmp, bytes).map_err(|e| RunError::io(&tmp, e))?;
                std::fs::rename(&tmp, &path).map_err(|e| RunError::io(&path, e))
            }
            Root::Bucket { store, url, .. } => {
                let path = object_path(parts)?;
                store
                    .put(&path, bytes.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| RunError::Internal(format!("cannot write {url}{path}: {e}")))
            }
        }
    }

    /// The newest commit in `relation`'s log and when it was written, read off the log's listing (no table is
    /// opened).
    pub async fn log_head(&self, relation: &str) -> Option<(i64, chrono::DateTime<chrono::Utc>)> {
        let mut parts: Vec<&str> = relation.split('.').collect();
        parts.push("_delta_log");
        let version_of = |name: &str| name.strip_suffix(".json").and_then(|v| v.parse::<i64>().ok());
        match &self.root {
            Root::Folder(root) => {
                let entries = std::fs::read_dir(join_inside(root, &parts).ok()?).ok()?;
                let (version, entry) = entries
                    .filter_map(Result::ok)
                    .filter_map(|e| Some((version_of(&e.file_name().to_string_lossy())?, e)))
                    .max_by_key(|(v, _)| *v)?;
                let modified = entry.metadata().and_then(|m| m.modified()).ok()?;
                Some((version, modified.into()))
            }
            Root::Bucket { store, .. } => {
                let log = object_path(&parts).ok()?;
                let objects: Vec<_> = store.list(Some(&log)).try_collect().await.ok()?;
                objects
                    .into_iter()
                    .filter_map(|o| Some((version_of(o.location.filename()?)?, o.last_modified)))
                    .max_by_key(|(v, _)| *v)
            }
        }
    }

    /// Removes a document; removing one that is not there is no error.
    pub async fn remove_document(&self, parts: &[&str]) -> Result<(), RunError> {
        match &self.root {
            Root::Folder(root) => {
                let path = join_inside(root, parts)?;
                match std::fs::remove_file(&path) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(RunError::io(&path, err)),
                    _ => Ok(()),
                }
            }
            Root::Bucket { store, url, .. } => {
                let path = object_path(parts)?;
                match store.delete(&path).await {
                    Err(deltalake::ObjectStoreError::NotFound { .. }) | Ok(()) => Ok(()),
                    Err(err) => Err(RunError::Internal(format!("cannot delete {url}{path}: {err}"))),
                }
            }
        }
    }

    /// The names of the folders (or, in a bucket, the common prefixes) directly under `parts`, sorted.
    pub async fn list_folders(&self, parts: &[&str]) -> Vec<String> {
        self.list(parts, true).await
    }

    /// The names of the documents directly under `parts`, sorted.
    pub async fn list_documents(&self, parts: &[&str]) -> Vec<String> {
        self.list(parts, false).await
    }

    /// The names of the folders (`folders`) or the files directly under `parts`, sorted; none when it cannot be
    /// listed.
    async fn list(&self, parts: &[&str], folders: bool) -> Vec<String> {
        let mut names: Vec<String> = match &self.root {
            Root::Folder(root) => {
                let Ok(dir) = join_inside(root, parts) else { return Vec::new() };
                let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| if folders { t.is_dir() } else { t.is_file() }))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            }
            Root::Bucket { store, .. } => {
                let Ok(prefix) = object_path(parts) else { return Vec::new() };
                let Ok(listing) = store.list_with_delimiter(Some(&prefix)).await else { return Vec::new() };
                let paths = match folders {
                    true => listing.common_prefixes,
                    false => listing.objects.into_iter().map(|o| o.location).collect(),
                };
                paths.iter().filter_map(|p| p.filename().map(str::to_string)).collect()
            }
        };
        names.sort();
        names
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

    pub async fn read_view(&self, relation: &str) -> Option<ViewDefinition> {
        let bytes = self.read_document(&["_pipe", "views", &format!("{relation}.json")]).await?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores a view definition; readers see the old or the new one.
    pub async fn write_view(&self, view: &ViewDefinition) -> Result<(), RunError> {
        // A secret in the view's SQL is masked here; the build plans views from the manifest's SQL, which holds it.
        let text = serde_json::to_string_pretty(view).map_err(|e| RunError::Internal(e.to_string()))?;
        let text = crate::secrets::mask(&text);
        self.write_document(&["_pipe", "views", &format!("{}.json", view.relation)], text.into_owned().into_bytes())
            .await
    }

    pub async fn read_external(&self, relation: &str) -> Option<ExternalDefinition> {
        let bytes = self.read_document(&["_pipe", "externals", &format!("{relation}.json")]).await?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores an external model's definition (as for views).
    pub async fn write_external(&self, external: &ExternalDefinition) -> Result<(), RunError> {
        let text = serde_json::to_string_pretty(external).map_err(|e| RunError::Internal(e.to_string()))?;
        self.write_document(&["_pipe", "externals", &format!("{}.json", external.relation)], text.into_bytes()).await
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

    #[test]
    fn a_warehouse_is_a_folder_or_a_bucket_prefix() {
        let project = Path::new("/p");
        assert_eq!(Location::resolve(project, "warehouse").unwrap(), Location::Folder("/p/warehouse".into()));
        assert_eq!(Location::resolve(project, "/data/wh").unwrap(), Location::Folder("/data/wh".into()));
        assert_eq!(Location::resolve(project, "file:///data/wh").unwrap(), Location::Folder("/data/wh".into()));
        let gcs = Location::resolve(project, "gs://b/wh").unwrap_err().to_string();
        assert!(gcs.contains("not at a `gs://` URL"), "{gcs}");
        let bucket = Location::resolve(project, "s3://bucket/a/b");
        if cfg!(feature = "s3") {
            assert_eq!(
                bucket.unwrap(),
                Location::Bucket(Url::parse("s3://bucket/a/b/").unwrap(), BucketSettings::default())
            );
        } else {
            let err = bucket.unwrap_err().to_string();
            assert!(err.contains("the `s3` feature"), "{err}");
        }
        assert!(Location::resolve(project, "s3:///nobucket").is_err());
    }

    #[cfg(feature = "s3")]
    #[test]
    fn files_of_a_bucket_warehouse_map_to_their_relations() {
        let url = Url::parse("s3://bucket/wh/").unwrap();
        let warehouse = Warehouse::open_at(&Location::Bucket(url.clone(), BucketSettings::default())).unwrap();
        assert_eq!(warehouse.table_url("silver.orders").unwrap().as_str(), "s3://bucket/wh/silver/orders/");
        for location in [
            "wh/silver/orders/part-1.parquet",
            "bucket/wh/silver/orders/x.parquet",
            "s3://bucket/wh/silver/orders/x.parquet",
        ] {
            assert_eq!(warehouse.relation_of_file(location).as_deref(), Some("silver.orders"), "{location}");
        }
        assert_eq!(warehouse.relation_of_file("other/silver/orders/x.parquet"), None);
        assert!(warehouse.table_url("../x.y").is_err());
        assert_eq!(
            Location::Bucket(url, BucketSettings::default()).table_address("gold.daily").as_deref(),
            Some("s3://bucket/wh/gold/daily")
        );
    }
}
