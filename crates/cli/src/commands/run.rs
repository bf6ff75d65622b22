//! `gleitzeit run`: workflow files, one function (`--function`), one prompt
//! (`--text`, `--vision`) or a folder (`--batch-folder`), in this process.

use crate::batch::{self, BatchArgs, BatchRun};
use crate::context::Context;
use crate::launch::{
    collect_inputs, default_model, execute, load_all, single_task_exit, single_task_workflow,
};
use crate::output::{self, Paint};
use clap::Args;
use gleitzeit_core::events::EventPayload;
use gleitzeit_core::parse;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::{Map, Value};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Workflow files (YAML or JSON), run one after another
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Workflow file (same as the positional FILE; earlier versions used it)
    #[arg(long = "workflow", value_name = "FILE")]
    pub workflow: Vec<PathBuf>,
    /// Override a workflow input: --input topic=Rust (values are JSON when they parse)
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// Read inputs from a YAML or JSON file of KEY: VALUE
    #[arg(long = "inputs", value_name = "FILE")]
    pub inputs_file: Option<PathBuf>,
    /// Keep nothing on disk: use an in-memory store for this run
    #[arg(long)]
    pub ephemeral: bool,
    /// Print every task event as a line, even on a terminal
    #[arg(long)]
    pub watch: bool,
    /// Print only the summary (no live progress)
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Run one built-in function instead of a file: --function fibonacci --args n=10
    #[arg(long, value_name = "NAME", conflicts_with_all = ["files", "workflow"])]
    pub function: Option<String>,
    /// Arguments for --function as KEY=VALUE pairs
    #[arg(long, value_name = "KEY=VALUE", num_args = 1.., requires = "function")]
    pub args: Vec<String>,
    /// Ask a model one prompt and stream the answer: --text "Explain X" --model llama3
    #[arg(long, value_name = "PROMPT", conflicts_with_all = ["files", "workflow", "function", "vision"])]
    pub text: Option<String>,
    /// Ask a vision model about an image: --vision photo.jpg --prompt "Describe this image"
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["files", "workflow", "function"])]
    pub vision: Option<String>,
    /// The question for --vision, or for every file of --batch-folder
    #[arg(long, value_name = "PROMPT")]
    pub prompt: Option<String>,
    /// Run one task per file of a folder: --batch-folder docs --pattern '*.txt' --prompt "Summarize"
    #[arg(long, value_name = "DIR", conflicts_with_all = ["files", "workflow", "function", "text", "vision"])]
    pub batch_folder: Option<PathBuf>,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Model for --text / --vision / --batch-folder (an alias from `llm.models` works too)
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: Option<String>,
    /// System prompt for --text / --vision
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Run tasks with `cache:` even when a stored result exists (fresh results are still stored)
    #[arg(long)]
    pub no_cache: bool,
    /// Store every LLM and HTTP exchange in DIR (one JSON file each, no secrets), for --replay
    #[arg(long, value_name = "DIR", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Answer LLM and HTTP calls from a recording made with --record: no endpoint is contacted
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
}

pub async fn run(ctx: &Context, args: RunArgs) -> Result<u8, GzError> {
    if let Some(dir) = &args.record {
        ctx.use_recorder(gleitzeit_providers::replay::Recorder::record(dir)?)?;
    }
    if let Some(dir) = &args.replay {
        ctx.use_recorder(gleitzeit_providers::replay::Recorder::replay(dir)?)?;
    }
    if let Some(function) = &args.function {
        return run_function(ctx, function, &args).await;
    }
    if let Some(folder) = &args.batch_folder {
        let run = BatchRun {
            prompt: args.prompt.clone(),
            model: args.model.clone(),
            system: args.system.clone(),
            ephemeral: args.ephemeral,
            quiet: args.quiet,
            watch: args.watch,
            no_cache: args.no_cache,
        };
        return batch::run_batch(ctx, folder, &args.batch, &run).await;
    }
    if args.text.is_some() || args.vision.is_some() {
        return run_llm(ctx, &args).await;
    }
    if args.prompt.is_some() {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "--prompt goes with --vision IMAGE or --batch-folder DIR",
        )
        .with_hint("For one text prompt use `gleitzeit run --text \"…\"`."));
    }
    let files: Vec<PathBuf> = args.files.iter().chain(&args.workflow).cloned().collect();
    if files.is_empty() {
        return Err(
            GzError::new(ErrorCode::InvalidArgument, "no workflow file given").with_hint(
                "Run `gleitzeit run FILE.yaml`, or `gleitzeit init NAME` to create one.",
            ),
        );
    }
    let overrides = collect_inputs(args.inputs_file.as_deref(), &args.inputs)?;
    let store = ctx.open_store(args.ephemeral).await?;
    let mut runtime = ctx.runtime(store).await?;
    if args.no_cache {
        runtime = runtime.without_cache();
    }

    // Validate everything before running anything.
    let Some(workflows) = load_all(ctx.global.json, &files, &runtime, &overrides)? else {
        return Ok(output::EXIT_INVALID);
    };
    let mut exit = output::EXIT_OK;
    for (workflow, source) in workflows {
        let id = runtime.submit(workflow, Some(source)).await?;
        let code = execute(ctx.global.json, &runtime, &id, args.quiet, args.watch).await?;
        exit = exit.max(code);
    }
    runtime.registry().shutdown().await;
    Ok(exit)
}

