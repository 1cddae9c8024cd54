//! A Delta table read as the Parquet files of one version: the log's `add` files of a pinned version, with their
//! partition values, scanned by DataFusion's own Parquet source.
//!
//! delta-rs's provider plans a `DeltaScanExec`, which no codec can send to another process; this provider plans a
//! plain `DataSourceExec`, which DataFusion's codec serializes, so a plan reading warehouse tables can run on a
//! Ballista cluster whose executors reach the same storage. The version is fixed when the provider is made: a
//! query sees one version of each table, however long it runs. Its columns and their types are those of delta-rs's
//! provider, so a plan is the same whichever reads the table.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;

/// The files of one version of a Delta table, as a table DataFusion scans with its Parquet source.
#[derive(Debug)]
pub struct DeltaFiles {
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_columns: Vec<FieldRef>,
    store: ObjectStoreUrl,
    /// The store at `store`, registered with a session that scans the files and does not know it yet (as
    /// delta-rs's scan registers its own).
    object_store: Arc<dyn deltalake::ObjectStore>,
    files: Vec<PartitionedFile>,
    /// Rows in the version, from the log's file statistics (`None` when a file has none).
    rows: Option<usize>,
    version: i64,
}

impl DeltaFiles {
    /// The loaded version of `table`. Tables with deletion vectors are refused: their files hold deleted rows.
    pub async fn new(table: &DeltaTable) -> Result<DeltaFiles> {
        let snapshot = table.snapshot().map_err(|e| DataFusionError::External(Box::new(e)))?;
        let version = snapshot.version() as i64;
        // The columns as delta-rs's provider gives them (strings as views, partition columns last).
        let schema = table.table_provider().await?.schema();
        let partition_names = snapshot.metadata().partition_columns().to_vec();
        let partition_columns: Vec<FieldRef> = partition_names
            .iter()
            .map(|name| schema.field_with_name(name).map(|f| Arc::new(f.clone())))
            .collect::<std::result::Result<_, _>>()?;
        let file_fields: Vec<FieldRef> =
            schema.fields().iter().filter(|f| !partition_names.contains(f.name())).cloned().collect();
        let in_order: Vec<&str> = file_fields.iter().chain(&partition_columns).map(|f| f.name().as_str()).collect();
        let given: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        if in_order != given {
            return Err(DataFusionError::NotImplemented(format!(
                "table columns {given:?} do not end with its partition columns {partition_names:?}"
            )));
        }
        let file_schema = Arc::new(Schema::new(file_fields));

        let url = table.table_url();
        let store = ObjectStoreUrl::parse(format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")))?;
        let root = url.path().trim_matches('/').to_string();
        let mut files = Vec::new();
        let mut rows = Some(0);
        for file in snapshot.log_data().iter() {
            rows = rows.zip(file.num_records()).map(|(total, n)| total + n);
            if file.deletion_vector_descriptor().is_some() {
                return Err(DataFusionError::NotImplemented(format!(
                    "file {} has a deletion vector; pipe does not write them",
                    file.path()
                )));
            }
            let values = file.partition_values_map();
            let partition_values = partition_columns
                .iter()
                .map(|field| match values.get(field.name()).cloned().flatten() {
                    Some(text) => ScalarValue::try_from_string(text, field.data_type()),
                    None => ScalarValue::try_from(field.data_type()),
                })
                .collect::<Result<Vec<_>>>()?;
            let location = format!("{root}/{}", file.object_store_path());
            let mut partitioned = PartitionedFile::new(location, file.size() as u64);
            partitioned.partition_values = partition_values;
            files.push(partitioned);
        }
        let object_store = table.log_store().root_object_store(None);
        Ok(DeltaFiles { schema, file_schema, partition_columns, store, object_store, files, rows, version })
    }

    /// Whether `filter` reads only columns stored in the files (not partition values).
    fn on_file_columns(&self, filter: &Expr) -> bool {
        filter.column_refs().iter().all(|c| self.file_schema.field_with_name(&c.name).is_ok())
    }

    /// The version whose files are scanned.
    pub fn version(&self) -> i64 {
        self.version
    }
}

#[async_trait]
impl TableProvider for DeltaFiles {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.on_file_columns(f) {
                true => TableProviderFilterPushDown::Inexact,
                false => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table_schema = TableSchema::builder(Arc::clone(&self.file_schema))
            .with_table_partition_cols(self.partition_columns.clone())
            .build();
        let mut source = ParquetSource::new(table_schema);
        // Filters over the files' own columns prune row groups and pages, as delta-rs's scan does; DataFusion
        // still applies every filter above the scan (`Inexact`).
        let pushed: Vec<Expr> = filters.iter().filter(|f| self.on_file_columns(f)).cloned().collect();
        if let Some(predicate) = datafusion::logical_expr::utils::conjunction(pushed) {
            let df_schema = datafusion::common::DFSchema::try_from(Arc::clone(&self.schema))?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        let source = Arc::new(source);
        // Files dealt out over the session's partitions, the largest first, so each group reads about as much.
        let groups = state.config().target_partitions().max(1).min(self.files.len().max(1));
        let mut by_size: Vec<&PartitionedFile> = self.files.iter().collect();
        by_size.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let mut file_groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups];
        for file in by_size {
            let smallest = file_groups.iter_mut().min_by_key(|(bytes, _)| *bytes).expect("at least one group");
            smallest.0 += file.object_meta.size;
            smallest.1.push(file.clone());
        }
        let file_groups: Vec<FileGroup> =
            file_groups.into_iter().filter(|(_, files)| !files.is_empty()).map(|(_, f)| FileGroup::new(f)).collect();
        // The row count, as delta-rs's provider gives it, so joins are planned alike (the smaller side builds).
        let statistics = Statistics {
            num_rows: self.rows.map_or(Precision::Absent, Precision::Exact),
            total_byte_size: Precision::Absent,
            column_statistics: Statistics::unknown_column(&self.schema),
        };
        let runtime = state.runtime_env();
        if runtime.object_store(&self.store).is_err() {
            runtime.register_object_store(self.store.as_ref(), Arc::clone(&self.object_store));
        }
        let config = FileScanConfigBuilder::new(self.store.clone(), source)
            .with_file_groups(file_groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;
    use deltalake::protocol::SaveMode;

    use super::DeltaFiles;

    async fn rows(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    /// A partitioned table written in two commits: the files of the version the provider pinned give the rows
    /// delta-rs's own provider gives, partition values included; a later commit is not seen.
    #[tokio::test]
    async fn reads_the_pinned_version_as_delta_rs_does() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("day", DataType::Utf8, true),
        ]));
        let batch = |ids: Vec<i64>, day: &str| {
            let n = ids.len();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringArray::from(ids.iter().map(|i| format!("n{i}")).collect::<Vec<_>>())),
                    Arc::new(StringArray::from(vec![day; n])),
                ],
            )
            .unwrap()
        };
        let table = deltalake::DeltaTableBuilder::from_url(url.clone()).unwrap().build().unwrap();
        let table = table
            .write(vec![batch(vec![1, 2, 3], "2026-01-01"), batch(vec![4, 5], "2026-01-02")])
            .with_save_mode(SaveMode::Overwrite)
            .with_partition_columns(["day"])
            .await
            .unwrap();
        table.write(vec![batch(vec![6], "2026-01-03")]).with_save_mode(SaveMode::Append).await.unwrap();
        // As a build reads it: loaded from the log.
        let table = deltalake::open_table(url).await.unwrap();

        let ctx = SessionContext::new();
        ctx.register_table("delta_rs", table.table_provider().await.unwrap()).unwrap();
        let files = DeltaFiles::new(&table).await.unwrap();
        assert_eq!(files.version(), 1);
        ctx.register_table("files", Arc::new(files)).unwrap();
        let query = |t: &str| format!("select id, name, day from {t} where day >= '2026-01-02' and id > 4 order by id");
        let expected = rows(&ctx, &query("delta_rs")).await;
        assert!(expected.contains("| 6  | n6   | 2026-01-03 |") && !expected.contains("n4"), "{expected}");
        // The filter on a file column reaches the Parquet scan, to prune row groups.
        let plan = ctx.sql(&query("files")).await.unwrap().create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains("predicate=id@0 > 4"), "{shown}");
        assert_eq!(rows(&ctx, &query("files")).await, expected);

        // Pinned: a commit after the provider was made is not read.
        let pinned = DeltaFiles::new(&table).await.unwrap();
        table.write(vec![batch(vec![7], "2026-01-04")]).with_save_mode(SaveMode::Append).await.unwrap();
        ctx.register_table("pinned", Arc::new(pinned)).unwrap();
        assert_eq!(rows(&ctx, "select count(*) as n from pinned").await, rows(&ctx, "select 6 as n").await);

        // The scan is a plain Parquet scan, which DataFusion's codec sends (`run::cluster` tests that).
        let plan = ctx.sql("select * from files").await.unwrap().create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains("DataSourceExec") && shown.contains("file_type=parquet"), "{shown}");
        // The row count of the log's statistics, as delta-rs's provider gives it.
        use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
        let statistics = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new()).unwrap();
        assert_eq!(statistics.num_rows, datafusion::common::stats::Precision::Exact(6));
        #[cfg(feature = "ballista")]
        {
            use datafusion_proto::physical_plan::{AsExecutionPlan, DefaultPhysicalExtensionCodec};
            use datafusion_proto::protobuf::PhysicalPlanNode;
            use prost::Message;
            let codec = DefaultPhysicalExtensionCodec {};
            let bytes = PhysicalPlanNode::try_from_physical_plan(plan, &codec).unwrap().encode_to_vec();
            let decoded = PhysicalPlanNode::decode(bytes.as_slice())
                .unwrap()
                .try_into_physical_plan(&ctx.task_ctx(), &codec)
                .unwrap();
            assert_eq!(displayable(decoded.as_ref()).indent(true).to_string(), shown);
        }
    }
}

