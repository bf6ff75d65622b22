//! Watching work: `logs`, `events`, `watch`, `stats`, `inspect`, `health`.
//! Each reads from a server when one is in use and from the local store
//! otherwise (see `client.rs`).

use super::inspect::fetch_view;
use super::progress::summary;
use crate::client::Target;
use crate::context::Context;
use crate::output::{self, format_ms, format_time, preview, Paint};
use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use gleitzeit_api::views::{TaskView, WorkflowView};
use gleitzeit_core::events::{self, Event};
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::{json, Value};
use std::time::Duration;

// ------------------------------------------------------------------- helpers

async fn latest_seq(ctx: &Context, target: &Target) -> Result<u64, GzError> {
    match target {
        Target::Remote(client) => Ok(client.get("/api/v1/events/head").await?["latest_event_seq"]
            .as_u64()
            .unwrap_or(0)),
        Target::Local => Ok(ctx.open_store(false).await?.latest_event_seq().await?),
    }
}

/// Stored events of one workflow, oldest first.
async fn workflow_history(ctx: &Context, target: &Target, id: &str) -> Result<Vec<Event>, GzError> {
    match target {
        Target::Remote(client) => {
            let mut all = Vec::new();
            let mut after = 0;
            loop {
                let page = client
                    .get(&format!(
                        "/api/v1/workflows/{id}/events?after={after}&limit=10000"
                    ))
                    .await?;
                let events: Vec<Event> =
                    serde_json::from_value(page["events"].clone()).unwrap_or_default();
                let next = page["next_after"].as_u64().unwrap_or(after);
                all.extend(events);
                if next == after {
                    return Ok(all);
                }
                after = next;
            }
        }
        Target::Local => {
            let store = ctx.open_store(false).await?;
            let record = store.find_workflow(id).await?;
            Ok(gleitzeit_core::events::expand_all(
                store.events(Some(&record.id), 0, 0).await?,
            ))
        }
    }
}

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

