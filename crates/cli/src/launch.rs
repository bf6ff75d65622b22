//! Launching workflows, shared by every command that starts or follows one:
//! reading the user's files, loading and validating them, reporting their
//! problems, executing a stored workflow with live progress, waiting for one
//! to finish and printing its summary.

use crate::output::{self, render_diagnostics, Paint};
use crate::progress::{summary, Display};
use gleitzeit_api::views::WorkflowView;
use gleitzeit_core::events::{Event, EventPayload};
use gleitzeit_core::model::TaskSpec;
use gleitzeit_core::parse::{self, parse_input_override, Diagnostic, Includes};
use gleitzeit_core::{ErrorCode, GzError, Workflow, WorkflowState};
use gleitzeit_runtime::{RunOutcome, Runtime};
use gleitzeit_store::WorkflowRecord;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Reads a file a user named, with GZ5001/5002 errors that name it.
pub fn read_user_file(path: &Path) -> Result<String, GzError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            GzError::new(
                ErrorCode::FileUnreadable,
                format!("{} is not UTF-8 text", path.display()),
            )
            .at(path.display().to_string())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(GzError::new(
            ErrorCode::FileNotFound,
            format!("file {} does not exist", path.display()),
        )
        .at(path.display().to_string())),
        Err(e) => Err(GzError::new(
            ErrorCode::FileUnreadable,
            format!("cannot read {}: {e}", path.display()),
        )
        .at(path.display().to_string())),
    }
}

/// Sub-workflow files for `parse::load_with`: paths are relative to the file
/// that names them and are known by their canonical path, so two spellings of
/// one file are one file when cycles are looked for.
pub struct FsIncludes;

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl Includes for FsIncludes {
    fn read(&self, from: &str, path: &str) -> Result<(String, String), GzError> {
        let base = Path::new(from).parent().unwrap_or(Path::new("."));
        let full = base.join(path);
        let text = read_user_file(&full)?;
        Ok((text, canonical(&full).display().to_string()))
    }

    fn identity(&self, file: &str) -> String {
        canonical(Path::new(file)).display().to_string()
    }
}

