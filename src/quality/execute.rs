//! Running tests: count each test's failing rows in a DataFusion session, compare the count with the test's
//! thresholds and severity, keep a sample of failing rows for the message, and store them when asked.

use std::sync::Arc;
use std::time::Instant;

use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;

use crate::compile::BuildRenderer;
use crate::manifest::{Severity, TestNode};
pub use crate::warehouse::results::{TestOutcome, TestStatus};
use crate::warehouse::Warehouse;

pub use crate::manifest::Threshold;

/// Runs `tests` in `ctx`. `staged` maps relation names to results not yet published, which the tests read under
/// those names instead (write-audit-publish; the test's SQL is planned as written, in a session where the relation
/// is the staged result). With a warehouse, failing rows of tests with `store_failures` are written to
/// `pipe_audit.<test name>`. A test whose render asks the warehouse (`TestNode::render_at_build`) is rendered again
/// by `renderer` against that session first.
pub async fn run_tests(
    ctx: &SessionContext,
    warehouse: Option<&Warehouse>,
    tests: &[&TestNode],
    staged: &[(String, Arc<dyn TableProvider>)],
    renderer: Option<&Arc<BuildRenderer>>,
) -> Vec<TestOutcome> {
    let overlay;
    let ctx = match staged.is_empty() {
        true => ctx,
        false => match crate::warehouse::with_overrides(ctx, staged) {
            Ok(session) => {
                overlay = session;
                &overlay
            }
            Err(err) => {
                let message = Some(format!("the staged result could not be read: {err}"));
                return tests
                    .iter()
                    .map(|test| TestOutcome {
                        unique_id: test.unique_id.clone(),
                        name: test.name.clone(),
                        status: TestStatus::Error,
                        failures: 0,
                        message: message.clone(),
                        seconds: 0.0,
                    })
                    .collect();
            }
        },
    };
    let mut outcomes = Vec::new();
    for test in tests {
        let started = Instant::now();
        let outcome = match (&test.render_at_build, renderer) {
            _ if test.unit.is_some() => match &test.unit {
                Some(unit) => super::unit::run(ctx, unit).await,
                None => Err("not a unit test".into()),
            },
            (Some(template), Some(renderer)) => match render_now(ctx, renderer, template).await {
                Ok(sql) => run_one(ctx, warehouse, test, &sql).await,
                Err(message) => Err(message),
            },
            _ => run_one(ctx, warehouse, test, &test.compiled_sql).await,
        };
        let (status, failures, message) = match outcome {
            Ok(done) => done,
            Err(message) => (TestStatus::Error, 0, Some(message)),
        };
        outcomes.push(TestOutcome {
            unique_id: test.unique_id.clone(),
            name: test.name.clone(),
            status,
            failures,
            message,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    outcomes
}

/// Renders a test's template with the session answering its introspection, on a blocking thread (the catalog
/// blocks on the session's queries).
async fn render_now(
    ctx: &SessionContext,
    renderer: &Arc<BuildRenderer>,
    template: &crate::manifest::TestTemplate,
) -> Result<String, String> {
    let catalog =
        crate::warehouse::catalog::SessionCatalog { ctx: ctx.clone(), handle: tokio::runtime::Handle::current() };
    let (renderer, template) = (Arc::clone(renderer), template.clone());
    tokio::task::spawn_blocking(move || renderer.render_test(&template, Arc::new(catalog)))
        .await
        .map_err(|e| format!("the render task failed: {e}"))?
        .map_err(|diagnostic| format!("the test could not be rendered: {}", diagnostic.message))
}

async fn run_one(
    ctx: &SessionContext,
    warehouse: Option<&Warehouse>,
    test: &TestNode,
    sql: &str,
) -> Result<(TestStatus, u64, Option<String>), String> {
    let error = |e: datafusion::error::DataFusionError| crate::warehouse::clean_datafusion_message(&e);
    let failing = crate::sql::duckdb::sql(ctx, sql).await.map_err(error)?;
    let failures = match &test.fail_calc {
        None => failing.clone().count().await.map_err(error)? as u64,
        Some(fail_calc) => fail_count(ctx, sql, fail_calc).await?,
    };
    let status = if test.error_if.matches(failures) && test.severity == Severity::Error {
        TestStatus::Fail
    } else if test.warn_if.matches(failures) || test.error_if.matches(failures) {
        TestStatus::Warn
    } else {
        TestStatus::Pass
    };
    if failures == 0 {
        return Ok((status, 0, None));
    }
    let sample = failing.limit(0, Some(3)).map_err(error)?.collect().await.map_err(error)?;
    let shown =
        datafusion::arrow::util::pretty::pretty_format_batches(&sample).map(|t| t.to_string()).unwrap_or_default();
    let mut message = format!("{failures} failing row(s); first ones:\n{shown}");
    if test.store_failures {
        if let Some(warehouse) = warehouse {
            match store_failures(ctx, warehouse, test, sql).await {
                Ok(relation) => message.push_str(&format!("\nall failing rows: `select * from {relation}`")),
                Err(err) => message.push_str(&format!("\nfailing rows not stored: {err}")),
            }
        }
    }
    Ok((status, failures, Some(message)))
}

/// dbt's `fail_calc`: the failure count as the aggregate `fail_calc` over the test's rows (none: 0).
async fn fail_count(ctx: &SessionContext, sql: &str, fail_calc: &str) -> Result<u64, String> {
    let error = |e: datafusion::error::DataFusionError| crate::warehouse::clean_datafusion_message(&e);
    let counted =
        format!("select cast(coalesce({fail_calc}, 0) as bigint) as failures from ({sql}) as dbt_internal_test");
    let batches = ctx.sql(&counted).await.map_err(error)?.collect().await.map_err(error)?;
    let column = batches.first().filter(|b| b.num_rows() > 0).map(|b| b.column(0).clone());
    let value = column
        .and_then(|c| c.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().map(|a| a.value(0)))
        .unwrap_or(0);
    Ok(value.max(0) as u64)
}

/// The tests a node's build runs on its result: those declared on it that read nothing but it, its ancestors and
/// sources.
pub fn audit_tests<'m>(manifest: &'m crate::manifest::Manifest, node: &str) -> Vec<&'m TestNode> {
    // Unit tests run before the model, not on its result (`unit_tests`).
    let mut tests: Vec<&TestNode> =
        manifest.tests.values().filter(|t| t.attached_node.as_deref() == Some(node) && t.unit.is_none()).collect();
    if tests.iter().all(|t| t.depends_on.nodes.len() == 1) {
        return tests;
    }
    let mut ancestors = std::collections::BTreeSet::from([node.to_string()]);
    let mut frontier = vec![node.to_string()];
    while let Some(id) = frontier.pop() {
        for (up, down) in &manifest.edges {
            if *down == id && ancestors.insert(up.clone()) {
                frontier.push(up.clone());
            }
        }
    }
    tests.retain(|t| t.depends_on.nodes.iter().all(|d| ancestors.contains(d) || manifest.sources.contains_key(d)));
    tests
}

/// The unit tests of a model: they run before it builds, and a failure keeps it from building.
pub fn unit_tests<'m>(manifest: &'m crate::manifest::Manifest, node: &str) -> Vec<&'m TestNode> {
    manifest.tests.values().filter(|t| t.unit.is_some() && t.attached_node.as_deref() == Some(node)).collect()
}