async fn run_function(ctx: &Context, name: &str, args: &RunArgs) -> Result<u8, GzError> {
    let mut params = Map::new();
    params.insert("function".into(), Value::String(name.to_string()));
    for arg in &args.args {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                format!("`{arg}` is not KEY=VALUE"),
            )
            .with_hint(format!(
                "See the arguments with `gleitzeit functions show {name}`."
            )));
        };
        // Values stay text; the function converts them to its argument types.
        params.insert(key.trim().to_string(), Value::String(value.to_string()));
    }
    if gleitzeit_functions::find(name).is_none() {
        let names: Vec<&str> = gleitzeit_functions::all().iter().map(|f| f.name).collect();
        let hint = parse::suggest(name, names.iter().copied())
            .map(|s| format!("Did you mean `{s}`? `gleitzeit functions list` shows all functions."))
            .unwrap_or_else(|| "`gleitzeit functions list` shows all functions.".into());
        return Err(GzError::new(
            ErrorCode::FunctionNotFound,
            format!("unknown function `{name}`"),
        )
        .with_hint(hint));
    }
    let workflow = single_task_workflow(format!("function {name}"), name, "function/call", params);
    let store = ctx.open_store(args.ephemeral).await?;
    let runtime = ctx.runtime(store).await?;
    let id = runtime.submit(workflow, None).await?;
    let outcome = runtime.run(&id, CancellationToken::new()).await?;
    let task = &outcome.tasks[0];
    if ctx.global.json {
        let record = runtime.store().find_workflow(&id).await?;
        println!(
            "{}",
            gleitzeit_api::views::workflow_json(&record, &outcome.tasks)
        );
    } else if let Some(error) = &task.error {
        output::print_error(error);
    } else {
        let result = task
            .result
            .as_ref()
            .and_then(|r| r.get("result"))
            .cloned()
            .unwrap_or(Value::Null);
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    }
    Ok(single_task_exit(&outcome))
}

/// `run --text` / `run --vision`: one LLM call, its tokens printed as they come.
async fn run_llm(ctx: &Context, args: &RunArgs) -> Result<u8, GzError> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| default_model(args.vision.is_some()));
    let mut params = Map::new();
    params.insert("model".into(), Value::String(model));
    if let Some(system) = &args.system {
        params.insert("system".into(), Value::String(system.clone()));
    }
    let method = if let Some(image) = &args.vision {
        let prompt = args
            .prompt
            .clone()
            .unwrap_or_else(|| "Describe this image".into());
        params.insert("prompt".into(), Value::String(prompt));
        params.insert(
            "images".into(),
            Value::Array(vec![Value::String(image.clone())]),
        );
        "llm/vision"
    } else {
        params.insert(
            "prompt".into(),
            Value::String(args.text.clone().unwrap_or_default()),
        );
        "llm/chat"
    };
    let workflow = single_task_workflow(format!("{method} prompt"), "answer", method, params);
    let store = ctx.open_store(args.ephemeral).await?;
    let runtime = ctx.runtime(store).await?;
    let id = runtime.submit(workflow, None).await?;
    let mut events = runtime.subscribe();
    let json = ctx.global.json;
    let printer = tokio::spawn(async move {
        use std::io::Write;
        let mut printed = false;
        while let Ok(event) = events.recv().await {
            match &event.payload {
                EventPayload::LlmToken(token) if !json => {
                    print!("{}", token.token);
                    let _ = std::io::stdout().flush();
                    printed = true;
                }
                EventPayload::WorkflowCompleted(_)
                | EventPayload::WorkflowFailed(_)
                | EventPayload::WorkflowCancelled(_) => break,
                _ => {}
            }
        }
        printed
    });
    let cancel = CancellationToken::new();
    let signal = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        })
    };
    let outcome = runtime.run(&id, cancel).await;
    signal.abort();
    let printed = tokio::time::timeout(std::time::Duration::from_secs(2), printer)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    runtime.registry().shutdown().await;
    let outcome = outcome?;
    let task = &outcome.tasks[0];
    if json {
        let record = runtime.store().find_workflow(&id).await?;
        println!(
            "{}",
            gleitzeit_api::views::workflow_json(&record, &outcome.tasks)
        );
    } else if let Some(error) = &task.error {
        if printed {
            println!();
        }
        output::print_error(error);
    } else {
        let response = task
            .result
            .as_ref()
            .and_then(|r| r.get("response"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if printed {
            println!();
        } else {
            println!("{response}");
        }
        if let Some(record) = &task.result {
            let paint = Paint(output::color_stderr());
            let usage = &record["usage"];
            eprintln!(
                "{}",
                paint.dim(&format!(
                    "{} on {} · {} prompt + {} completion tokens · {} ms",
                    record["model"].as_str().unwrap_or("?"),
                    record["endpoint"].as_str().unwrap_or("?"),
                    usage["prompt_tokens"],
                    usage["completion_tokens"],
                    record["duration_ms"]
                ))
            );
        }
    }
    Ok(single_task_exit(&outcome))
}
