//! `gleitzeit get ID` (also `workflow get|status`): one workflow with its
//! tasks, results and errors.

use crate::context::Context;
use crate::output::{self, format_time, Paint};
use crate::progress::summary;
use crate::service;
use clap::Args;
use gleitzeit_core::GzError;

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Workflow id (a unique prefix is enough)
    pub id: String,
}

pub async fn run(ctx: &Context, args: GetArgs) -> Result<u8, GzError> {
    let view = service::connect(ctx).await?.workflow(&args.id).await?;
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
    if let Some(trigger) = &view.trigger {
        println!(
            "  {} {} of schedule {} (tick {})",
            paint.dim("trigger"),
            trigger.kind,
            trigger.id,
            trigger.tick
        );
    }
    let usage = &view.usage.total;
    if usage.total_tokens > 0 {
        println!(
            "  {} {} prompt + {} completion tokens in {} LLM call(s), {}",
            paint.dim("usage  "),
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.llm_calls,
            output::cost_text(usage)
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