/// The schema failing rows are stored in.
pub use crate::warehouse::AUDIT_SCHEMA;

async fn store_failures(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    test: &TestNode,
    sql: &str,
) -> Result<String, String> {
    let relation = format!("{AUDIT_SCHEMA}.{}", test.name);
    let frame = ctx.sql(sql).await.map_err(|e| e.to_string())?;
    let table = warehouse.table_for_write(&relation).await.map_err(|e| e.to_string())?;
    table
        .write(Vec::new())
        .with_input_plan(frame.logical_plan().clone())
        .with_session_state(std::sync::Arc::new(ctx.state()))
        .with_save_mode(deltalake::protocol::SaveMode::Overwrite)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
        .await
        .map_err(|e| e.to_string())?;
    Ok(relation)
}

#[cfg(test)]
mod tests {
    use super::Threshold;

    #[test]
    fn thresholds_read_as_dbt_writes_them() {
        let t = |text: &str, n: u64| Threshold::parse(text).unwrap().matches(n);
        assert!(t("!=0", 1) && !t("!=0", 0));
        assert!(t(">10", 11) && !t(">10", 10));
        assert!(t(">= 5", 5) && !t(">=5", 4));
        assert!(t("=0", 0) && t("<3", 2) && t("<=2", 2));
        assert!(Threshold::parse("more than 3").is_none());
    }
}
