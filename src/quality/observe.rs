//! Anomalies: each model's rows written and duration in a run, against its last successful runs in `pipe.node_runs`
//! (median and median absolute deviation, which a few outliers in the history do not move).

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, Float64Array, Int64Array};
use datafusion::prelude::SessionContext;

use crate::warehouse::results::NodeStatus;
use crate::warehouse::results::RunResults;
use crate::warehouse::runs::RUNS_SCHEMA;
use crate::warehouse::RunError;
use crate::warehouse::Warehouse;

/// Runs of history needed before a value is judged.
pub const MIN_HISTORY: usize = 5;
/// How many recent runs make the history.
pub const WINDOW: usize = 20;

/// A value outside its normal range.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub relation: String,
    pub metric: &'static str,
    pub value: f64,
    pub low: f64,
    pub high: f64,
    pub median: f64,
    pub runs: usize,
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (value, low, high, median) = match self.metric {
            "rows written" => (
                format!("{}", self.value),
                format!("{}", self.low.max(0.0).floor()),
                format!("{}", self.high.ceil()),
                format!("{}", self.median),
            ),
            _ => (
                format!("{:.2}s", self.value),
                format!("{:.2}s", self.low.max(0.0)),
                format!("{:.2}s", self.high),
                format!("{:.2}s", self.median),
            ),
        };
        write!(
            f,
            "anomaly: `{}` {} {value}, outside its normal range {low}..{high} (median {median} over its last {} runs)",
            self.relation, self.metric, self.runs
        )
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The normal range of a history: median ± 3 scaled MADs, at least ± `floor`.
pub fn normal_range(history: &[f64], floor: f64) -> (f64, f64, f64) {
    let mut values = history.to_vec();
    let m = median(&mut values);
    let mut deviations: Vec<f64> = history.iter().map(|v| (v - m).abs()).collect();
    let spread = (3.0 * 1.4826 * median(&mut deviations)).max(floor);
    (m - spread, m + spread, m)
}

/// Compares each successful node of `results` with its history (runs before this one).
pub async fn detect(warehouse: &Warehouse, results: &RunResults) -> Result<Vec<Anomaly>, RunError> {
    let history = history(warehouse, &results.run_id).await?;
    let mut anomalies = Vec::new();
    for result in results.results.iter().filter(|r| r.status == NodeStatus::Success) {
        let Some(runs) = history.get(&result.unique_id).filter(|h| h.len() >= MIN_HISTORY) else { continue };
        if let Some(written) = result.rows_written {
            anomalies.extend(rows_anomaly(&result.relation, runs, written));
        }
        // Durations under a second are mostly noise; a slow-down has to be worth a look.
        let past: Vec<f64> = runs.iter().map(|(_, seconds)| *seconds).collect();
        let (low, high, median) = normal_range(&past, (0.5 * median(&mut past.clone())).max(1.0));
        let value = result.timing.total_seconds;
        if value > high {
            let relation = result.relation.clone();
            anomalies.push(Anomaly { relation, metric: "took", value, low, high, median, runs: past.len() });
        }
    }
    Ok(anomalies)
}

/// Successful past runs per node, newest first: (rows written, seconds), at most `WINDOW` each, leaving out
/// `current_run`.
pub async fn history(
    warehouse: &Warehouse,
    current_run: &str,
) -> Result<BTreeMap<String, Vec<(Option<i64>, f64)>>, RunError> {
    let Some(table) = warehouse.load(&format!("{RUNS_SCHEMA}.node_runs")).await? else { return Ok(BTreeMap::new()) };
    let ctx = SessionContext::new();
    ctx.register_table("node_runs", warehouse.provider(&table).await?)?;
    let sql = format!(
        "select unique_id, rows_written, seconds from node_runs where status = 'success' and run_id <> '{}' \
         order by started_at desc",
        current_run.replace('\'', "")
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut history: BTreeMap<String, Vec<(Option<i64>, f64)>> = BTreeMap::new();
    for batch in &batches {
        let ids = crate::warehouse::runs::text_column(batch, 0);
        let rows = batch.column(1).as_any().downcast_ref::<Int64Array>();
        let seconds = batch.column(2).as_any().downcast_ref::<Float64Array>();
        let (Some(ids), Some(rows), Some(seconds)) = (ids, rows, seconds) else { continue };
        for i in 0..batch.num_rows() {
            let runs = history.entry(ids.value(i).to_string()).or_default();
            if runs.len() < WINDOW {
                runs.push(((!rows.is_null(i)).then(|| rows.value(i)), seconds.value(i)));
            }
        }
    }
    Ok(history)
}

/// `written` rows against a node's past runs; `None` when normal or when the history is too short.
pub fn rows_anomaly(relation: &str, runs: &[(Option<i64>, f64)], written: u64) -> Option<Anomaly> {
    let past: Vec<f64> = runs.iter().filter_map(|(rows, _)| rows.map(|r| r as f64)).collect();
    if past.len() < MIN_HISTORY {
        return None;
    }
    let (low, high, median) = normal_range(&past, (0.1 * median(&mut past.clone()).abs()).max(1.0));
    let value = written as f64;
    (value < low || value > high).then(|| Anomaly {
        relation: relation.to_string(),
        metric: "rows written",
        value,
        low,
        high,
        median,
        runs: past.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::normal_range;

    #[test]
    fn the_normal_range_ignores_a_few_outliers() {
        let history = [100.0, 102.0, 98.0, 101.0, 99.0, 100.0, 5000.0];
        let (low, high, median) = normal_range(&history, 1.0);
        assert_eq!(median, 100.0);
        assert!(low > 90.0 && high < 110.0, "{low}..{high}");
        assert!(!(low..=high).contains(&60.0), "a 40% drop is out of range");
        // A flat history still tolerates the floor.
        let (low, high, _) = normal_range(&[4.0; 6], 1.0);
        assert_eq!((low, high), (3.0, 5.0));
    }
}