/// Workflow inputs from `--inputs FILE` and then `--input KEY=VALUE`.
pub fn collect_inputs(
    inputs_file: Option<&Path>,
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

/// Loads and checks every file before anything runs: the workflows with the
/// names they were read under, or `None` once every file's problems are
/// reported.
pub fn load_all(
    json: bool,
    files: &[PathBuf],
    runtime: &Runtime,
    overrides: &Map<String, Value>,
) -> Result<Option<Vec<(Workflow, String)>>, GzError> {
    let mut workflows = Vec::new();
    let mut invalid = false;
    for file in files {
        let text = read_user_file(file)?;
        let name = file.display().to_string();
        match parse::load_with(
            &text,
            &name,
            runtime.registry(),
            overrides,
            &FsIncludes,
            runtime.limits(),
        ) {
            Ok(workflow) => workflows.push((workflow, name)),
            Err(diagnostics) => {
                invalid = true;
                report_diagnostics(json, &name, &diagnostics);
            }
        }
    }
    Ok((!invalid).then_some(workflows))
}

/// Prints a file's problems: JSON on stdout with --json, else rendered on stderr.
pub fn report_diagnostics(json: bool, file: &str, diagnostics: &[Diagnostic]) {
    if json {
        println!("{}", diagnostics_json(file, diagnostics));
    } else {
        eprint!(
            "{}",
            render_diagnostics(diagnostics, file, &Paint(output::color_stderr()))
        );
    }
}

pub fn diagnostics_json(file: &str, diagnostics: &[Diagnostic]) -> Value {
    json!({
        "file": file,
        "valid": diagnostics.is_empty(),
        "problems": diagnostics.iter().map(|d| json!({
            "code": d.code,
            "message": d.message,
            "hint": d.to_error().hint_text(),
            "line": d.pos.line,
            "column": d.pos.column,
        })).collect::<Vec<_>>(),
    })
}

/// Runs a stored workflow with live progress, prints the summary, returns the exit code.
pub async fn execute(
    json: bool,
    runtime: &Runtime,
    id: &str,
    quiet: bool,
    watch: bool,
) -> Result<u8, GzError> {
    let (outcome, interrupted) = drive(json, runtime, id, quiet, watch).await?;
    let record = runtime.store().find_workflow(id).await?;
    report(json, &record, &outcome);
    Ok(match outcome.state {
        WorkflowState::Completed => output::EXIT_OK,
        WorkflowState::Cancelled if interrupted => 130,
        _ => output::EXIT_WORKFLOW_FAILED,
    })
}

/// Runs a stored workflow with live progress (Ctrl-C cancels it); says whether
/// the user interrupted it.
pub async fn drive(
    json: bool,
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
    let display =
        (!json && !quiet).then(|| Display::start(runtime.subscribe(), id.to_string(), watch));
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

/// The summary of a run this process drove.
fn report(json: bool, record: &WorkflowRecord, outcome: &RunOutcome) {
    let view = WorkflowView::new(record, &outcome.tasks);
    if json {
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

/// Shows a workflow's events as progress (unless `quiet`) until its final
/// event.
pub async fn show_until_finished(
    mut stream: futures_util::stream::BoxStream<'static, Result<Event, GzError>>,
    id: &str,
    quiet: bool,
) -> Result<(), GzError> {
    let (tx, rx) = tokio::sync::broadcast::channel::<Event>(4096);
    let display = (!quiet).then(|| Display::start(rx, id.to_string(), false));
    while let Some(event) = futures_util::StreamExt::next(&mut stream).await {
        let event = event?;
        let last = matches!(
            event.payload,
            EventPayload::WorkflowCompleted(_)
                | EventPayload::WorkflowFailed(_)
                | EventPayload::WorkflowCancelled(_)
        );
        let _ = tx.send(event);
        if last {
            break;
        }
    }
    if let Some(display) = display {
        display.finish().await;
    }
    Ok(())
}

/// Prints the summary of a finished workflow someone else ran; the exit code
/// is `run`'s: 0 completed, 1 failed or cancelled.
pub fn report_view(view: &WorkflowView, json: bool) -> u8 {
    if json {
        println!("{}", serde_json::to_value(view).unwrap_or_default());
    } else {
        print!("{}", summary(view, &Paint(output::color_stdout())));
        if let (Some(error), WorkflowState::Failed) = (&view.error, view.state) {
            output::print_error(error);
        }
    }
    match view.state {
        WorkflowState::Completed => output::EXIT_OK,
        _ => output::EXIT_WORKFLOW_FAILED,
    }
}

/// A one-task workflow (`run --function`, `--text`, `--vision`).
pub fn single_task_workflow(
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
        triggers: Vec::new(),
        trigger: None,
        access: None,
    }
}

/// A task with every option at its default.
pub fn single_task(id: &str, method: &str, params: Map<String, Value>) -> TaskSpec {
    TaskSpec::new(id, method, Value::Object(params))
}

/// The model `run --text`/`--vision`/`--batch-folder` ask when none is named.
pub fn default_model(vision: bool) -> String {
    if vision { "llava" } else { "llama3.2" }.into()
}

/// Exit code of a one-task run: the task's error decides (bad arguments are 2).
pub fn single_task_exit(outcome: &RunOutcome) -> u8 {
    match (
        outcome.state,
        outcome.tasks.first().and_then(|t| t.error.as_ref()),
    ) {
        (WorkflowState::Completed, _) => output::EXIT_OK,
        (_, Some(error)) => output::exit_code(error),
        _ => output::EXIT_WORKFLOW_FAILED,
    }
}

/// Ctrl-C or SIGTERM: the signals a long-running command stops on.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
