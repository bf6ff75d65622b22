//! `gleitzeit resume ID`: continue an interrupted workflow (completed tasks
//! are kept), here or on the server in use, and see it through.

use crate::context::Context;
use crate::service;
use clap::Args;
use gleitzeit_core::GzError;

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// Workflow id (a unique prefix is enough)
    pub id: String,
    /// Print only the summary (no live progress)
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub async fn run(ctx: &Context, args: ResumeArgs) -> Result<u8, GzError> {
    let service = service::connect(ctx).await?;
    let resumed = service.resume(&args.id).await?;
    if let Some(server) = &resumed.on_server {
        if !ctx.global.json && !args.quiet {
            eprintln!("Resumed {} on {server}", resumed.workflow_id);
        }
    }
    let code = service.run_to_end(&resumed.workflow_id, args.quiet).await?;
    service.finish().await;
    Ok(code)
}
