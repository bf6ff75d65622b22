//! `gleitzeit worker` (also `components exec|all`): a node that runs tasks
//! from the Redis queues (scale-out).

use crate::context::Context;
use crate::output;
use clap::Args;
use gleitzeit_cluster::{Worker, WorkerOptions};
use gleitzeit_core::{ErrorCode, GzError};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Labels tasks can require (`requires: {labels: …}`): k=v, repeatable or comma-separated
    #[arg(long, value_name = "K=V", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// This node has a GPU (runs tasks with `requires: {gpu: true}`)
    #[arg(long)]
    pub gpu: bool,
    /// Tasks run at once
    #[arg(long, short = 'c', value_name = "N", default_value_t = 8)]
    pub concurrency: usize,
    /// Protocols to serve (python,llm,function,http,mcp,…) [default: all this node has]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub providers: Vec<String>,
    /// Node id [default: host-pid-xxxx]
    #[arg(long)]
    pub id: Option<String>,
    /// Seconds between heartbeats
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub heartbeat: f64,
    /// Seconds after which a task a silent node held is taken over
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    pub reclaim_after: f64,
    /// Deliveries after which a task counts as killing workers (dead letter)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_deliveries: u64,
    /// Seconds running tasks may take to finish at shutdown
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub grace: f64,
}

/// What the earlier versions split into separate processes. Queueing and
/// dependency resolution live in the server's scheduler here; executing is a
/// worker node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Queue,
    Deps,
    Exec,
    All,
}

#[derive(Args, Debug)]
pub struct ComponentsArgs {
    /// Roles to run: exec (or all) starts a worker node
    #[arg(value_enum, required = true, value_name = "ROLE")]
    pub roles: Vec<Role>,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// `components …` (seed 003): executors are worker nodes; the queue and the
/// dependency resolver are part of `serve`.
pub async fn components(ctx: &Context, args: ComponentsArgs) -> Result<u8, GzError> {
    if !args
        .roles
        .iter()
        .any(|r| matches!(r, Role::Exec | Role::All))
    {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "the queue and dependency components are part of the server here",
        )
        .with_hint("Start the server with `gleitzeit serve --backend redis` (also: `hub`, `start`) and executors with `gleitzeit components exec` or `gleitzeit worker`."));
    }
    run(ctx, args.worker).await
}

fn seconds(name: &str, value: f64) -> Result<Duration, GzError> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(GzError::new(
            ErrorCode::InvalidArgument,
            format!("--{name} must be a number of seconds above 0, not {value}"),
        ))
    }
}

fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>, GzError> {
    let mut labels = BTreeMap::new();
    for item in raw.iter().filter(|s| !s.trim().is_empty()) {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                labels.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                return Err(GzError::new(
                    ErrorCode::InvalidArgument,
                    format!("label `{item}` is not KEY=VALUE"),
                )
                .with_hint("Example: --labels region=eu,tier=large"))
            }
        }
    }
    Ok(labels)
}

pub async fn run(ctx: &Context, args: WorkerArgs) -> Result<u8, GzError> {
    if args.concurrency == 0 {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "--concurrency must be at least 1",
        ));
    }
    if args.max_deliveries == 0 {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "--max-deliveries must be at least 1",
        ));
    }
    let mut options = WorkerOptions::new(&ctx.redis_url(), ctx.redis_prefix());
    options.id = args.id;
    options.labels = parse_labels(&args.labels)?;
    options.gpu = args.gpu;
    options.concurrency = args.concurrency;
    options.providers = (!args.providers.is_empty()).then_some(args.providers);
    options.heartbeat = seconds("heartbeat", args.heartbeat)?;
    options.reclaim_after = seconds("reclaim-after", args.reclaim_after)?;
    options.max_deliveries = args.max_deliveries;
    options.grace = Duration::from_secs_f64(args.grace.max(0.0));
    // Tokens and output lines a task streams go to the cluster's store.
    let store = ctx.open_redis_store().await?;
    ctx.share_limits_across_nodes();
    // A node reads files only under its own `files.roots`, whatever grant
    // a call carries.
    let runtime = ctx
        .local_runtime(store)
        .with_default_files(gleitzeit_core::access::FileAccess::none())
        .with_file_policy(ctx.file_policy(true));
    let worker = Worker::connect(options, runtime).await?;
    if worker.capabilities().is_empty() {
        return Err(GzError::new(
            ErrorCode::ProviderUnavailable,
            "this node has none of the requested providers",
        )
        .with_hint("Check --providers (e.g. python,function,llm) and that python3 is installed."));
    }
    // One line a script (or a test) can wait for.
    println!(
        "Worker {} joined {} (serves: {})",
        worker.id(),
        gleitzeit_store::redact_url(&ctx.redis_url()),
        worker.capabilities().join(", ")
    );
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::launch::shutdown_signal().await;
        signal.cancel();
    });
    worker.run(shutdown).await?;
    println!("Worker stopped.");
    Ok(output::EXIT_OK)
}
