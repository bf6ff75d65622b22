//! `gleitzeit inspect workflow|task|node`: everything about one of them.

use crate::context::Context;
use crate::eventlog::{format_time_ms, log_line, task_label};
use crate::output::{self, format_ms, format_time, heartbeat_age, node_labels, preview, Paint};
use crate::progress::summary;
use crate::service::{self, WorkflowService};
use clap::Subcommand;
use gleitzeit_api::views::TaskView;
use gleitzeit_core::events::{Event, EventPayload};
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum InspectCommand {
    /// Everything about a workflow: tasks, dependencies, timings, results, errors, usage
    Workflow { id: String },
    /// One task in full: TASK, WORKFLOW/TASK or --workflow
    Task {
        task: String,
        #[arg(long)]
        workflow: Option<String>,
    },
    /// A worker node
    Node { name: String },
}

pub async fn run(ctx: &Context, command: InspectCommand) -> Result<u8, GzError> {
    let service = service::connect(ctx).await?;
    match command {
        InspectCommand::Workflow { id } => {
            let view = service.workflow(&id).await?;
            let history = service.history(&view.workflow_id).await?;
            if ctx.global.json {
                let mut value = serde_json::to_value(&view).unwrap_or_default();
                value["events"] = json!(history.len());
                value["retries"] = json!(history
                    .iter()
                    .filter(|e| matches!(e.payload, EventPayload::TaskRetrying(_)))
                    .count());
                println!("{value}");
                return Ok(output::EXIT_OK);
            }
            let paint = Paint(output::color_stdout());
            print!("{}", summary(&view, &paint));
            println!(
                "  {} {}   {} {}   {} {} events",
                paint.dim("created"),
                format_time(view.created_ms),
                paint.dim("state"),
                view.state.as_str(),
                paint.dim("log"),
                history.len()
            );
            for task in &view.tasks {
                println!();
                print_task(task, &paint);
            }
            Ok(output::EXIT_OK)
        }
        InspectCommand::Task { task, workflow } => {
            let (view, task) = service.find_task(&task, workflow).await?;
            let history: Vec<Event> = service
                .history(&view.workflow_id)
                .await?
                .into_iter()
                .filter(|e| {
                    task_label(e) == task.id && !matches!(e.payload, EventPayload::LlmToken(_))
                })
                .collect();
            if ctx.global.json {
                println!(
                    "{}",
                    json!({"workflow_id": view.workflow_id, "task": task, "events": history})
                );
                return Ok(output::EXIT_OK);
            }
            let paint = Paint(output::color_stdout());
            println!("{} {}", paint.dim("workflow"), view.workflow_id);
            print_task(&task, &paint);
            if let Some(record) = &task.record {
                println!("  {}", paint.dim("record"));
                for line in serde_json::to_string_pretty(record)
                    .unwrap_or_default()
                    .lines()
                {
                    println!("    {line}");
                }
            }
            println!("  {}", paint.dim("history"));
            for event in &history {
                println!("    {} {}", format_time_ms(event.at_ms), log_line(event).1);
            }
            Ok(output::EXIT_OK)
        }
        InspectCommand::Node { name } => inspect_node(ctx, service.as_ref(), &name).await,
    }
}

fn print_task(task: &TaskView, paint: &Paint) {
    println!("{} {}", paint.bold(&task.id), paint.dim(&task.method));
    println!(
        "  state {}   attempts {}   duration {}",
        task.state.as_str(),
        task.attempt,
        task.duration_ms
            .map(format_ms)
            .unwrap_or_else(|| "-".into())
    );
    if !task.dependencies.is_empty() {
        println!("  after {}", task.dependencies.join(", "));
    }
    if let Some(started) = task.started_ms {
        println!("  started {}", format_time_ms(started));
    }
    if let Some(result) = &task.result {
        println!("  result {}", preview(result, 300));
    }
    if let Some(record) = &task.record {
        if let Some(usage) = record.get("usage") {
            println!(
                "  usage {} prompt + {} completion tokens ({} @ {})",
                usage["prompt_tokens"],
                usage["completion_tokens"],
                record["model"].as_str().unwrap_or("?"),
                record["endpoint"].as_str().unwrap_or("?")
            );
        }
    }
    if let Some(error) = &task.error {
        println!("  {} {} {}", paint.red("error"), error.code, error.message);
        println!("  {} {}", paint.dim("hint"), error.hint_text());
    }
}

async fn inspect_node(
    ctx: &Context,
    service: &dyn WorkflowService,
    id: &str,
) -> Result<u8, GzError> {
    let nodes = service.nodes().await?;
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
    println!("  labels       {}", node_labels(node));
    println!("  serves       {}", node.capabilities.join(", "));
    println!(
        "  load         {}/{} running",
        node.running, node.concurrency
    );
    println!(
        "  done         {} completed, {} failed",
        node.completed, node.failed
    );
    println!("  started      {}", heartbeat_age(node.started_ms));
    println!("  heartbeat    {}", heartbeat_age(node.heartbeat_ms));
    Ok(output::EXIT_OK)
}
