//! Live progress while a workflow runs, and the summary after it.
//!
//! On a terminal: a progress bar with the running tasks, and a line above it for
//! every task that finishes (with its captured stdout). Elsewhere (pipes, CI):
//! plain timestamped lines, one per event.

use crate::eventlog::task_of;
use crate::output::{color_stderr, format_ms, preview, Paint};
use gleitzeit_api::views::WorkflowView;
use gleitzeit_core::events::{Event, EventPayload};
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
                            let last = matches!(event.payload, EventPayload::WorkflowCompleted(_) | EventPayload::WorkflowFailed(_) | EventPayload::WorkflowCancelled(_));
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
        let name = task_of(event).map_or("?", |(_, name)| name).to_string();
        let p = &self.paint;
        match &event.payload {
            EventPayload::WorkflowStarted(started) => {
                let total = started.total_tasks as u64;
                if let Some(bar) = &self.bar {
                    bar.set_length(total);
                }
                let resumed = if started.resumed { " (resumed)" } else { "" };
                self.line(format!(
                    "{} {}{resumed} — {total} tasks  {}",
                    p.bold("▶"),
                    p.bold(&started.name),
                    p.dim(&event.workflow_id)
                ));
            }
            EventPayload::TaskStarted(started) => {
                self.running.insert(name.clone());
                if self.bar.is_none() {
                    let suffix = if started.task.attempt > 1 {
                        format!(" (attempt {})", started.task.attempt)
                    } else {
                        String::new()
                    };
                    self.line(format!("{} {name}{suffix}", p.cyan("→")));
                }
            }
            EventPayload::TaskCompleted(completed) => {
                self.running.remove(&name);
                let result = preview(&completed.result, 60);
                self.line(format!(
                    "{} {name} {} {}",
                    p.green("✓"),
                    p.dim(&format_ms(completed.duration_ms)),
                    p.dim(&result)
                ));
                if let Some(stdout) = &completed.stdout {
                    for out in stdout.lines() {
                        self.line(format!("  {} {out}", p.dim("│")));
                    }
                }
            }
            EventPayload::TaskFailed(failed) => {
                self.running.remove(&name);
                let first = failed.error.message.lines().next().unwrap_or("");
                self.line(format!(
                    "{} {name} {} {first}",
                    p.red("✗"),
                    p.red(failed.error.code.as_str())
                ));
            }
            EventPayload::TaskRetrying(retrying) => {
                self.running.remove(&name);
                let delay = retrying.delay_seconds;
                let next = retrying.next_attempt;
                let message = retrying
                    .error
                    .as_ref()
                    .and_then(|e| e.message.lines().next())
                    .unwrap_or("");
                self.line(format!(
                    "{} {name} retry {next} in {delay:.2} s: {message}",
                    p.yellow("↻")
                ));
            }
            EventPayload::TaskSkipped(skipped) => {
                self.line(format!("{} {name} {}", p.dim("-"), p.dim(&skipped.reason)));
            }
            EventPayload::TaskCancelled(_) => {
                self.running.remove(&name);
                self.line(format!("{} {name} cancelled", p.yellow("■")));
            }
            EventPayload::LlmToken(token) => {
                let token = token.token.as_str();
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
            EventPayload::WorkflowProgress(progress) => {
                if let Some(bar) = &self.bar {
                    let done =
                        progress.completed_tasks + progress.failed_tasks + progress.skipped_tasks;
                    bar.set_position(done as u64);
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
