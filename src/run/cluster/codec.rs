//! How pipe's physical operators cross the wire to a Ballista scheduler and its executors.
//!
//! Every process of a pipe cluster (the client, `pipe ballista scheduler`, `pipe ballista executor`) uses
//! [`PipeCodec`]: a plan node pipe defines ([`KeepFirstExec`], [`DeltaFilesWriteExec`], [`TaskTagExec`]) is written as pipe's own
//! message, anything else Ballista's codec knows (its shuffle readers and writers, DataFusion's extension nodes)
//! goes to that codec. The first byte of every encoded node says which, so a node is never decoded by the wrong
//! codec.
//!
//! Functions: a plan's function calls are decoded by name against the executor's registry, which holds
//! DataFusion's functions. A project in DuckDB's dialect plans with DuckDB's versions of some of them (`avg` is a
//! DOUBLE with its partial state laid out as (sum, count), `coalesce`, `floor`, ...) and with functions DataFusion
//! does not have; those calls carry a marker ([`DUCKDB_FUNCTION`]) and are decoded as pipe's DuckDB function of
//! that name. So a plan runs with the functions its client planned it with, whatever the project's dialect.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::common::{internal_err, DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::{parse_physical_exprs, parse_physical_sort_exprs};
use datafusion_proto::physical_plan::to_proto::{serialize_physical_exprs, serialize_physical_sort_exprs};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{PhysicalExprNode, PhysicalSortExprNode};
use prost::Message;

use super::job::TaskTagExec;
use super::write::{DeltaFilesWriteExec, FilesTarget};
use crate::project::settings::ParquetCompression;
use crate::run::dedupe::KeepFirstExec;

/// A node encoded by Ballista's codec.
const BALLISTA: u8 = 0;
/// A [`KeepFirstExec`].
const KEEP_FIRST: u8 = 1;
/// A [`DeltaFilesWriteExec`].
const FILES_WRITE: u8 = 2;
/// A [`TaskTagExec`] (nothing but its input).
const TASK_TAG: u8 = 3;
/// The payload of a function call planned with pipe's DuckDB function of that name.
const DUCKDB_FUNCTION: &[u8] = b"pipe.duckdb";

/// pipe's DuckDB functions: scalar and aggregate.
struct DuckdbFunctions {
    scalar: Vec<Arc<ScalarUDF>>,
    aggregate: Vec<Arc<AggregateUDF>>,
}

/// pipe's DuckDB functions, made once per process.
fn duckdb_functions() -> &'static DuckdbFunctions {
    static FUNCTIONS: std::sync::OnceLock<DuckdbFunctions> = std::sync::OnceLock::new();
    FUNCTIONS.get_or_init(|| DuckdbFunctions {
        scalar: crate::sql::duckdb::scalar_functions(),
        aggregate: crate::sql::duckdb::aggregate_functions(),
    })
}

/// [`DeltaFilesWriteExec`] on the wire: where and how its files are written.
#[derive(Clone, PartialEq, Message)]
struct FilesWriteNode {
    #[prost(string, tag = "1")]
    table_url: String,
    #[prost(message, optional, tag = "2")]
    schema: Option<datafusion_proto::protobuf::Schema>,
    #[prost(string, repeated, tag = "3")]
    partition_by: Vec<String>,
    #[prost(string, tag = "4")]
    compression: String,
    #[prost(uint64, tag = "5")]
    dictionary_page_size: u64,
}

/// [`KeepFirstExec`] on the wire: its keys and its order, over its (separately encoded) input's schema.
#[derive(Clone, PartialEq, Message)]
struct KeepFirstNode {
    #[prost(message, repeated, tag = "1")]
    keys: Vec<PhysicalExprNode>,
    #[prost(message, repeated, tag = "2")]
    order: Vec<PhysicalSortExprNode>,
}

