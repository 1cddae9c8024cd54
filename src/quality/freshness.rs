//! Freshness: how old the newest data of each source is (its `loaded_at_field`, or its newest file) against
//! `warn_after` / `error_after`, and how long ago each model with `expect_every` was last built.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use datafusion::prelude::SessionContext;
use serde_json::{json, Value};

use crate::manifest::Manifest;
use crate::project::{FreshnessPeriod, FreshnessRule};
use crate::warehouse::Warehouse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshnessStatus {
    Pass,
    Warn,
    Error,
    /// The newest row could not be asked for (the query failed): no verdict on the data.
    RuntimeError,
}

impl FreshnessStatus {
    /// dbt's word in `sources.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            FreshnessStatus::Pass => "pass",
            FreshnessStatus::Warn => "warn",
            FreshnessStatus::Error => "error",
            FreshnessStatus::RuntimeError => "runtime error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Freshness {
    pub unique_id: String,
    /// `source <relation>` or `model <relation>`.
    pub name: String,
    pub status: FreshnessStatus,
    /// The newest data (or last build), when known.
    pub newest: Option<DateTime<Utc>>,
    /// When the check ran.
    pub checked_at: DateTime<Utc>,
    /// The thresholds it was judged against (a source's `freshness:`).
    pub rule: Option<FreshnessRule>,
    pub detail: String,
    /// How long the check took.
    pub seconds: f64,
}

