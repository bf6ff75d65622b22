//! Scale-out commands: `worker` (a node that runs tasks from the Redis
//! queues), `nodes`, `inspect node`, and `dead-letters`.

use crate::client::Target;
use crate::context::Context;
use crate::output;
use clap::{Args, Subcommand};
use gleitzeit_cluster::admin::Admin;
use gleitzeit_cluster::{NodeInfo, Worker, WorkerOptions};
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_store::now_ms;
use serde_json::json;
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
    worker(ctx, args.worker).await
}

#[derive(Subcommand, Debug)]
pub enum DeadLettersCommand {
    /// Tasks that killed workers, and queue entries no worker could read
    List,
    /// Put a task back: clears its dead letter and reopens its failed workflow
    Retry { id: String },
    /// Forget a dead letter
    Drop { id: String },
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

pub async fn worker(ctx: &Context, args: WorkerArgs) -> Result<u8, GzError> {
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
        crate::commands::serve::shutdown_signal().await;
        signal.cancel();
    });
    worker.run(shutdown).await?;
    println!("Worker stopped.");
    Ok(output::EXIT_OK)
}

async fn admin(ctx: &Context) -> Result<Admin, GzError> {
    Ok(Admin::connect(&ctx.redis_url(), ctx.redis_prefix()).await?)
}

/// Nodes from the server when one answers, else straight from Redis.
pub async fn fetch_nodes(ctx: &Context) -> Result<Vec<NodeInfo>, GzError> {
    if let Target::Remote(client) = Target::resolve(ctx).await? {
        let value = client.get("/api/v1/nodes").await?;
        return serde_json::from_value(value["nodes"].clone()).map_err(|e| {
            GzError::new(
                ErrorCode::ServerUnreachable,
                format!("unexpected /nodes answer: {e}"),
            )
        });
    }
    if ctx.backend() != "redis" {
        return Ok(Vec::new());
    }
    Ok(admin(ctx).await?.nodes().await?)
}

fn age(ms: i64) -> String {
    let s = (now_ms() - ms).max(0) as f64 / 1000.0;
    if s < 120.0 {
        format!("{s:.1}s ago")
    } else {
        format!("{:.0}m ago", s / 60.0)
    }
}