/// An object-store registry that opens, besides the stores registered with it, each bucket a warehouse can be in
/// (`s3://`, with the endpoint and credentials of the standard AWS variables, as delta-rs opens it): a process
/// scanning [`DeltaFiles`] of a warehouse in a bucket (a Ballista executor, or the client planning for one)
/// resolves their store URL without delta-rs's scan having registered it first.
#[derive(Debug, Default)]
pub struct WarehouseStores {
    registered: datafusion::execution::object_store::DefaultObjectStoreRegistry,
}

impl datafusion::execution::object_store::ObjectStoreRegistry for WarehouseStores {
    fn register_store(
        &self,
        url: &url::Url,
        store: Arc<dyn deltalake::ObjectStore>,
    ) -> Option<Arc<dyn deltalake::ObjectStore>> {
        self.registered.register_store(url, store)
    }

    fn deregister_store(&self, url: &url::Url) -> Result<Arc<dyn deltalake::ObjectStore>> {
        self.registered.deregister_store(url)
    }

    fn get_store(&self, url: &url::Url) -> Result<Arc<dyn deltalake::ObjectStore>> {
        let unknown = match self.registered.get_store(url) {
            Ok(store) => return Ok(store),
            Err(err) => err,
        };
        if !super::BUCKET_SCHEMES.contains(&url.scheme()) {
            return Err(unknown);
        }
        let root = super::bucket_root(url).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let store = deltalake::logstore::store_for(&root, std::iter::empty::<(String, String)>())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        self.registered.register_store(&root, Arc::clone(&store));
        Ok(store)
    }
}
