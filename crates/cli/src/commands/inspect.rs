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
            let turns = agent_timeline(&history);
            if !turns.is_empty() {
                println!("  {}", paint.dim("turns"));
                for line in turns {
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

/// An agent task's turns as a timeline: what the model asked for each turn,
/// then each tool call's outcome, from the task's stored events (so a running
/// or failed agent shows the steps it committed).
fn agent_timeline(history: &[Event]) -> Vec<String> {
    let mut lines = Vec::new();
    for event in history {
        match &event.payload {
            EventPayload::AgentTurn(turn) => {
                let what = if turn.tool_calls.is_empty() {
                    format!("answered: {}", preview(&json!(turn.response), 120))
                } else {
                    let calls: Vec<String> = turn
                        .tool_calls
                        .iter()
                        .map(|c| format!("{} {}", c.name, preview(&c.arguments, 60)))
                        .collect();
                    format!("→ {}", calls.join(", "))
                };
                lines.push(format!(
                    "turn {} (attempt {}, {})  {what}",
                    turn.turn,
                    turn.attempt,
                    format_ms(turn.duration_ms as i64)
                ));
            }
            EventPayload::ToolCallCompleted(call) => {
                let outcome = match (&call.error, &call.result) {
                    (Some(error), _) => format!("failed {}: {}", error.code, error.message),
                    (None, Some(result)) => preview(result, 100),
                    (None, None) => "null".into(),
                };
                lines.push(format!(
                    "  {} ({}, {})  {outcome}",
                    call.name,
                    call.call_id,
                    format_ms(call.duration_ms as i64)
                ));
            }
            _ => {}
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_core::events::{AgentTurn, ToolCallCompleted, ToolCallRequest};

    #[test]
    fn agent_turns_read_as_a_timeline() {
        let turn = |n: u32, calls: Vec<ToolCallRequest>, response: &str| {
            Event::new(
                EventPayload::AgentTurn(AgentTurn {
                    task_id: "a".into(),
                    task_name: "a".into(),
                    attempt: 1,
                    turn: n,
                    response: response.into(),
                    tool_calls: calls,
                    usage: None,
                    cost_usd: None,
                    model: None,
                    endpoint: None,
                    duration_ms: 12,
                }),
                "wf",
                0,
            )
        };
        let done = |error: Option<GzError>| {
            Event::new(
                EventPayload::ToolCallCompleted(ToolCallCompleted {
                    task_id: "a".into(),
                    task_name: "a".into(),
                    attempt: 1,
                    turn: 1,
                    call_id: "call_0".into(),
                    name: "count_words".into(),
                    result: error.is_none().then(|| json!({"words": 3})),
                    error,
                    duration_ms: 1,
                }),
                "wf",
                0,
            )
        };
        let history = vec![
            turn(
                1,
                vec![ToolCallRequest {
                    id: "call_0".into(),
                    name: "count_words".into(),
                    arguments: json!({"text": "a b c"}),
                }],
                "",
            ),
            done(None),
            done(Some(GzError::new(ErrorCode::ToolCallRejected, "no tool"))),
            turn(2, vec![], "Three words."),
        ];
        let lines = agent_timeline(&history);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].starts_with("turn 1 ")
                && lines[0].contains("→ count_words {\"text\":\"a b c\"}"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("count_words (call_0") && lines[1].contains("{\"words\":3}"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("failed GZ2084: no tool"), "{}", lines[2]);
        assert!(lines[3].contains("answered: Three words."), "{}", lines[3]);
    }
}
