//! Live progress while a workflow runs, and the summary after it.
//!
//! On a terminal: a progress bar with the running tasks, and a line above it for
//! every task that finishes (with its captured stdout). Elsewhere (pipes, CI):
//! plain timestamped lines, one per event.

use crate::output::{color_stderr, format_ms, preview, Paint};
use gleitzeit_api::views::WorkflowView;
use gleitzeit_core::events::{self, Event};
use gleitzeit_core::TaskState;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Display {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Display {
    pub fn start(
        mut events: broadcast::Receiver<Event>,
        workflow_id: String,
        force_lines: bool,
    ) -> Display {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let tty = std::io::stderr().is_terminal() && !force_lines;
        let handle = tokio::spawn(async move {
            let mut view = View::new(tty);
            loop {
                tokio::select! {
                    biased;
                    event = events.recv() => match event {
                        Ok(event) if event.workflow_id == workflow_id => {
                            let last = matches!(event.type_name(), events::WORKFLOW_COMPLETED | events::WORKFLOW_FAILED | events::WORKFLOW_CANCELLED);
                            view.show(&event);
                            if last { break; }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = stopped.cancelled() => break,
                }
            }
            view.close();
        });
        Display { stop, handle }
    }

    pub async fn finish(self) {
        // Let the final events drain, then stop whatever is left.
        let stop = self.stop.clone();
        let mut handle = self.handle;
        tokio::select! {
            _ = &mut handle => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                stop.cancel();
                let _ = handle.await;
            }
        }
    }
}

struct View {
    bar: Option<ProgressBar>,
    paint: Paint,
    running: BTreeSet<String>,
    started: std::time::Instant,
    /// The last streamed text of the task that produced tokens most recently.
    stream: Option<(String, String)>,
}

impl View {
    fn new(tty: bool) -> View {
        let bar = tty.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.cyan} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            bar
        });
        View {
            bar,
            paint: Paint(color_stderr()),
            running: BTreeSet::new(),
            started: std::time::Instant::now(),
            stream: None,
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("[{:>7.2}s] {text}", self.started.elapsed().as_secs_f64()),
        }
    }

    fn show(&mut self, event: &Event) {
        let data = &event.stored_data().1;
        let name = data
            .get("task_name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let p = &self.paint;
        match event.type_name() {
            events::WORKFLOW_STARTED => {
                let total = data.get("total_tasks").and_then(Value::as_u64).unwrap_or(0);
                if let Some(bar) = &self.bar {
                    bar.set_length(total);
                }
                let resumed = if data.get("resumed").and_then(Value::as_bool) == Some(true) {
                    " (resumed)"
                } else {
                    ""
                };
                let wf_name = data.get("name").and_then(Value::as_str).unwrap_or("");
                self.line(format!(
                    "{} {}{resumed} — {total} tasks  {}",
                    p.bold("▶"),
                    p.bold(wf_name),
                    p.dim(&event.workflow_id)
                ));
            }
            events::TASK_STARTED => {
                self.running.insert(name.clone());
                if self.bar.is_none() {
                    let attempt = data.get("attempt").and_then(Value::as_u64).unwrap_or(1);
                    let suffix = if attempt > 1 {
                        format!(" (attempt {attempt})")
                    } else {
                        String::new()
                    };
                    self.line(format!("{} {name}{suffix}", p.cyan("→")));
                }
            }
            events::TASK_COMPLETED => {
                self.running.remove(&name);
                let ms = data.get("duration_ms").and_then(Value::as_i64).unwrap_or(0);
                let result = data
                    .get("result")
                    .map(|r| preview(r, 60))
                    .unwrap_or_default();
                self.line(format!(
                    "{} {name} {} {}",
                    p.green("✓"),
                    p.dim(&format_ms(ms)),
                    p.dim(&result)
                ));
                if let Some(stdout) = data.get("stdout").and_then(Value::as_str) {
                    for out in stdout.lines() {
                        self.line(format!("  {} {out}", p.dim("│")));
                    }
                }
            }
            events::TASK_FAILED => {
                self.running.remove(&name);
                let error = data.get("error");
                let code = error
                    .and_then(|e| e.get("code"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let message = error
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let first = message.lines().next().unwrap_or("");
                self.line(format!("{} {name} {} {first}", p.red("✗"), p.red(code)));
            }
            events::TASK_RETRYING => {
                self.running.remove(&name);
                let delay = data
                    .get("delay_seconds")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let next = data
                    .get("next_attempt")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let message = data
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .and_then(|m| m.lines().next())
                    .unwrap_or("");
                self.line(format!(
                    "{} {name} retry {next} in {delay:.2} s: {message}",
                    p.yellow("↻")
                ));
            }
            events::TASK_SKIPPED => {
                let reason = data.get("reason").and_then(Value::as_str).unwrap_or("");
                self.line(format!("{} {name} {}", p.dim("-"), p.dim(reason)));
            }
            events::TASK_CANCELLED => {
                self.running.remove(&name);
                self.line(format!("{} {name} cancelled", p.yellow("■")));
            }
            events::LLM_TOKEN => {
                let token = data.get("token").and_then(Value::as_str).unwrap_or("");
                match &mut self.stream {
                    Some((task, text)) if *task == name => text.push_str(token),
                    _ => self.stream = Some((name.clone(), token.to_string())),
                }
                if let Some((_, text)) = &mut self.stream {
                    // Keep only the tail the bar can show.
                    let excess = text.chars().count().saturating_sub(200);
                    if excess > 0 {
                        *text = text.chars().skip(excess).collect();
                    }
                }
            }
            events::WORKFLOW_PROGRESS => {
                if let Some(bar) = &self.bar {
                    let done = ["completed_tasks", "failed_tasks", "skipped_tasks"]
                        .iter()
                        .filter_map(|k| data.get(*k).and_then(Value::as_u64))
                        .sum();
                    bar.set_position(done);
                }
            }
            _ => {}
        }
        if let (Some(bar), Some((task, text))) = (&self.bar, &self.stream) {
            if self.running.contains(task) {
                let flat = text.replace(['\n', '\r'], " ");
                let tail: String = flat
                    .chars()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                bar.set_message(format!("{task}: …{tail}"));
                return;
            }
        }
        if let Some(bar) = &self.bar {
            let names: Vec<&str> = self.running.iter().map(String::as_str).take(4).collect();
            let more = self.running.len().saturating_sub(names.len());
            let mut message = names.join(", ");
            if more > 0 {
                message.push_str(&format!(" +{more}"));
            }
            bar.set_message(message);
        }
    }

    fn close(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The readable summary printed after a run or by `get`.
pub fn summary(record: &WorkflowView, paint: &Paint) -> String {
    let tasks = &record.tasks;
    let total = tasks.len();
    let completed = tasks
        .iter()
        .filter(|t| t.state == TaskState::Completed)
        .count();
    let duration = match (record.started_ms, record.finished_ms) {
        (Some(s), Some(f)) => format!(" in {}", format_ms(f - s)),
        _ => String::new(),
    };
    let (mark, verb) = match record.state.as_str() {
        "completed" => (paint.green("✓"), "completed"),
        "failed" => (paint.red("✗"), "failed"),
        "cancelled" => (paint.yellow("■"), "was cancelled"),
        other => (paint.cyan("…"), other),
    };
    let mut out = format!(
        "{mark} Workflow {} {verb}{duration} — {completed}/{total} tasks completed  {}\n",
        paint.bold(&format!("\"{}\"", record.name)),
        paint.dim(&record.workflow_id)
    );
    let width = tasks
        .iter()
        .map(|t| t.id.chars().count())
        .max()
        .unwrap_or(4)
        .min(32);
    for task in tasks {
        let (mark, detail) = match task.state {
            TaskState::Completed => {
                let primary = task.result.clone().unwrap_or(Value::Null);
                (paint.green("✓"), preview(&primary, 70))
            }
            TaskState::Failed => (
                paint.red("✗"),
                task.error
                    .as_ref()
                    .map(|e| format!("{} {}", e.code, e.message.lines().next().unwrap_or("")))
                    .unwrap_or_default(),
            ),
            TaskState::Skipped | TaskState::Cancelled => (
                paint.dim("-"),
                match &task.error {
                    Some(e) => e.message.clone(),
                    // A skip without an error is the task's own decision.
                    None if task.state == TaskState::Skipped => {
                        "skipped because its `when` condition is false".into()
                    }
                    None => task.state.as_str().into(),
                },
            ),
            other => (paint.cyan("…"), other.as_str().to_string()),
        };
        let time = task.duration_ms.map(format_ms).unwrap_or_default();
        let retries = if task.attempt > 1 {
            format!(" ({} attempts)", task.attempt)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {mark} {:<width$} {:>9}{retries}  {}\n",
            task.id,
            paint.dim(&time),
            detail,
        ));
    }
    out
}