fn task_label(event: &Event) -> String {
    event.stored_data().1["task_id"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

fn error_text(value: &Value) -> String {
    format!(
        "{} {}",
        value["code"].as_str().unwrap_or(""),
        value["message"].as_str().unwrap_or("")
    )
}

/// One event as a log line: its level and message.
fn log_line(event: &Event) -> (Level, String) {
    let d = &event.stored_data().1;
    let task = task_label(event);
    match event.type_name() {
        events::WORKFLOW_STARTED => (
            Level::Info,
            format!(
                "workflow \"{}\" started ({} tasks){}",
                d["name"].as_str().unwrap_or(""),
                d["total_tasks"],
                if d["resumed"] == true {
                    ", resumed"
                } else {
                    ""
                }
            ),
        ),
        events::WORKFLOW_PROGRESS => (
            Level::Debug,
            format!(
                "progress {}/{} completed, {} failed",
                d["completed_tasks"], d["total_tasks"], d["failed_tasks"]
            ),
        ),
        events::WORKFLOW_COMPLETED => (Level::Info, "workflow completed".into()),
        events::WORKFLOW_FAILED => (
            Level::Error,
            format!("workflow failed: {}", error_text(&d["error"])),
        ),
        events::WORKFLOW_CANCELLED => (Level::Warn, "workflow cancelled".into()),
        events::TASK_STARTED => (
            Level::Info,
            format!("task {task} started (attempt {})", d["attempt"]),
        ),
        events::TASK_COMPLETED => (
            Level::Info,
            format!(
                "task {task} completed in {}: {}",
                format_ms(d["duration_ms"].as_i64().unwrap_or(0)),
                preview(&d["result"], 80)
            ),
        ),
        events::TASK_FAILED => (
            Level::Error,
            format!("task {task} failed: {}", error_text(&d["error"])),
        ),
        events::TASK_RETRYING => (
            Level::Warn,
            format!(
                "task {task} failed ({}), attempt {} in {:.1} s",
                d["error"]["code"].as_str().unwrap_or(""),
                d["next_attempt"],
                d["delay_seconds"].as_f64().unwrap_or(0.0)
            ),
        ),
        events::TASK_SKIPPED => (
            Level::Warn,
            format!(
                "task {task} skipped: {}",
                d["reason"].as_str().unwrap_or("")
            ),
        ),
        events::TASK_CANCELLED => (Level::Warn, format!("task {task} cancelled")),
        events::TASK_OUTPUT => (
            Level::Info,
            format!("task {task} | {}", d["line"].as_str().unwrap_or("")),
        ),
        events::LLM_TOKEN => (
            Level::Debug,
            format!("task {task} token {:?}", d["token"].as_str().unwrap_or("")),
        ),
        other => (Level::Info, format!("{other} {d}")),
    }
}

// ---------------------------------------------------------------------- logs

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Workflow id (a unique prefix is enough); all workflows when omitted
    pub workflow: Option<String>,
    /// What --id names: a workflow or a task
    #[arg(long = "type", value_name = "workflow|task")]
    pub kind: Option<String>,
    /// A workflow id, or a task id with --type task
    #[arg(long)]
    pub id: Option<String>,
    /// Keep printing new lines as they happen
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Lowest level shown
    #[arg(long, value_enum, default_value = "info", ignore_case = true)]
    pub level: Level,
    /// Only lines containing this text (case-insensitive)
    #[arg(long)]
    pub search: Option<String>,
    /// Lines of history to show without a workflow id
    #[arg(long, short = 'n', default_value_t = 200)]
    pub limit: u64,
}

pub async fn logs(ctx: &Context, args: LogsArgs) -> Result<u8, GzError> {
    let target = Target::resolve(ctx).await?;
    let (workflow, task) = match args.kind.as_deref() {
        None | Some("workflow") => (args.workflow.clone().or(args.id.clone()), None),
        Some("task") => (args.workflow.clone(), args.id.clone()),
        Some(other) => {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                format!("--type must be workflow or task, not `{other}`"),
            ))
        }
    };
    let search = args.search.as_ref().map(|s| s.to_lowercase());
    let paint = Paint(output::color_stdout());
    let print = |event: &Event| {
        if task.as_ref().is_some_and(|t| task_label(event) != *t) {
            return;
        }
        let (level, message) = log_line(event);
        if level < args.level {
            return;
        }
        let line = format!(
            "{} {:<5} {} {message}",
            format_time_ms(event.at_ms),
            level.as_str(),
            short_id(&event.workflow_id)
        );
        if search
            .as_ref()
            .is_some_and(|s| !line.to_lowercase().contains(s))
        {
            return;
        }
        if ctx.global.json {
            println!(
                "{}",
                json!({"seq": event.seq, "at_ms": event.at_ms, "level": level.as_str(), "workflow_id": event.workflow_id, "task_id": event.stored_data().1["task_id"], "type": event.type_name(), "message": message})
            );
        } else {
            let line = match level {
                Level::Error => paint.red(&line),
                Level::Warn => paint.yellow(&line),
                Level::Debug => paint.dim(&line),
                Level::Info => line,
            };
            println!("{line}");
        }
    };
    // History first, then (with --follow) what happens next.
    let (history, full_id) = match &workflow {
        Some(id) => {
            let view = fetch_view(ctx, &target, id).await?;
            (
                workflow_history(ctx, &target, &view.workflow_id).await?,
                Some(view.workflow_id),
            )
        }
        None => {
            let head = latest_seq(ctx, &target).await?;
            let mut history = Vec::new();
            if head > 0 {
                let mut stream = target
                    .follow(ctx, None, None, Some(head.saturating_sub(args.limit)))
                    .await?;
                while let Some(event) = stream.next().await {
                    let event = event?;
                    let done = event.seq >= head;
                    history.push(event);
                    if done {
                        break;
                    }
                }
            }
            (history, None)
        }
    };
    let last = history.last().map(|e| e.seq);
    for event in &history {
        print(event);
    }
    if !args.follow {
        return Ok(output::EXIT_OK);
    }
    let after = match last {
        Some(seq) => Some(seq),
        None => Some(latest_seq(ctx, &target).await?),
    };
    let mut stream = target.follow(ctx, full_id, None, after).await?;
    while let Some(event) = next_or_interrupt(&mut stream).await {
        print(&event?);
    }
    Ok(output::EXIT_OK)
}

