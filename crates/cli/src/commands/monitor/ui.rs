//! Drawing the monitor from its state. Only reads `App`; ratatui diffs frames,
//! so a redraw writes just the cells that changed (no flicker).

use super::app::{App, Screen};
use crate::output::format_ms;
use gleitzeit_api::views::{TaskView, WorkflowView};
use gleitzeit_core::{TaskState, WorkflowState};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Table, TableState, Wrap,
};
use ratatui::Frame;

fn workflow_color(state: WorkflowState) -> Color {
    match state {
        WorkflowState::Completed => Color::Green,
        WorkflowState::Failed => Color::Red,
        WorkflowState::Cancelled => Color::Magenta,
        WorkflowState::Running => Color::Cyan,
        _ => Color::Yellow,
    }
}

fn task_color(state: TaskState) -> Color {
    match state {
        TaskState::Completed => Color::Green,
        TaskState::Failed => Color::Red,
        TaskState::Running => Color::Cyan,
        TaskState::Cancelled => Color::Magenta,
        TaskState::Skipped => Color::DarkGray,
        _ => Color::Yellow,
    }
}

fn titled(title: &str) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(Span::styled(
        format!(" {title} "),
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

pub fn draw(frame: &mut Frame, app: &App) {
    let [header, body, footer] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(6),
            Constraint::Length(1),
        ])
        .areas(frame.area());
    draw_header(frame, header, app);
    match app.screen {
        Screen::Workflows => draw_overview(frame, body, app),
        Screen::Workflow => draw_workflow(frame, body, app),
    }
    draw_footer(frame, footer, app);
    if let Some((id, name)) = &app.confirm {
        let area = centered(frame.area(), 60, 5);
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(format!("Cancel “{name}”?")),
                Line::from(Span::styled(
                    id.clone(),
                    Style::default().fg(Color::DarkGray),
                )),
                Line::from("y = cancel it, any other key = keep it running"),
            ])
            .block(titled("Confirm").border_style(Style::default().fg(Color::Red))),
            area,
        );
    }
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App) {
    let mut counts = std::collections::BTreeMap::new();
    for w in &app.workflows {
        *counts.entry(w.state.as_str()).or_insert(0) += 1;
    }
    let mut spans = vec![
        Span::styled(
            " Gleitzeit monitor ",
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        Span::raw(format!(" {} ", app.source)),
    ];
    for (state, n) in counts {
        let color = WorkflowState::parse(state).map_or(Color::White, workflow_color);
        spans.push(Span::styled(
            format!(" {n} {state} "),
            Style::default().fg(color),
        ));
    }
    if let Some(why) = &app.disconnected {
        spans.push(Span::styled(
            format!(" ⚠ disconnected: {why} — reconnecting… "),
            Style::default().fg(Color::White).bg(Color::Red),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let line = if app.editing_filter {
        Line::from(vec![
            Span::styled(" filter: ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{}▏", app.filter)),
            Span::styled(
                "  Enter keep · Esc clear",
                Style::default().fg(Color::DarkGray),
            ),
        ])
    } else if let Some(message) = &app.message {
        Line::from(Span::styled(
            format!(" {message}"),
            Style::default().fg(Color::Yellow),
        ))
    } else {
        let keys = match app.screen {
            Screen::Workflows => " ↑↓/jk move · Enter open · c cancel · / filter · q quit",
            Screen::Workflow => " ↑↓/jk task · Esc back · c cancel · q quit",
        };
        Line::from(Span::styled(keys, Style::default().fg(Color::DarkGray)))
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_overview(frame: &mut Frame, area: Rect, app: &App) {
    let [top, bottom] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
        .areas(area);
    let [list, side] = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(64), Constraint::Percentage(36)])
        .areas(top);
    draw_workflows(frame, list, app);
    let [providers, nodes] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(60), Constraint::Percentage(40)])
        .areas(side);
    draw_providers(frame, providers, app);
    draw_nodes(frame, nodes, app);
    let [tasks, log] = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .areas(bottom);
    match app.current_detail() {
        Some(detail) => draw_tasks(frame, tasks, detail, None),
        None => frame.render_widget(
            Paragraph::new("Select a workflow to see its tasks.").block(titled("Tasks")),
            tasks,
        ),
    }
    draw_log(frame, log, app, None);
}

fn draw_workflows(frame: &mut Frame, area: Rect, app: &App) {
    let visible = app.visible();
    let title = if app.filter.is_empty() {
        format!("Workflows ({})", visible.len())
    } else {
        format!(
            "Workflows ({} of {}, filter “{}”)",
            visible.len(),
            app.workflows.len(),
            app.filter
        )
    };
    if visible.is_empty() {
        let text = if app.workflows.is_empty() {
            "No workflows yet. Run one with `gleitzeit run FILE.yaml`."
        } else {
            "No workflow matches the filter (Esc clears it)."
        };
        frame.render_widget(Paragraph::new(text).block(titled(&title)), area);
        return;
    }
    let rows = visible.iter().map(|w| {
        let done = w.completed + w.failed;
        let width = 10;
        let filled = (done * width).checked_div(w.total).unwrap_or(0).min(width) as usize;
        let bar = format!(
            "{}{} {done}/{}",
            "█".repeat(filled),
            "░".repeat(width as usize - filled),
            w.total
        );
        let duration = w
            .finished_ms
            .map(|f| format_ms(f - w.created_ms))
            .unwrap_or_else(|| "-".into());
        // Any unique prefix of an id works in commands; twelve characters are plenty.
        let short: String = w.id.chars().take(12).collect();
        Row::new(vec![
            Cell::from(short),
            Cell::from(w.state.as_str()).style(Style::default().fg(workflow_color(w.state))),
            Cell::from(bar),
            Cell::from(duration),
            Cell::from(w.name.clone()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(18),
            Constraint::Length(8),
            Constraint::Min(8),
        ],
    )
    .header(
        Row::new(["ID", "STATE", "PROGRESS", "TIME", "NAME"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .block(titled(&title));
    let mut state = TableState::default().with_selected(Some(app.workflow_cursor));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_providers(frame: &mut Frame, area: Rect, app: &App) {
    let lines: Vec<Line> = if app.providers.is_empty() {
        vec![Line::from("checking…")]
    } else {
        app.providers
            .iter()
            .map(|p| {
                let color = match p.status.as_str() {
                    "healthy" => Color::Green,
                    "degraded" | "unchecked" => Color::Yellow,
                    _ => Color::Red,
                };
                Line::from(vec![
                    Span::raw(if p.nested { "  └ " } else { "" }),
                    Span::styled(
                        format!("{:<10}", p.name),
                        Style::default().add_modifier(Modifier::BOLD),
                    ),
                    Span::styled(format!(" {:<9}", p.status), Style::default().fg(color)),
                    Span::styled(
                        format!(" {}", p.detail),
                        Style::default().fg(Color::DarkGray),
                    ),
                ])
            })
            .collect()
    };
    frame.render_widget(Paragraph::new(lines).block(titled("Providers")), area);
}

fn draw_nodes(frame: &mut Frame, area: Rect, app: &App) {
    let lines: Vec<Line> = if app.nodes.is_empty() {
        vec![Line::from(Span::styled(
            "none — tasks run in-process",
            Style::default().fg(Color::DarkGray),
        ))]
    } else {
        app.nodes
            .iter()
            .map(|n| {
                let color = if n.state == "active" {
                    Color::Green
                } else {
                    Color::Red
                };
                Line::from(vec![
                    Span::styled(format!("{:<7}", n.state), Style::default().fg(color)),
                    Span::raw(format!(" {} {}/{} ", n.id, n.running, n.concurrency)),
                    Span::styled(
                        format!("done {} failed {}", n.completed, n.failed),
                        Style::default().fg(Color::DarkGray),
                    ),
                ])
            })
            .collect()
    };
    frame.render_widget(
        Paragraph::new(lines).block(titled(&format!("Nodes ({})", app.nodes.len()))),
        area,
    );
}

fn tokens(task: &TaskView) -> String {
    task.record
        .as_ref()
        .and_then(|r| {
            r["usage"]["total_tokens"].as_u64().or_else(|| {
                let p = r["usage"]["prompt_tokens"].as_u64()?;
                Some(p + r["usage"]["completion_tokens"].as_u64().unwrap_or(0))
            })
        })
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn endpoint(task: &TaskView) -> String {
    task.record
        .as_ref()
        .and_then(|r| r["endpoint"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn draw_tasks(frame: &mut Frame, area: Rect, detail: &WorkflowView, cursor: Option<usize>) {
    let rows = detail.tasks.iter().map(|t| {
        Row::new(vec![
            Cell::from(t.id.clone()),
            Cell::from(t.state.as_str()).style(Style::default().fg(task_color(t.state))),
            Cell::from(t.duration_ms.map(format_ms).unwrap_or_else(|| "-".into())),
            Cell::from(endpoint(t)),
            Cell::from(tokens(t)),
            Cell::from(t.method.clone()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Min(12),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(16),
        ],
    )
    .header(
        Row::new(["TASK", "STATE", "TIME", "ENDPOINT", "TOKENS", "METHOD"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .block(titled(&format!(
        "Tasks of “{}” ({})",
        detail.name,
        detail.tasks.len()
    )));
    let mut state = TableState::default().with_selected(cursor);
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_log(frame: &mut Frame, area: Rect, app: &App, workflow: Option<&str>) {
    let height = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = app
        .log
        .iter()
        .filter(|line| {
            workflow.is_none_or(|id| line.contains(&id.chars().take(12).collect::<String>()))
        })
        .rev()
        .take(height)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|l| {
            let color = if l.contains("failed") {
                Color::Red
            } else if l.contains("completed") {
                Color::Green
            } else {
                Color::Reset
            };
            Line::from(Span::styled(l.clone(), Style::default().fg(color)))
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(titled("Events")), area);
}

fn draw_workflow(frame: &mut Frame, area: Rect, app: &App) {
    let Some(detail) = app.current_detail() else {
        frame.render_widget(Paragraph::new("loading…").block(titled("Workflow")), area);
        return;
    };
    let [head, middle, log] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(4),
            Constraint::Min(8),
            Constraint::Length(8),
        ])
        .areas(area);
    let done = detail
        .tasks
        .iter()
        .filter(|t| t.state.is_terminal())
        .count();
    let total = detail.tasks.len().max(1);
    let usage = detail.usage.total.total_tokens;
    let label = format!(
        "{} · {done}/{} tasks · {}{}",
        detail.state.as_str(),
        detail.tasks.len(),
        detail
            .duration_ms
            .map(format_ms)
            .unwrap_or_else(|| "running".into()),
        if usage > 0 {
            format!(" · {usage} tokens")
        } else {
            String::new()
        }
    );
    frame.render_widget(
        Gauge::default()
            .block(titled(&format!("{} — {}", detail.name, detail.workflow_id)))
            .gauge_style(Style::default().fg(workflow_color(detail.state)))
            .ratio(done as f64 / total as f64)
            .label(label),
        head,
    );
    let [tasks, side] = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
        .areas(middle);
    draw_tasks(frame, tasks, detail, Some(app.task_cursor));
    if let Some(task) = detail.tasks.get(app.task_cursor) {
        draw_task(frame, side, app, detail, task);
    }
    draw_log(frame, log, app, Some(&detail.workflow_id));
}

fn draw_task(frame: &mut Frame, area: Rect, app: &App, detail: &WorkflowView, task: &TaskView) {
    let [info, stream] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
        .areas(area);
    let dim = Style::default().fg(Color::DarkGray);
    let mut lines = vec![
        Line::from(vec![
            Span::styled("method   ", dim),
            Span::raw(task.method.clone()),
        ]),
        Line::from(vec![
            Span::styled("state    ", dim),
            Span::styled(
                task.state.as_str(),
                Style::default().fg(task_color(task.state)),
            ),
            Span::raw(format!("  attempt {}", task.attempt)),
        ]),
    ];
    if !task.dependencies.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("needs    ", dim),
            Span::raw(task.dependencies.join(", ")),
        ]));
    }
    let endpoint = endpoint(task);
    if !endpoint.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("endpoint ", dim),
            Span::raw(format!("{endpoint}  tokens {}", tokens(task))),
        ]));
    }
    if let Some(error) = &task.error {
        lines.push(Line::from(Span::styled(
            format!("{} {}", error.code.as_str(), error.message),
            Style::default().fg(Color::Red),
        )));
        if let Some(hint) = &error.hint {
            lines.push(Line::from(Span::styled(
                format!("hint: {hint}"),
                Style::default().fg(Color::Yellow),
            )));
        }
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(titled(&format!("Task {}", task.id))),
        info,
    );
    // A running LLM task shows its tokens as they stream; a finished one its result.
    let (title, text) = match app.stream_of(&detail.workflow_id, &task.id) {
        Some(text) if task.state == TaskState::Running => ("Live tokens", text.to_string()),
        _ => match &task.result {
            Some(serde_json::Value::String(s)) => ("Result", s.clone()),
            Some(value) => (
                "Result",
                serde_json::to_string_pretty(value).unwrap_or_default(),
            ),
            None => match app.stream_of(&detail.workflow_id, &task.id) {
                Some(text) => ("Tokens", text.to_string()),
                None => ("Result", String::new()),
            },
        },
    };
    // Show the tail: the newest tokens are what a reader follows.
    let width = stream.width.saturating_sub(2).max(1) as usize;
    let height = stream.height.saturating_sub(2) as usize;
    let wrapped: Vec<String> = text
        .lines()
        .flat_map(|line| {
            let chars: Vec<char> = line.chars().collect();
            if chars.is_empty() {
                vec![String::new()]
            } else {
                chars.chunks(width).map(|c| c.iter().collect()).collect()
            }
        })
        .collect();
    let tail: Vec<Line> = wrapped
        .iter()
        .skip(wrapped.len().saturating_sub(height))
        .map(|l| Line::from(l.clone()))
        .collect();
    frame.render_widget(Paragraph::new(tail).block(titled(title)), stream);
}

#[cfg(test)]
mod tests {
    use super::super::app::{App, Key, Update};
    use super::*;
    use gleitzeit_store::WorkflowSummary;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(110, 24)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn overview_shows_workflows_providers_and_the_confirm_dialog() {
        let mut app = App::new("local store".into());
        app.apply(Update::Workflows(vec![WorkflowSummary {
            id: "wf_0123456789abcd".into(),
            name: "Nightly report".into(),
            state: WorkflowState::Running,
            created_ms: 0,
            finished_ms: None,
            total: 4,
            completed: 2,
            failed: 0,
        }]));
        app.apply(Update::Providers(vec![super::super::app::ProviderLine {
            name: "python".into(),
            status: "healthy".into(),
            detail: "3 methods".into(),
            nested: false,
        }]));
        let text = screen(&app);
        assert!(text.contains("Gleitzeit monitor"), "{text}");
        assert!(text.contains("1 running"), "{text}");
        assert!(text.contains("Nightly report"), "{text}");
        assert!(text.contains("█████░░░░░ 2/4"), "{text}");
        assert!(text.contains("python"), "{text}");
        assert!(text.contains("none — tasks run in-process"), "{text}");
        app.key(Key::Char('c'));
        let text = screen(&app);
        assert!(text.contains("Cancel “Nightly report”?"), "{text}");
        app.apply(Update::Connection(Err("connection refused".into())));
        assert!(screen(&app).contains("disconnected: connection refused"));
    }
}
