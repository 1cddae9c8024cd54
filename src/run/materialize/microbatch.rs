//! `incremental_strategy='microbatch'`: a time-partitioned model is written batch by batch, each batch replacing
//! exactly its slice of `event_time` (`[start, end)`) in one Delta commit (`replaceWhere`), so a retried batch
//! replaces itself and never duplicates.
//!
//! Config: `event_time` (a column of the model's output), `begin` (the first time to cover), `batch_size`
//! (`hour`, `day` or `month`) and `lookback` (earlier batches a later run reprocesses for late data; default 1).
//! The batch's rows are the model's rows whose `event_time` falls in the slice: the slice is a filter over the
//! model's query, which DataFusion pushes down to the scans where the column comes straight from an input.
//!
//! The ledger is in the table's own commits, as Delta application transactions written with the rows:
//! `pipe.microbatch` holds the end (epoch seconds) of the latest slice covered, so the next run starts `lookback`
//! batches before it; a backfill writes `pipe.backfill:<id>:<start>` per batch, so an interrupted backfill resumes
//! with the first batch it has not committed.

use std::time::Instant;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use futures::StreamExt;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::Expr;

use super::{accounted, plan_query, ModelContext, Outcome};
use crate::manifest::Node;
use crate::run::RunError;

/// A batch's event-time range, `[start, end)`.
pub type Batch = (DateTime<Utc>, DateTime<Utc>);

/// The most batches one run of a microbatch model lists: an hourly model over eleven years.
pub const MAX_BATCHES: i64 = 100_000;

/// How many slices are computed at once (their commits stay in order).
const SLICES_AT_ONCE: usize = 2;

/// The application transaction holding the end of the latest slice a microbatch model covers.
const LEDGER_APP_ID: &str = "pipe.microbatch";

/// What event time a run covers: `pipe build --event-time-start/--event-time-end`, or a backfill's range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventTimeWindow {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// A backfill's id: each batch records `pipe.backfill:<id>:<start>`, and batches already recorded are skipped.
    pub backfill: Option<String>,
}

pub use crate::project::settings::BatchSize;

/// A microbatch model's settings.
#[derive(Debug, Clone)]
pub struct MicrobatchConfig {
    pub event_time: String,
    pub begin: DateTime<Utc>,
    pub batch_size: BatchSize,
    pub lookback: u32,
    /// How late an event may arrive and still update its slice; later ones are counted and reported.
    pub allowed_lateness: Option<TimeDelta>,
}

impl MicrobatchConfig {
    pub fn of(node: &Node) -> Result<MicrobatchConfig, RunError> {
        // The compile checked every key; a manifest without them was not made by this compile.
        let settings = node.settings.microbatch.as_ref().ok_or_else(|| {
            RunError::Unsupported(format!(
                "microbatch model `{}` has no microbatch settings in the manifest",
                node.name
            ))
        })?;
        Ok(MicrobatchConfig {
            event_time: settings.event_time.clone(),
            begin: settings.begin,
            batch_size: settings.batch_size,
            lookback: settings.lookback,
            allowed_lateness: settings.allowed_lateness,
        })
    }