fn format_time_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_default()
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(11)]
}

/// The next item, or None on Ctrl-C (a clean way out of `--follow`).
async fn next_or_interrupt<T>(
    stream: &mut futures_util::stream::BoxStream<'static, T>,
) -> Option<T> {
    tokio::select! {
        item = stream.next() => item,
        _ = tokio::signal::ctrl_c() => None,
    }
}

// -------------------------------------------------------------------- events

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

pub async fn events(ctx: &Context, args: EventsArgs) -> Result<u8, GzError> {
    let types = types_list(&args.types);
    check_types(&types)?;
    let target = Target::resolve(ctx).await?;
    let workflow = match &args.workflow {
        Some(id) => Some(fetch_view(ctx, &target, id).await?.workflow_id),
        None => None,
    };
    let head = latest_seq(ctx, &target).await?;
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
            for event in workflow_history(ctx, &target, id).await? {
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
    let mut stream = target.follow(ctx, workflow, None, Some(after)).await?;
    while let Some(event) = next_or_interrupt(&mut stream).await {
        let event = event?;
        show(&event);
        if !args.follow && event.seq >= head {
            break;
        }
    }
    Ok(output::EXIT_OK)
}

// --------------------------------------------------------------------- watch

#[derive(Subcommand, Debug)]
pub enum WatchCommand {
    /// Follow a workflow until it finishes (exit 0 completed, 1 otherwise)
    Workflow {
        /// Workflow id (a unique prefix is enough)
        id: String,
    },
    /// Follow one task until it finishes: TASK, WORKFLOW/TASK or --workflow
    Task {
        task: String,
        #[arg(long)]
        workflow: Option<String>,
    },
    /// Show queue depth and running work, refreshed until Ctrl-C
    Queue {
        /// Seconds between refreshes
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Print once and exit
        #[arg(long)]
        once: bool,
    },
}

pub async fn watch(ctx: &Context, command: WatchCommand) -> Result<u8, GzError> {
    let target = Target::resolve(ctx).await?;
    match command {
        WatchCommand::Workflow { id } => {
            let view = fetch_view(ctx, &target, &id).await?;
            super::submit::wait_remote(ctx, &target, &view.workflow_id, false).await
        }
        WatchCommand::Task { task, workflow } => watch_task(ctx, &target, task, workflow).await,
        WatchCommand::Queue { interval, once } => watch_queue(ctx, &target, interval, once).await,
    }
}

async fn find_task(
    ctx: &Context,
    target: &Target,
    task: &str,
    workflow: Option<String>,
) -> Result<(WorkflowView, TaskView), GzError> {
    let (workflow, task) = match (workflow, task.split_once(['/', ':'])) {
        (Some(w), _) => (Some(w), task.to_string()),
        (None, Some((w, t))) => (Some(w.to_string()), t.to_string()),
        (None, None) => (None, task.to_string()),
    };
    let candidates: Vec<String> = match workflow {
        Some(w) => vec![w],
        None => {
            // Task ids are unique per workflow: look through recent ones,
            // unfinished first.
            let list = match target {
                Target::Remote(client) => {
                    serde_json::from_value::<Vec<gleitzeit_store::WorkflowSummary>>(
                        client.get("/api/v1/workflows?limit=100").await?["workflows"].clone(),
                    )
                    .unwrap_or_default()
                }
                Target::Local => {
                    ctx.open_store(false)
                        .await?
                        .list_workflows(&gleitzeit_store::ListFilter {
                            submitted_by: None,
                            state: None,
                            limit: 100,
                            offset: 0,
                        })
                        .await?
                }
            };
            let mut ids: Vec<_> = list
                .iter()
                .filter(|w| !w.state.is_terminal())
                .map(|w| w.id.clone())
                .collect();
            ids.extend(
                list.iter()
                    .filter(|w| w.state.is_terminal())
                    .map(|w| w.id.clone()),
            );
            ids
        }
    };
    for id in candidates {
        let view = fetch_view(ctx, target, &id).await?;
        if let Some(found) = view.tasks.iter().find(|t| t.id == task).cloned() {
            return Ok((view, found));
        }
    }
    Err(GzError::new(
        ErrorCode::TaskNotFound,
        format!("no recent workflow has a task `{task}`"),
    )
    .with_hint("Name the workflow: `gleitzeit watch task WORKFLOW_ID/TASK_ID`."))
}

async fn watch_task(
    ctx: &Context,
    target: &Target,
    task: String,
    workflow: Option<String>,
) -> Result<u8, GzError> {
    let (view, found) = find_task(ctx, target, &task, workflow).await?;
    let paint = Paint(output::color_stdout());
    if !found.state.is_terminal() && !view.state.is_terminal() {
        let mut stream = target
            .follow(ctx, Some(view.workflow_id.clone()), None, Some(0))
            .await?;
        while let Some(event) = next_or_interrupt(&mut stream).await {
            let event = event?;
            let workflow_over = matches!(
                event.type_name(),
                events::WORKFLOW_COMPLETED | events::WORKFLOW_FAILED | events::WORKFLOW_CANCELLED
            );
            if task_label(&event) == found.id {
                if event.type_name() != events::LLM_TOKEN && !ctx.global.json {
                    println!("{} {}", format_time_ms(event.at_ms), log_line(&event).1);
                }
                if matches!(
                    event.type_name(),
                    events::TASK_COMPLETED
                        | events::TASK_FAILED
                        | events::TASK_SKIPPED
                        | events::TASK_CANCELLED
                ) {
                    break;
                }
            }
            if workflow_over {
                break;
            }
        }
    }
    let view = fetch_view(ctx, target, &view.workflow_id).await?;
    let task = view
        .tasks
        .iter()
        .find(|t| t.id == found.id)
        .cloned()
        .unwrap_or(found);
    if ctx.global.json {
        println!("{}", json!({"workflow_id": view.workflow_id, "task": task}));
    } else {
        println!(
            "{} {} {}",
            paint.bold(&task.id),
            task.state.as_str(),
            task.duration_ms.map(format_ms).unwrap_or_default()
        );
        if let Some(result) = &task.result {
            println!("  {}", preview(result, 400));
        }
        if let Some(error) = &task.error {
            println!("  {} {}", error.code, error.message);
        }
    }
    Ok(if task.state == gleitzeit_core::TaskState::Completed {
        output::EXIT_OK
    } else {
        output::EXIT_WORKFLOW_FAILED
    })
}

async fn stats_value(ctx: &Context, target: &Target, range: u64) -> Result<Value, GzError> {
    match target {
        Target::Remote(client) => {
            client
                .get(&format!("/api/v1/stats?range_minutes={range}"))
                .await
        }
        Target::Local => {
            let store = ctx.open_store(false).await?;
            gleitzeit_api::stats::stats(store.as_ref(), range, 0)
                .await
                .map(|stats| serde_json::json!(stats))
        }
    }
}

async fn watch_queue(
    ctx: &Context,
    target: &Target,
    interval: f64,
    once: bool,
) -> Result<u8, GzError> {
    if !interval.is_finite() || interval <= 0.0 {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "--interval must be a positive number of seconds",
        ));
    }
    loop {
        let stats = stats_value(ctx, target, 1).await?;
        if ctx.global.json {
            println!(
                "{}",
                json!({"at_ms": gleitzeit_store::now_ms(), "queue_depth": stats["queue_depth"], "tasks_by_state": stats["tasks_by_state"], "workflows_by_state": stats["workflows_by_state"]})
            );
        } else {
            let tasks = &stats["tasks_by_state"];
            let workflows = &stats["workflows_by_state"];
            let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
            println!(
                "{}  queue {:>5}  tasks: running {} retrying {}  workflows: running {} pending {}  finished last min {}",
                format_time(gleitzeit_store::now_ms()),
                stats["queue_depth"],
                n(tasks, "running"),
                n(tasks, "retrying"),
                n(workflows, "running"),
                n(workflows, "pending"),
                stats["window"]["tasks_finished"]
            );
        }
        if once {
            return Ok(output::EXIT_OK);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(output::EXIT_OK),
        }
    }
}

