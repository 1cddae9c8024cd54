//! Freshness: how old the newest data of each source is (its `loaded_at_field`, or its newest file) against
//! `warn_after` / `error_after`, and how long ago each model with `expect_every` was last built.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use datafusion::prelude::SessionContext;
use serde_json::Value;

use crate::manifest::Manifest;
use crate::warehouse::Warehouse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshnessStatus {
    Pass,
    Warn,
    Error,
}

#[derive(Debug, Clone)]
pub struct Freshness {
    pub name: String,
    pub status: FreshnessStatus,
    /// The newest data (or last build), when known.
    pub newest: Option<DateTime<Utc>>,
    pub detail: String,
}

/// `{count: 12, period: hour}` (dbt) or `12 hours`.
fn threshold(value: Option<&Value>) -> Option<TimeDelta> {
    match value? {
        Value::String(text) => crate::project::parse_duration(text),
        Value::Object(map) => {
            let count = map.get("count")?.as_i64()?;
            let period = map.get("period")?.as_str()?;
            crate::project::parse_duration(&format!("{count} {period}"))
        }
        _ => None,
    }
}

fn age_text(age: TimeDelta) -> String {
    let minutes = age.num_minutes();
    match minutes {
        m if m < 60 => format!("{m}m"),
        m if m < 60 * 48 => format!("{}h{:02}m", m / 60, m % 60),
        m => format!("{}d{:02}h", m / (60 * 24), (m / 60) % 24),
    }
}

fn judge(
    name: String,
    newest: Option<DateTime<Utc>>,
    warn: Option<TimeDelta>,
    error: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> Freshness {
    let Some(newest) = newest else {
        return Freshness { name, status: FreshnessStatus::Error, newest: None, detail: "no data found".into() };
    };
    let age = now - newest;
    let status = if error.is_some_and(|e| age > e) {
        FreshnessStatus::Error
    } else if warn.is_some_and(|w| age > w) {
        FreshnessStatus::Warn
    } else {
        FreshnessStatus::Pass
    };
    let limits: Vec<String> = [("warn after", warn), ("error after", error)]
        .iter()
        .filter_map(|(label, limit)| limit.map(|l| format!("{label} {}", age_text(l))))
        .collect();
    let detail = format!("newest {} ago ({})", age_text(age), limits.join(", "));
    Freshness { name, status, newest: Some(newest), detail }
}

/// Checks every source with a `freshness` config and every model with `expect_every`.
pub async fn check(
    manifest: &Manifest,
    project_root: &Path,
    ctx: &SessionContext,
    warehouse: &Warehouse,
    now: DateTime<Utc>,
) -> Vec<Freshness> {
    let mut results = Vec::new();
    for source in manifest.sources.values() {
        let Some(freshness) = source.freshness.as_ref().filter(|f| !f.is_null()) else { continue };
        let (warn, error) = (threshold(freshness.get("warn_after")), threshold(freshness.get("error_after")));
        let newest = match &source.loaded_at_field {
            Some(field) => {
                let sql = format!("select cast(max({field}) as timestamp) from {}", source.relation);
                match ctx.sql(&sql).await {
                    Ok(frame) => frame.collect().await.ok().and_then(|batches| {
                        let column = batches.first()?.column(0).clone();
                        let value = datafusion::common::ScalarValue::try_from_array(&column, 0).ok()?;
                        match value {
                            datafusion::common::ScalarValue::TimestampNanosecond(Some(ns), _) => {
                                Some(DateTime::from_timestamp_nanos(ns))
                            }
                            datafusion::common::ScalarValue::TimestampMicrosecond(Some(us), _) => {
                                DateTime::from_timestamp_micros(us)
                            }
                            _ => None,
                        }
                    }),
                    Err(_) => None,
                }
            }
            // Without a `loaded_at_field`, the newest file of the source.
            None => source.path.as_deref().and_then(|path| {
                glob::glob(&project_root.join(path).to_string_lossy())
                    .ok()?
                    .filter_map(Result::ok)
                    .flat_map(|p| walkdir::WalkDir::new(p).into_iter().filter_map(Result::ok))
                    .filter_map(|e| e.metadata().ok()?.modified().ok())
                    .max()
                    .map(DateTime::<Utc>::from)
            }),
        };
        results.push(judge(format!("source {}", source.relation), newest, warn, error, now));
    }
    for node in manifest.nodes.values() {
        let Some(every) = node.settings.expect_every else {
            continue;
        };
        let newest = match warehouse.load(&node.relation).await {
            Ok(Some(table)) => {
                use futures::TryStreamExt;
                let history: Vec<_> = table.history(Some(1)).try_collect().await.unwrap_or_default();
                history.first().and_then(|c| c.timestamp).and_then(DateTime::from_timestamp_millis)
            }
            _ => None,
        };
        results.push(judge(format!("model {}", node.relation), newest, Some(every), Some(every * 2), now));
    }
    results
}
