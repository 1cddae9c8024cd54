//! `--log-format json`: one line per event in dbt's structured-log shape (`{"info": {name, code, msg, level, ts,
//! invocation_id, ...}, "data": {...}}`), for the events pipe and dbt share: a node's result (`LogModelResult`,
//! `LogSeedResult`, `LogSnapshotResult`), a skipped node (`SkippingDetails`), a test's result (`LogTestResult`)
//! and the run's counts (`StatsLine`). pipe's own fields (rows written, Delta version, timings) are in
//! `data.result`.

use serde_json::{json, Value};

use crate::quality::TestStatus;
use crate::run::{NodeResult, NodeStatus};

/// The envelope of one event.
fn event(name: &str, code: &str, level: &str, msg: String, invocation_id: &str, data: Value) -> Value {
    json!({
        "info": {
            "name": name,
            "code": code,
            "msg": msg,
            "level": level,
            "invocation_id": invocation_id,
            "pid": std::process::id(),
            "thread": "Thread-1",
            "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "category": "",
            "extra": {},
        },
        "data": data,
    })
}

/// `model`, `seed`, `snapshot`: the first part of a unique id.
fn resource_type(unique_id: &str) -> &str {
    unique_id.split('.').next().unwrap_or("model")
}

fn node_status(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Success => "success",
        NodeStatus::Error => "error",
        NodeStatus::Skipped => "skipped",
    }
}

/// dbt's `node_info` for a node's result.
fn node_info(result: &NodeResult) -> Value {
    let (schema, alias) = result.relation.split_once('.').unwrap_or(("", &result.relation));
    json!({
        "node_name": result.name,
        "unique_id": result.unique_id,
        "resource_type": resource_type(&result.unique_id),
        "materialized": result.materialized,
        "node_status": node_status(result.status),
        "node_relation": {"database": "", "schema": schema, "alias": alias, "relation_name": result.relation},
        "meta": {},
    })
}

/// The event for one node's result: `index` of `total` in the run.
pub(super) fn node_event(result: &NodeResult, index: usize, total: usize, invocation_id: &str) -> Value {
    let kind = resource_type(&result.unique_id);
    let (schema, _) = result.relation.split_once('.').unwrap_or(("", &result.relation));
    let seconds = result.timing.total_seconds;
    if result.status == NodeStatus::Skipped {
        let msg = format!("{index} of {total} SKIP relation {}", result.relation);
        let data = json!({
            "node_info": node_info(result),
            "resource_type": kind,
            "schema": schema,
            "node_name": result.name,
            "index": index,
            "total": total,
            "result": result,
        });
        return event("SkippingDetails", "Q034", "info", msg, invocation_id, data);
    }
    let error = result.status == NodeStatus::Error;
    let (name, code, verb) = match (kind, error) {
        ("seed", false) => ("LogSeedResult", "Q016", "OK loaded seed file"),
        ("seed", true) => ("LogSeedResult", "Q016", "ERROR loading seed file"),
        ("snapshot", false) => ("LogSnapshotResult", "Q015", "OK snapshotted"),
        ("snapshot", true) => ("LogSnapshotResult", "Q015", "ERROR snapshotting"),
        (_, false) => ("LogModelResult", "Q012", "OK created"),
        (_, true) => ("LogModelResult", "Q012", "ERROR creating"),
    };
    let description = match kind {
        "seed" | "snapshot" => result.relation.clone(),
        _ => format!("sql {} {kind} {}", result.materialized, result.relation),
    };
    let word = if error { "ERROR" } else { "OK" };
    let msg = format!("{index} of {total} {verb} {description} [{word} in {seconds:.2}s]");
    let data = json!({
        "node_info": node_info(result),
        "description": description,
        "status": node_status(result.status),
        "index": index,
        "total": total,
        "execution_time": seconds,
        "result": result,
    });
    event(name, code, if error { "error" } else { "info" }, msg, invocation_id, data)
}

/// The event for one test's result (dbt's `LogTestResult`).
pub(super) fn test_event(test: &crate::quality::TestOutcome, index: usize, total: usize, invocation_id: &str) -> Value {
    let (status, level) = match test.status {
        TestStatus::Pass => ("pass", "info"),
        TestStatus::Warn => ("warn", "warn"),
        TestStatus::Fail => ("fail", "error"),
        TestStatus::Error => ("error", "error"),
    };
    let info = match test.status {
        TestStatus::Pass => "PASS".to_string(),
        TestStatus::Error => "ERROR".to_string(),
        TestStatus::Warn => format!("WARN {}", test.failures),
        TestStatus::Fail => format!("FAIL {}", test.failures),
    };
    let msg = format!("{index} of {total} {info} {} [{} in {:.2}s]", test.name, status.to_uppercase(), test.seconds);
    let data = json!({
        "node_info": {
            "node_name": test.name,
            "unique_id": test.unique_id,
            "resource_type": "test",
            "node_status": status,
            "meta": {},
        },
        "name": test.name,
        "status": status,
        "index": index,
        "num_models": total,
        "execution_time": test.seconds,
        "num_failures": test.failures,
        "message": test.message,
    });
    event("LogTestResult", "Q007", level, msg, invocation_id, data)
}

/// The run's counts (dbt's `StatsLine`): `Done. PASS=3 WARN=0 ERROR=1 SKIP=2 TOTAL=6`.
pub(super) fn stats_event(results: &crate::run::RunResults) -> Value {
    let nodes = |status| results.results.iter().filter(|r| r.status == status).count();
    let tests = |status| results.tests.iter().filter(|t| t.status == status).count();
    let pass = nodes(NodeStatus::Success) + tests(TestStatus::Pass);
    let warn = tests(TestStatus::Warn);
    let error = nodes(NodeStatus::Error) + tests(TestStatus::Fail) + tests(TestStatus::Error);
    let skip = nodes(NodeStatus::Skipped);
    let total = results.results.len() + results.tests.len();
    let msg = format!("Done. PASS={pass} WARN={warn} ERROR={error} SKIP={skip} TOTAL={total}");
    let data = json!({
        "stats": {"pass": pass, "warn": warn, "error": error, "skip": skip, "total": total},
        "run_id": results.run_id,
        "elapsed_seconds": results.elapsed_seconds,
    });
    event("StatsLine", "Z023", "info", msg, &results.run_id, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_node_is_skipping_details_and_a_seed_a_seed_result() {
        let mut result: NodeResult = serde_json::from_value(json!({
            "unique_id": "seed.p.countries", "name": "countries", "relation": "bronze.countries",
            "materialized": "seed", "status": "success", "rows_written": 3, "delta_version": 0,
            "timing": {"render_seconds": 0.0, "plan_seconds": 0.0, "execute_seconds": 0.1, "commit_seconds": 0.0,
                       "total_seconds": 0.25},
            "plan_reused": false, "message": null
        }))
        .unwrap();
        let seed = node_event(&result, 1, 2, "run");
        assert_eq!(seed["info"]["name"], "LogSeedResult");
        assert_eq!(seed["info"]["msg"], "1 of 2 OK loaded seed file bronze.countries [OK in 0.25s]");
        assert_eq!(seed["data"]["node_info"]["node_relation"]["schema"], "bronze");
        result.status = NodeStatus::Skipped;
        let skipped = node_event(&result, 2, 2, "run");
        assert_eq!(
            (skipped["info"]["code"].as_str(), skipped["data"]["node_name"].as_str()),
            (Some("Q034"), Some("countries"))
        );
    }
}
