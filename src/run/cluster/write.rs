//! Data files of a model written by the executors, committed by the client.
//!
//! [`DeltaFilesWriteExec`] sits on top of a model's plan: each of its partitions (a task on an executor) writes its
//! rows as Parquet data files into the table's folder with delta-rs's file writer, and returns one row per file:
//! the file's Delta `add` action as JSON (path, size, partition values, statistics). It commits nothing. The client
//! collects the `add`s of the job's successful tasks and makes the one commit; files of a task attempt that
//! failed or was superseded are never in a commit, and a client that dies before committing leaves the table at
//! its old version; the table's next commit deletes such files (`materialize::commit`).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use futures::StreamExt;

use crate::project::settings::ParquetCompression;
use crate::run::materialize::Placement;

/// The one column of [`DeltaFilesWriteExec`]'s output.
pub const ADD_COLUMN: &str = "add";

/// How the files are written: where, with which columns, partitioned and compressed how.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesTarget {
    /// The table's location (`file:///...`, `s3://...`).
    pub table_url: String,
    /// The table's columns, partition columns included: the input's batches have them.
    pub schema: SchemaRef,
    pub partition_by: Vec<String>,
    pub compression: ParquetCompression,
    pub dictionary_page_size: u64,
}

/// Writes its input's partitions as data files of a Delta table; outputs their `add` actions.
#[derive(Debug)]
pub struct DeltaFilesWriteExec {
    input: Arc<dyn ExecutionPlan>,
    target: FilesTarget,
    properties: Arc<PlanProperties>,
}

impl DeltaFilesWriteExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, target: FilesTarget) -> Self {
        let schema = Arc::new(Schema::new(vec![Field::new(ADD_COLUMN, DataType::Utf8, false)]));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self { input, target, properties }
    }

    pub fn target(&self) -> &FilesTarget {
        &self.target
    }
}

