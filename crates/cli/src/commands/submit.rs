//! `gleitzeit submit FILE… [--wait]` (also `workflow submit`): hand workflows to
//! a server, or, with none running, store them and run each in a background
//! process so the terminal is free at once.

use crate::context::Context;
use crate::launch::{collect_inputs, read_user_file, report_diagnostics};
use crate::output;
use crate::service::{self, Runner};
use clap::Args;
use gleitzeit_core::GzError;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Workflow files (YAML or JSON)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Wait for each workflow to finish, showing progress; exit code as `run`
    #[arg(long, short = 'w')]
    pub wait: bool,
    /// Override a workflow input: --input topic=Rust
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// Read inputs from a YAML or JSON file of KEY: VALUE
    #[arg(long = "inputs", value_name = "FILE")]
    pub inputs_file: Option<PathBuf>,
    /// With --wait: print only the summary
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub async fn run(ctx: &Context, args: SubmitArgs) -> Result<u8, GzError> {
    let overrides = collect_inputs(args.inputs_file.as_deref(), &args.inputs)?;
    let service = service::connect(ctx).await?;
    let mut exit = output::EXIT_OK;
    for file in &args.files {
        let text = read_user_file(file)?;
        let name = file.display().to_string();
        let submitted = match service.submit(&text, &name, &overrides).await? {
            Ok(submitted) => submitted,
            Err(diagnostics) => {
                // Same rendering as `validate`, pointing into the user's file.
                report_diagnostics(ctx.global.json, &name, &diagnostics);
                exit = exit.max(output::EXIT_INVALID);
                continue;
            }
        };
        let id = &submitted.workflow_id;
        if args.wait {
            let code = service.run_to_end(id, args.quiet).await?;
            exit = exit.max(code);
            continue;
        }
        let runner = service.start(&submitted).await?;
        let (n, total) = (&submitted.name, submitted.total_tasks);
        match runner {
            Runner::Server { base } => {
                if ctx.global.json {
                    println!("{}", json!(submitted));
                } else {
                    println!("Submitted {id} ({n}, {total} tasks) to {base}");
                }
            }
            Runner::Process { pid, log } => {
                if ctx.global.json {
                    println!(
                        "{}",
                        json!({"workflow_id": id, "name": n, "state": submitted.state, "total_tasks": total, "pid": pid, "log": log})
                    );
                } else {
                    println!("Submitted {id} ({n}, {total} tasks); no server is running, so background process {pid} runs it (log: {log}).");
                }
            }
        }
        if !ctx.global.json {
            println!("Follow it: gleitzeit watch workflow {id}");
        }
    }
    service.finish().await;
    Ok(exit)
}
