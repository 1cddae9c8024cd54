//! `pipe ballista scheduler` and `pipe ballista executor`: Ballista's own scheduler and executor processes, started
//! with [`PipeCodec`], which decodes pipe's operators and the DuckDB functions a plan was planned with (their
//! registry is DataFusion's, as the client's is for a project in DataFusion's dialect). The stock Ballista binaries
//! cannot decode those plans.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;

use super::codec::PipeCodec;

/// Where a scheduler listens, and how long an executor may be silent before its tasks run elsewhere.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    pub executor_timeout: std::time::Duration,
}

/// An executor: where it serves shuffle data (Arrow Flight, `port`) and tasks (`grpc_port`), which scheduler it
/// registers with, how many tasks it runs at once, where it keeps shuffle files, and its memory pool.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler: SocketAddr,
    pub bind_host: String,
    pub port: u16,
    pub grpc_port: u16,
    pub concurrent_tasks: usize,
    pub work_dir: Option<String>,
    pub memory_limit: Option<u64>,
}

/// Runs a scheduler until the process is stopped.
pub async fn run_scheduler(options: &SchedulerOptions) -> Result<(), String> {
    let config = SchedulerConfig {
        bind_host: options.bind.ip().to_string(),
        bind_port: options.bind.port(),
        external_host: options.bind.ip().to_string(),
        // Executors beat every 5 s (`run_executor`); a lost one is looked for at least every 5 s.
        executor_timeout_seconds: options.executor_timeout.as_secs().max(6),
        no_executors_grace_period_seconds: options.executor_timeout.as_secs().max(6),
        expire_dead_executor_interval_seconds: (options.executor_timeout.as_secs() / 2).clamp(1, 5),
        override_physical_codec: Some(Arc::new(PipeCodec::default())),
        scheduling_policy: ballista_core::config::TaskSchedulingPolicy::PullStaged,
        // Ballista's session, whose object stores know a warehouse's bucket: decoding a plan resolves the store
        // of every file it scans.
        override_session_builder: Some(Arc::new(|config| {
            let state = ballista_core::utils::default_session_builder(config)?;
            Ok(datafusion::execution::SessionStateBuilder::new_from_existing(state)
                .with_runtime_env(bucket_runtime(None)?)
                .build())
        })),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| e.to_string())?;
    start_server(cluster, options.bind, Arc::new(config)).await.map_err(|e| e.to_string())
}

/// Runs an executor until the process is stopped or its scheduler tells it to stop.
pub async fn run_executor(options: &ExecutorOptions) -> Result<(), String> {
    let work_dir = options.work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        external_host: Some(options.bind_host.clone()),
        port: options.port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler.ip().to_string(),
        scheduler_port: options.scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        vcores: options.concurrent_tasks,
        work_dir: options.work_dir.clone(),
        memory_pool_size: options.memory_limit,
        // A dead executor is noticed within seconds, not the default minute.
        executor_heartbeat_interval_seconds: 5,
        task_scheduling_policy: ballista_core::config::TaskSchedulingPolicy::PullStaged,
        override_physical_codec: Some(Arc::new(PipeCodec::default())),
        // Spills in the work folder, as Ballista's own runtime does; Parquet files of tables in a bucket read from
        // it (`WarehouseStores`).
        override_runtime_producer: Some(Arc::new(move |_: &datafusion::prelude::SessionConfig| {
            bucket_runtime(work_dir.as_deref())
        })),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(|e| e.to_string())
}

/// A runtime whose object stores open a warehouse's bucket (`WarehouseStores`), spilling into `work_dir`.
fn bucket_runtime(
    work_dir: Option<&str>,
) -> datafusion::common::Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    let stores = Arc::new(crate::warehouse::files_scan::WarehouseStores::default());
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new().with_object_store_registry(stores);
    if let Some(dir) = work_dir {
        runtime = runtime.with_temp_file_path(dir);
    }
    runtime.build_arc()
}