impl Freshness {
    pub fn is_source(&self) -> bool {
        self.unique_id.starts_with("source.")
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

struct Judged {
    status: FreshnessStatus,
    detail: String,
}

fn judge(
    newest: Option<DateTime<Utc>>,
    warn: Option<TimeDelta>,
    error: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> Judged {
    let Some(newest) = newest else {
        return Judged { status: FreshnessStatus::Error, detail: "no data found".into() };
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
    Judged { status, detail: format!("newest {} ago ({})", age_text(age), limits.join(", ")) }
}

/// The newest `loaded_at_field` of a source (under its rule's `filter`), or why it could not be read.
async fn newest_loaded(
    ctx: &SessionContext,
    relation: &str,
    field: &str,
    filter: Option<&str>,
) -> Result<Option<DateTime<Utc>>, String> {
    let filter = filter.map(|f| format!(" where {f}")).unwrap_or_default();
    let sql = format!("select cast(max({field}) as timestamp) from {relation}{filter}");
    let clean = |e: datafusion::error::DataFusionError| crate::sql::clean_message(&e.to_string());
    let batches = ctx.sql(&sql).await.map_err(clean)?.collect().await.map_err(clean)?;
    let Some(column) = batches.iter().find(|b| b.num_rows() > 0).map(|b| b.column(0).clone()) else {
        return Ok(None);
    };
    let value = datafusion::common::ScalarValue::try_from_array(&column, 0).map_err(clean)?;
    Ok(match value {
        datafusion::common::ScalarValue::TimestampNanosecond(Some(ns), _) => Some(DateTime::from_timestamp_nanos(ns)),
        datafusion::common::ScalarValue::TimestampMicrosecond(Some(us), _) => DateTime::from_timestamp_micros(us),
        datafusion::common::ScalarValue::TimestampMillisecond(Some(ms), _) => DateTime::from_timestamp_millis(ms),
        datafusion::common::ScalarValue::TimestampSecond(Some(s), _) => DateTime::from_timestamp(s, 0),
        _ => None,
    })
}

/// Checks every source with a `freshness` rule and every model with `expect_every`.
pub async fn check(
    manifest: &Manifest,
    project_root: &Path,
    ctx: &SessionContext,
    warehouse: &Warehouse,
    now: DateTime<Utc>,
) -> Vec<Freshness> {
    let mut results = Vec::new();
    for source in manifest.sources.values() {
        let Some(rule) = source.freshness.as_ref() else { continue };
        let started = std::time::Instant::now();
        let newest = match &source.loaded_at_field {
            Some(field) => newest_loaded(ctx, &source.relation, field, rule.filter.as_deref()).await,
            // Without a `loaded_at_field`, the newest file of the source.
            None => Ok(source.path.as_deref().and_then(|path| {
                glob::glob(&project_root.join(path).to_string_lossy())
                    .ok()?
                    .filter_map(Result::ok)
                    .flat_map(|p| walkdir::WalkDir::new(p).into_iter().filter_map(Result::ok))
                    .filter_map(|e| e.metadata().ok()?.modified().ok())
                    .max()
                    .map(DateTime::<Utc>::from)
            })),
        };
        let (newest, judged) = match newest {
            Ok(newest) => {
                let period = |p: &Option<FreshnessPeriod>| p.as_ref().map(FreshnessPeriod::duration);
                (newest, judge(newest, period(&rule.warn_after), period(&rule.error_after), now))
            }
            Err(message) => (None, Judged { status: FreshnessStatus::RuntimeError, detail: message }),
        };
        results.push(Freshness {
            unique_id: source.unique_id.clone(),
            name: format!("source {}", source.relation),
            status: judged.status,
            newest,
            checked_at: now,
            rule: Some(rule.clone()),
            detail: judged.detail,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    for node in manifest.nodes.values() {
        let Some(every) = node.settings.expect_every else {
            continue;
        };
        let started = std::time::Instant::now();
        let newest = match warehouse.load(&node.relation).await {
            Ok(Some(table)) => {
                use futures::TryStreamExt;
                let history: Vec<_> = table.history(Some(1)).try_collect().await.unwrap_or_default();
                history.first().and_then(|c| c.timestamp).and_then(DateTime::from_timestamp_millis)
            }
            _ => None,
        };
        let judged = judge(newest, Some(every), Some(every * 2), now);
        results.push(Freshness {
            unique_id: node.unique_id.clone(),
            name: format!("model {}", node.relation),
            status: judged.status,
            newest,
            checked_at: now,
            rule: None,
            detail: judged.detail,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    results
}

/// dbt's `sources.json` (schema v3) for the sources among `results`: what `source_status:fresher` compares.
pub fn sources_json(results: &[Freshness], invocation_id: &str, elapsed_seconds: f64) -> Value {
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let entries: Vec<Value> = results
        .iter()
        .filter(|r| r.is_source())
        .map(|r| match r.status {
            FreshnessStatus::RuntimeError => json!({
                "unique_id": r.unique_id,
                "status": r.status.as_str(),
                "error": r.detail,
            }),
            _ => json!({
                "unique_id": r.unique_id,
                "max_loaded_at": r.newest.map(time),
                "snapshotted_at": time(r.checked_at),
                "max_loaded_at_time_ago_in_s": r.newest.map(|n| (r.checked_at - n).as_seconds_f64()),
                "status": r.status.as_str(),
                "criteria": r.rule,
                "adapter_response": {},
                "timing": [],
                "thread_id": "Thread-1",
                "execution_time": r.seconds,
            }),
        })
        .collect();
    json!({
        "metadata": {
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/sources/v3.json",
            "dbt_version": concat!("pipe ", env!("CARGO_PKG_VERSION")),
            "generated_at": time(Utc::now()),
            "invocation_id": invocation_id,
            "env": {},
        },
        "results": entries,
        "elapsed_time": elapsed_seconds,
    })
}

/// The newest data per source in a `sources.json` (pipe's or dbt's): unique id -> `max_loaded_at`.
pub fn read_sources_json(text: &str) -> Option<BTreeMap<String, DateTime<Utc>>> {
    let value: Value = serde_json::from_str(text).ok()?;
    let results = value.get("results")?.as_array()?;
    Some(
        results
            .iter()
            .filter_map(|r| {
                let id = r.get("unique_id")?.as_str()?;
                let loaded = r.get("max_loaded_at")?.as_str()?;
                let at = DateTime::parse_from_rfc3339(loaded)
                    .map(|t| t.with_timezone(&Utc))
                    .or_else(|_| {
                        chrono::NaiveDateTime::parse_from_str(loaded, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
                    })
                    .ok()?;
                Some((id.to_string(), at))
            })
            .collect(),
    )
}