/// The physical extension codec of pipe's cluster processes.
#[derive(Debug, Default)]
pub struct PipeCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PipeCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match buf.split_first() {
            Some((&BALLISTA, rest)) => self.ballista.try_decode(rest, inputs, ctx, proto_converter),
            Some((&KEEP_FIRST, rest)) => {
                let node = KeepFirstNode::decode(rest)
                    .map_err(|e| DataFusionError::Internal(format!("cannot decode a KeepFirstExec: {e}")))?;
                let [input] = inputs else {
                    return internal_err!("a KeepFirstExec has one input, got {}", inputs.len());
                };
                let schema = input.schema();
                let decode = PhysicalPlanDecodeContext::new(ctx, self);
                let keys = parse_physical_exprs(&node.keys, &decode, &schema, proto_converter)?;
                let order = parse_physical_sort_exprs(&node.order, &decode, &schema, proto_converter)?;
                Ok(Arc::new(KeepFirstExec::new(Arc::clone(input), keys, order)))
            }
            Some((&FILES_WRITE, rest)) => {
                let node = FilesWriteNode::decode(rest)
                    .map_err(|e| DataFusionError::Internal(format!("cannot decode a DeltaFilesWriteExec: {e}")))?;
                let [input] = inputs else {
                    return internal_err!("a DeltaFilesWriteExec has one input, got {}", inputs.len());
                };
                let Some(schema) = &node.schema else {
                    return internal_err!("a DeltaFilesWriteExec without its schema");
                };
                let Some(compression) = ParquetCompression::parse(&node.compression) else {
                    return internal_err!("unknown Parquet compression `{}`", node.compression);
                };
                let target = FilesTarget {
                    table_url: node.table_url,
                    schema: Arc::new(datafusion::arrow::datatypes::Schema::try_from(schema)?),
                    partition_by: node.partition_by,
                    compression,
                    dictionary_page_size: node.dictionary_page_size,
                };
                Ok(Arc::new(DeltaFilesWriteExec::new(Arc::clone(input), target)))
            }
            Some((&TASK_TAG, _)) => match inputs {
                [input] => Ok(Arc::new(TaskTagExec::new(Arc::clone(input)))),
                _ => internal_err!("a TaskTagExec has one input, got {}", inputs.len()),
            },
            Some((other, _)) => internal_err!("unknown pipe plan node tag {other}"),
            None => internal_err!("an empty pipe plan node"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(keep_first) = node.downcast_ref::<KeepFirstExec>() {
            let message = KeepFirstNode {
                keys: serialize_physical_exprs(keep_first.keys(), self, proto_converter)?,
                order: serialize_physical_sort_exprs(keep_first.order().iter().cloned(), self, proto_converter)?,
            };
            buf.push(KEEP_FIRST);
            return message
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("cannot encode a KeepFirstExec: {e}")));
        }
        if let Some(write) = node.downcast_ref::<DeltaFilesWriteExec>() {
            let target = write.target();
            let message = FilesWriteNode {
                table_url: target.table_url.clone(),
                schema: Some(target.schema.as_ref().try_into()?),
                partition_by: target.partition_by.clone(),
                compression: target.compression.as_str().to_string(),
                dictionary_page_size: target.dictionary_page_size,
            };
            buf.push(FILES_WRITE);
            return message
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("cannot encode a DeltaFilesWriteExec: {e}")));
        }
        if node.downcast_ref::<TaskTagExec>().is_some() {
            buf.push(TASK_TAG);
            return Ok(());
        }
        buf.push(BALLISTA);
        self.ballista.try_encode(node, buf, proto_converter)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        if !duckdb_functions().scalar.iter().any(|f| f.as_ref() == node) {
            return self.ballista.try_encode_udf(node, buf);
        }
        buf.extend_from_slice(DUCKDB_FUNCTION);
        Ok(())
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        if buf != DUCKDB_FUNCTION {
            return self.ballista.try_decode_udf(name, buf);
        }
        match duckdb_functions().scalar.iter().find(|f| f.name() == name) {
            Some(function) => Ok(Arc::clone(function)),
            None => internal_err!("pipe has no DuckDB function `{name}`"),
        }
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        if !duckdb_functions().aggregate.iter().any(|f| f.as_ref() == node) {
            return self.ballista.try_encode_udaf(node, buf);
        }
        buf.extend_from_slice(DUCKDB_FUNCTION);
        Ok(())
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        if buf != DUCKDB_FUNCTION {
            return self.ballista.try_decode_udaf(name, buf);
        }
        match duckdb_functions().aggregate.iter().find(|f| f.name() == name) {
            Some(function) => Ok(Arc::clone(function)),
            None => internal_err!("pipe has no DuckDB aggregate `{name}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use datafusion_proto::physical_plan::AsExecutionPlan;
    use datafusion_proto::protobuf::PhysicalPlanNode;
    use prost::Message;

    use super::PipeCodec;
    use crate::run::dedupe::{DedupeRule, PipeQueryPlanner};

    /// A plan holding a `KeepFirstExec` (keys, a descending order with nulls last), under a `TaskTagExec`, is
    /// encoded to bytes and decoded back to the same plan.
    #[tokio::test]
    async fn keep_first_round_trips() {
        let schema =
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true), Field::new("o", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1, 1, 2])), Arc::new(Int64Array::from(vec![3, 4, 5]))],
        )
        .unwrap();
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_query_planner(Arc::new(PipeQueryPlanner))
            .with_optimizer_rule(Arc::new(DedupeRule))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        let sql = "select k, o from (select *, row_number() over (partition by k + 1 order by o desc nulls last) \
                   as rn from t) where rn = 1";
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        // Under the task tag every submitted plan gets.
        let plan: Arc<dyn datafusion::physical_plan::ExecutionPlan> =
            Arc::new(crate::run::cluster::job::TaskTagExec::new(plan));
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains("KeepFirstExec") && shown.starts_with("TaskTagExec"), "{shown}");

        let codec = PipeCodec::default();
        let bytes = PhysicalPlanNode::try_from_physical_plan(Arc::clone(&plan), &codec).unwrap().encode_to_vec();
        let decoded = PhysicalPlanNode::decode(bytes.as_slice())
            .unwrap()
            .try_into_physical_plan(&ctx.task_ctx(), &codec)
            .unwrap();
        assert_eq!(displayable(decoded.as_ref()).indent(true).to_string(), shown);
    }
}