    /// The slices `[start, end)` from the batch holding `from` up to `to`.
    /// `batches`, refused before any is listed when there would be more than `MAX_BATCHES` of them.
    pub fn checked_batches(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Batch>, RunError> {
        let start = self.batch_size.floor(from.max(self.begin));
        let hours = (to - start).num_hours().max(0);
        let count = match self.batch_size {
            BatchSize::Hour => hours,
            BatchSize::Day => hours / 24,
            BatchSize::Month => hours / (24 * 28),
        };
        if count > MAX_BATCHES {
            let unit = match self.batch_size {
                BatchSize::Hour => "hour",
                BatchSize::Day => "day",
                BatchSize::Month => "month",
            };
            return Err(RunError::Unsupported(format!(
                "the range from {} to {} holds about {count} batches of one {unit}, more than the {MAX_BATCHES} pipe runs at once; narrow `--start`/`--end` (or `--event-time-start`/`--event-time-end`) or use a larger `batch_size`",
                sql_time(start),
                sql_time(to),
            )));
        }
        Ok(self.batches(from, to))
    }

    pub fn batches(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Batch> {
        let mut batches = Vec::new();
        let mut start = self.batch_size.floor(from.max(self.begin));
        while start < to {
            let end = self.batch_size.next(start);
            batches.push((start, end));
            start = end;
        }
        batches
    }

    /// `event_time` in `[start, end)`, as an expression whose bounds are literals of the column's own type
    /// (`column_type`): the same instants for a timestamp of any unit or time zone.
    pub fn slice_expr(&self, start: DateTime<Utc>, end: DateTime<Utc>, column_type: &DataType) -> Expr {
        let column = Expr::Column(Column::new_unqualified(&self.event_time));
        column.clone().gt_eq(time_literal(start, column_type)).and(column.lt(time_literal(end, column_type)))
    }

    /// `slice_expr` for the column of that name in `schema` (a naive timestamp when the schema has no such column,
    /// which the query's planning then reports).
    pub fn slice_in(&self, start: DateTime<Utc>, end: DateTime<Utc>, schema: &datafusion::common::DFSchema) -> Expr {
        let naive = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let column_type = schema.field_with_unqualified_name(&self.event_time).map_or(naive, |f| f.data_type().clone());
        self.slice_expr(start, end, &column_type)
    }
}

/// `at` as a literal of `data_type` when that is a timestamp (its unit and time zone; a naive timestamp holds the
/// UTC wall-clock time), else as a naive nanosecond timestamp that planning coerces to the column (a date).
fn time_literal(at: DateTime<Utc>, data_type: &DataType) -> Expr {
    let nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let value = match data_type {
        DataType::Timestamp(TimeUnit::Second, tz) => ScalarValue::TimestampSecond(Some(at.timestamp()), tz.clone()),
        DataType::Timestamp(TimeUnit::Millisecond, tz) => {
            ScalarValue::TimestampMillisecond(Some(at.timestamp_millis()), tz.clone())
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            ScalarValue::TimestampMicrosecond(Some(at.timestamp_micros()), tz.clone())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => ScalarValue::TimestampNanosecond(Some(nanos), tz.clone()),
        _ => ScalarValue::TimestampNanosecond(Some(nanos), None),
    };
    Expr::Literal(value, None)
}

pub use crate::project::parse_duration;

fn sql_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub use crate::project::parse_utc_time as parse_time;

/// What a microbatch run will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchPlan {
    /// No table yet, or `--full-refresh`: every batch from `begin`, computed as one query and written in one commit.
    Whole { start: DateTime<Utc>, end: DateTime<Utc>, batches: usize },
    /// These slices, one commit each (backfill batches already committed are left out).
    Slices(Vec<(DateTime<Utc>, DateTime<Utc>)>),
}

/// Decides the batches of a microbatch run from the table's ledger.
pub async fn batch_plan(
    config: &MicrobatchConfig,
    table: Option<&DeltaTable>,
    window: &EventTimeWindow,
    full_refresh: bool,
) -> Result<BatchPlan, RunError> {
    let end = window.end.unwrap_or_else(Utc::now);
    let table = match table {
        Some(table) if !full_refresh => table,
        _ if window.start.is_none() => {
            let start = config.batch_size.floor(config.begin);
            return Ok(BatchPlan::Whole { start, end, batches: config.checked_batches(start, end)?.len() });
        }
        // An explicit range over a table that does not exist yet: written batch by batch all the same.
        _ => return Ok(BatchPlan::Slices(config.checked_batches(window.start.unwrap_or(config.begin), end)?)),
    };
    let snapshot = table.snapshot()?;
    let log_store = table.log_store();
    let from = match window.start {
        Some(start) => start,
        None => {
            let covered = snapshot.transaction_version(log_store.as_ref(), LEDGER_APP_ID).await?;
            let covered = covered.and_then(|secs| DateTime::from_timestamp(secs, 0)).unwrap_or(config.begin);
            match config.allowed_lateness {
                // Every slice an event within the allowed lateness of the covered time can still fall in.
                Some(lateness) => covered.min(end) - lateness,
                // The batch holding the latest covered time, and `lookback` batches before it.
                None => {
                    let last = config.batch_size.floor(covered.min(end));
                    let last = if last == covered { config.batch_size.back(last, 1) } else { last };
                    config.batch_size.back(last, config.lookback)
                }
            }
        }
    };
    let mut batches = config.checked_batches(from, end)?;
    if let Some(id) = &window.backfill {
        let mut pending = Vec::new();
        for batch in batches {
            let done = snapshot.transaction_version(log_store.as_ref(), backfill_app_id(id, batch.0)).await?;
            if done.is_none() {
                pending.push(batch);
            }
        }
        batches = pending;
    }
    Ok(BatchPlan::Slices(batches))
}

fn backfill_app_id(id: &str, start: DateTime<Utc>) -> String {
    format!("pipe.backfill:{id}:{}", start.format("%Y-%m-%dT%H:%M:%S"))
}

/// Runs a microbatch model.
pub(super) async fn run(cx: &ModelContext<'_>) -> Result<Outcome, RunError> {
    let node = cx.node;
    let config = MicrobatchConfig::of(node)?;
    let started = Instant::now();
    let existing = cx.warehouse.load(&node.relation).await?;
    let batch_plan = batch_plan(&config, existing.as_ref(), cx.event_time, cx.full_refresh).await?;
    let metadata = cx.commit_metadata();
    // A slice is the model's own plan (the compile's, when its inputs are unchanged) under a filter on
    // `event_time`, which DataFusion pushes down to the scans where the column comes straight from an input.
    let slice = |start, end| {
        let config = &config;
        async move {
            let frame = plan_query(cx, &node.compiled_sql).await?;
            let predicate = config.slice_in(start, end, frame.schema());
            let frame = frame.filter(predicate).map_err(|e| RunError::query(&node.name, e))?;
            Ok::<_, RunError>(accounted(cx, frame))
        }
    };
    let ledger = |end: DateTime<Utc>, covered: Option<i64>| {
        Transaction::new(LEDGER_APP_ID, covered.unwrap_or(i64::MIN).max(end.timestamp()))
    };
    let partitions = node.settings.partition_by.clone();
    let mut rows_written = 0u64;
    let mut tests = None;
    // Slices that went to disk under a memory limit, and their bytes, said in the note.
    let mut staged_on_disk = (0usize, 0u64);
    let plan_time = started.elapsed();
    let write_started = Instant::now();
    let existing_table = existing.clone();
    let mut table = existing;
    // Events that arrived since the last run but belong before the slices this run rewrites: counted, reported,
    // and left in bronze for a backfill.
    let late = match (&batch_plan, &existing_table, config.allowed_lateness, &cx.event_time.backfill) {
        (BatchPlan::Slices(slices), Some(target), Some(_), None) => match slices.first() {
            Some((first, _)) => late_rows(cx, target, *first).await?,
            None => 0,
        },
        _ => 0,
    };
    let note = match batch_plan {
        BatchPlan::Whole { start, end, batches } => {
            // One result replacing the table: written, audited and published like a `table`.
            let frame = slice(start, end).await?;
            let plan_time = started.elapsed();
            let mut outcome = super::table::publish(cx, frame, plan_time, vec![ledger(end, None)]).await?;
            outcome.note = Some(format!("microbatch: {batches} batches from {} in one commit", sql_time(start)));
            return Ok(outcome);
        }
        BatchPlan::Slices(batches) => {
            // Independent slices are computed two at a time; their commits land one after the other, in order,
            // so the ledger never records a slice before the ones it follows.
            let computed = futures::stream::iter(batches.iter().copied())
                .map(|(start, end)| {
                    let frame = slice(start, end);
                    async move {
                        // Held in memory, or staged on disk under a memory limit (`run::staged`): audited, then
                        // written from there.
                        let frame = frame.await?;
                        super::stage(cx, frame, false).await
                    }
                })
                .buffered(SLICES_AT_ONCE);
            futures::pin_mut!(computed);
            let mut done = 0;
            while let Some(staged) = computed.next().await {
                let staged = staged?;
                let (start, end) = (&batches[done].0, &batches[done].1);
                done += 1;
                let target = match table.take() {
                    Some(table) => table,
                    None => cx.warehouse.table_for_write(&node.relation).await?,
                };
                let covered = match target.snapshot() {
                    Ok(snapshot) => snapshot.transaction_version(target.log_store().as_ref(), LEDGER_APP_ID).await?,
                    Err(_) => None,
                };
                let mut transactions = vec![ledger(*end, covered)];
                if let Some(id) = &cx.event_time.backfill {
                    transactions.push(Transaction::new(backfill_app_id(id, *start), 1));
                }
                let commit = CommitProperties::default()
                    .with_metadata(metadata.clone())
                    .with_application_transactions(transactions);
                let schema = datafusion::common::DFSchema::try_from(staged.schema().as_ref().clone())
                    .map_err(|e| RunError::query(&node.name, e))?;
                let predicate = config.slice_in(*start, *end, &schema);
                let rows = staged.frame(cx.session).map_err(|e| RunError::query(&node.name, e))?;
                if staged.spilled_bytes() > 0 {
                    staged_on_disk = (staged_on_disk.0 + 1, staged_on_disk.1 + staged.spilled_bytes());
                }
                let has_table = target.version().is_some();
                // Write-audit-publish: the model's tests run on the table as it will be with this slice replaced,
                // before the slice is committed; a failing one leaves the table at its version.
                if !cx.attached_tests().is_empty() {
                    let result = slice_result(cx, has_table.then_some(&target), rows.clone(), &predicate).await?;
                    tests = Some(cx.audit(result).await?);
                }
                // An empty slice still replaces (clears) what the table holds for it.
                let mut write = target
                    .write(Vec::new())
                    .with_input_plan(rows.logical_plan().clone())
                    .with_writer_properties(super::writer_properties(node))
                    .with_session_state(std::sync::Arc::new(cx.session.state()))
                    .with_commit_properties(commit);
                write = if has_table {
                    write.with_save_mode(SaveMode::Overwrite).with_replace_where(predicate.clone())
                } else {
                    write.with_save_mode(SaveMode::Append).with_partition_columns(partitions.clone())
                };
                let written = write.await.map_err(|e| RunError::write(&node.name, e))?;
                let rows = cx.warehouse.last_commit(&written).await?.rows_added.unwrap_or(0);
                rows_written += rows;
                table = Some(written);
                let message = format!("batch {done} of {}: {} ({rows} rows)", batches.len(), sql_time(*start));
                for events in cx.events {
                    events.progress(&node.name, &message);
                }
            }
            match (batches.first(), batches.last()) {
                (Some((first, _)), Some((_, last))) => {
                    format!("{} batches, {} to {}", batches.len(), sql_time(*first), sql_time(*last))
                }
                _ => "no batch to run".to_string(),
            }
        }
    };
    let (delta_version, provider, execute_time) = match &table {
        Some(table) => {
            let commit = cx.warehouse.last_commit(table).await?;
            (Some(commit.version), Some(cx.warehouse.provider(table).await?), commit.execute_time)
        }
        None => (None, None, None),
    };
    let late = match late {
        0 => String::new(),
        n => format!(
            "\n{n} late rows beyond allowed_lateness: not applied, kept upstream (`pipe backfill` applies them)"
        ),
    };
    let staged = match staged_on_disk {
        (0, _) => String::new(),
        (slices, bytes) => {
            format!("; {slices} batch(es) staged on disk ({})", crate::run::staged::mib(bytes))
        }
    };
    Ok(Outcome {
        rows_written: Some(rows_written),
        delta_version,
        provider,
        note: Some(format!("microbatch: {note}{staged}{late}")),
        plan_time,
        write_time: write_started.elapsed(),
        execute_time,
        tests,
        rows_read: None,
    })
}

/// The table as it will be once a slice's `rows` replace what `predicate` selects: the rows outside the slice
/// (those for which the predicate is not true, as Delta's `replaceWhere` keeps them), cast to the slice's columns,
/// then the slice.
async fn slice_result(
    cx: &ModelContext<'_>,
    target: Option<&DeltaTable>,
    slice: datafusion::prelude::DataFrame,
    predicate: &Expr,
) -> Result<std::sync::Arc<dyn datafusion::catalog::TableProvider>, RunError> {
    use datafusion::logical_expr::is_not_true;
    let query = |e| RunError::query(&cx.node.name, e);
    let schema = std::sync::Arc::new(slice.schema().as_arrow().clone());
    let Some(target) = target else { return Ok(slice.into_view()) };
    let old = cx.session.read_table(cx.warehouse.provider(target).await?).map_err(query)?;
    let kept = old.filter(is_not_true(predicate.clone())).map_err(query)?;
    Ok(super::kept_then_batch(kept, &schema, slice).map_err(query)?.into_view())
}

/// Rows of the upstream tables that record their load time (`_pipe_loaded_at`, bronze ingestion) and declare an
/// `event_time`, loaded after this table's last commit, with an event time before `before`.
async fn late_rows(cx: &ModelContext<'_>, target: &DeltaTable, before: DateTime<Utc>) -> Result<u64, RunError> {
    use futures::TryStreamExt;
    let last: Vec<_> = target.history(Some(1)).try_collect().await?;
    let Some(last) = last.first().and_then(|c| c.timestamp).and_then(DateTime::from_timestamp_millis) else {
        return Ok(0);
    };
    let mut late = 0;
    for id in &cx.node.depends_on.nodes {
        let Some(upstream) = cx.manifest.nodes.get(id) else { continue };
        let Some(event_time) = upstream.settings.event_time.as_deref() else { continue };
        let Ok(provider) = cx.session.table_provider(upstream.relation.as_str()).await else { continue };
        if provider.schema().field_with_name("_pipe_loaded_at").is_err() {
            continue;
        }
        let sql = format!(
            "select count(*) from {} where _pipe_loaded_at > '{}' and \"{event_time}\" < TIMESTAMP '{}'",
            upstream.relation,
            last.to_rfc3339(),
            sql_time(before)
        );
        late += crate::warehouse::count_rows(cx.session, &sql).await.map_err(|e| RunError::query(&cx.node.name, e))?;
    }
    Ok(late)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    #[test]
    fn batches_cover_the_range_in_whole_slices() {
        let config = MicrobatchConfig {
            event_time: "ts".into(),
            begin: at("2026-01-01"),
            batch_size: BatchSize::Day,
            lookback: 1,
            allowed_lateness: None,
        };
        let batches = config.batches(at("2026-01-02 10:00:00"), at("2026-01-04 00:00:01"));
        let starts: Vec<String> = batches.iter().map(|(s, _)| sql_time(*s)).collect();
        assert_eq!(starts, ["2026-01-02 00:00:00", "2026-01-03 00:00:00", "2026-01-04 00:00:00"]);
        assert_eq!(config.batches(at("2025-12-01"), at("2026-01-02")).len(), 1, "nothing before `begin`");
        assert_eq!(BatchSize::Month.next(at("2026-01-01")), at("2026-02-01"));
        assert_eq!(BatchSize::Month.floor(at("2026-03-17 08:00:00")), at("2026-03-01"));
        assert_eq!(BatchSize::Hour.floor(at("2026-03-17 08:59:59")), at("2026-03-17 08:00:00"));
        // The bounds are literals of the column's type: the same instants in any unit and time zone.
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(
            config.slice_expr(at("2026-01-01"), at("2026-01-02"), &utc).to_string(),
            "ts >= TimestampMicrosecond(1767225600000000, Some(\"UTC\")) AND ts < TimestampMicrosecond(1767312000000000, Some(\"UTC\"))"
        );
        let naive = DataType::Timestamp(TimeUnit::Nanosecond, None);
        assert_eq!(
            config.slice_expr(at("2026-01-01"), at("2026-01-02"), &naive).to_string(),
            "ts >= TimestampNanosecond(1767225600000000000, None) AND ts < TimestampNanosecond(1767312000000000000, None)"
        );
    }
}