// --------------------------------------------------------------------- stats

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Window: minutes (60) or with a unit (30m, 1h, 2d)
    #[arg(long, default_value = "60")]
    pub range: String,
}

pub fn parse_range(text: &str) -> Result<u64, GzError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "m"),
    };
    let factor = match unit {
        "m" | "min" => 1,
        "h" => 60,
        "d" => 24 * 60,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 && factor > 0 => Ok(n * factor),
        _ => Err(GzError::new(
            ErrorCode::InvalidArgument,
            format!("--range `{text}` is not a time window"),
        )
        .with_hint("Use minutes (60) or a number with m, h or d (30m, 1h, 2d).")),
    }
}

pub async fn stats(ctx: &Context, args: StatsArgs) -> Result<u8, GzError> {
    let range = parse_range(&args.range)?;
    let target = Target::resolve(ctx).await?;
    let stats = stats_value(ctx, &target, range).await?;
    let format = if ctx.global.json {
        Format::Json
    } else {
        args.format
    };
    let window = &stats["window"];
    let methods = window["methods"].as_object().cloned().unwrap_or_default();
    match format {
        Format::Json => println!("{stats}"),
        Format::Csv => {
            println!("method,count,avg_ms,p50_ms,p95_ms,max_ms");
            for (method, m) in &methods {
                println!(
                    "{method},{},{},{},{},{}",
                    m["count"], m["avg_ms"], m["p50_ms"], m["p95_ms"], m["max_ms"]
                );
            }
        }
        Format::Table => {
            let paint = Paint(output::color_stdout());
            println!("{}", paint.bold("Gleitzeit statistics"));
            println!(
                "  workflows    {}",
                output::counts(&stats["workflows_by_state"])
            );
            println!(
                "  tasks        {}",
                output::counts(&stats["tasks_by_state"])
            );
            println!("  queue depth  {}", stats["queue_depth"]);
            println!("{}", paint.bold(&format!("Last {}", format_range(range))));
            println!(
                "  finished     {} tasks ({:.1}/min), failure rate {:.1}%",
                window["tasks_finished"],
                window["tasks_per_minute"].as_f64().unwrap_or(0.0),
                window["failure_rate"].as_f64().unwrap_or(0.0) * 100.0
            );
            print!("{}", charts(&window["timeline"], &paint));
            let usage = &window["usage"];
            if usage["total_tokens"].as_u64().unwrap_or(0) > 0 {
                println!(
                    "  LLM tokens   {} prompt + {} completion in {} calls, {}",
                    usage["prompt_tokens"],
                    usage["completion_tokens"],
                    usage["llm_calls"],
                    output::cost_text(usage)
                );
                for (kind, key) in [("model", "by_model"), ("endpoint", "by_endpoint")] {
                    for (name, u) in usage[key].as_object().into_iter().flatten() {
                        println!(
                            "    {kind:<8} {name:<24} {:>8} tokens in {:>4} calls  {}",
                            u["total_tokens"],
                            u["llm_calls"],
                            output::cost_text(u)
                        );
                    }
                }
            }
            if !methods.is_empty() {
                println!(
                    "  {:<24} {:>6} {:>9} {:>9} {:>9} {:>9}",
                    "METHOD", "COUNT", "AVG", "P50", "P95", "MAX"
                );
                let ms = |v: &Value| format_ms(v.as_i64().unwrap_or(0));
                for (method, m) in &methods {
                    println!(
                        "  {:<24} {:>6} {:>9} {:>9} {:>9} {:>9}",
                        method,
                        m["count"].as_u64().unwrap_or(0),
                        ms(&m["avg_ms"]),
                        ms(&m["p50_ms"]),
                        ms(&m["p95_ms"]),
                        ms(&m["max_ms"])
                    );
                }
            }
        }
    }
    Ok(output::EXIT_OK)
}

