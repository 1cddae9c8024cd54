//! The ledger of the landed files a bronze model has ingested, kept as Delta application transactions in the bronze
//! table's own commits, so it can never disagree with the rows:
//! - `pipe.ingest:<file>` -> the bytes ingested so far: the next read of the file starts there;
//! - `pipe.ingest-digest:<file>:<digest>` -> a digest of the ingested bytes (their length, their first and their
//!   last 64 KiB): a file appended to still starts with them, a file rewritten in place does not;
//! - `pipe.ingest-stat:<file>:<size>:<modified>` -> the file as it was when last read, so an unchanged file costs one
//!   look-up;
//! - `pipe.file:<file>`: written by earlier versions of pipe for a file ingested whole (its size unknown).
//!
//! `<file>` is the file's path relative to the project folder, both canonical, so `data/x.csv`, `./data/x.csv` and
//! the absolute path name one file; a file outside the project is named by its canonical absolute path.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use deltalake::kernel::Transaction;
use deltalake::DeltaTable;

use crate::run::RunError;

/// A file a source's path matches, as found on disk.
#[derive(Debug, Clone)]
pub struct LandedFile {
    /// Its name in the ledger and in `_pipe_source_file`.
    pub key: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

impl LandedFile {
    fn modified_millis(&self) -> i64 {
        self.modified.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    /// The file's size and modification time now, when they differ from when it was listed.
    pub fn changed_since_listed(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(meta) => meta.len() != self.size || meta.modified().ok() != Some(self.modified),
            Err(_) => true,
        }
    }
}

/// What the ledger says of a landed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Read before, and not changed since.
    Unchanged,
    /// Never read.
    New,
    /// Read up to `from`, and bytes were added after it since.
    Appended { from: u64 },
    /// Read before, and since changed in what was read (the reason says how): never read again.
    Rewritten(String),
}

/// The files `pattern` (a path or glob, relative to `project_root` or absolute) matches, sorted by key.
pub fn landed_files(project_root: &Path, pattern: &str) -> Result<Vec<LandedFile>, RunError> {
    let root = project_root.canonicalize().map_err(|e| RunError::io(project_root, e))?;
    let absolute = project_root.join(pattern).to_string_lossy().to_string();
    let paths = glob::glob(&absolute).map_err(|e| RunError::SourcePath(format!("bad path `{pattern}`: {e}")))?;
    let mut files = Vec::new();
    for path in paths.filter_map(Result::ok) {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if !meta.is_file() {
            continue;
        }
        let path = path.canonicalize().map_err(|e| RunError::io(&path, e))?;
        let key = path.strip_prefix(&root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        let modified = meta.modified().map_err(|e| RunError::io(&path, e))?;
        files.push(LandedFile { key, path, size: meta.len(), modified });
    }
    files.sort_by(|a, b| a.key.cmp(&b.key));
    files.dedup_by(|a, b| a.key == b.key);
    Ok(files)
}

fn offset_id(key: &str) -> String {
    format!("pipe.ingest:{key}")
}

fn digest_id(key: &str, digest: &str) -> String {
    format!("pipe.ingest-digest:{key}:{digest}")
}

fn stat_id(file: &LandedFile) -> String {
    format!("pipe.ingest-stat:{}:{}:{}", file.key, file.size, file.modified_millis())
}

/// The id of earlier versions' ledger.
fn legacy_id(key: &str) -> String {
    format!("pipe.file:{key}")
}

/// The id that keeps the quarantine from taking one piece of a file twice.
pub fn piece_id(key: &str, from: u64) -> String {
    format!("pipe.ingest-piece:{key}:{from}")
}

/// Where the ledger of `table` has `file`.
pub async fn state(table: &DeltaTable, file: &LandedFile) -> Result<FileState, RunError> {
    let snapshot = table.snapshot()?;
    let log = table.log_store();
    let version = |id: String| snapshot.transaction_version(log.as_ref(), id);
    if version(stat_id(file)).await?.is_some() {
        return Ok(FileState::Unchanged);
    }
    let Some(offset) = version(offset_id(&file.key)).await? else {
        return Ok(match version(legacy_id(&file.key)).await? {
            // Ingested whole by an earlier pipe, which kept no size: taken as it is.
            Some(_) => FileState::Unchanged,
            None => FileState::New,
        });
    };
    let offset = offset.max(0) as u64;
    if file.size < offset {
        return Ok(FileState::Rewritten(format!(
            "it is {} bytes, shorter than the {offset} bytes ingested",
            file.size
        )));
    }
    let digest = digest(&file.path, offset).map_err(|e| RunError::io(&file.path, e))?;
    if version(digest_id(&file.key, &digest)).await?.is_none() {
        return Ok(FileState::Rewritten(format!("its first {offset} bytes are not the ones ingested")));
    }
    Ok(match file.size == offset {
        // Touched (its modification time changed), not changed.
        true => FileState::Unchanged,
        false => FileState::Appended { from: offset },
    })
}

/// The ledger's entries for `file` read up to byte `to`, committed with its rows.
pub fn transactions(file: &LandedFile, to: u64) -> Result<Vec<Transaction>, RunError> {
    let digest = digest(&file.path, to).map_err(|e| RunError::io(&file.path, e))?;
    let mut entries =
        vec![Transaction::new(offset_id(&file.key), to as i64), Transaction::new(digest_id(&file.key, &digest), 1)];
    // The file as listed, when it was read whole: an unchanged file is then found in one look-up.
    if to == file.size {
        entries.push(Transaction::new(stat_id(file), 1));
    }
    Ok(entries)
}

/// How much of each end of the ingested bytes the digest covers.
const DIGEST_WINDOW: u64 = 64 * 1024;

/// A digest of the first `len` bytes of a file: their length and their first and last 64 KiB (the whole of them
/// when shorter). Reading the ends only keeps a look at a large file cheap; a rewrite that keeps both ends and the
/// length is not seen.
fn digest(path: &Path, len: u64) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    hasher.update(len.to_le_bytes());
    let mut read_range = |from: u64, to: u64, hasher: &mut Sha256| -> std::io::Result<()> {
        file.seek(SeekFrom::Start(from))?;
        let mut buffer = vec![0; (to - from) as usize];
        file.read_exact(&mut buffer)?;
        hasher.update(&buffer);
        Ok(())
    };
    if len <= 2 * DIGEST_WINDOW {
        read_range(0, len, &mut hasher)?;
    } else {
        read_range(0, DIGEST_WINDOW, &mut hasher)?;
        read_range(len - DIGEST_WINDOW, len, &mut hasher)?;
    }
    Ok(hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect())
}

