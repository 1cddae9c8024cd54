//! The job behind a query run on the cluster, and its metrics.
//!
//! Ballista runs a submitted physical plan as a job but does not tell the client its id. pipe puts a
//! [`TaskTagExec`] on top of every plan it submits: each output batch carries, in one extra dictionary column, the
//! identity of the task that made it (`TID {job}/{stage}.{attempt}/{task}.{attempt}`, Ballista's); the client takes
//! the column off ([`untagged`]) and, once the stream ends, asks the scheduler for the job's metrics
//! (`GetJobMetrics`: every successful stage's operators with their metrics summed over its tasks). Those feed the
//! model's row accounting as the executed plan's metrics do locally.
//!
//! The tags also let the client check the answer came from one attempt of the final stage and of each of its tasks.
//! Ballista 55 can return the output of a superseded attempt beside its rerun's, after an executor was lost: such
//! an answer is refused, so the model fails with its table as it was, never with duplicated rows.

use std::fmt;
use std::sync::{Arc, Mutex};

use ballista_core::serde::protobuf::{scheduler_grpc_client::SchedulerGrpcClient, GetJobMetricsParams};
use datafusion::arrow::array::{Array, DictionaryArray, Int32Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::run::accounting::{RemoteOperator, RemoteStage, RowAccounting};

/// The columns [`TaskTagExec`] adds: the task's identity, and each row's number in the task's output.
pub const TASK_COLUMN: &str = "__pipe_task";
pub const ROW_COLUMN: &str = "__pipe_row";

/// Passes its input's batches on with two more columns: the identity of the task running it (and the partition it
/// computes), and each row's number in that partition's output. A partition that
/// produced no batch sends one empty batch, so even an empty result names its job.
#[derive(Debug)]
pub struct TaskTagExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

fn task_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

impl TaskTagExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let mut fields: Vec<Arc<Field>> = input.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(TASK_COLUMN, task_type(), true)));
        fields.push(Arc::new(Field::new(ROW_COLUMN, DataType::UInt64, false)));
        let schema = Arc::new(Schema::new(fields));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Self { input, properties }
    }
}

impl DisplayAs for TaskTagExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TaskTagExec")
    }
}

/// `batch` with the task's identity appended, as a dictionary of one value, and each row's number in the task's
/// output from `first_row` on.
fn tagged(batch: &RecordBatch, schema: &SchemaRef, task: Option<&str>, first_row: u64) -> Result<RecordBatch> {
    let keys = Int32Array::from(vec![0; batch.num_rows()]);
    let values = Arc::new(StringArray::from(vec![task]));
    let tag = DictionaryArray::<Int32Type>::try_new(keys, values)?;
    let rows = UInt64Array::from_iter_values(first_row..first_row + batch.num_rows() as u64);
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(tag));
    columns.push(Arc::new(rows));
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

impl ExecutionPlan for TaskTagExec {
    fn name(&self) -> &str {
        "TaskTagExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TaskTagExec::new(children.swap_remove(0))))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let task = context.task_id().map(|task| format!("{task} p{partition}"));
        let input = self.input.execute(partition, context)?;
        let schema = self.schema();
        let empty = RecordBatch::new_empty(self.input.schema());
        let (out, state) = (Arc::clone(&schema), (input, 0u64, false, false));
        let stream = futures::stream::unfold(state, move |(mut input, row, sent, done)| {
            let (schema, task, empty) = (Arc::clone(&schema), task.clone(), empty.clone());
            async move {
                if done {
                    return None;
                }
                match input.next().await {
                    Some(Ok(batch)) => {
                        let next = row + batch.num_rows() as u64;
                        Some((tagged(&batch, &schema, task.as_deref(), row), (input, next, true, false)))
                    }
                    Some(Err(err)) => Some((Err(err), (input, row, sent, true))),
                    None if !sent => Some((tagged(&empty, &schema, task.as_deref(), row), (input, row, true, true))),
                    None => None,
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out, stream)))
    }
}

/// The job id in Ballista's task identity `TID {job}/{stage}.{attempt}/{task}.{attempt}`.
fn job_of(task: &str) -> Option<String> {
    let rest = task.strip_prefix("TID ")?;
    rest.split('/').next().filter(|j| !j.is_empty()).map(str::to_string)
}

/// The tag a batch carries (one task made it). The column arrives as a dictionary, or as plain strings when the
/// shuffle unpacked it; a batch without rows keeps it only as a dictionary's value.
fn tag_in(batch: &RecordBatch) -> Option<String> {
    let column = batch.column_by_name(TASK_COLUMN)?;
    let column = match column.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
        Some(dictionary) => dictionary.values(),
        None => column,
    };
    let text = datafusion::arrow::compute::cast(column, &DataType::Utf8).ok()?;
    let values = text.as_any().downcast_ref::<StringArray>()?;
    (0..values.len()).find(|i| values.is_valid(*i)).map(|i| values.value(i).to_string())
}

