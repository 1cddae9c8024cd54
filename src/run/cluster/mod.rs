//! Scale-out on Apache DataFusion Ballista (cargo feature `ballista`).
//!
//! pipe plans a query on the client, as it does locally (its dedupe operator and rewrites included), and submits
//! the physical plan to a Ballista scheduler, which splits it into stages at its shuffles and runs them on the
//! executors. `pipe ballista scheduler` and `pipe ballista executor` ([`process`]) are Ballista's processes with
//! pipe's codec ([`codec::PipeCodec`]) and functions, so they decode pipe's plans.
//!
//! Ballista's adaptive planner is off for pipe's jobs: after an executor was killed it returned output of a
//! superseded stage attempt beside the rerun's, which duplicates rows.
//!
//! After an executor is lost, Ballista 55 can still hand a task's output back twice (seen with the adaptive planner
//! off too): every answer is checked by [`job::untagged`] (each task's rows once, one attempt per task) and refused
//! otherwise, so the model fails and its table stays as it was. pipe's scheduler and executors use pull scheduling
//! (`process`): with push, a lost executor can leave a job running forever.

pub mod codec;
pub mod job;
pub mod process;
pub mod write;

use std::sync::Arc;

use ballista_core::config::BallistaConfig;
use ballista_core::extension::SessionConfigExt;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::PhysicalPlanNode;

pub use codec::PipeCodec;

/// The session settings pipe's jobs run with: the client's DataFusion options (so executors plan nothing
/// differently), Ballista's, and the adaptive planner off.
pub fn job_config(local: &SessionConfig) -> SessionConfig {
    let mut config = SessionConfig::new_with_ballista().with_ballista_adaptive_query_planner(false);
    for entry in local.options().entries() {
        if let (Some(value), true) = (entry.value, entry.key.starts_with("datafusion.")) {
            config = config.set_str(&entry.key, &value);
        }
    }
    config
}

/// Runs `plan` on the cluster whose scheduler is at `scheduler` (`host:port`) and streams its result back.
/// pipe's row-accounting nodes, which report to this process, are taken out first; their accountings get the job's
/// metrics once the stream has ended ([`job::untagged`]).
pub async fn execute(
    plan: Arc<dyn ExecutionPlan>,
    scheduler: &str,
    config: SessionConfig,
) -> Result<SendableRecordBatchStream> {
    let mut accountings = Vec::new();
    plan.apply(|node| {
        if let Some(account) = node.downcast_ref::<crate::run::accounting::AccountExec>() {
            accountings.push(Arc::clone(account.accounting()));
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    let plan = without_accounting(plan)?;
    let schema = plan.schema();
    let session_id = uuid::Uuid::new_v4().to_string();
    let stream = ballista_core::execution_plans::execute_physical_plan::<PhysicalPlanNode>(
        format!("http://{scheduler}"),
        &BallistaConfig::default(),
        Arc::new(job::TaskTagExec::new(plan)),
        &PipeCodec::default(),
        session_id,
        config,
    )
    .await?;
    Ok(job::untagged(stream, schema, scheduler.to_string(), accountings))
}

/// `plan` without [`crate::run::accounting::AccountExec`] nodes (each is replaced by its input).
fn without_accounting(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.downcast_ref::<crate::run::accounting::AccountExec>().is_some() {
            return Ok(Transformed::yes(Arc::clone(node.children()[0])));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// Makes `ctx` plan for the cluster: every model table it reads from `warehouse` is registered again as
/// [`crate::warehouse::files_scan::DeltaFiles`] (its loaded version's files), so plans over them can be sent to
/// executors, and dynamic filters are off. A dynamic filter links a join's build side to its probe side's scan in
/// one process; across stages it cannot be filled, and the scheduler, re-planning a stage once its inputs are
/// known, may swap a join's inputs, which a join holding a dynamic filter refuses.
pub async fn plan_for_cluster(
    ctx: &datafusion::prelude::SessionContext,
    manifest: &crate::manifest::Manifest,
    warehouse: &crate::warehouse::Warehouse,
) -> Result<()> {
    // Set by its key: the key also turns off the join's, the top-k's and the aggregate's dynamic filters.
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .set("datafusion.optimizer.enable_dynamic_filter_pushdown", "false")?;
    read_tables_as_files(ctx, manifest, warehouse).await
}

async fn read_tables_as_files(
    ctx: &datafusion::prelude::SessionContext,
    manifest: &crate::manifest::Manifest,
    warehouse: &crate::warehouse::Warehouse,
) -> Result<()> {
    for node in manifest.nodes.values() {
        let relation = node.relation.as_str();
        if !ctx.table_exist(relation)? {
            continue;
        }
        let Ok(Some(table)) = warehouse.load(relation).await else { continue };
        let files = crate::warehouse::files_scan::DeltaFiles::new(&table).await?;
        ctx.deregister_table(relation)?;
        ctx.register_table(relation, Arc::new(files))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ballista's default is the adaptive planner on; pipe's jobs run with it off (see the module doc), whatever the
    /// client's session says, and with the client's DataFusion options.
    #[test]
    fn jobs_run_without_the_adaptive_planner_and_with_the_clients_options() {
        let client = SessionConfig::new_with_ballista().with_target_partitions(7);
        assert!(client.ballista_adaptive_query_planner_enabled(), "Ballista's default changed");
        let job = job_config(&client);
        assert!(!job.ballista_adaptive_query_planner_enabled());
        assert_eq!(job.target_partitions(), 7);
    }
}
