//! `gleitzeit submit FILE… [--wait]` (also `workflow submit`): hand workflows to
//! a server, or, with none running, store them and run each in a background
//! process so the terminal is free at once.

use super::progress::{summary, Display};
use super::read_user_file;
use crate::client::{Client, Target};
use crate::context::Context;
use crate::output::{self, Paint};
use clap::Args;
use gleitzeit_core::events::{self, Event};
use gleitzeit_core::parse::{self, Diagnostic};
use gleitzeit_core::yaml::Pos;
use gleitzeit_core::{ErrorCode, GzError, WorkflowState};
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
    let overrides = super::run::collect_inputs(args.inputs_file.as_deref(), &args.inputs)?;
    let target = Target::resolve(ctx).await?;
    let mut exit = output::EXIT_OK;
    for file in &args.files {
        let text = read_user_file(file)?;
        let name = file.display().to_string();
        let code = match &target {
            Target::Remote(client) => {
                submit_remote(ctx, client, &args, &text, &name, &overrides).await?
            }
            Target::Local => submit_local(ctx, &args, &text, &name, &overrides).await?,
        };
        exit = exit.max(code);
    }
    Ok(exit)
}

async fn submit_remote(
    ctx: &Context,
    client: &Client,
    args: &SubmitArgs,
    text: &str,
    file: &str,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<u8, GzError> {
    let query: Vec<(&str, String)> = overrides
        .iter()
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            ("input", format!("{k}={value}"))
        })
        .collect();
    let answer = match client
        .post("/api/v1/workflows", &query, Some(text.to_string()))
        .await
    {
        Ok(answer) => answer,
        Err(error) if error.details.get("diagnostics").is_some() => {
            // Same rendering as `validate`, pointing into the user's file.
            let diagnostics = server_diagnostics(&error, file);
            super::validate::report_diagnostics(ctx.global.json, file, &diagnostics);
            return Ok(output::EXIT_INVALID);
        }
        Err(error) => return Err(error),
    };
    let id = answer["workflow_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !args.wait {
        if ctx.global.json {
            println!("{answer}");
        } else {
            println!(
                "Submitted {id} ({}, {} tasks) to {}",
                answer["name"].as_str().unwrap_or_default(),
                answer["total_tasks"],
                client.base
            );
            println!("Follow it: gleitzeit watch workflow {id}");
        }
        return Ok(output::EXIT_OK);
    }
    wait_remote(ctx, &Target::Remote(client.clone()), &id, args.quiet).await
}

fn server_diagnostics(error: &GzError, file: &str) -> Vec<Diagnostic> {
    error.details["diagnostics"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|d| Diagnostic {
                    code: d["code"]
                        .as_str()
                        .and_then(ErrorCode::parse)
                        .unwrap_or(error.code),
                    message: d["message"].as_str().unwrap_or_default().to_string(),
                    hint: d["hint"].as_str().map(String::from),
                    file: file.to_string(),
                    pos: Pos {
                        line: d["line"].as_u64().unwrap_or(1) as usize,
                        column: d["column"].as_u64().unwrap_or(1) as usize,
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Follows a workflow's events until it finishes, then prints its summary.
/// Exit code as `run`: 0 completed, 1 failed or cancelled.
pub async fn wait_remote(
    ctx: &Context,
    target: &Target,
    id: &str,
    quiet: bool,
) -> Result<u8, GzError> {
    let mut stream = target
        .follow(ctx, Some(id.to_string()), None, Some(0))
        .await?;
    let (tx, rx) = tokio::sync::broadcast::channel::<Event>(4096);
    let display = (!ctx.global.json && !quiet).then(|| Display::start(rx, id.to_string(), false));
    // A workflow that already finished has its final event in the history.
    while let Some(event) = futures_util::StreamExt::next(&mut stream).await {
        let event = event?;
        let last = matches!(
            event.type_name(),
            events::WORKFLOW_COMPLETED | events::WORKFLOW_FAILED | events::WORKFLOW_CANCELLED
        );
        let _ = tx.send(event);
        if last {
            break;
        }
    }
    if let Some(display) = display {
        display.finish().await;
    }
    let view = super::inspect::fetch_view(ctx, target, id).await?;
    if ctx.global.json {
        println!("{}", serde_json::to_value(&view).unwrap_or_default());
    } else {
        print!("{}", summary(&view, &Paint(output::color_stdout())));
        if let (Some(error), WorkflowState::Failed) = (&view.error, view.state) {
            output::print_error(error);
        }
    }
    Ok(match view.state {
        WorkflowState::Completed => output::EXIT_OK,
        _ => output::EXIT_WORKFLOW_FAILED,
    })
}

async fn submit_local(
    ctx: &Context,
    args: &SubmitArgs,
    text: &str,
    file: &str,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<u8, GzError> {
    if ctx.backend() == "memory" {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "the memory backend keeps nothing after this process, so there is nothing to submit to",
        )
        .with_hint("Use `gleitzeit run FILE`, or start `gleitzeit serve` and submit to it."));
    }
    let store = ctx.open_store(false).await?;
    let runtime = ctx.runtime(store).await?;
    let workflow = match parse::load_with(
        text,
        file,
        runtime.registry(),
        overrides,
        &crate::includes::FsIncludes,
        runtime.limits(),
    ) {
        Ok(workflow) => workflow,
        Err(diagnostics) => {
            super::validate::report_diagnostics(ctx.global.json, file, &diagnostics);
            return Ok(output::EXIT_INVALID);
        }
    };
    let name = workflow.name.clone();
    let total = workflow.tasks.len();
    let id = runtime.submit(workflow, Some(file.to_string())).await?;
    if args.wait {
        let code = super::run::execute(ctx, &runtime, &id, args.quiet, false).await?;
        runtime.registry().shutdown().await;
        return Ok(code);
    }
    let (pid, log) = spawn_background_run(ctx, &id)?;
    if ctx.global.json {
        println!(
            "{}",
            serde_json::json!({"workflow_id": id, "name": name, "state": "pending", "total_tasks": total, "pid": pid, "log": log})
        );
    } else {
        println!("Submitted {id} ({name}, {total} tasks); no server is running, so background process {pid} runs it (log: {log}).");
        println!("Follow it: gleitzeit watch workflow {id}");
    }
    Ok(output::EXIT_OK)
}

/// `gleitzeit resume ID -q` in its own session, so it outlives this command
/// and the terminal.
fn spawn_background_run(ctx: &Context, id: &str) -> Result<(u32, String), GzError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| {
        GzError::new(
            ErrorCode::InternalError,
            format!("cannot find this program: {e}"),
        )
    })?;
    let logs = crate::config::home_dir().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| {
        GzError::new(
            ErrorCode::FileWriteFailed,
            format!("cannot create {}: {e}", logs.display()),
        )
    })?;
    let log_path = logs.join(format!("{id}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| {
        GzError::new(
            ErrorCode::FileWriteFailed,
            format!("cannot create {}: {e}", log_path.display()),
        )
    })?;
    let mut command = std::process::Command::new(exe);
    if let Some(config) = &ctx.global.config {
        command.arg("--config").arg(config);
    }
    command
        .arg("--backend")
        .arg(ctx.backend())
        .arg("--db")
        .arg(ctx.config.db_path())
        .arg("--local")
        .args(["resume", id, "--quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| GzError::new(ErrorCode::FileWriteFailed, format!("log file: {e}")))?,
        )
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and only detaches the child.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| {
        GzError::new(
            ErrorCode::ServiceStartFailed,
            format!("cannot start a background run: {e}"),
        )
    })?;
    Ok((child.id(), log_path.display().to_string()))
}
