//! `gleitzeit watch workflow|task|queue`: follow one until it finishes, or
//! the queue until Ctrl-C.

use crate::context::Context;
use crate::eventlog::{format_time_ms, log_line, next_or_interrupt, task_label};
use crate::output::{self, format_ms, format_time, preview, Paint};
use crate::service::{self, WorkflowService};
use clap::Subcommand;
use gleitzeit_core::events::EventPayload;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum WatchCommand {
    /// Follow a workflow until it finishes (exit 0 completed, 1 otherwise)
    Workflow {
        /// Workflow id (a unique prefix is enough)
        id: String,
    },
    /// Follow one task until it finishes: TASK, WORKFLOW/TASK or --workflow
    Task {
        task: String,
        #[arg(long)]
        workflow: Option<String>,
    },
    /// Show queue depth and running work, refreshed until Ctrl-C
    Queue {
        /// Seconds between refreshes
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Print once and exit
        #[arg(long)]
        once: bool,
    },
}

pub async fn run(ctx: &Context, command: WatchCommand) -> Result<u8, GzError> {
    let service = service::connect(ctx).await?;
    let service = service.as_ref();
    match command {
        WatchCommand::Workflow { id } => {
            let view = service.workflow(&id).await?;
            service
                .wait(&view.workflow_id, false, ctx.global.json)
                .await
        }
        WatchCommand::Task { task, workflow } => watch_task(ctx, service, task, workflow).await,
        WatchCommand::Queue { interval, once } => watch_queue(ctx, service, interval, once).await,
    }
}

async fn watch_task(
    ctx: &Context,
    service: &dyn WorkflowService,
    task: String,
    workflow: Option<String>,
) -> Result<u8, GzError> {
    let (view, found) = service.find_task(&task, workflow).await?;
    let paint = Paint(output::color_stdout());
    if !found.state.is_terminal() && !view.state.is_terminal() {
        let mut stream = service
            .follow(Some(view.workflow_id.clone()), None, Some(0))
            .await?;
        while let Some(event) = next_or_interrupt(&mut stream).await {
            let event = event?;
            let workflow_over = matches!(
                event.payload,
                EventPayload::WorkflowCompleted(_)
                    | EventPayload::WorkflowFailed(_)
                    | EventPayload::WorkflowCancelled(_)
            );
            if task_label(&event) == found.id {
                if !matches!(event.payload, EventPayload::LlmToken(_)) && !ctx.global.json {
                    println!("{} {}", format_time_ms(event.at_ms), log_line(&event).1);
                }
                if matches!(
                    event.payload,
                    EventPayload::TaskCompleted(_)
                        | EventPayload::TaskFailed(_)
                        | EventPayload::TaskSkipped(_)
                        | EventPayload::TaskCancelled(_)
                ) {
                    break;
                }
            }
            if workflow_over {
                break;
            }
        }
    }
    let view = service.workflow(&view.workflow_id).await?;
    let task = view
        .tasks
        .iter()
        .find(|t| t.id == found.id)
        .cloned()
        .unwrap_or(found);
    if ctx.global.json {
        println!("{}", json!({"workflow_id": view.workflow_id, "task": task}));
    } else {
        println!(
            "{} {} {}",
            paint.bold(&task.id),
            task.state.as_str(),
            task.duration_ms.map(format_ms).unwrap_or_default()
        );
        if let Some(result) = &task.result {
            println!("  {}", preview(result, 400));
        }
        if let Some(error) = &task.error {
            println!("  {} {}", error.code, error.message);
        }
    }
    Ok(if task.state == gleitzeit_core::TaskState::Completed {
        output::EXIT_OK
    } else {
        output::EXIT_WORKFLOW_FAILED
    })
}

async fn watch_queue(
    ctx: &Context,
    service: &dyn WorkflowService,
    interval: f64,
    once: bool,
) -> Result<u8, GzError> {
    if !interval.is_finite() || interval <= 0.0 {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "--interval must be a positive number of seconds",
        ));
    }
    loop {
        let stats = service.stats(1).await?;
        if ctx.global.json {
            println!(
                "{}",
                json!({"at_ms": gleitzeit_store::now_ms(), "queue_depth": stats.queue_depth, "tasks_by_state": stats.tasks_by_state, "workflows_by_state": stats.workflows_by_state})
            );
        } else {
            let n = |counts: &BTreeMap<String, u64>, state: &str| {
                counts.get(state).copied().unwrap_or(0)
            };
            println!(
                "{}  queue {:>5}  tasks: running {} retrying {}  workflows: running {} pending {}  finished last min {}",
                format_time(gleitzeit_store::now_ms()),
                stats.queue_depth,
                n(&stats.tasks_by_state, "running"),
                n(&stats.tasks_by_state, "retrying"),
                n(&stats.workflows_by_state, "running"),
                n(&stats.workflows_by_state, "pending"),
                stats.window.tasks_finished
            );
        }
        if once {
            return Ok(output::EXIT_OK);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(output::EXIT_OK),
        }
    }
}
