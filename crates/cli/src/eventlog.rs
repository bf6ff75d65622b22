//! Events as people read them: one log line each, with a level, and the
//! timestamps and short ids the watching commands print.

use crate::output::{format_ms, preview};
use clap::ValueEnum;
use futures_util::StreamExt;
use gleitzeit_core::events::{Event, EventPayload};
use gleitzeit_core::GzError;
use serde_json::Value;

/// The task an event is about: its id and display name. An event this
/// version could not decode still names its task by the key it was sent with.
pub fn task_of(event: &Event) -> Option<(&str, &str)> {
    let (id, name) = match &event.payload {
        EventPayload::TaskStarted(e) => (&e.task.task_id, &e.task.task_name),
        EventPayload::TaskCompleted(e) => (&e.task.task_id, &e.task.task_name),
        EventPayload::TaskFailed(e) => (&e.task.task_id, &e.task.task_name),
        EventPayload::TaskRetrying(e) => (&e.task.task_id, &e.task.task_name),
        EventPayload::TaskSkipped(e) => (&e.task.task_id, &e.task.task_name),
        EventPayload::TaskCancelled(e) => (&e.task.task_id, &e.task.task_name),
        EventPayload::LlmToken(e) => (&e.task.task_id, &e.task.task_name),
        EventPayload::LlmTokens(e) => (&e.task.task_id, &e.task.task_name),
        EventPayload::TaskOutput(e) => (&e.task.task_id, &e.task.task_name),
        EventPayload::AgentTurn(e) => (&e.task_id, &e.task_name),
        EventPayload::ToolCallStarted(e) => (&e.task_id, &e.task_name),
        EventPayload::ToolCallCompleted(e) => (&e.task_id, &e.task_name),
        EventPayload::Undecoded(e) => {
            let id = e.data.get("task_id").and_then(Value::as_str)?;
            let name = e.data.get("task_name").and_then(Value::as_str);
            return Some((id, name.unwrap_or("?")));
        }
        EventPayload::WorkflowStarted(_)
        | EventPayload::WorkflowProgress(_)
        | EventPayload::WorkflowCompleted(_)
        | EventPayload::WorkflowFailed(_)
        | EventPayload::WorkflowCancelled(_)
        | EventPayload::NodeJoined(_)
        | EventPayload::NodeLeft(_) => return None,
    };
    Some((id.as_str(), name.as_str()))
}

/// The id of the task an event is about; empty when it is about none.
pub fn task_label(event: &Event) -> String {
    task_of(event).map_or("", |(id, _)| id).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// An error's code and message; both empty when there is none.
pub fn error_text(error: Option<&GzError>) -> String {
    match error {
        Some(error) => format!("{} {}", error.code, error.message),
        None => " ".to_string(),
    }
}

/// One event as a log line: its level and message.
pub fn log_line(event: &Event) -> (Level, String) {
    let task = task_label(event);
    match &event.payload {
        EventPayload::WorkflowStarted(e) => (
            Level::Info,
            format!(
                "workflow \"{}\" started ({} tasks){}",
                e.name,
                e.total_tasks,
                if e.resumed { ", resumed" } else { "" }
            ),
        ),
        EventPayload::WorkflowProgress(e) => (
            Level::Debug,
            format!(
                "progress {}/{} completed, {} failed",
                e.completed_tasks, e.total_tasks, e.failed_tasks
            ),
        ),
        EventPayload::WorkflowCompleted(_) => (Level::Info, "workflow completed".into()),
        EventPayload::WorkflowFailed(e) => (
            Level::Error,
            format!("workflow failed: {}", error_text(e.error.as_ref())),
        ),
        EventPayload::WorkflowCancelled(_) => (Level::Warn, "workflow cancelled".into()),
        EventPayload::TaskStarted(e) => (
            Level::Info,
            format!("task {task} started (attempt {})", e.task.attempt),
        ),
        EventPayload::TaskCompleted(e) => (
            Level::Info,
            format!(
                "task {task} completed in {}: {}",
                format_ms(e.duration_ms),
                preview(&e.result, 80)
            ),
        ),
        EventPayload::TaskFailed(e) => (
            Level::Error,
            format!("task {task} failed: {}", error_text(Some(&e.error))),
        ),
        EventPayload::TaskRetrying(e) => (
            Level::Warn,
            format!(
                "task {task} failed ({}), attempt {} in {:.1} s",
                e.error.as_ref().map_or("", |error| error.code.as_str()),
                e.next_attempt,
                e.delay_seconds
            ),
        ),
        EventPayload::TaskSkipped(e) => (Level::Warn, format!("task {task} skipped: {}", e.reason)),
        EventPayload::TaskCancelled(_) => (Level::Warn, format!("task {task} cancelled")),
        EventPayload::TaskOutput(e) => (Level::Info, format!("task {task} | {}", e.line)),
        EventPayload::LlmToken(e) => (Level::Debug, format!("task {task} token {:?}", e.token)),
        EventPayload::AgentTurn(e) => {
            let asked: Vec<&str> = e.tool_calls.iter().map(|c| c.name.as_str()).collect();
            let what = if asked.is_empty() {
                "answered".to_string()
            } else {
                format!("called {}", asked.join(", "))
            };
            (Level::Info, format!("task {task} turn {}: {what}", e.turn))
        }
        EventPayload::ToolCallStarted(e) => (
            Level::Debug,
            format!("task {task} tool {} ({}) started", e.name, e.call_id),
        ),
        EventPayload::ToolCallCompleted(e) => match &e.error {
            None => (
                Level::Info,
                format!(
                    "task {task} tool {} ({}) done in {} ms",
                    e.name, e.call_id, e.duration_ms
                ),
            ),
            Some(error) => (
                Level::Warn,
                format!(
                    "task {task} tool {} ({}) failed: {}",
                    e.name,
                    e.call_id,
                    error_text(Some(error))
                ),
            ),
        },
        // Kinds without a sentence of their own, and events this version
        // could not decode, are shown as they are sent.
        EventPayload::LlmTokens(_)
        | EventPayload::NodeJoined(_)
        | EventPayload::NodeLeft(_)
        | EventPayload::Undecoded(_) => {
            let (kind, data) = event.stored_data();
            (Level::Info, format!("{kind} {data}"))
        }
    }
}

pub fn format_time_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_default()
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(11)]
}

/// The next item, or None on Ctrl-C (a clean way out of `--follow`).
pub async fn next_or_interrupt<T>(
    stream: &mut futures_util::stream::BoxStream<'static, T>,
) -> Option<T> {
    tokio::select! {
        item = stream.next() => item,
        _ = tokio::signal::ctrl_c() => None,
    }
}