/// One character per bucket, scaled to the largest.
fn sparkline(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().flatten().cloned().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if max <= 0.0 => BARS[0],
            Some(v) => BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize],
        })
        .collect()
}

/// Throughput, failures and durations over the window, as sparklines.
fn charts(timeline: &Value, paint: &Paint) -> String {
    let Some(buckets) = timeline.as_array().filter(|b| !b.is_empty()) else {
        return String::new();
    };
    let finished: Vec<Option<f64>> = buckets.iter().map(|b| b["finished"].as_f64()).collect();
    if finished.iter().flatten().all(|n| *n == 0.0) {
        return String::new();
    }
    let failed: Vec<Option<f64>> = buckets.iter().map(|b| b["failed"].as_f64()).collect();
    let durations: Vec<Option<f64>> = buckets.iter().map(|b| b["avg_ms"].as_f64()).collect();
    let max = |v: &[Option<f64>]| v.iter().flatten().cloned().fold(0.0, f64::max);
    let minutes = buckets[0]["minutes"].as_f64().unwrap_or(1.0);
    let per = if minutes >= 1.0 {
        format!("{minutes:.0} min")
    } else {
        format!("{:.0} s", minutes * 60.0)
    };
    let mut text = format!(
        "  throughput   {}  {}\n",
        paint.cyan(&sparkline(&finished)),
        paint.dim(&format!(
            "tasks finished per {per}, peak {}",
            max(&finished)
        ))
    );
    if max(&failed) > 0.0 {
        text.push_str(&format!(
            "  failures     {}  {}\n",
            paint.red(&sparkline(&failed)),
            paint.dim(&format!("peak {}", max(&failed)))
        ));
    }
    text.push_str(&format!(
        "  durations    {}  {}\n",
        paint.yellow(&sparkline(&durations)),
        paint.dim(&format!(
            "average per bucket, peak {}",
            format_ms(max(&durations) as i64)
        ))
    ));
    text
}