/// `(stage, stage attempt, task, task attempt)` of Ballista's task identity `TID {job}/{stage}.{a}/{task}.{a}`.
fn attempt_of(tag: &str) -> Option<(u64, u64, u64, u64)> {
    let rest = tag.strip_prefix("TID ")?.split(' ').next()?;
    let mut parts = rest.split('/').skip(1);
    let pair = |text: Option<&str>| -> Option<(u64, u64)> {
        let (a, b) = text?.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let ((stage, stage_attempt), (task, task_attempt)) = (pair(parts.next())?, pair(parts.next())?);
    Some((stage, stage_attempt, task, task_attempt))
}

/// The job id a tagged batch names.
fn job_in(batch: &RecordBatch) -> Option<String> {
    tag_in(batch).as_deref().and_then(job_of)
}

/// The task attempts and rows a job's answer came from, as its batches arrive: one attempt of each task, and each
/// row of a task's output once. Ballista 55 can return a task's output twice, or a superseded attempt's beside its
/// rerun's, after an executor was lost; such an answer is refused.
#[derive(Debug, Default)]
struct Attempts {
    /// Each task's attempt and the first tag seen from it.
    tasks: std::collections::BTreeMap<u64, (u64, String)>,
    /// The row numbers seen of each tagged output, as ranges `start -> end`.
    rows: std::collections::HashMap<String, std::collections::BTreeMap<u64, u64>>,
}

fn refused(first: &str, tag: &str) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Execution(format!(
        "the cluster returned the output of two attempts at one task (`{first}` and `{tag}`; an executor was lost \
         and Ballista kept a superseded attempt's output beside its rerun's): the answer is refused, nothing is \
         written from it; build the model again"
    ))
}

impl Attempts {
    /// Records the batch's tags and rows: an error when a row was seen before, or a task's output comes from two
    /// of its attempts.
    fn record(&mut self, batch: &RecordBatch) -> Result<()> {
        for (tag, start, end) in runs(batch) {
            if let Some((_, _, task, task_attempt)) = attempt_of(&tag) {
                match self.tasks.get(&task) {
                    Some((seen, first)) if *seen != task_attempt => return Err(refused(first, &tag)),
                    Some(_) => {}
                    None => {
                        self.tasks.insert(task, (task_attempt, tag.clone()));
                    }
                }
            }
            let seen = self.rows.entry(tag.clone()).or_default();
            let overlaps = seen.range(..end).next_back().is_some_and(|(_, seen_end)| *seen_end > start);
            if overlaps {
                return Err(datafusion::error::DataFusionError::Execution(format!(
                    "the cluster returned rows {start}..{end} of `{tag}` twice (an executor was lost and Ballista \
                     returned a task's output again): the answer is refused, nothing is written from it; build the \
                     model again"
                )));
            }
            seen.insert(start, end);
        }
        Ok(())
    }
}

/// The batch's rows as runs of one tag and consecutive row numbers: `(tag, first row, last row + 1)`.
fn runs(batch: &RecordBatch) -> Vec<(String, u64, u64)> {
    let (Some(tags), Some(rows)) = (batch.column_by_name(TASK_COLUMN), batch.column_by_name(ROW_COLUMN)) else {
        return Vec::new();
    };
    let (Ok(tags), Some(rows)) =
        (datafusion::arrow::compute::cast(tags, &DataType::Utf8), rows.as_any().downcast_ref::<UInt64Array>())
    else {
        return Vec::new();
    };
    let Some(tags) = tags.as_any().downcast_ref::<StringArray>() else { return Vec::new() };
    let mut runs: Vec<(String, u64, u64)> = Vec::new();
    for i in 0..batch.num_rows() {
        if tags.is_null(i) {
            continue;
        }
        let (tag, row) = (tags.value(i), rows.value(i));
        match runs.last_mut() {
            Some((last, _, end)) if last == tag && *end == row => *end += 1,
            _ => runs.push((tag.to_string(), row, row + 1)),
        }
    }
    runs
}

/// The stream of a job submitted under a [`TaskTagExec`]: its batches without the task column (`schema` is the
/// plan's own). Once it has ended, the job's metrics are fetched from `scheduler` and recorded in `accountings`
/// (the model's row accounting); a job whose metrics cannot be had is logged and leaves them as they were.
pub fn untagged(
    stream: SendableRecordBatchStream,
    schema: SchemaRef,
    scheduler: String,
    accountings: Vec<Arc<RowAccounting>>,
) -> SendableRecordBatchStream {
    let job: Arc<Mutex<(Option<String>, Attempts)>> = Arc::new(Mutex::new((None, Attempts::default())));
    let seen = Arc::clone(&job);
    let width = schema.fields().len();
    let batches = stream.map(move |batch| {
        let batch = batch?;
        let mut job = seen.lock().unwrap_or_else(|e| e.into_inner());
        if job.0.is_none() {
            job.0 = job_in(&batch);
        }
        job.1.record(&batch)?;
        Ok(batch.project(&(0..width).collect::<Vec<_>>())?)
    });
    let finish = futures::stream::once(async move {
        let job = job.lock().unwrap_or_else(|e| e.into_inner()).0.clone();
        tracing::debug!("cluster job {job:?} ended; {} row accounting(s) to give its metrics", accountings.len());
        match job {
            Some(job) if !accountings.is_empty() => match metrics(&scheduler, &job).await {
                Ok(stages) => {
                    for accounting in &accountings {
                        accounting.record_job(stages.clone());
                    }
                }
                Err(err) => tracing::warn!("metrics of job {job} not read from the scheduler: {err}"),
            },
            _ => {}
        }
        None
    })
    .filter_map(futures::future::ready);
    Box::pin(RecordBatchStreamAdapter::new(schema, batches.chain(finish)))
}

