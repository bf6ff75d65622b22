//! `gleitzeit validate FILE…`: every problem in every file, without running.

use crate::context::Context;
use crate::launch::{diagnostics_json, read_user_file, FsIncludes};
use crate::output::{self, render_diagnostics, Paint};
use clap::Args;
use gleitzeit_core::parse;
use gleitzeit_core::GzError;
use serde_json::{json, Map};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Workflow files (YAML or JSON)
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(ctx: &Context, args: ValidateArgs) -> Result<u8, GzError> {
    let registry = ctx.registry();
    let mut exit = output::EXIT_OK;
    let mut reports = Vec::new();
    for file in &args.files {
        let name = file.display().to_string();
        let text = read_user_file(file)?;
        let result = parse::load_with(
            &text,
            &name,
            &registry,
            &Map::new(),
            &FsIncludes,
            &ctx.config.limits,
        );
        let diagnostics = match &result {
            Ok(_) => Vec::new(),
            Err(d) => d.clone(),
        };
        if !diagnostics.is_empty() {
            exit = output::EXIT_INVALID;
        }
        if ctx.global.json {
            reports.push(diagnostics_json(&name, &diagnostics));
        } else if let Ok(workflow) = result {
            let paint = Paint(output::color_stdout());
            println!(
                "{} {name}: workflow \"{}\" is valid ({} tasks)",
                paint.green("✓"),
                workflow.name,
                workflow.tasks.len()
            );
        } else {
            eprint!(
                "{}",
                render_diagnostics(&diagnostics, &name, &Paint(output::color_stderr()))
            );
        }
    }
    if ctx.global.json {
        let value = if reports.len() == 1 {
            reports.remove(0)
        } else {
            json!(reports)
        };
        println!("{value}");
    }
    Ok(exit)
}
