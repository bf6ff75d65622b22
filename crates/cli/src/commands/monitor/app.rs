//! The monitor's state and what keys do to it. No I/O: the feed hands it
//! updates, the terminal hands it keys, and the renderer reads it — so every
//! interaction is testable without a terminal.

use crate::eventlog::task_label;
use gleitzeit_api::system::NodeView;
use gleitzeit_api::views::WorkflowView;
use gleitzeit_core::events::{Event, EventPayload};
use gleitzeit_store::WorkflowSummary;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};

/// Event lines kept for the log pane.
const LOG_LINES: usize = 300;
/// Streamed text kept per task (the tail is what a reader follows).
const STREAM_CHARS: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// All workflows; the highlighted one's tasks below.
    Workflows,
    /// One workflow's tasks, the highlighted task's details and token stream.
    Workflow,
}

/// One line of the providers pane.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderLine {
    pub name: String,
    pub status: String,
    pub detail: String,
    /// Nested under a provider (an LLM endpoint).
    pub nested: bool,
}

/// What the feed learned.
#[derive(Debug)]
pub enum Update {
    Workflows(Vec<WorkflowSummary>),
    Detail(Box<WorkflowView>),
    Providers(Vec<ProviderLine>),
    Nodes(Vec<NodeView>),
    Event(Box<Event>),
    /// `Err` while the server or store cannot be reached.
    Connection(Result<(), String>),
    /// The answer to a cancel the user confirmed.
    Cancelled(Result<String, String>),
}

/// What the main loop must do after a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Nothing,
    Quit,
    /// The highlighted workflow changed: fetch its details now.
    Select(String),
    Cancel(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Enter,
    Esc,
    Backspace,
    Char(char),
    CtrlC,
}

pub struct App {
    pub source: String,
    pub screen: Screen,
    pub workflows: Vec<WorkflowSummary>,
    pub workflow_cursor: usize,
    pub detail: Option<WorkflowView>,
    /// The workflow Enter opened (the Workflow screen shows it).
    pub opened: Option<String>,
    pub task_cursor: usize,
    pub providers: Vec<ProviderLine>,
    pub nodes: Vec<NodeView>,
    pub log: VecDeque<String>,
    pub streams: HashMap<(String, String), String>,
    pub filter: String,
    pub editing_filter: bool,
    /// A cancel waiting for y/n: the workflow's id and name.
    pub confirm: Option<(String, String)>,
    pub message: Option<String>,
    pub disconnected: Option<String>,
    /// Something changed since the last frame.
    pub dirty: bool,
}

impl App {
    pub fn new(source: String) -> App {
        App {
            source,
            screen: Screen::Workflows,
            workflows: Vec::new(),
            workflow_cursor: 0,
            detail: None,
            opened: None,
            task_cursor: 0,
            providers: Vec::new(),
            nodes: Vec::new(),
            log: VecDeque::new(),
            streams: HashMap::new(),
            filter: String::new(),
            editing_filter: false,
            confirm: None,
            message: None,
            disconnected: None,
            dirty: true,
        }
    }

    /// Workflows the filter lets through (by id, name or state).
    pub fn visible(&self) -> Vec<&WorkflowSummary> {
        let needle = self.filter.to_lowercase();
        self.workflows
            .iter()
            .filter(|w| {
                needle.is_empty()
                    || w.id.to_lowercase().contains(&needle)
                    || w.name.to_lowercase().contains(&needle)
                    || w.state.as_str().contains(&needle)
            })
            .collect()
    }

    pub fn selected_workflow(&self) -> Option<&WorkflowSummary> {
        self.visible().get(self.workflow_cursor).copied()
    }

    pub fn selected_id(&self) -> Option<String> {
        match self.screen {
            Screen::Workflow => self.opened.clone(),
            Screen::Workflows => self.selected_workflow().map(|w| w.id.clone()),
        }
    }

    /// The detail shown is the one for the highlighted workflow (not a stale one).
    pub fn current_detail(&self) -> Option<&WorkflowView> {
        let id = self.selected_id()?;
        self.detail.as_ref().filter(|d| d.workflow_id == id)
    }

    pub fn stream_of(&self, workflow_id: &str, task_id: &str) -> Option<&str> {
        self.streams
            .get(&(workflow_id.to_string(), task_id.to_string()))
            .map(String::as_str)
    }

