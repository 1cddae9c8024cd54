//! Data quality: tests declared in YAML (`not_null`, `unique`, `accepted_values`, `relationships`,
//! `expression_is_true`, custom generic tests written as `{% test %}` macros) and singular tests (`.sql` files under
//! the test paths) become test nodes of the manifest at compile, each a query returning the failing rows
//! (`compile::define`); a build or `pipe test` counts those rows against the test's thresholds and severity
//! (`execute.rs`).
//!
//! **Architecture invariant:** a test's SQL reads its model through the model's relation name only, so the build
//! can point it at a staged result before publishing it (write-audit-publish).

pub mod execute;
pub mod freshness;
pub mod observe;
pub mod registry;
mod unit;

pub use execute::{run_tests, TestOutcome, TestStatus, Threshold};