#[cfg(test)]
mod functions {
    use std::sync::Arc;

    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion::prelude::SessionContext;
    use datafusion_proto::physical_plan::AsExecutionPlan;
    use datafusion_proto::protobuf::PhysicalPlanNode;
    use prost::Message;

    use super::PipeCodec;

    /// The state fields of every partial aggregate in `plan`, as (name, type).
    fn partial_state(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
        let mut out: Vec<String> = match plan.name() {
            "AggregateExec" => {
                plan.schema().fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect()
            }
            _ => Vec::new(),
        };
        for child in plan.children() {
            out.extend(partial_state(child));
        }
        out
    }

    /// A plan is decoded with the functions its client planned it with, against the registry of a cluster process
    /// (DataFusion's): DataFusion's `avg` of a decimal stays DataFusion's (a decimal, its state (count, sum)), and
    /// DuckDB's (a double, its state (sum, count)) and `coalesce` stay DuckDB's; the decoded plans give the client's
    /// rows. (The executors used to decode every `avg` as DuckDB's, whose state did not match a DataFusion plan's.)
    #[tokio::test]
    async fn plans_keep_the_functions_of_their_dialect() {
        let sql = "select k, avg(d) as a, coalesce(max(d), 0) as m from (select value % 3 as k, \
                   cast(value as decimal(15, 2)) as d from generate_series(1, 100)) group by k order by k";
        let datafusion = SessionStateBuilder::new().with_default_features().build();
        let duckdb = crate::sql::duckdb::extend(SessionStateBuilder::new().with_default_features()).build();
        // A cluster process's registry: Ballista's default session, DataFusion's functions.
        let config = datafusion::prelude::SessionConfig::new();
        let executor = SessionContext::new_with_state(ballista_core::utils::default_session_builder(config).unwrap());
        for (dialect, state) in [("datafusion", datafusion), ("duckdb", duckdb)] {
            let client = SessionContext::new_with_state(state);
            let plan = client.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
            let codec = PipeCodec::default();
            let bytes = PhysicalPlanNode::try_from_physical_plan(Arc::clone(&plan), &codec).unwrap().encode_to_vec();
            let decoded = PhysicalPlanNode::decode(bytes.as_slice())
                .unwrap()
                .try_into_physical_plan(&executor.task_ctx(), &codec)
                .unwrap();
            assert_eq!(partial_state(&decoded), partial_state(&plan), "{dialect}");
            let local = datafusion::physical_plan::collect(plan, client.task_ctx()).await.unwrap();
            let remote = datafusion::physical_plan::collect(decoded, executor.task_ctx()).await.unwrap();
            assert_eq!(
                datafusion::arrow::util::pretty::pretty_format_batches(&remote).unwrap().to_string(),
                datafusion::arrow::util::pretty::pretty_format_batches(&local).unwrap().to_string(),
                "{dialect}"
            );
        }
    }
}