fn format_range(minutes: u64) -> String {
    match minutes {
        m if m % (24 * 60) == 0 => format!("{} day(s)", m / (24 * 60)),
        m if m % 60 == 0 => format!("{} hour(s)", m / 60),
        m => format!("{m} minute(s)"),
    }
}

// ------------------------------------------------------------------- inspect

#[derive(Subcommand, Debug)]
pub enum InspectCommand {
    /// Everything about a workflow: tasks, dependencies, timings, results, errors, usage
    Workflow { id: String },
    /// One task in full: TASK, WORKFLOW/TASK or --workflow
    Task {
        task: String,
        #[arg(long)]
        workflow: Option<String>,
    },
    /// A worker node
    Node { name: String },
}

pub async fn inspect(ctx: &Context, command: InspectCommand) -> Result<u8, GzError> {
    let target = Target::resolve(ctx).await?;
    match command {
        InspectCommand::Workflow { id } => {
            let view = fetch_view(ctx, &target, &id).await?;
            let history = workflow_history(ctx, &target, &view.workflow_id).await?;
            if ctx.global.json {
                let mut value = serde_json::to_value(&view).unwrap_or_default();
                value["events"] = json!(history.len());
                value["retries"] = json!(history
                    .iter()
                    .filter(|e| e.type_name() == events::TASK_RETRYING)
                    .count());
                println!("{value}");
                return Ok(output::EXIT_OK);
            }
            let paint = Paint(output::color_stdout());
            print!("{}", summary(&view, &paint));
            println!(
                "  {} {}   {} {}   {} {} events",
                paint.dim("created"),
                format_time(view.created_ms),
                paint.dim("state"),
                view.state.as_str(),
                paint.dim("log"),
                history.len()
            );
            for task in &view.tasks {
                println!();
                print_task(task, &paint);
            }
            Ok(output::EXIT_OK)
        }
        InspectCommand::Task { task, workflow } => {
            let (view, task) = find_task(ctx, &target, &task, workflow).await?;
            let history: Vec<Event> = workflow_history(ctx, &target, &view.workflow_id)
                .await?
                .into_iter()
                .filter(|e| task_label(e) == task.id && e.type_name() != events::LLM_TOKEN)
                .collect();
            if ctx.global.json {
                println!(
                    "{}",
                    json!({"workflow_id": view.workflow_id, "task": task, "events": history})
                );
                return Ok(output::EXIT_OK);
            }
            let paint = Paint(output::color_stdout());
            println!("{} {}", paint.dim("workflow"), view.workflow_id);
            print_task(&task, &paint);
            if let Some(record) = &task.record {
                println!("  {}", paint.dim("record"));
                for line in serde_json::to_string_pretty(record)
                    .unwrap_or_default()
                    .lines()
                {
                    println!("    {line}");
                }
            }
            println!("  {}", paint.dim("history"));
            for event in &history {
                println!("    {} {}", format_time_ms(event.at_ms), log_line(event).1);
            }
            Ok(output::EXIT_OK)
        }
        InspectCommand::Node { name } => crate::commands::cluster::inspect_node(ctx, &name).await,
    }
}

