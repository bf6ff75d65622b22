//! Events as people read them: one log line each, with a level, and the
//! timestamps and short ids the watching commands print.

use crate::output::{format_ms, preview};
use clap::ValueEnum;
use futures_util::StreamExt;
use gleitzeit_core::events::{self, Event};
use serde_json::Value;

pub fn task_label(event: &Event) -> String {
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
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

pub fn error_text(value: &Value) -> String {
    format!(
        "{} {}",
        value["code"].as_str().unwrap_or(""),
        value["message"].as_str().unwrap_or("")
    )
}

/// One event as a log line: its level and message.
pub fn log_line(event: &Event) -> (Level, String) {
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
