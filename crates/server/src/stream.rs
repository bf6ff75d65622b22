//! One event stream for every transport (SSE, WebSocket, Socket.IO): stored
//! history after the client's last id, then live events, in sequence order,
//! with nothing lost or repeated.
//!
//! Every event is stored before it is announced, and the store hands out
//! sequence numbers in commit order. So when a live event arrives whose number
//! is not the next one (two commits announced out of order, or this receiver
//! fell behind the broadcast buffer), everything before it is already in the
//! store and is read from there. A slow client therefore never holds back the
//! runtime: it only reads history for longer.

use crate::AppState;
use futures_util::Stream;
use gleitzeit_core::events::Event;
use gleitzeit_core::{ErrorCode, GzError};
use serde::Deserialize;
use std::collections::HashSet;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

const PAGE: usize = 500;

/// Which events a client wants.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct EventQuery {
    /// Only events of this workflow (full id).
    pub workflow_id: Option<String>,
    /// Comma-separated event types, e.g. `task_completed,workflow_failed`.
    pub types: Option<String>,
    /// Start after this event id (same as the `Last-Event-ID` header). Without
    /// it the stream starts with the next event.
    pub after: Option<u64>,
    /// The API key, for clients that cannot send headers (browsers'
    /// EventSource and WebSocket). Prefer the Authorization header.
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub workflow_id: Option<String>,
    pub types: Option<HashSet<String>>,
    /// Only events of workflows this user submitted.
    pub owner: Option<String>,
}

impl Filter {
    pub fn from_query(query: &EventQuery) -> Result<Filter, GzError> {
        let types = match &query.types {
            None => None,
            Some(list) => {
                let mut set = HashSet::new();
                for kind in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !gleitzeit_core::events::ALL.contains(&kind) {
                        return Err(GzError::new(
                            ErrorCode::InvalidArgument,
                            format!("unknown event type `{kind}`"),
                        )
                        .with_hint(format!(
                            "Event types: {}.",
                            gleitzeit_core::events::ALL.join(", ")
                        )));
                    }
                    set.insert(kind.to_string());
                }
                (!set.is_empty()).then_some(set)
            }
        };
        Ok(Filter {
            workflow_id: query.workflow_id.clone().filter(|w| !w.is_empty()),
            types,
            owner: None,
        })
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.workflow_id
            .as_ref()
            .is_none_or(|id| *id == event.workflow_id)
            && self.types.as_ref().is_none_or(|t| t.contains(&event.kind))
    }
}

/// Whether the stream's owner (if it has one) submitted the event's workflow.
async fn visible(
    filter: &Filter,
    owners: &mut std::collections::HashMap<String, bool>,
    store: &dyn gleitzeit_store::Store,
    event: &Event,
) -> Result<bool, GzError> {
    let Some(owner) = &filter.owner else {
        return Ok(true);
    };
    if let Some(mine) = owners.get(&event.workflow_id) {
        return Ok(*mine);
    }
    let mine = store
        .workflow(&event.workflow_id)
        .await?
        .is_some_and(|w| w.submitted_by.as_ref() == Some(owner));
    owners.insert(event.workflow_id.clone(), mine);
    Ok(mine)
}

/// Events after `after` (or from now), ending when the server stops.
pub fn events(
    state: AppState,
    filter: Filter,
    after: Option<u64>,
) -> impl Stream<Item = Result<Event, GzError>> + Send {
    async_stream::try_stream! {
        // Subscribe before reading history so nothing falls between the two.
        let mut live = state.runtime.subscribe();
        let store = state.runtime.store().clone();
        let mut last = match after {
            Some(seq) => seq,
            None => store.latest_event_seq().await?,
        };
        let mut catch_up = after.is_some();
        // Who submitted each workflow seen, for streams limited to an owner.
        let mut owners: std::collections::HashMap<String, bool> = Default::default();
        // Other processes (a `gleitzeit run` on the same database) commit
        // events this server never announces; look for them now and then.
        let mut poll = tokio::time::interval(std::time::Duration::from_secs(1));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if catch_up {
                // With a workflow filter only that workflow's history is read;
                // everything up to `head` is then known to be seen.
                let head = store.latest_event_seq().await?;
                let workflow = filter.workflow_id.as_deref();
                loop {
                    let page = store.events(workflow, last, PAGE).await?;
                    let full = page.len() == PAGE;
                    for event in page {
                        last = last.max(event.seq);
                        if filter.matches(&event) && visible(&filter, &mut owners, store.as_ref(), &event).await? {
                            yield event;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                last = last.max(head);
                catch_up = false;
            }
            let received = tokio::select! {
                _ = state.stopping.cancelled() => break,
                received = live.recv() => Some(received),
                _ = poll.tick() => None,
            };
            let Some(received) = received else {
                let head = store.latest_event_seq().await?;
                catch_up = head > last;
                continue;
            };
            match received {
                Ok(event) if event.seq <= last => {}
                Ok(event) if event.seq == last + 1 => {
                    last = event.seq;
                    if filter.matches(&event) && visible(&filter, &mut owners, store.as_ref(), &event).await? {
                        yield event;
                    }
                }
                // A gap: the missing events are committed; read them first.
                Ok(_) | Err(RecvError::Lagged(_)) => catch_up = true,
                Err(RecvError::Closed) => break,
            }
        }
    }
}