/// Copies bytes `[from, to)` of `file` to `dest`, after the file's first line when `header` (a CSV header), without
/// the newlines the piece starts with. The copy is what a read of an appended tail, or of a file that changed while
/// it was read, ingests: exactly the bytes the ledger then records.
pub fn copy_piece(file: &Path, from: u64, to: u64, header: bool, dest: &Path) -> std::io::Result<()> {
    let mut source = std::fs::File::open(file)?;
    let mut out = Vec::new();
    if header && from > 0 {
        let mut first = Vec::new();
        let mut reader = std::io::BufReader::new(std::fs::File::open(file)?);
        std::io::BufRead::read_until(&mut reader, b'\n', &mut first)?;
        if !first.ends_with(b"\n") {
            first.push(b'\n');
        }
        out.extend_from_slice(&first);
    }
    source.seek(SeekFrom::Start(from))?;
    let mut piece = vec![0; (to - from) as usize];
    source.read_exact(&mut piece)?;
    let start = if from > 0 { piece.iter().take_while(|b| **b == b'\n' || **b == b'\r').count() } else { 0 };
    out.extend_from_slice(&piece[start..]);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(dest, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_the_header_and_drop_leading_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(&file, "id,v\n1,a\n2,b\n3,c\n").unwrap();
        let piece = dir.path().join("p.csv");
        copy_piece(&file, 9, 17, true, &piece).unwrap();
        assert_eq!(std::fs::read_to_string(&piece).unwrap(), "id,v\n2,b\n3,c\n");
        copy_piece(&file, 8, 17, false, &piece).unwrap();
        assert_eq!(std::fs::read_to_string(&piece).unwrap(), "2,b\n3,c\n");
        copy_piece(&file, 0, 9, true, &piece).unwrap();
        assert_eq!(std::fs::read_to_string(&piece).unwrap(), "id,v\n1,a\n");
    }

    #[test]
    fn a_digest_covers_the_length_and_both_ends() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        let body: String = (0..40_000).map(|i| format!("{i}\n")).collect();
        std::fs::write(&file, &body).unwrap();
        let whole = digest(&file, body.len() as u64).unwrap();
        std::fs::write(&file, format!("{body}more\n")).unwrap();
        assert_eq!(digest(&file, body.len() as u64).unwrap(), whole, "an append keeps the ingested bytes");
        std::fs::write(&file, body.replacen("0\n", "9\n", 1)).unwrap();
        assert_ne!(digest(&file, body.len() as u64).unwrap(), whole, "a rewrite of the start is seen");
    }
}