    pub fn apply(&mut self, update: Update) {
        self.dirty = true;
        match update {
            Update::Workflows(list) => {
                // Keep the highlight on the same workflow when the list moves.
                let before = self.selected_workflow().map(|w| w.id.clone());
                self.workflows = list;
                if let Some(id) = before {
                    if let Some(i) = self.visible().iter().position(|w| w.id == id) {
                        self.workflow_cursor = i;
                    }
                }
                self.clamp();
            }
            Update::Detail(view) => {
                self.detail = Some(*view);
                self.clamp();
            }
            Update::Providers(lines) => self.providers = lines,
            Update::Nodes(nodes) => self.nodes = nodes,
            Update::Event(event) => self.record(*event),
            Update::Connection(Ok(())) => self.disconnected = None,
            Update::Connection(Err(why)) => self.disconnected = Some(why),
            Update::Cancelled(Ok(text)) | Update::Cancelled(Err(text)) => self.message = Some(text),
        }
    }

    fn record(&mut self, event: Event) {
        let task = task_label(&event);
        if let EventPayload::LlmToken(token) = &event.payload {
            let text = self
                .streams
                .entry((event.workflow_id.clone(), task))
                .or_default();
            text.push_str(&token.token);
            if text.len() > STREAM_CHARS * 2 {
                let cut = text.len() - STREAM_CHARS;
                let cut = (cut..text.len())
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(text.len());
                text.drain(..cut);
            }
            // Tokens are shown in the stream pane, not one log line each.
            return;
        }
        if let EventPayload::TaskStarted(_) = &event.payload {
            // A retry starts its stream afresh.
            self.streams
                .remove(&(event.workflow_id.clone(), task.clone()));
        }
        let line = log_line(&event);
        self.log.push_back(line);
        while self.log.len() > LOG_LINES {
            self.log.pop_front();
        }
    }

    fn clamp(&mut self) {
        let n = self.visible().len();
        self.workflow_cursor = self.workflow_cursor.min(n.saturating_sub(1));
        let tasks = self.current_detail().map_or(0, |d| d.tasks.len());
        self.task_cursor = self.task_cursor.min(tasks.saturating_sub(1));
    }

