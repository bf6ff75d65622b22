//! `gleitzeit monitor` (seed 003's `pro`): a full-screen terminal dashboard of
//! workflows, tasks, live tokens, providers, nodes and events, against a
//! server or the local store.
//!
//! Three background feeds (workflow list + the highlighted workflow every
//! second, providers and nodes every five, the event stream as it comes) send
//! `Update`s; keys come from a thread blocked on the terminal. The loop redraws
//! only when something changed, at most ten times a second, so an idle monitor
//! sleeps.

mod app;
mod ui;

use crate::context::Context;
use crate::service::{self, WorkflowService};
use app::{App, Command, Key, Update};
use clap::Args;
use futures_util::StreamExt;
use gleitzeit_core::{ErrorCode, GzError};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Seconds between refreshes of the workflow list and the open workflow
    #[arg(long, default_value = "1", value_name = "SECONDS")]
    pub refresh: f64,
    /// Workflows shown (newest first)
    #[arg(long, default_value = "200")]
    pub limit: usize,
}

pub async fn run(ctx: &Context, args: MonitorArgs) -> Result<u8, GzError> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "the monitor needs a terminal (stdin and stdout are not one)",
        )
        .with_hint("For scripts use `gleitzeit events --follow --json`, `gleitzeit watch queue` or `gleitzeit list --json`."));
    }
    if !(args.refresh.is_finite() && args.refresh >= 0.1) {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            format!(
                "--refresh {} is not a number of seconds (at least 0.1)",
                args.refresh
            ),
        ));
    }
    let source = service::connect(ctx).await?;
    source.open().await?;
    let location = source.location();
    let label = if location == "local" {
        format!("local {} store", ctx.backend())
    } else {
        format!("server {location}")
    };
    let (updates, mut inbox) = mpsc::unbounded_channel();
    let (selected_tx, selected_rx) = watch::channel(None::<String>);
    let refresh = Duration::from_secs_f64(args.refresh);
    let feeds = [
        tokio::spawn(poll_workflows(
            source.clone(),
            args.limit,
            refresh,
            selected_rx,
            updates.clone(),
        )),
        tokio::spawn(poll_fleet(source.clone(), updates.clone())),
        tokio::spawn(follow_events(source.clone(), updates.clone())),
    ];
    let (keys_tx, mut keys) = mpsc::unbounded_channel();
    std::thread::spawn(move || read_keys(keys_tx));

    let mut terminal = ratatui::init();
    let mut app = App::new(label);
    let frame_gap = Duration::from_millis(100);
    let mut last_draw = Instant::now() - frame_gap;
    let result = loop {
        let next_draw = last_draw + frame_gap;
        tokio::select! {
            key = keys.recv() => {
                let Some(key) = key else { break Ok(()) };
                match app.key(key) {
                    Command::Quit => break Ok(()),
                    Command::Select(id) => { let _ = selected_tx.send(Some(id)); }
                    Command::Cancel(id) => {
                        let source = source.clone();
                        let updates = updates.clone();
                        tokio::spawn(async move {
                            let answer = source.cancel(&id).await.map(|c| c.sentence()).map_err(|e| format!("cancel failed: {} {}", e.code.as_str(), e.message));
                            let _ = updates.send(Update::Cancelled(answer));
                        });
                    }
                    Command::Nothing => {}
                }
            }
            update = inbox.recv() => {
                let Some(update) = update else { break Ok(()) };
                app.apply(update);
                while let Ok(more) = inbox.try_recv() {
                    app.apply(more);
                }
                // The first list arrived: open the newest workflow's details.
                if selected_tx.borrow().is_none() {
                    if let Some(id) = app.selected_id() {
                        let _ = selected_tx.send(Some(id));
                    }
                }
            }
            _ = tokio::time::sleep_until(next_draw.into()), if app.dirty => {}
        }
        if app.dirty && Instant::now() >= last_draw + frame_gap {
            if let Err(e) = terminal.draw(|frame| ui::draw(frame, &app)) {
                break Err(GzError::new(
                    ErrorCode::InternalError,
                    format!("cannot draw: {e}"),
                ));
            }
            app.dirty = false;
            last_draw = Instant::now();
        }
    };
    ratatui::restore();
    for feed in feeds {
        feed.abort();
    }
    source.finish().await;
    result.map(|()| crate::output::EXIT_OK)
}

async fn poll_workflows(
    source: Arc<dyn WorkflowService>,
    limit: usize,
    every: Duration,
    mut selected: watch::Receiver<Option<String>>,
    updates: mpsc::UnboundedSender<Update>,
) {
    loop {
        let id = selected.borrow_and_update().clone();
        let fetched = async {
            let list = source.list(None, limit, 0).await?;
            let detail = match &id {
                Some(id) => Some(source.workflow(id).await?),
                None => None,
            };
            Ok::<_, GzError>((list, detail))
        }
        .await;
        let sent = match fetched {
            Ok((list, detail)) => {
                let mut ok = updates.send(Update::Connection(Ok(()))).is_ok();
                ok &= updates.send(Update::Workflows(list)).is_ok();
                if let Some(detail) = detail {
                    ok &= updates.send(Update::Detail(Box::new(detail))).is_ok();
                }
                ok
            }
            Err(e) => updates.send(Update::Connection(Err(e.message))).is_ok(),
        };
        if !sent {
            return;
        }
        // Wake early when the user highlights another workflow.
        let _ = tokio::time::timeout(every, selected.changed()).await;
    }
}

async fn poll_fleet(source: Arc<dyn WorkflowService>, updates: mpsc::UnboundedSender<Update>) {
    loop {
        if let Ok(list) = source.providers().await {
            let value = serde_json::json!(list);
            if updates
                .send(Update::Providers(app::provider_lines(&value)))
                .is_err()
            {
                return;
            }
        }
        if let Ok(nodes) = source.nodes().await {
            if updates.send(Update::Nodes(nodes)).is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// The event stream, from a little history on; resumed after errors.
async fn follow_events(source: Arc<dyn WorkflowService>, updates: mpsc::UnboundedSender<Update>) {
    let mut after: Option<u64> = None;
    loop {
        let start = match after {
            Some(seq) => seq,
            None => match source.latest_event_seq().await {
                Ok(head) => head.saturating_sub(200),
                Err(e) => {
                    let _ = updates.send(Update::Connection(Err(e.message)));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let mut stream = match source.follow(None, None, Some(start)).await {
            Ok(stream) => stream,
            Err(e) => {
                let _ = updates.send(Update::Connection(Err(e.message)));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if event.seq > 0 {
                        after = Some(event.seq);
                    }
                    if updates.send(Update::Event(Box::new(event))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = updates.send(Update::Connection(Err(e.message)));
                    break;
                }
            }
        }
        after = after.or(Some(start));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Blocks on the terminal and forwards keys until the monitor stops listening.
fn read_keys(keys: mpsc::UnboundedSender<Key>) {
    loop {
        let Ok(TermEvent::Key(press)) = event::read() else {
            if keys.is_closed() {
                return;
            }
            continue;
        };
        if press.kind == KeyEventKind::Release {
            continue;
        }
        let key = match press.code {
            KeyCode::Char('c') if press.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
            KeyCode::Char(c) => Key::Char(c),
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::PageUp => Key::PageUp,
            KeyCode::PageDown => Key::PageDown,
            KeyCode::Home => Key::Home,
            KeyCode::End => Key::End,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc => Key::Esc,
            KeyCode::Backspace | KeyCode::Left => Key::Backspace,
            KeyCode::Right => Key::Enter,
            _ => continue,
        };
        if keys.send(key).is_err() {
            return;
        }
    }
}