fn labels_text(node: &NodeInfo) -> String {
    let mut parts: Vec<String> = node
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if node.gpu {
        parts.insert(0, "gpu".into());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

pub async fn nodes(ctx: &Context) -> Result<u8, GzError> {
    let nodes = fetch_nodes(ctx).await?;
    if ctx.global.json {
        println!("{}", json!({"nodes": nodes}));
        return Ok(output::EXIT_OK);
    }
    if nodes.is_empty() {
        if ctx.backend() == "redis" {
            println!("No worker nodes. Start one with `gleitzeit worker --backend redis`.");
        } else {
            println!("No worker nodes: this setup runs tasks in-process. Scale out with `gleitzeit serve --backend redis` and `gleitzeit worker`.");
        }
        return Ok(output::EXIT_OK);
    }
    println!(
        "{:<28} {:<7} {:<18} {:<22} {:>9} {:>9} {:>7}  HEARTBEAT",
        "NODE", "STATE", "LABELS", "SERVES", "LOAD", "DONE", "FAILED"
    );
    for node in &nodes {
        println!(
            "{:<28} {:<7} {:<18} {:<22} {:>9} {:>9} {:>7}  {}",
            node.id,
            node.state,
            labels_text(node),
            node.capabilities.join(","),
            format!("{}/{}", node.running, node.concurrency),
            node.completed,
            node.failed,
            age(node.heartbeat_ms)
        );
    }
    Ok(output::EXIT_OK)
}

pub async fn inspect_node(ctx: &Context, id: &str) -> Result<u8, GzError> {
    let nodes = fetch_nodes(ctx).await?;
    let node = nodes
        .iter()
        .find(|n| n.id == id)
        .or_else(|| {
            let mut matching = nodes.iter().filter(|n| n.id.starts_with(id));
            match (matching.next(), matching.next()) {
                (Some(n), None) => Some(n),
                _ => None,
            }
        })
        .ok_or_else(|| {
            GzError::new(
                ErrorCode::InvalidArgument,
                format!("no worker node `{id}` is registered"),
            )
            .with_hint(if ctx.backend() == "redis" {
                "`gleitzeit nodes` lists the nodes."
            } else {
                "Worker nodes join with `gleitzeit worker` on the Redis backend (--backend redis)."
            })
        })?;
    if ctx.global.json {
        println!("{}", json!(node));
        return Ok(output::EXIT_OK);
    }
    println!("{} ({})", node.id, node.state);
    println!("  host         {} (pid {})", node.host, node.pid);
    println!(
        "  version      {} (queue protocol {})",
        node.version, node.protocol
    );
    println!("  labels       {}", labels_text(node));
    println!("  serves       {}", node.capabilities.join(", "));
    println!(
        "  load         {}/{} running",
        node.running, node.concurrency
    );
    println!(
        "  done         {} completed, {} failed",
        node.completed, node.failed
    );
    println!("  started      {}", age(node.started_ms));
    println!("  heartbeat    {}", age(node.heartbeat_ms));
    Ok(output::EXIT_OK)
}

pub async fn dead_letters(ctx: &Context, command: DeadLettersCommand) -> Result<u8, GzError> {
    let admin = admin(ctx).await?;
    match command {
        DeadLettersCommand::List => {
            let letters = admin.dead_letters().await?;
            if ctx.global.json {
                println!("{}", json!({"dead_letters": letters}));
                return Ok(output::EXIT_OK);
            }
            if letters.is_empty() {
                println!("No dead letters.");
                return Ok(output::EXIT_OK);
            }
            for letter in &letters {
                let task = match (&letter.workflow_id, &letter.task_id) {
                    (Some(wf), Some(task)) => {
                        format!("{wf}/{task} attempt {}", letter.attempt.unwrap_or(0))
                    }
                    _ => "(no task: unreadable entry)".into(),
                };
                println!("{}  {}  {}", letter.id, task, age(letter.at_ms));
                println!("    {}", letter.reason);
                if !letter.holders.is_empty() {
                    println!("    held by: {}", letter.holders.join(" → "));
                }
            }
            Ok(output::EXIT_OK)
        }
        DeadLettersCommand::Drop { id } => {
            let letter = admin.drop_letter(&id).await?;
            if ctx.global.json {
                println!("{}", json!({"dropped": letter}));
            } else {
                println!("Dropped dead letter {}.", letter.id);
            }
            Ok(output::EXIT_OK)
        }
        DeadLettersCommand::Retry { id } => {
            let letter = admin.retry_letter(&id).await?;
            let workflow_id = letter.workflow_id.clone().unwrap_or_default();
            let store = ctx.open_redis_store().await?;
            let runtime = ctx.local_runtime(store);
            let reopened = match runtime.reopen(&workflow_id).await {
                Ok(_) => true,
                Err(e) if e.code == ErrorCode::WorkflowNotResumable => false,
                Err(e) => return Err(e),
            };
            let resumed = if reopened {
                match Target::resolve(ctx).await? {
                    Target::Remote(client) => client
                        .post_json(
                            &format!("/api/v1/workflows/{workflow_id}/resume"),
                            &json!({}),
                        )
                        .await
                        .is_ok(),
                    Target::Local => false,
                }
            } else {
                false
            };
            if ctx.global.json {
                println!(
                    "{}",
                    json!({"retried": letter, "reopened": reopened, "resumed": resumed})
                );
            } else if resumed {
                println!(
                    "Retrying {}: workflow {workflow_id} resumed on the server.",
                    letter.id
                );
            } else if reopened {
                println!("Retrying {}: workflow {workflow_id} reopened; run `gleitzeit resume {workflow_id} --backend redis` (or start a server) to run it.", letter.id);
            } else {
                println!("Cleared dead letter {}; workflow {workflow_id} is still running and picks the task up on `gleitzeit resume`.", letter.id);
            }
            Ok(output::EXIT_OK)
        }
    }
}
