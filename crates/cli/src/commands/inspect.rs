//! Reading the store: `status`, `list`, `get`, and `cancel`.

use super::progress::summary;
use crate::client::Target;
use crate::context::Context;
use crate::output::{self, format_ms, format_time, Paint};
use clap::Args;
use gleitzeit_api::views::WorkflowView;
use gleitzeit_core::{ErrorCode, GzError, WorkflowState};
use gleitzeit_runtime::process_alive;
use gleitzeit_store::{ListFilter, WorkflowSummary};
use serde_json::json;

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

async fn status_remote(ctx: &Context, client: &crate::client::Client) -> Result<u8, GzError> {
    let health = client.get("/api/v1/health").await?;
    let stats = client.get("/api/v1/stats?range_minutes=60").await?;
    let running = client
        .get("/api/v1/workflows?state=running&limit=50")
        .await?;
    if ctx.global.json {
        println!(
            "{}",
            json!({"server": client.base, "health": health, "stats": stats, "running": running["workflows"]})
        );
        return Ok(output::EXIT_OK);
    }
    let paint = Paint(output::color_stdout());
    println!("{}", paint.bold("Gleitzeit status"));
    println!(
        "  server     {} ({}, up {} s)",
        client.base,
        health["status"].as_str().unwrap_or("?"),
        health["uptime_seconds"]
    );
    for reason in health["reasons"].as_array().into_iter().flatten() {
        println!("             - {}", reason.as_str().unwrap_or(""));
    }
    println!(
        "  workflows  {}",
        output::counts(&stats["workflows_by_state"])
    );
    println!("  tasks      {}", output::counts(&stats["tasks_by_state"]));
    println!("  queue      {}", stats["queue_depth"]);
    let running = running["workflows"].as_array().cloned().unwrap_or_default();
    if !running.is_empty() {
        println!("  running:");
        for w in running {
            println!(
                "    {}  {}  {}/{}",
                w["id"].as_str().unwrap_or(""),
                w["name"].as_str().unwrap_or(""),
                w["completed"],
                w["total"]
            );
        }
    }
    Ok(output::EXIT_OK)
}

pub async fn status(ctx: &Context, _args: StatusArgs) -> Result<u8, GzError> {
    if let Target::Remote(client) = Target::resolve(ctx).await? {
        return status_remote(ctx, &client).await;
    }
    let store = ctx.open_store(false).await?;
    let stats = store.stats().await?;
    let running = store
        .list_workflows(&ListFilter {
            submitted_by: None,
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
    let workflows: Vec<WorkflowSummary> = match Target::resolve(ctx).await? {
        Target::Remote(client) => {
            let mut path = format!(
                "/api/v1/workflows?limit={}&offset={}",
                args.limit.clamp(1, 1000),
                args.offset
            );
            if let Some(state) = state {
                path.push_str(&format!("&state={}", state.as_str()));
            }
            let page = client.get(&path).await?;
            serde_json::from_value(page["workflows"].clone()).map_err(|e| {
                GzError::new(
                    ErrorCode::InternalError,
                    format!("unexpected list from the server: {e}"),
                )
            })?
        }
        Target::Local => {
            ctx.open_store(false)
                .await?
                .list_workflows(&ListFilter {
                    submitted_by: None,
                    state,
                    limit: args.limit,
                    offset: args.offset,
                })
                .await?
        }
    };
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

/// A workflow as the API shows it, from the server or the local store.
pub async fn fetch_view(ctx: &Context, target: &Target, id: &str) -> Result<WorkflowView, GzError> {
    match target {
        Target::Remote(client) => {
            let value = client.get(&format!("/api/v1/workflows/{id}")).await?;
            serde_json::from_value(value).map_err(|e| {
                GzError::new(
                    ErrorCode::InternalError,
                    format!("unexpected workflow from the server: {e}"),
                )
            })
        }
        Target::Local => {
            let store = ctx.open_store(false).await?;
            let record = store.find_workflow(id).await?;
            let tasks = store.tasks(&record.id).await?;
            Ok(WorkflowView::new(&record, &tasks))
        }
    }
}

pub async fn get(ctx: &Context, args: GetArgs) -> Result<u8, GzError> {
    let target = Target::resolve(ctx).await?;
    let view = fetch_view(ctx, &target, &args.id).await?;
    if ctx.global.json {
        println!("{}", serde_json::to_value(&view).unwrap_or_default());
        return Ok(output::EXIT_OK);
    }
    let paint = Paint(output::color_stdout());
    print!("{}", summary(&view, &paint));
    println!(
        "  {} {}",
        paint.dim("created"),
        format_time(view.created_ms)
    );
    if let Some(source) = &view.source {
        println!("  {} {source}", paint.dim("source "));
    }
    let tokens = view.usage["total_tokens"].as_u64().unwrap_or(0);
    if tokens > 0 {
        println!(
            "  {} {} prompt + {} completion tokens in {} LLM call(s), {}",
            paint.dim("usage  "),
            view.usage["prompt_tokens"],
            view.usage["completion_tokens"],
            view.usage["llm_calls"],
            output::cost_text(&view.usage)
        );
    }
    if let Some(error) = &view.error {
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
    let (was_terminal, id, state, cancel_requested) = match Target::resolve(ctx).await? {
        Target::Remote(client) => {
            let before = client
                .get(&format!("/api/v1/workflows/{}", args.id))
                .await?;
            let was_terminal = before["state"]
                .as_str()
                .and_then(WorkflowState::parse)
                .is_some_and(|s| s.is_terminal());
            let after = client
                .post(&format!("/api/v1/workflows/{}/cancel", args.id), &[], None)
                .await?;
            let state = after["state"]
                .as_str()
                .and_then(WorkflowState::parse)
                .unwrap_or(WorkflowState::Running);
            (
                was_terminal,
                after["workflow_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                state,
                after["cancel_requested"].as_bool().unwrap_or(false),
            )
        }
        Target::Local => {
            let store = ctx.open_store(false).await?;
            let runtime = ctx.runtime(store).await?;
            let before = runtime.store().find_workflow(&args.id).await?;
            let after = runtime.cancel(&before.id).await?;
            (
                before.state.is_terminal(),
                after.id,
                after.state,
                after.cancel_requested,
            )
        }
    };
    if ctx.global.json {
        println!(
            "{}",
            json!({"workflow_id": id, "state": state, "cancel_requested": cancel_requested})
        );
        return Ok(output::EXIT_OK);
    }
    if was_terminal {
        println!(
            "Workflow {id} is already {}; nothing to cancel.",
            state.as_str()
        );
    } else if state == WorkflowState::Cancelled {
        println!("Cancelled workflow {id}.");
    } else {
        println!("Asked the process running workflow {id} to cancel it.");
    }
    Ok(output::EXIT_OK)
}
