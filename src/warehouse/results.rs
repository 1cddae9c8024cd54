//! Run results: per node status, rows written, Delta version, timings and error message, written to
//! `target/run_results.json`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Success,
    Error,
    Skipped,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Rendering the model's Jinja (at compile, in this process).
    pub render_seconds: f64,
    /// Parsing and planning the compiled SQL against the session.
    pub plan_seconds: f64,
    /// Executing the plan and writing data files.
    pub execute_seconds: f64,
    /// Committing to the Delta log (and, for views, storing the definition).
    pub commit_seconds: f64,
    /// Wall time of the node, including waiting for its relation's write lock.
    pub total_seconds: f64,
}

/// One operator of a model's executed physical plan, with what its metrics measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorRun {
    /// Which of the model's executed plans (a model may run several: an incremental batch, then its merge).
    pub plan: u32,
    /// Position in the plan, depth first from the root; with `depth` it gives the tree back.
    pub position: u32,
    pub depth: u32,
    /// The operator's name (`HashJoinExec`, `KeepFirstExec`, `DataSourceExec`, ...).
    pub operator: String,
    /// The operator as `EXPLAIN` prints it (one line, shortened).
    pub detail: String,
    pub output_rows: Option<u64>,
    /// CPU time the operator spent computing, over all its partitions (`elapsed_compute`).
    pub compute_seconds: Option<f64>,
    pub spill_count: Option<u64>,
    pub spilled_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResult {
    pub unique_id: String,
    pub name: String,
    pub relation: String,
    pub materialized: String,
    pub status: NodeStatus,
    pub rows_written: Option<u64>,
    pub delta_version: Option<i64>,
    pub timing: Timing,
    /// Whether the compile's plan was executed (no second planning of the SQL).
    pub plan_reused: bool,
    /// The node's tests, run on its new result.
    #[serde(default)]
    pub tests: Vec<TestOutcome>,
    /// Rows in each upstream table when the node ran (from the Delta log's file statistics).
    #[serde(default)]
    pub rows_in: std::collections::BTreeMap<String, u64>,
    /// Whether `rows_in` counts the rows the query scanned (this run's batch) rather than the upstream tables'
    /// sizes (when the model's query did not run: a view, an unchanged table).
    #[serde(default)]
    pub rows_in_scanned: bool,
    /// Rows removed by the query's filters, from the executed plan's metrics.
    #[serde(default)]
    pub rows_filtered: Option<u64>,
    /// Rows dropped as duplicates (`row_number() ... = 1`), from the executed plan's metrics.
    #[serde(default)]
    pub rows_deduplicated: Option<u64>,
    /// Each operator of the executed plans, from their metrics (`EXPLAIN ANALYZE`'s figures), recorded in
    /// `pipe.operator_runs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorRun>,
    /// The node's layer, for the stage accounting.
    #[serde(default)]
    pub layer: Option<String>,
    /// For gold models: seconds from the newest input file reaching a source (its modification time) to this
    /// model's commit.
    #[serde(default)]
    pub latency_seconds: Option<f64>,
    pub message: Option<String>,
    /// For an error: its code (`pipe explain <code>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl NodeResult {
    pub fn base(node: &Node, status: NodeStatus) -> NodeResult {
        let materialized = match node.resource_type {
            crate::manifest::NodeKind::Seed => "seed".to_string(),
            crate::manifest::NodeKind::Model | crate::manifest::NodeKind::Snapshot => {
                node.materialized.as_str().to_string()
            }
        };
        NodeResult {
            unique_id: node.unique_id.clone(),
            name: node.name.clone(),
            relation: node.relation.clone(),
            materialized,
            status,
            rows_written: None,
            delta_version: None,
            timing: Timing::default(),
            plan_reused: false,
            tests: Vec::new(),
            rows_in: Default::default(),
            rows_in_scanned: false,
            rows_filtered: None,
            rows_deduplicated: None,
            operators: Vec::new(),
            layer: node.layer.map(|l| l.as_str().to_string()),
            latency_seconds: None,
            message: None,
            code: None,
        }
    }

    pub fn error(node: &Node, code: crate::diagnostics::Code, message: String, elapsed: Duration) -> NodeResult {
        NodeResult {
            timing: Timing { total_seconds: elapsed.as_secs_f64(), ..Timing::default() },
            message: Some(message),
            code: Some(code.id().to_string()),
            ..NodeResult::base(node, NodeStatus::Error)
        }
    }

    /// Adds test outcomes: a failing error-severity test (or one whose query failed) makes the node an error; a
    /// warning is added to the message.
    pub fn record_tests(&mut self, tests: Vec<TestOutcome>, declared: &[&crate::manifest::TestNode]) {
        let mut lines = Vec::new();
        for (outcome, test) in tests.iter().zip(declared) {
            let error = outcome.status == TestStatus::Fail
                || (outcome.status == TestStatus::Error && test.severity == crate::manifest::Severity::Error);
            if error {
                self.status = NodeStatus::Error;
                self.code = Some(crate::diagnostics::Code::TestsFailed.id().to_string());
            }
            let word = match outcome.status {
                TestStatus::Pass => continue,
                TestStatus::Warn => "warning",
                TestStatus::Fail => "failed",
                TestStatus::Error => "could not run",
            };
            lines.push(format!("test `{}` {word}: {}", outcome.name, outcome.message.as_deref().unwrap_or("")));
        }
        let passed = tests.iter().filter(|t| t.status == TestStatus::Pass).count();
        if !tests.is_empty() {
            lines.insert(0, format!("tests: {passed} of {} passed", tests.len()));
        }
        if !lines.is_empty() {
            let text = lines.join("\n");
            self.message = Some(match self.message.take() {
                Some(message) => format!("{message}\n{text}"),
                None => text,
            });
        }
        self.tests = tests;
    }

    pub fn skipped(node: &Node, message: String) -> NodeResult {
        NodeResult { message: Some(message), ..NodeResult::base(node, NodeStatus::Skipped) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub run_id: String,
    pub started_at: String,
    pub elapsed_seconds: f64,
    pub results: Vec<NodeResult>,
    /// Tests that read several nodes, run after them.
    #[serde(default)]
    pub tests: Vec<TestOutcome>,
    /// The command and flags of the run (`which`: build, run, seed, snapshot), for `pipe retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
}

impl RunResults {
    pub fn count(&self, status: NodeStatus) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }

    /// Writes `run_results.json` and `junit.xml` to `target`.
    pub fn write(&self, target: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(target)?;
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let text = crate::secrets::mask(&text).into_owned() + "\n";
        crate::files::write_atomic(&target.join("run_results.json"), text.as_bytes())?;
        self.write_junit(target)
    }

    /// Writes `junit.xml`: each node and each test a test case (an error a `<failure>`, a skipped node
    /// `<skipped>`), for CI systems that read JUnit reports.
    pub fn write_junit(&self, target: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(target)?;
        let text = crate::secrets::mask(&self.junit()).into_owned();
        crate::files::write_atomic(&target.join("junit.xml"), text.as_bytes())
    }

    /// The results as a JUnit XML report.
    pub fn junit(&self) -> String {
        fn escape(text: &str) -> String {
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&apos;")
        }
        let mut cases = Vec::new();
        let (mut failures, mut skipped) = (0, 0);
        for node in &self.results {
            let body = match node.status {
                NodeStatus::Success => String::new(),
                NodeStatus::Error => {
                    failures += 1;
                    let message = node.message.as_deref().unwrap_or("failed");
                    let first = message.lines().next().unwrap_or_default();
                    format!("<failure message=\"{}\">{}</failure>", escape(first), escape(message))
                }
                NodeStatus::Skipped => {
                    skipped += 1;
                    format!("<skipped message=\"{}\"/>", escape(node.message.as_deref().unwrap_or("skipped")))
                }
            };
            cases.push(format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">{body}</testcase>",
                escape(&node.materialized),
                escape(&node.relation),
                node.timing.total_seconds
            ));
        }
        let tests = self.results.iter().flat_map(|n| &n.tests).chain(&self.tests);
        let mut count = self.results.len();
        for test in tests {
            count += 1;
            let body = match test.status {
                TestStatus::Pass => String::new(),
                TestStatus::Warn => {
                    format!("<system-out>{}</system-out>", escape(test.message.as_deref().unwrap_or("")))
                }
                TestStatus::Fail | TestStatus::Error => {
                    failures += 1;
                    let message = test.message.as_deref().unwrap_or("failed");
                    let first = message.lines().next().unwrap_or_default();
                    format!("<failure message=\"{}\">{}</failure>", escape(first), escape(message))
                }
            };
            cases.push(format!(
                "    <testcase classname=\"test\" name=\"{}\" time=\"{:.3}\">{body}</testcase>",
                escape(&test.name),
                test.seconds
            ));
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"pipe\" tests=\"{count}\" \
             failures=\"{failures}\" time=\"{:.3}\">\n  <testsuite name=\"pipe {}\" tests=\"{count}\" \
             failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n{}\n  </testsuite>\n</testsuites>\n",
            self.elapsed_seconds,
            self.args.as_ref().and_then(|a| a.get("which")).and_then(|w| w.as_str()).unwrap_or("test"),
            self.elapsed_seconds,
            cases.join("\n")
        )
    }
}

/// What one test found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    Pass,
    Warn,
    Fail,
    /// The test's query could not run.
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestOutcome {
    pub unique_id: String,
    pub name: String,
    pub status: TestStatus,
    pub failures: u64,
    /// For a failing test: how many rows and a sample of them; for an error, what went wrong.
    pub message: Option<String>,
    pub seconds: f64,
}
