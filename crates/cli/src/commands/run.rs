//! `gleitzeit run` and `gleitzeit resume`.

use super::progress::{summary, Display};
use super::read_user_file;
use crate::context::Context;
use crate::output::{self, Paint};
use clap::Args;
use gleitzeit_core::model::{RetryPolicy, TaskSpec};
use gleitzeit_core::parse::{self, parse_input_override};
use gleitzeit_core::{ErrorCode, GzError, Workflow, WorkflowState};
use gleitzeit_runtime::{RunOutcome, Runtime};
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
    /// Which files a batch takes: a glob on the file name (repeatable), e.g. '*.md'
    #[arg(long, value_name = "GLOB", requires = "batch_folder")]
    pub pattern: Vec<String>,
    /// Which files a batch takes: extensions, e.g. .txt,.md
    #[arg(long, value_name = "EXTS", requires = "batch_folder")]
    pub extensions: Vec<String>,
    /// Batch type: text files go into the prompt, vision sends images
    #[arg(
        long = "type",
        value_enum,
        value_name = "TYPE",
        requires = "batch_folder"
    )]
    pub kind: Option<super::batch::FileKind>,
    /// Take files from subfolders too
    #[arg(long, short = 'r', requires = "batch_folder")]
    pub recursive: bool,
    /// Batch method instead of an LLM call: python/execute, python/script, python/function
    #[arg(long, value_name = "METHOD", requires = "batch_folder")]
    pub method: Option<String>,
    /// Python code for --method python/execute; the file is inputs['file_path']
    #[arg(long, value_name = "CODE", requires = "batch_folder")]
    pub code: Option<String>,
    /// A parameter of every batch task as KEY=VALUE (JSON when it parses), e.g. module=tools.py
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "batch_folder")]
    pub params: Vec<String>,
    /// Write batch results under this folder instead of next to the inputs
    #[arg(long, value_name = "DIR", requires = "batch_folder")]
    pub out: Option<PathBuf>,
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

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// Workflow id (a unique prefix is enough)
    pub id: String,
    /// Print only the summary (no live progress)
    #[arg(long, short = 'q')]
    pub quiet: bool,
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
        return super::batch::run_batch(ctx, &args, folder).await;
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
    let mut workflows = Vec::new();
    let mut invalid = false;
    for file in &files {
        let text = read_user_file(file)?;
        let name = file.display().to_string();
        match parse::load_with(
            &text,
            &name,
            runtime.registry(),
            &overrides,
            &crate::includes::FsIncludes,
            runtime.limits(),
        ) {
            Ok(workflow) => workflows.push((workflow, name)),
            Err(diagnostics) => {
                invalid = true;
                super::validate::report_diagnostics(ctx.global.json, &name, &diagnostics);
            }
        }
    }
    if invalid {
        return Ok(output::EXIT_INVALID);
    }
    let mut exit = output::EXIT_OK;
    for (workflow, source) in workflows {
        let id = runtime.submit(workflow, Some(source)).await?;
        let code = execute(ctx, &runtime, &id, args.quiet, args.watch).await?;
        exit = exit.max(code);
    }
    runtime.registry().shutdown().await;
    Ok(exit)
}

pub async fn resume(ctx: &Context, args: ResumeArgs) -> Result<u8, GzError> {
    if let crate::client::Target::Remote(client) = crate::client::Target::resolve(ctx).await? {
        let answer = client
            .post(&format!("/api/v1/workflows/{}/resume", args.id), &[], None)
            .await?;
        let id = answer["workflow_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !ctx.global.json && !args.quiet {
            eprintln!("Resumed {id} on {}", client.base);
        }
        return super::submit::wait_remote(
            ctx,
            &crate::client::Target::Remote(client),
            &id,
            args.quiet,
        )
        .await;
    }
    let store = ctx.open_store(false).await?;
    let runtime = ctx.runtime(store).await?;
    let record = runtime.store().find_workflow(&args.id).await?;
    let code = execute(ctx, &runtime, &record.id, args.quiet, false).await?;
    runtime.registry().shutdown().await;
    Ok(code)
}

pub fn collect_inputs(
    inputs_file: Option<&std::path::Path>,
    overrides: &[String],
) -> Result<Map<String, Value>, GzError> {
    let mut inputs = Map::new();
    if let Some(path) = inputs_file {
        let text = read_user_file(path)?;
        let node = gleitzeit_core::yaml::parse(&text).map_err(|e| {
            GzError::new(
                ErrorCode::InvalidInput,
                format!("inputs file is not valid YAML/JSON: {}", e.message),
            )
            .at(format!(
                "{}:{}:{}",
                path.display(),
                e.pos.line,
                e.pos.column
            ))
        })?;
        match node.map(|n| n.to_json()) {
            Some(Value::Object(map)) => inputs.extend(map),
            None => {}
            Some(_) => {
                return Err(GzError::new(
                    ErrorCode::InvalidInput,
                    "inputs file must be a mapping of names to values",
                )
                .at(path.display().to_string()))
            }
        }
    }
    for arg in overrides {
        let (key, value) = parse_input_override(arg)?;
        inputs.insert(key, value);
    }
    Ok(inputs)
}

