//! How pipe's physical operators cross the wire to a Ballista scheduler and its executors.
//!
//! Every process of a pipe cluster (the client, `pipe ballista scheduler`, `pipe ballista executor`) uses
//! [`PipeCodec`]: a plan node pipe defines ([`KeepFirstExec`], [`DeltaFilesWriteExec`]) is written as pipe's own
//! message, anything else Ballista's codec knows (its shuffle readers and writers, DataFusion's extension nodes)
//! goes to that codec. The first byte of every encoded node says which, so a node is never decoded by the wrong
//! codec.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::common::{internal_err, DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::{parse_physical_exprs, parse_physical_sort_exprs};
use datafusion_proto::physical_plan::to_proto::{serialize_physical_exprs, serialize_physical_sort_exprs};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{PhysicalExprNode, PhysicalSortExprNode};
use prost::Message;

use super::write::{DeltaFilesWriteExec, FilesTarget};
use crate::project::settings::ParquetCompression;
use crate::run::dedupe::KeepFirstExec;

/// A node encoded by Ballista's codec.
const BALLISTA: u8 = 0;
/// A [`KeepFirstExec`].
const KEEP_FIRST: u8 = 1;
/// A [`DeltaFilesWriteExec`].
const FILES_WRITE: u8 = 2;

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
        buf.push(BALLISTA);
        self.ballista.try_encode(node, buf, proto_converter)
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

    /// A plan holding a `KeepFirstExec` (keys, a descending order with nulls last) is encoded to bytes and decoded
    /// back to the same plan.
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
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains("KeepFirstExec"), "{shown}");

        let codec = PipeCodec::default();
        let bytes = PhysicalPlanNode::try_from_physical_plan(Arc::clone(&plan), &codec).unwrap().encode_to_vec();
        let decoded = PhysicalPlanNode::decode(bytes.as_slice())
            .unwrap()
            .try_into_physical_plan(&ctx.task_ctx(), &codec)
            .unwrap();
        assert_eq!(displayable(decoded.as_ref()).indent(true).to_string(), shown);
    }
}
