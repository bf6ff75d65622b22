//! `gleitzeit cancel ID` (also `workflow cancel`): cancel a workflow running
//! here, in another process, or not running at all.

use crate::context::Context;
use crate::output;
use crate::service;
use clap::Args;
use gleitzeit_core::GzError;
use serde_json::json;

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Workflow id (a unique prefix is enough)
    pub id: String,
}

pub async fn run(ctx: &Context, args: CancelArgs) -> Result<u8, GzError> {
    let cancelled = service::connect(ctx).await?.cancel(&args.id).await?;
    let (id, state) = (&cancelled.workflow_id, cancelled.state);
    if ctx.global.json {
        println!(
            "{}",
            json!({"workflow_id": id, "state": state, "cancel_requested": cancelled.cancel_requested, "was_terminal": cancelled.was_terminal})
        );
        return Ok(output::EXIT_OK);
    }
    println!("{}", cancelled.sentence());
    Ok(output::EXIT_OK)
}
