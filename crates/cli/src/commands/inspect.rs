//! Reading the store: `status`, `list`, `get`, and `cancel`.

use super::progress::summary;
use crate::context::Context;
use crate::output::{self, format_ms, format_time, Paint};
use clap::Args;
use gleitzeit_core::model::primary_field;
use gleitzeit_core::{ErrorCode, GzError, WorkflowState};
use gleitzeit_runtime::process_alive;
use gleitzeit_store::{ListFilter, TaskRecord, WorkflowRecord};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct StatusArgs {}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only workflows in this state (pending, running, completed, failed, cancelled)
    #[arg(long)]
    pub state: Option<String>,
    /// How many to show
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// Skip this many (for paging)
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Workflow id (a unique prefix is enough)
    pub id: String,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Workflow id (a unique prefix is enough)
    pub id: String,
}

pub fn task_json(task: &TaskRecord) -> Value {
    json!({
        "id": task.task_id,
        "method": task.method,
        "state": task.state,
        "attempt": task.attempt,
        "started_ms": task.started_ms,
        "finished_ms": task.finished_ms,
        "duration_ms": task.duration_ms(),
        "result": task.result.as_ref().and_then(|r| r.get(primary_field(&task.method))).cloned(),
        "record": task.result,
        "error": task.error.as_ref().map(output::json_error),
    })
}

pub fn workflow_json(record: &WorkflowRecord, tasks: &[TaskRecord]) -> Value {
    json!({
        "workflow_id": record.id,
        "name": record.name,
        "state": record.state,
        "source": record.source,
        "created_ms": record.created_ms,
        "started_ms": record.started_ms,
        "finished_ms": record.finished_ms,
        "duration_ms": match (record.started_ms, record.finished_ms) { (Some(s), Some(f)) => Some(f - s), _ => None },
        "error": record.error.as_ref().map(output::json_error),
        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
    })
}

