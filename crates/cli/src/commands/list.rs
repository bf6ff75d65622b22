//! `gleitzeit list` (also `workflow list`): workflows, newest first.

use crate::context::Context;
use crate::output::{self, format_ms, format_time, Paint};
use crate::service;
use clap::Args;
use gleitzeit_core::{ErrorCode, GzError, WorkflowState};

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
    /// Only the runs this schedule started (id or unique prefix)
    #[arg(long)]
    pub schedule: Option<String>,
}

pub async fn run(ctx: &Context, args: ListArgs) -> Result<u8, GzError> {
    let state = match &args.state {
        None => None,
        Some(s) => Some(
            WorkflowState::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
                GzError::new(ErrorCode::InvalidArgument, format!("unknown state `{s}`"))
                    .with_hint("States: pending, running, completed, failed, cancelled, paused.")
            })?,
        ),
    };
    let service = service::connect(ctx).await?;
    let workflows = match &args.schedule {
        Some(schedule) => {
            service
                .list_runs_of(schedule, state, args.limit, args.offset)
                .await?
        }
        None => service.list(state, args.limit, args.offset).await?,
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