/// Every successful stage of `job` with its operators and their metrics, summed over the stage's tasks.
pub async fn metrics(scheduler: &str, job: &str) -> std::result::Result<Vec<RemoteStage>, String> {
    let mut client = SchedulerGrpcClient::connect(format!("http://{scheduler}")).await.map_err(|e| e.to_string())?;
    let response = client
        .get_job_metrics(GetJobMetricsParams { job_id: job.to_string() })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let mut stages = Vec::new();
    for stage in response.stages {
        let mut operators = Vec::new();
        for operator in stage.operators {
            let set: MetricsSet = ballista_core::serde::protobuf::OperatorMetricsSet { metrics: operator.metrics }
                .try_into()
                .map_err(|e| format!("{e:?}"))?;
            operators.push(RemoteOperator::new(operator.depth, operator.operator_type, operator.operator_desc, &set));
        }
        stages.push(RemoteStage { stage: stage.stage_id, operators });
    }
    Ok(stages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas() -> (SchemaRef, SchemaRef) {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let exec_schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int32, false),
            Field::new(TASK_COLUMN, task_type(), true),
            Field::new(ROW_COLUMN, DataType::UInt64, false),
        ]));
        (schema, exec_schema)
    }

    #[test]
    fn the_job_is_read_off_the_task_identity() {
        assert_eq!(job_of("TID aBc12/3.0/7.1 p0").as_deref(), Some("aBc12"));
        assert_eq!(job_of("task 3"), None);
        let (schema, exec_schema) = schemas();
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
        let with = tagged(&batch, &exec_schema, Some("TID j9/1.0/0.0 p0"), 0).unwrap();
        assert_eq!(job_in(&with).as_deref(), Some("j9"));
        let empty = tagged(&RecordBatch::new_empty(schema), &exec_schema, Some("TID j9/1.0/0.0 p0"), 0).unwrap();
        assert_eq!((empty.num_rows(), job_in(&empty).as_deref()), (0, Some("j9")));
        // As the shuffle unpacks it.
        let plain = Arc::new(Schema::new(vec![Field::new(TASK_COLUMN, DataType::Utf8, true)]));
        let unpacked = RecordBatch::try_new(plain, vec![Arc::new(StringArray::from(vec!["TID j7/2.0/1.0"]))]).unwrap();
        assert_eq!(job_in(&unpacked).as_deref(), Some("j7"));
        assert_eq!(job_in(&tagged(&batch, &exec_schema, None, 0).unwrap()), None);
    }

    /// A task's rows seen twice, or two attempts at one task, make the answer refused; batches split or merged on the
    /// way are not.
    #[test]
    fn an_answer_with_a_row_twice_or_two_attempts_at_a_task_is_refused() {
        let (schema, exec_schema) = schemas();
        let batch = |n: i32| {
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int32Array::from_iter_values(0..n))]).unwrap()
        };
        let from = |tag: &str, first: u64, n: i32| tagged(&batch(n), &exec_schema, Some(tag), first).unwrap();
        assert_eq!(attempt_of("TID j/2.1/5.0 p3"), Some((2, 1, 5, 0)));
        assert_eq!(attempt_of("task 3"), None);
        let mut attempts = Attempts::default();
        // Task 4's partition 0 in two batches, the second one split on the way; task 5 (a rerun, attempt 1).
        let second = from("TID j/2.0/4.0 p0", 3, 4);
        for batch in
            [from("TID j/2.0/4.0 p0", 0, 3), second.slice(0, 2), second.slice(2, 2), from("TID j/2.0/5.1 p0", 0, 5)]
        {
            attempts.record(&batch).unwrap();
        }
        // Two tasks' batches merged into one.
        let merged = datafusion::arrow::compute::concat_batches(
            &exec_schema,
            &[from("TID j/2.0/6.0 p0", 0, 2), from("TID j/2.0/7.0 p0", 0, 2)],
        )
        .unwrap();
        attempts.record(&merged).unwrap();
        // Task 4's output again: refused.
        let again = attempts.record(&from("TID j/2.0/4.0 p0", 5, 2)).unwrap_err().to_string();
        assert!(again.contains("rows 5..7 of `TID j/2.0/4.0 p0` twice"), "{again}");
        // Task 5's first attempt beside its rerun's: refused.
        let task = attempts.record(&from("TID j/2.0/5.0 p0", 0, 5)).unwrap_err().to_string();
        assert!(task.contains("two attempts at one task (`TID j/2.0/5.1 p0` and `TID j/2.0/5.0 p0`"), "{task}");
    }
}
