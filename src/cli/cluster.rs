//! `pipe ballista scheduler` and `pipe ballista executor` (cargo feature `ballista`): the processes of a cluster
//! that runs pipe's plans.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BallistaArgs {
    #[command(subcommand)]
    pub command: BallistaCommand,
}

#[derive(Debug, Subcommand)]
pub enum BallistaCommand {
    /// Run a Ballista scheduler that decodes pipe's plans (one per cluster).
    Scheduler {
        /// Address to listen on for clients and executors.
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
        /// How long an executor may go without a heartbeat before it is taken as lost and its tasks run elsewhere
        /// (`30s`, `3m`).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        executor_timeout: std::time::Duration,
    },
    /// Run a Ballista executor that runs pipe's plans, registered with a scheduler.
    Executor {
        /// The scheduler to register with.
        #[arg(long, default_value = "127.0.0.1:50050")]
        scheduler: SocketAddr,
        /// Host to listen on, and to advertise to the scheduler and the other executors.
        #[arg(long, default_value = "127.0.0.1")]
        bind_host: String,
        /// Port of the Arrow Flight service other executors and clients fetch results from.
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// Port of the gRPC service the scheduler sends tasks to.
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks run at once (default: the machine's cores).
        #[arg(long)]
        concurrent_tasks: Option<usize>,
        /// Folder for shuffle files (default: a temporary folder).
        #[arg(long)]
        work_dir: Option<String>,
        /// Memory for all running tasks together (`4GiB`); sorts, joins and aggregates spill past it.
        #[arg(long, value_parser = super::build::parse_bytes)]
        memory_limit: Option<usize>,
    },
}

#[cfg(not(feature = "ballista"))]
pub fn run(_: &BallistaArgs) -> anyhow::Result<ExitCode> {
    eprintln!(
        "error: this pipe was built without the `ballista` feature; build it with `cargo install --features ballista` \
         (or `cargo build --release --features ballista`) to run a cluster"
    );
    Ok(ExitCode::from(2))
}

#[cfg(feature = "ballista")]
pub fn run(args: &BallistaArgs) -> anyhow::Result<ExitCode> {
    use crate::run::cluster::process::{self, ExecutorOptions, SchedulerOptions};
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = match &args.command {
        BallistaCommand::Scheduler { bind, executor_timeout } => runtime
            .block_on(process::run_scheduler(&SchedulerOptions { bind: *bind, executor_timeout: *executor_timeout })),
        BallistaCommand::Executor {
            scheduler,
            bind_host,
            port,
            grpc_port,
            concurrent_tasks,
            work_dir,
            memory_limit,
        } => {
            let options = ExecutorOptions {
                scheduler: *scheduler,
                bind_host: bind_host.clone(),
                port: *port,
                grpc_port: *grpc_port,
                concurrent_tasks: concurrent_tasks
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                work_dir: work_dir.clone(),
                memory_limit: memory_limit.map(|m| m as u64),
            };
            runtime.block_on(process::run_executor(&options))
        }
    };
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(2))
        }
    }
}