impl DisplayAs for DeltaFilesWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DeltaFilesWriteExec: table={}", self.target.table_url)?;
        if !self.target.partition_by.is_empty() {
            write!(f, ", partition_by=[{}]", self.target.partition_by.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DeltaFilesWriteExec {
    fn name(&self) -> &str {
        "DeltaFilesWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
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
        Ok(Arc::new(DeltaFilesWriteExec::new(children.swap_remove(0), self.target.clone())))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context)?;
        let target = self.target.clone();
        let schema = self.schema();
        let output_schema = Arc::clone(&schema);
        let written = futures::stream::once(async move {
            let url = url::Url::parse(&target.table_url).map_err(|e| DataFusionError::External(Box::new(e)))?;
            let store = deltalake::DeltaTableBuilder::from_url(url)
                .and_then(|builder| builder.build_storage())
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .object_store(None);
            let properties =
                crate::run::materialize::parquet_writer_properties(target.compression, target.dictionary_page_size);
            let config = WriterConfig::new(
                Arc::clone(&target.schema),
                target.partition_by.clone(),
                Some(properties),
                None,
                None,
                Default::default(),
                None,
            );
            let mut writer = DeltaWriter::new(store, config);
            while let Some(batch) = input.next().await {
                let batch = crate::run::materialize::as_table_batch(batch?, &target.schema)?;
                writer.write(&batch).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
            }
            let adds = writer.close().await.map_err(|e| DataFusionError::External(Box::new(e)))?;
            let json = adds
                .iter()
                .map(serde_json::to_string)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(RecordBatch::try_new(output_schema, vec![Arc::new(StringArray::from(json))])?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, written)))
    }
}

/// The `add` actions in the output batches of a [`DeltaFilesWriteExec`].
pub fn adds(batches: &[RecordBatch]) -> Result<Vec<deltalake::kernel::Add>> {
    let mut adds = Vec::new();
    for batch in batches {
        let column = batch
            .column_by_name(ADD_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| DataFusionError::Internal("a files-write result without its `add` column".into()))?;
        for json in column.iter().flatten() {
            adds.push(serde_json::from_str(json).map_err(|e| DataFusionError::External(Box::new(e)))?);
        }
    }
    Ok(adds)
}

/// Replaces `table`'s contents with `frame`'s rows: the query runs on the cluster at `scheduler`, its executors
/// write the data files, and this process makes the one commit (pipe's `metadata`, the ledger's `transactions`).
/// A seed, a query reading what only this machine sees (rows in its memory, files outside the warehouse) or a
/// result pipe's writers do not take (see `materialize::prepare`) is left to the caller.
pub(crate) async fn overwrite(
    cx: &crate::run::materialize::ModelContext<'_>,
    table: &deltalake::DeltaTable,
    frame: datafusion::prelude::DataFrame,
    metadata: std::collections::HashMap<String, serde_json::Value>,
    transactions: Vec<deltalake::kernel::Transaction>,
    scheduler: &str,
) -> std::result::Result<Placement, crate::run::RunError> {
    use crate::run::RunError;
    let name = &cx.node.name;
    if cx.node.resource_type == crate::manifest::NodeKind::Seed {
        return Ok(Placement::Here(Some("a seed's file is read where the project is".into())));
    }
    let partition_by = cx.node.settings.partition_by.clone();
    let Some(prepared) = crate::run::materialize::prepare(cx, table, frame, &partition_by)? else {
        return Ok(Placement::Here(Some(
            "its column types or its table's schema change are written by delta-rs".into(),
        )));
    };
    let started = std::time::Instant::now();
    let plan = prepared.frame.clone().create_physical_plan().await.map_err(|e| RunError::query(name, e))?;
    if let Some(input) = local_input(&plan, cx.warehouse) {
        return Ok(Placement::Here(Some(format!("it reads {input}, which only this machine sees"))));
    }
    let target = FilesTarget {
        table_url: table.table_url().to_string(),
        schema: Arc::clone(&prepared.target),
        partition_by,
        compression: cx.node.settings.parquet_compression,
        dictionary_page_size: cx.node.settings.parquet_dictionary_page_size,
    };
    let write = Arc::new(DeltaFilesWriteExec::new(plan, target));
    let config = super::job_config(cx.session.state().config());
    let stream = super::execute(write, scheduler, config).await.map_err(|e| RunError::query(name, e))?;
    let batches: Vec<RecordBatch> =
        stream.collect::<Vec<_>>().await.into_iter().collect::<Result<_>>().map_err(|e| RunError::query(name, e))?;
    let adds = adds(&batches).map_err(|e| RunError::Internal(format!("model `{name}`: {e}")))?;
    let rows = adds.iter().filter_map(|add| add.get_stats().ok().flatten()).map(|s| s.num_records.max(0) as u64).sum();
    crate::run::materialize::commit(cx, table, &prepared, adds, rows, metadata, transactions, started)
        .await
        .map(Placement::Cluster)
}

/// What `plan` reads that the executors may not see: rows held in this process's memory, or files on this
/// machine's disk outside the warehouse folder (which executors share; with a warehouse in a bucket, every file
/// on this machine's disk).
pub(crate) fn local_input(plan: &Arc<dyn ExecutionPlan>, warehouse: &crate::warehouse::Warehouse) -> Option<String> {
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let source = source.data_source();
        if source.as_ref().downcast_ref::<MemorySourceConfig>().is_some() {
            return Some("rows held in memory".into());
        }
        if let Some(files) = source.as_ref().downcast_ref::<FileScanConfig>() {
            if files.object_store_url.as_str().starts_with("file://") {
                let outside = files.file_groups.iter().flat_map(|g| g.files()).find(|f| {
                    let path = std::path::Path::new("/").join(f.object_meta.location.as_ref());
                    warehouse.folder().is_none_or(|root| !path.starts_with(root))
                });
                if let Some(file) = outside {
                    return Some(format!("`/{}`", file.object_meta.location));
                }
            }
        }
    }
    plan.children().into_iter().find_map(|child| local_input(child, warehouse))
}
