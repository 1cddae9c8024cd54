//! The error of work against the warehouse: running a model, writing a table, reading the run history.

use std::path::{Path, PathBuf};

use crate::diagnostics::Code;

/// Why a node or a run failed. Each variant has a code `pipe explain` knows (`code`).
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
    /// With `anomaly_severity: error`, a result whose row count is outside the model's normal range; not published.
    #[error("{0}")]
    AnomalyRefused(String),
    /// The result does not match the model's enforced contract; nothing was written.
    #[error("{0}")]
    Contract(String),
    /// A relation the command reads is not a table in the warehouse.
    #[error("warehouse: `{relation}` is not a table in the warehouse")]
    NotATable { relation: String },
    /// A table whose Delta log cannot be read; `message` says why and how to recover.
    #[error("warehouse: {message}")]
    BrokenTable { relation: String, message: String },
    /// A version or time outside a table's history.
    #[error("warehouse: {message}")]
    History { relation: String, message: String },
    /// A relation name the warehouse cannot hold (not a plain `schema.table`).
    #[error("warehouse: {0}")]
    BadRelation(String),
    /// Data files could not be written (before any commit).
    #[error("writing data files failed: {0}")]
    FileWrite(String),
    /// A source's file pattern is not a valid pattern.
    #[error("{0}")]
    SourcePath(String),
    /// The schema gate: models whose planned columns break their `schema_compatibility`.
    #[error("{}", breaks.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    BreakingSchema { breaks: Vec<SchemaBreak> },
    /// Something pipe expects never to happen (pipe's bug).
    #[error("internal: {0}")]
    Internal(String),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("DataFusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("Delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
}

/// A model whose planned columns change in a way its `schema_compatibility` does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaBreak {
    pub model: String,
    /// The compatibility mode broken (`backward`, `forward`, `full`).
    pub mode: String,
    /// Each breaking change, as text.
    pub changes: Vec<String>,
}

impl std::fmt::Display for SchemaBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "model `{}` changes its schema in a way `{}` compatibility does not allow:", self.model, self.mode)?;
        for change in &self.changes {
            write!(f, "\n  {change}")?;
        }
        Ok(())
    }
}

impl RunError {
    /// The error's code, which `pipe explain` explains.
    pub fn code(&self) -> Code {
        match self {
            RunError::Query { .. } | RunError::DataFusion(_) => Code::QueryFailed,
            RunError::Write { .. } | RunError::FileWrite(_) => Code::WriteFailed,
            RunError::Source { .. } | RunError::SourcePath(_) => Code::SourceFailed,
            RunError::Unsupported(_) => Code::BatchRefused,
            RunError::TestFailed { .. } => Code::TestsFailed,
            RunError::AnomalyRefused(_) => Code::Anomaly,
            RunError::Contract(_) => Code::ContractFailed,
            RunError::NotATable { .. }
            | RunError::BrokenTable { .. }
            | RunError::History { .. }
            | RunError::BadRelation(_)
            | RunError::Delta(_) => Code::WarehouseError,
            RunError::BreakingSchema { .. } => Code::BreakingSchema,
            RunError::Io { .. } => Code::RunIo,
            RunError::Internal(_) => Code::Internal,
        }
    }

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
        let text = without_backtrace(text);
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

/// An error's text without the backtrace a library attached to it (delta-kernel's errors carry one: numbered
/// frames, `at path:line` lines): the user's error is the message above it.
pub fn without_backtrace(text: &str) -> String {
    let frame = |line: &str| {
        let line = line.trim_start();
        let numbered =
            line.split_once(": ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        numbered || line.starts_with("at ") || line.starts_with("Stack backtrace") || line == "Backtrace:"
    };
    let kept: Vec<&str> = text.lines().take_while(|line| !frame(line)).collect();
    kept.join("\n").trim_end().to_string()
}

/// A failed write's text with the operating system's reason said plainly, when it is a full or read-only disk.
pub fn write_cause(text: &str) -> String {
    io_cause(text).map_or_else(|| text.to_string(), str::to_string)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_error_loses_the_backtrace_attached_to_it() {
        let text = "Failed to convert into Arrow schema: Invalid data type for Delta Lake: Duration(ns)\n   0: buoyant_kernel::error::Error::with_backtrace\n             at /src/error.rs:10\n  11: poll<...>";
        let RunError::Write { message, .. } = RunError::write_text("m", text) else { panic!("not a write error") };
        assert_eq!(message, "Failed to convert into Arrow schema: Invalid data type for Delta Lake: Duration(ns)");
    }
}
