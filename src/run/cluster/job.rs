//! The job behind a query run on the cluster, and its metrics.
//!
//! Ballista runs a submitted physical plan as a job but does not tell the client its id. pipe puts a
//! [`TaskTagExec`] on top of every plan it submits: each output batch carries, in one extra dictionary column, the
//! identity of the task that made it (`TID {job}/{stage}.{attempt}/{task}.{attempt}`, Ballista's); the client takes
//! the column off ([`untagged`]) and, once the stream ends, asks the scheduler for the job's metrics
//! (`GetJobMetrics`: every successful stage's operators with their metrics summed over its tasks). Those feed the
//! model's row accounting as the executed plan's metrics do locally.

use std::fmt;
use std::sync::{Arc, Mutex};

use ballista_core::serde::protobuf::{scheduler_grpc_client::SchedulerGrpcClient, GetJobMetricsParams};
use datafusion::arrow::array::{Array, DictionaryArray, Int32Array, RecordBatch, StringArray};
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

/// The column [`TaskTagExec`] adds.
pub const TASK_COLUMN: &str = "__pipe_task";

/// Passes its input's batches on with one more column: the identity of the task running it. A partition that
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

/// `batch` with the task's identity appended, as a dictionary of one value.
fn tagged(batch: &RecordBatch, schema: &SchemaRef, task: Option<&str>) -> Result<RecordBatch> {
    let keys = Int32Array::from(vec![0; batch.num_rows()]);
    let values = Arc::new(StringArray::from(vec![task]));
    let tag = DictionaryArray::<Int32Type>::try_new(keys, values)?;
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(tag));
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
        let task = context.task_id();
        let input = self.input.execute(partition, context)?;
        let schema = self.schema();
        let empty = RecordBatch::new_empty(self.input.schema());
        let (out, state) = (Arc::clone(&schema), (input, false, false));
        let stream = futures::stream::unfold(state, move |(mut input, mut sent, done)| {
            let (schema, task, empty) = (Arc::clone(&schema), task.clone(), empty.clone());
            async move {
                if done {
                    return None;
                }
                match input.next().await {
                    Some(Ok(batch)) => {
                        sent = true;
                        Some((tagged(&batch, &schema, task.as_deref()), (input, sent, false)))
                    }
                    Some(Err(err)) => Some((Err(err), (input, sent, true))),
                    None if !sent => Some((tagged(&empty, &schema, task.as_deref()), (input, true, true))),
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

/// The job id a tagged batch names. The column arrives as a dictionary, or as plain strings when the shuffle
/// unpacked it; a batch without rows keeps it only as a dictionary's value.
fn job_in(batch: &RecordBatch) -> Option<String> {
    let column = batch.column_by_name(TASK_COLUMN)?;
    let column = match column.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
        Some(dictionary) => dictionary.values(),
        None => column,
    };
    let text = datafusion::arrow::compute::cast(column, &DataType::Utf8).ok()?;
    let values = text.as_any().downcast_ref::<StringArray>()?;
    (0..values.len()).filter(|i| values.is_valid(*i)).find_map(|i| job_of(values.value(i)))
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
    let job: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&job);
    let width = schema.fields().len();
    let batches = stream.map(move |batch| {
        let batch = batch?;
        let mut job = seen.lock().unwrap_or_else(|e| e.into_inner());
        if job.is_none() {
            *job = job_in(&batch);
        }
        Ok(batch.project(&(0..width).collect::<Vec<_>>())?)
    });
    let finish = futures::stream::once(async move {
        let job = job.lock().unwrap_or_else(|e| e.into_inner()).clone();
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

    #[test]
    fn the_job_is_read_off_the_task_identity() {
        assert_eq!(job_of("TID aBc12/3.0/7.1").as_deref(), Some("aBc12"));
        assert_eq!(job_of("task 3"), None);
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
        let exec_schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int32, false),
            Field::new(TASK_COLUMN, task_type(), true),
        ]));
        let with = tagged(&batch, &exec_schema, Some("TID j9/1.0/0.0")).unwrap();
        assert_eq!(job_in(&with).as_deref(), Some("j9"));
        let empty = tagged(&RecordBatch::new_empty(schema), &exec_schema, Some("TID j9/1.0/0.0")).unwrap();
        assert_eq!((empty.num_rows(), job_in(&empty).as_deref()), (0, Some("j9")));
        // As the shuffle unpacks it.
        let plain = Arc::new(Schema::new(vec![Field::new(TASK_COLUMN, DataType::Utf8, true)]));
        let unpacked = RecordBatch::try_new(plain, vec![Arc::new(StringArray::from(vec!["TID j7/2.0/1.0"]))]).unwrap();
        assert_eq!(job_in(&unpacked).as_deref(), Some("j7"));
        assert_eq!(job_in(&tagged(&batch, &exec_schema, None).unwrap()), None);
    }
}
