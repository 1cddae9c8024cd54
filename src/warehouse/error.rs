//! The error of work against the warehouse: running a model, writing a table, reading the run history.

use std::path::{Path, PathBuf};

/// Why a node or a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{message}")]
    Query { model: String, message: String },
    #[error("writing the Delta table failed: {message}")]
    Write { model: String, message: String },
    #[error("source `{source_name}`: {message}")]
    Source { source_name: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    /// An error-severity test failed on the model's new result, which was not published. `outcomes` holds every
    /// test run on it (the failing ones too), for the results file and the run history.
    #[error("{message}")]
    TestFailed { message: String, outcomes: Vec<super::results::TestOutcome> },
    /// The result does not match the model's enforced contract; nothing was written.
    #[error("{0}")]
    Contract(String),
    #[error("warehouse: {0}")]
    Warehouse(String),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("DataFusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("Delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
}

impl RunError {
    pub fn io(path: &Path, err: std::io::Error) -> RunError {
        RunError::Io { path: path.to_path_buf(), message: err.to_string() }
    }

    pub fn query(model: &str, err: datafusion::error::DataFusionError) -> RunError {
        RunError::Query { model: model.to_string(), message: clean_datafusion_message(&err) }
    }

    pub fn write(model: &str, err: deltalake::DeltaTableError) -> RunError {
        RunError::write_text(model, &err.to_string())
    }

    /// `write` from an error's text.
    pub fn write_text(model: &str, text: &str) -> RunError {
        let text = text.to_string();
        // The query feeding the write failed reading its input: that is the error, not the write.
        if text.contains("Failed to fetch metadata for file ") {
            return RunError::Query { model: model.to_string(), message: crate::sql::clean_message(&text) };
        }
        let mut message = text.as_str();
        for prefix in ["Generic DeltaTable error: ", "Arrow error: ", "Error during planning: "] {
            message = message.strip_prefix(prefix).unwrap_or(message);
        }
        RunError::Write { model: model.to_string(), message: io_cause(message).unwrap_or(message).to_string() }
    }
}

/// The operating system's reason behind a failed write, said plainly: a full or read-only disk.
fn io_cause(text: &str) -> Option<&'static str> {
    if text.contains("No space left on device") {
        Some("the disk holding the warehouse is full (No space left on device); nothing was committed")
    } else if text.contains("Read-only file system") {
        Some("the warehouse is on a read-only file system; nothing was committed")
    } else {
        None
    }
}

/// DataFusion's error text without its internal prefixes and backtrace.
pub fn clean_datafusion_message(err: &datafusion::error::DataFusionError) -> String {
    crate::sql::clean_message(&err.strip_backtrace())
}
