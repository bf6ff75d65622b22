//! `gleitzeit events`: the event stream, as lines or JSON (--json), recent
//! events first and new ones with --follow.

use crate::context::Context;
use crate::eventlog::{format_time_ms, log_line, next_or_interrupt, short_id};
use crate::output::{self, Paint};
use crate::service;
use clap::Args;
use gleitzeit_core::events::{self, Event};
use gleitzeit_core::{ErrorCode, GzError};

fn types_list(types: &[String]) -> Option<Vec<String>> {
    let list: Vec<String> = types
        .iter()
        .flat_map(|t| t.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    (!list.is_empty()).then_some(list)
}

fn check_types(types: &Option<Vec<String>>) -> Result<(), GzError> {
    for t in types.iter().flatten() {
        if !events::ALL.contains(&t.as_str()) {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                format!("unknown event type `{t}`"),
            )
            .with_hint(format!("Event types: {}.", events::ALL.join(", "))));
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only these event types (space- or comma-separated)
    #[arg(long, num_args = 1.., value_name = "TYPE")]
    pub types: Vec<String>,
    /// Only events of this workflow
    #[arg(long, value_name = "ID")]
    pub workflow: Option<String>,
    /// Keep streaming new events
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start after this event id (default: the last --limit events)
    #[arg(long)]
    pub after: Option<u64>,
    /// How many recent events to show first
    #[arg(long, short = 'n', default_value_t = 50)]
    pub limit: u64,
}

pub async fn run(ctx: &Context, args: EventsArgs) -> Result<u8, GzError> {
    let types = types_list(&args.types);
    check_types(&types)?;
    let service = service::connect(ctx).await?;
    let workflow = match &args.workflow {
        Some(id) => Some(service.workflow(id).await?.workflow_id),
        None => None,
    };
    let head = service.latest_event_seq().await?;
    let after = args.after.unwrap_or(head.saturating_sub(args.limit));
    let paint = Paint(output::color_stdout());
    let show = |event: &Event| {
        if types
            .as_ref()
            .is_some_and(|t| !t.iter().any(|k| k == event.type_name()))
        {
            return;
        }
        if ctx.global.json {
            println!("{}", serde_json::to_string(event).unwrap_or_default());
        } else {
            let (_, message) = log_line(event);
            println!(
                "{:>6}  {}  {:<18} {}  {message}",
                event.seq,
                format_time_ms(event.at_ms),
                paint.cyan(event.type_name()),
                short_id(&event.workflow_id)
            );
        }
    };
    if !args.follow {
        if let Some(id) = &workflow {
            for event in service.history(id).await? {
                if event.seq > after {
                    show(&event);
                }
            }
            return Ok(output::EXIT_OK);
        }
        if head <= after {
            return Ok(output::EXIT_OK);
        }
    }
    let mut stream = service.follow(workflow, None, Some(after)).await?;
    while let Some(event) = next_or_interrupt(&mut stream).await {
        let event = event?;
        show(&event);
        if !args.follow && event.seq >= head {
            break;
        }
    }
    Ok(output::EXIT_OK)
}