    pub fn key(&mut self, key: Key) -> Command {
        self.dirty = true;
        if key == Key::CtrlC {
            return Command::Quit;
        }
        if let Some((id, _)) = self.confirm.clone() {
            self.confirm = None;
            return match key {
                Key::Char('y') | Key::Char('Y') => {
                    self.message = Some(format!("cancelling {id}…"));
                    Command::Cancel(id)
                }
                _ => {
                    self.message = Some("not cancelled".into());
                    Command::Nothing
                }
            };
        }
        if self.editing_filter {
            match key {
                Key::Enter => self.editing_filter = false,
                Key::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.workflow_cursor = 0;
            self.clamp();
            return self.select_command();
        }
        self.message = None;
        match (self.screen, key) {
            (_, Key::Char('q')) => return Command::Quit,
            (Screen::Workflows, Key::Char('/')) => {
                self.editing_filter = true;
                return Command::Nothing;
            }
            (_, Key::Char('c')) => {
                let target = match self.screen {
                    Screen::Workflow => self
                        .current_detail()
                        .map(|d| (d.workflow_id.clone(), d.name.clone(), d.state)),
                    Screen::Workflows => self
                        .selected_workflow()
                        .map(|w| (w.id.clone(), w.name.clone(), w.state)),
                };
                match target {
                    Some((_, name, state)) if state.is_terminal() => {
                        self.message =
                            Some(format!("“{name}” is {}: nothing to cancel", state.as_str()));
                    }
                    Some((id, name, _)) => self.confirm = Some((id, name)),
                    None => {}
                }
                return Command::Nothing;
            }
            (Screen::Workflows, Key::Enter) => {
                if let Some(id) = self.selected_workflow().map(|w| w.id.clone()) {
                    self.opened = Some(id);
                    self.screen = Screen::Workflow;
                    self.task_cursor = 0;
                    return self.select_command();
                }
            }
            (Screen::Workflow, Key::Esc | Key::Backspace | Key::Char('h')) => {
                self.screen = Screen::Workflows;
                return self.select_command();
            }
            (Screen::Workflows, Key::Esc) if !self.filter.is_empty() => {
                self.filter.clear();
                self.clamp();
                return self.select_command();
            }
            (screen, key) => {
                let visible = self.visible().len();
                let (cursor, len) = match screen {
                    Screen::Workflows => (&mut self.workflow_cursor, visible),
                    Screen::Workflow => (
                        &mut self.task_cursor,
                        self.detail.as_ref().map_or(0, |d| d.tasks.len()),
                    ),
                };
                let last = len.saturating_sub(1);
                let before = *cursor;
                *cursor = match key {
                    Key::Up | Key::Char('k') => cursor.saturating_sub(1),
                    Key::Down | Key::Char('j') => (*cursor + 1).min(last),
                    Key::PageUp => cursor.saturating_sub(10),
                    Key::PageDown => (*cursor + 10).min(last),
                    Key::Home | Key::Char('g') => 0,
                    Key::End | Key::Char('G') => last,
                    _ => *cursor,
                };
                self.clamp();
                if screen == Screen::Workflows && before != self.workflow_cursor {
                    return self.select_command();
                }
            }
        }
        Command::Nothing
    }

    fn select_command(&self) -> Command {
        match self.selected_id() {
            Some(id) => Command::Select(id),
            None => Command::Nothing,
        }
    }
}

/// One line of the event log.
fn log_line(event: &Event) -> String {
    let time = chrono::DateTime::from_timestamp_millis(event.at_ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    let short: String = event.workflow_id.chars().take(12).collect();
    let task = task_label(event);
    let detail = match &event.payload {
        EventPayload::TaskFailed(failed) => {
            format!("{task} {} {}", failed.error.code, failed.error.message)
        }
        EventPayload::WorkflowFailed(failed) => match &failed.error {
            Some(error) => format!("{task} {} {}", error.code, error.message),
            None => format!("{task}  "),
        },
        EventPayload::TaskOutput(output) => format!("{task} | {}", output.line),
        EventPayload::AgentTurn(turn) => {
            let asked: Vec<&str> = turn.tool_calls.iter().map(|c| c.name.as_str()).collect();
            if asked.is_empty() {
                format!("{task} turn {} answered", turn.turn)
            } else {
                format!("{task} turn {} → {}", turn.turn, asked.join(", "))
            }
        }
        EventPayload::ToolCallCompleted(call) => match &call.error {
            None => format!("{task} {} done", call.name),
            Some(error) => format!("{task} {} {}", call.name, error.code),
        },
        EventPayload::TaskRetrying(retrying) => format!("{task} attempt {}", retrying.task.attempt),
        EventPayload::WorkflowProgress(progress) => {
            format!("{}/{}", progress.completed_tasks, progress.total_tasks)
        }
        EventPayload::NodeJoined(node) => node.node_id.clone(),
        EventPayload::NodeLeft(node) => node.node_id.clone(),
        // As every log shows an event this version cannot read: its kind
        // (the column before) and its data as sent.
        EventPayload::Undecoded(undecoded) => undecoded.data.to_string(),
        _ => task,
    };
    format!(
        "{time} {:<18} {short:<12} {}",
        event.type_name(),
        detail.trim()
    )
}

/// Lines for the providers pane from `/api/v1/providers?check=true` (or the
/// same JSON built locally).
pub fn provider_lines(value: &Value) -> Vec<ProviderLine> {
    let mut lines = Vec::new();
    for provider in value["providers"].as_array().into_iter().flatten() {
        let health = &provider["health"];
        let methods = provider["methods"].as_array().map_or(0, Vec::len);
        lines.push(ProviderLine {
            name: provider["protocol"].as_str().unwrap_or("?").to_string(),
            status: health["status"]
                .as_str()
                .unwrap_or("unknown")
                .to_lowercase(),
            detail: health["reason"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{methods} methods")),
            nested: false,
        });
        for endpoint in health["detail"]["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let status = match (endpoint["healthy"].as_bool(), endpoint["circuit"].as_str()) {
                (_, Some("open")) => "circuit open",
                (Some(true), _) => "healthy",
                (Some(false), _) => "down",
                (None, _) => "unchecked",
            };
            let latency = endpoint["latency_ms"]
                .as_f64()
                .map(|ms| format!(" {ms:.0} ms"))
                .unwrap_or_default();
            lines.push(ProviderLine {
                name: endpoint["name"].as_str().unwrap_or("?").to_string(),
                status: status.into(),
                detail: format!(
                    "load {}/{}{latency} · {} req",
                    endpoint["in_flight"], endpoint["max_concurrent"], endpoint["requests"]
                ),
                nested: true,
            });
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_core::events::{AttemptRef, LlmToken, TaskRef, TaskStarted};
    use gleitzeit_core::WorkflowState;

    fn summary(id: &str, name: &str, state: WorkflowState) -> WorkflowSummary {
        WorkflowSummary {
            id: id.into(),
            name: name.into(),
            state,
            created_ms: 0,
            finished_ms: None,
            total: 2,
            completed: 1,
            failed: 0,
        }
    }

    fn app() -> App {
        let mut app = App::new("test".into());
        app.apply(Update::Workflows(vec![
            summary("wf_a", "alpha", WorkflowState::Running),
            summary("wf_b", "beta", WorkflowState::Completed),
            summary("wf_c", "gamma", WorkflowState::Failed),
        ]));
        app
    }

    #[test]
    fn progress_events_show_counts() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "type": "workflow_progress",
            "workflow_id": "wf_a4b4a948f",
            "at_ms": 0,
            "data": {"completed_tasks": 3, "failed_tasks": 0, "skipped_tasks": 0, "total_tasks": 5},
        }))
        .unwrap();
        assert!(
            log_line(&event).ends_with("wf_a4b4a948f 3/5"),
            "{}",
            log_line(&event)
        );
    }

