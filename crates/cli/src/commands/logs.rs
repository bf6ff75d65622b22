//! `gleitzeit logs [WORKFLOW]`: workflow log lines, history first, then new
//! ones with --follow.

use crate::context::Context;
use crate::eventlog::{
    format_time_ms, log_line, next_or_interrupt, short_id, task_label, task_of, Level,
};
use crate::output::{self, Paint};
use crate::service;
use clap::Args;
use futures_util::StreamExt;
use gleitzeit_core::events::Event;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::json;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Workflow id (a unique prefix is enough); all workflows when omitted
    pub workflow: Option<String>,
    /// What --id names: a workflow or a task
    #[arg(long = "type", value_name = "workflow|task")]
    pub kind: Option<String>,
    /// A workflow id, or a task id with --type task
    #[arg(long)]
    pub id: Option<String>,
    /// Keep printing new lines as they happen
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Lowest level shown
    #[arg(long, value_enum, default_value = "info", ignore_case = true)]
    pub level: Level,
    /// Only lines containing this text (case-insensitive)
    #[arg(long)]
    pub search: Option<String>,
    /// Lines of history to show without a workflow id
    #[arg(long, short = 'n', default_value_t = 200)]
    pub limit: u64,
}

pub async fn run(ctx: &Context, args: LogsArgs) -> Result<u8, GzError> {
    let service = service::connect(ctx).await?;
    let (workflow, task) = match args.kind.as_deref() {
        None | Some("workflow") => (args.workflow.clone().or(args.id.clone()), None),
        Some("task") => (args.workflow.clone(), args.id.clone()),
        Some(other) => {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                format!("--type must be workflow or task, not `{other}`"),
            ))
        }
    };
    let search = args.search.as_ref().map(|s| s.to_lowercase());
    let paint = Paint(output::color_stdout());
    let print = |event: &Event| {
        if task.as_ref().is_some_and(|t| task_label(event) != *t) {
            return;
        }
        let (level, message) = log_line(event);
        if level < args.level {
            return;
        }
        let line = format!(
            "{} {:<5} {} {message}",
            format_time_ms(event.at_ms),
            level.as_str(),
            short_id(&event.workflow_id)
        );
        if search
            .as_ref()
            .is_some_and(|s| !line.to_lowercase().contains(s))
        {
            return;
        }
        if ctx.global.json {
            println!(
                "{}",
                json!({"seq": event.seq, "at_ms": event.at_ms, "level": level.as_str(), "workflow_id": event.workflow_id, "task_id": task_of(event).map(|(id, _)| id), "type": event.type_name(), "message": message})
            );
        } else {
            let line = match level {
                Level::Error => paint.red(&line),
                Level::Warn => paint.yellow(&line),
                Level::Debug => paint.dim(&line),
                Level::Info => line,
            };
            println!("{line}");
        }
    };
    // History first, then (with --follow) what happens next.
    let (history, full_id) = match &workflow {
        Some(id) => {
            let view = service.workflow(id).await?;
            (
                service.history(&view.workflow_id).await?,
                Some(view.workflow_id),
            )
        }
        None => {
            let head = service.latest_event_seq().await?;
            let mut history = Vec::new();
            if head > 0 {
                let mut stream = service
                    .follow(None, None, Some(head.saturating_sub(args.limit)))
                    .await?;
                while let Some(event) = stream.next().await {
                    let event = event?;
                    let done = event.seq >= head;
                    history.push(event);
                    if done {
                        break;
                    }
                }
            }
            (history, None)
        }
    };
    let last = history.last().map(|e| e.seq);
    for event in &history {
        print(event);
    }
    if !args.follow {
        return Ok(output::EXIT_OK);
    }
    let after = match last {
        Some(seq) => Some(seq),
        None => Some(service.latest_event_seq().await?),
    };
    let mut stream = service.follow(full_id, None, after).await?;
    while let Some(event) = next_or_interrupt(&mut stream).await {
        print(&event?);
    }
    Ok(output::EXIT_OK)
}