/// Runs a stored workflow with live progress, prints the summary, returns the exit code.
pub async fn execute(
    ctx: &Context,
    runtime: &Runtime,
    id: &str,
    quiet: bool,
    watch: bool,
) -> Result<u8, GzError> {
    let (outcome, interrupted) = drive(ctx, runtime, id, quiet, watch).await?;
    let record = runtime.store().find_workflow(id).await?;
    report(ctx, &record, &outcome);
    Ok(match outcome.state {
        WorkflowState::Completed => output::EXIT_OK,
        WorkflowState::Cancelled if interrupted => 130,
        _ => output::EXIT_WORKFLOW_FAILED,
    })
}

/// Runs a stored workflow with live progress (Ctrl-C cancels it); says whether
/// the user interrupted it.
pub async fn drive(
    ctx: &Context,
    runtime: &Runtime,
    id: &str,
    quiet: bool,
    watch: bool,
) -> Result<(RunOutcome, bool), GzError> {
    let cancel = CancellationToken::new();
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signal_task = {
        let cancel = cancel.clone();
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
                cancel.cancel();
                eprintln!("\ncancelling… (press Ctrl-C again to quit at once)");
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        })
    };
    let display = (!ctx.global.json && !quiet)
        .then(|| Display::start(runtime.subscribe(), id.to_string(), watch));
    let result = runtime.run(id, cancel).await;
    signal_task.abort();
    if let Some(display) = display {
        display.finish().await;
    }
    Ok((
        result?,
        interrupted.load(std::sync::atomic::Ordering::SeqCst),
    ))
}

fn report(ctx: &Context, record: &gleitzeit_store::WorkflowRecord, outcome: &RunOutcome) {
    let view = gleitzeit_api::views::WorkflowView::new(record, &outcome.tasks);
    if ctx.global.json {
        println!("{}", serde_json::to_value(&view).unwrap_or_default());
        return;
    }
    print!("{}", summary(&view, &Paint(output::color_stdout())));
    if let Some(error) = &outcome.error {
        if outcome.state == WorkflowState::Failed {
            output::print_error(error);
        }
    }
    if outcome.state == WorkflowState::Cancelled {
        eprintln!("Resume with: gleitzeit resume {}", record.id);
    }
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

fn single_task_workflow(
    name: String,
    id: &str,
    method: &str,
    params: Map<String, Value>,
) -> Workflow {
    Workflow {
        name,
        description: None,
        inputs: Map::new(),
        tasks: vec![single_task(id, method, params)],
        outputs: Default::default(),
        budget: None,
        access: None,
    }
}

/// A task with every option at its default.
pub fn single_task(id: &str, method: &str, params: Map<String, Value>) -> TaskSpec {
    TaskSpec {
        id: id.to_string(),
        name: None,
        method: method.into(),
        params: Value::Object(params),
        dependencies: vec![],
        priority: Default::default(),
        timeout: None,
        retry: RetryPolicy::default(),
        on_error: Default::default(),
        requires: Default::default(),
        when: None,
        on_skip: Default::default(),
        for_each: None,
        max_parallel: None,
        cache: None,
    }
}

/// The model `run --text`/`--vision`/`--batch-folder` ask when none is named.
pub fn default_model(vision: bool) -> String {
    if vision { "llava" } else { "llama3.2" }.into()
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
            if event.type_name() == gleitzeit_core::events::LLM_TOKEN && !json {
                if let Some(token) = event.stored_data().1.get("token").and_then(Value::as_str) {
                    print!("{token}");
                    let _ = std::io::stdout().flush();
                    printed = true;
                }
            }
            if event.type_name().starts_with("workflow_")
                && event.type_name() != gleitzeit_core::events::WORKFLOW_STARTED
                && event.type_name() != gleitzeit_core::events::WORKFLOW_PROGRESS
            {
                break;
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

/// Exit code of a one-task run: the task's error decides (bad arguments are 2).
fn single_task_exit(outcome: &RunOutcome) -> u8 {
    match (
        outcome.state,
        outcome.tasks.first().and_then(|t| t.error.as_ref()),
    ) {
        (WorkflowState::Completed, _) => output::EXIT_OK,
        (_, Some(error)) => output::exit_code(error),
        _ => output::EXIT_WORKFLOW_FAILED,
    }
}