    #[test]
    fn moving_filtering_and_drilling_in() {
        let mut app = app();
        assert_eq!(app.key(Key::Down), Command::Select("wf_b".into()));
        assert_eq!(app.key(Key::Char('j')), Command::Select("wf_c".into()));
        assert_eq!(app.key(Key::Down), Command::Nothing, "stays on the last");
        assert_eq!(app.key(Key::Char('k')), Command::Select("wf_b".into()));
        // The highlight follows its workflow when the list changes order.
        app.apply(Update::Workflows(vec![
            summary("wf_new", "new", WorkflowState::Running),
            summary("wf_a", "alpha", WorkflowState::Running),
            summary("wf_b", "beta", WorkflowState::Completed),
        ]));
        assert_eq!(app.selected_id().as_deref(), Some("wf_b"));

        app.key(Key::Char('/'));
        for c in "alp".chars() {
            app.key(Key::Char(c));
        }
        assert_eq!(app.key(Key::Enter), Command::Select("wf_a".into()));
        assert_eq!(app.visible().len(), 1);
        assert_eq!(app.key(Key::Enter), Command::Select("wf_a".into()));
        assert_eq!(app.screen, Screen::Workflow);
        app.key(Key::Esc);
        assert_eq!(app.screen, Screen::Workflows);
        app.key(Key::Esc);
        assert_eq!(app.visible().len(), 3, "Esc clears the filter");
        assert_eq!(app.key(Key::Char('q')), Command::Quit);
    }

    #[test]
    fn cancel_asks_first_and_refuses_finished_workflows() {
        let mut app = app();
        assert_eq!(app.key(Key::Char('c')), Command::Nothing);
        assert_eq!(app.confirm, Some(("wf_a".into(), "alpha".into())));
        assert_eq!(app.key(Key::Char('n')), Command::Nothing);
        assert_eq!(app.message.as_deref(), Some("not cancelled"));
        app.key(Key::Char('c'));
        assert_eq!(app.key(Key::Char('y')), Command::Cancel("wf_a".into()));
        app.key(Key::Down);
        app.key(Key::Char('c'));
        assert!(app.confirm.is_none());
        assert!(app
            .message
            .as_deref()
            .unwrap()
            .contains("nothing to cancel"));
    }

    #[test]
    fn undecoded_events_log_their_kind_and_data() {
        let mut app = app();
        let data = serde_json::json!({"task_id": "t", "why": "newer"});
        let (event, why) =
            Event::from_stored(4, "task_paused".into(), "wf_a".into(), 0, data.clone());
        assert!(why.is_some());
        app.apply(Update::Event(Box::new(event)));
        let line = &app.log[0];
        assert!(line.contains("task_paused"), "{line}");
        assert!(line.ends_with(&data.to_string()), "{line}");
    }

    #[test]
    fn tokens_gather_per_task_and_restart_with_a_retry() {
        let mut app = app();
        let event = |payload: EventPayload| Update::Event(Box::new(Event::new(payload, "wf_a", 0)));
        let token = |text: &str| {
            event(EventPayload::LlmToken(LlmToken {
                task: AttemptRef {
                    task_id: "t".into(),
                    task_name: "t".into(),
                    attempt: 1,
                },
                token: text.into(),
            }))
        };
        app.apply(token("Hel"));
        app.apply(token("lo"));
        assert_eq!(app.stream_of("wf_a", "t"), Some("Hello"));
        assert!(app.log.is_empty(), "tokens are not log lines");
        app.apply(event(EventPayload::TaskStarted(TaskStarted {
            items: None,
            task: TaskRef {
                task_id: "t".into(),
                task_name: "t".into(),
                method: "llm/chat".into(),
                attempt: 2,
            },
        })));
        assert_eq!(app.stream_of("wf_a", "t"), None);
        assert!(app.log[0].contains("task_started"));
    }

    #[test]
    fn providers_and_endpoints_become_lines() {
        let value = serde_json::json!({"providers": [
            {"protocol": "llm", "methods": [1, 2], "health": {"status": "Degraded", "reason": "1 of 2 endpoints down",
              "detail": {"endpoints": [{"name": "gpu1", "healthy": true, "circuit": "closed", "in_flight": 1, "max_concurrent": 4, "requests": 9, "latency_ms": 12.4}]}}},
            {"protocol": "python", "methods": [1, 2, 3], "health": {"status": "Healthy"}}
        ]});
        let lines = provider_lines(&value);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].status, "degraded");
        assert_eq!(lines[1].detail, "load 1/4 12 ms · 9 req");
        assert!(lines[1].nested);
        assert_eq!(lines[2].detail, "3 methods");
    }
}
