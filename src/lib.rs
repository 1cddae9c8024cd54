//! pipe: a SQL-first pipeline compiler.
//!
//! Data moves one way through the stages, in this order (see `docs/ARCHITECTURE.md`):
//! `project` (files) -> `template` (Jinja) -> `sql` (parse) -> `graph` (DAG, selection) -> `manifest` (the
//! boundary) -> `compile` (the compile stages strung together) => `warehouse` (Delta tables, run results) ->
//! `quality` (tests) -> `run` (the build) -> `lineage` -> `docs` -> `cli`, the only module that prints or exits.
//! A module imports only modules earlier in that order; `tests/tidy.rs` checks it.

// `Diagnostic` is the error value of the compile stages: it is built once per failure and carries labels, notes
// and help, so it is larger than clippy's threshold; boxing it everywhere would add noise for no measured gain.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod compile;
pub mod diagnostics;
pub mod docs;
pub mod files;
pub mod graph;
pub mod lineage;
pub mod manifest;
pub mod project;
pub mod quality;
pub mod run;
pub mod secrets;
pub mod sql;
pub mod suggest;
pub mod template;
pub mod warehouse;