fn print_task(task: &TaskView, paint: &Paint) {
    println!("{} {}", paint.bold(&task.id), paint.dim(&task.method));
    println!(
        "  state {}   attempts {}   duration {}",
        task.state.as_str(),
        task.attempt,
        task.duration_ms
            .map(format_ms)
            .unwrap_or_else(|| "-".into())
    );
    if !task.dependencies.is_empty() {
        println!("  after {}", task.dependencies.join(", "));
    }
    if let Some(started) = task.started_ms {
        println!("  started {}", format_time_ms(started));
    }
    if let Some(result) = &task.result {
        println!("  result {}", preview(result, 300));
    }
    if let Some(record) = &task.record {
        if let Some(usage) = record.get("usage") {
            println!(
                "  usage {} prompt + {} completion tokens ({} @ {})",
                usage["prompt_tokens"],
                usage["completion_tokens"],
                record["model"].as_str().unwrap_or("?"),
                record["endpoint"].as_str().unwrap_or("?")
            );
        }
    }
    if let Some(error) = &task.error {
        println!("  {} {} {}", paint.red("error"), error.code, error.message);
        println!("  {} {}", paint.dim("hint"), error.hint_text());
    }
}

// -------------------------------------------------------------------- health

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Print nothing; the exit code says it: 0 healthy, 1 degraded, 2 unhealthy
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn health(ctx: &Context, args: HealthArgs) -> Result<u8, GzError> {
    let target = Target::resolve(ctx).await?;
    let (report, source) = match &target {
        Target::Remote(client) => (client.get("/api/v1/health").await?, client.base.clone()),
        Target::Local => {
            let runtime = ctx.runtime(ctx.open_store(false).await?).await?;
            let report = gleitzeit_runtime::health::check(&runtime, 0, Duration::ZERO, true).await;
            runtime.registry().shutdown().await;
            (
                serde_json::to_value(report).unwrap_or_default(),
                "local".to_string(),
            )
        }
    };
    let status = report["status"].as_str().unwrap_or("unhealthy").to_string();
    let exit = match status.as_str() {
        "healthy" => 0,
        "degraded" => 1,
        _ => 2,
    };
    if args.quiet {
        return Ok(exit);
    }
    if ctx.global.json || matches!(args.format, Format::Json) {
        println!("{report}");
        return Ok(exit);
    }
    let paint = Paint(output::color_stdout());
    let verdict = match exit {
        0 => paint.green(&status),
        1 => paint.yellow(&status),
        _ => paint.red(&status),
    };
    println!("{} {verdict} ({source})", paint.bold("Gleitzeit"));
    if report.get("version").is_none() {
        // A server tells reasons and providers only to a valid key.
        println!("  (details need an API key: `gleitzeit auth login` or GLEITZEIT_API_KEY)");
    }
    for reason in report["reasons"].as_array().into_iter().flatten() {
        println!("  - {}", reason.as_str().unwrap_or(""));
    }
    if let Some(providers) = report["providers"].as_object() {
        for (name, p) in providers {
            println!(
                "  {:<10} {}{}",
                name,
                p["status"].as_str().unwrap_or(""),
                p["reason"]
                    .as_str()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(exit)
}