pub async fn status(ctx: &Context, _args: StatusArgs) -> Result<u8, GzError> {
    let store = ctx.open_store(false)?;
    let stats = store.stats().await?;
    let running = store
        .list_workflows(&ListFilter {
            state: Some(WorkflowState::Running),
            limit: 50,
            offset: 0,
        })
        .await?;
    let python = if ctx.config.providers.python.enabled {
        let provider = gleitzeit_providers::python::PythonProvider::new(ctx.python_config());
        let version = provider.check().await;
        gleitzeit_providers::Provider::shutdown(&provider).await;
        version
    } else {
        Err(GzError::new(
            ErrorCode::ProviderUnavailable,
            "disabled in config",
        ))
    };
    let mut running_info = Vec::new();
    for w in &running {
        let record = store.workflow(&w.id).await?;
        let live = record
            .as_ref()
            .and_then(|r| r.owner.clone())
            .is_some_and(|o| process_alive(&o));
        running_info.push((w, live));
    }
    let location = match ctx.backend() {
        "sqlite" => ctx.config.db_path().display().to_string(),
        other => other.to_string(),
    };
    if ctx.global.json {
        println!(
            "{}",
            json!({
                "backend": ctx.backend(),
                "location": location,
                "workflows_by_state": stats.workflows_by_state.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "tasks_by_state": stats.tasks_by_state.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "running": running_info.iter().map(|(w, live)| json!({"id": w.id, "name": w.name, "live": live, "completed": w.completed, "total": w.total})).collect::<Vec<_>>(),
                "providers": {
                    "python": match &python { Ok(v) => json!({"available": true, "version": v}), Err(e) => json!({"available": false, "error": output::json_error(e)}) },
                    "function": {"available": true, "functions": gleitzeit_functions::all().len()},
                },
            })
        );
        return Ok(output::EXIT_OK);
    }
    let paint = Paint(output::color_stdout());
    println!("{}", paint.bold("Gleitzeit status"));
    println!("  store      {} ({location})", ctx.backend());
    let fmt = |pairs: &[(String, u64)]| {
        if pairs.is_empty() {
            "none".to_string()
        } else {
            pairs
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!("  workflows  {}", fmt(&stats.workflows_by_state));
    println!("  tasks      {}", fmt(&stats.tasks_by_state));
    match &python {
        Ok(version) => println!("  python     {} {version}", paint.green("available")),
        Err(e) => println!(
            "  python     {} {} {}",
            paint.red("unavailable"),
            e.code,
            e.message
        ),
    }
    println!("  functions  {} built-in", gleitzeit_functions::all().len());
    if !running_info.is_empty() {
        println!("  running:");
        for (w, live) in running_info {
            let note = if live {
                ""
            } else {
                "  (interrupted — `gleitzeit resume` continues it)"
            };
            println!(
                "    {}  {}  {}/{}{note}",
                w.id, w.name, w.completed, w.total
            );
        }
    }
    Ok(output::EXIT_OK)
}

pub async fn list(ctx: &Context, args: ListArgs) -> Result<u8, GzError> {
    let state = match &args.state {
        None => None,
        Some(s) => Some(
            WorkflowState::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
                GzError::new(ErrorCode::InvalidArgument, format!("unknown state `{s}`"))
                    .with_hint("States: pending, running, completed, failed, cancelled, paused.")
            })?,
        ),
    };
    let store = ctx.open_store(false)?;
    let workflows = store
        .list_workflows(&ListFilter {
            state,
            limit: args.limit,
            offset: args.offset,
        })
        .await?;
    if ctx.global.json {
        println!("{}", serde_json::to_string(&workflows).unwrap_or_default());
        return Ok(output::EXIT_OK);
    }
    if workflows.is_empty() {
        println!("No workflows yet. Run one with `gleitzeit run FILE.yaml`.");
        return Ok(output::EXIT_OK);
    }
    let paint = Paint(output::color_stdout());
    println!(
        "{}",
        paint.bold(&format!(
            "{:<19}  {:<10}  {:>7}  {:<19}  {:>9}  NAME",
            "ID", "STATE", "TASKS", "CREATED", "DURATION"
        ))
    );
    for w in workflows {
        let duration = w
            .finished_ms
            .map(|f| format_ms(f - w.created_ms))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<19}  {:<10}  {:>7}  {:<19}  {:>9}  {}",
            w.id,
            w.state.as_str(),
            format!("{}/{}", w.completed, w.total),
            format_time(w.created_ms),
            duration,
            w.name
        );
    }
    Ok(output::EXIT_OK)
}

pub async fn get(ctx: &Context, args: GetArgs) -> Result<u8, GzError> {
    let store = ctx.open_store(false)?;
    let record = store.find_workflow(&args.id).await?;
    let tasks = store.tasks(&record.id).await?;
    if ctx.global.json {
        println!("{}", workflow_json(&record, &tasks));
        return Ok(output::EXIT_OK);
    }
    let paint = Paint(output::color_stdout());
    print!("{}", summary(&record, &tasks, &paint));
    println!(
        "  {} {}",
        paint.dim("created"),
        format_time(record.created_ms)
    );
    if let Some(source) = &record.source {
        println!("  {} {source}", paint.dim("source "));
    }
    if let Some(error) = &record.error {
        println!(
            "  {} {} {}",
            paint.dim("error  "),
            error.code,
            error.message
        );
    }
    Ok(output::EXIT_OK)
}

pub async fn cancel(ctx: &Context, args: CancelArgs) -> Result<u8, GzError> {
    let store = ctx.open_store(false)?;
    let runtime = ctx.runtime(store);
    let before = runtime.store().find_workflow(&args.id).await?;
    let after = runtime.cancel(&before.id).await?;
    if ctx.global.json {
        println!(
            "{}",
            json!({"workflow_id": after.id, "state": after.state, "cancel_requested": after.cancel_requested})
        );
        return Ok(output::EXIT_OK);
    }
    if before.state.is_terminal() {
        println!(
            "Workflow {} is already {}; nothing to cancel.",
            after.id,
            after.state.as_str()
        );
    } else if after.state == WorkflowState::Cancelled {
        println!("Cancelled workflow {}.", after.id);
    } else {
        println!(
            "Asked the process running workflow {} to cancel it.",
            after.id
        );
    }
    Ok(output::EXIT_OK)
}
