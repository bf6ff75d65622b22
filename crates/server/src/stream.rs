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
//!
//! Streamed tokens are stored as `llm_tokens` chunks, one row per chunk; the
//! stream expands each into `llm_token` events. A token's id is its chunk's
//! sequence number plus its index (`41.3`), and the last token of a chunk has
//! the plain number (`41`), so resuming after any id — SSE `Last-Event-ID`,
//! `after`/`since` — continues with the next token, even inside a chunk.

use crate::auth::Principal;
use crate::{ApiError, AppState};
use futures_util::{Stream, StreamExt};
use gleitzeit_core::events::{self, Cursor, Event};
use gleitzeit_core::{ErrorCode, GzError};
use serde::Deserialize;
use std::collections::HashSet;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

/// Which events a client wants.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct EventQuery {
    /// Only events of this workflow (full id).
    pub workflow_id: Option<String>,
    /// Comma-separated event types, e.g. `task_completed,workflow_failed`.
    pub types: Option<String>,
    /// Start after this event id (same as the `Last-Event-ID` header): a
    /// sequence number, or `SEQ.INDEX` for a token inside a stored chunk.
    /// Without it the stream starts with the next event. `since` is the same.
    #[serde(alias = "since")]
    #[param(value_type = Option<String>)]
    pub after: Option<String>,
    /// A one-time stream ticket (`POST /api/v1/stream-tickets`), for clients
    /// that cannot send headers (browsers' EventSource and WebSocket). Keys
    /// are never accepted in URLs (GZ4007).
    // Redeemed by the auth middleware before any handler runs; the field is
    // here so the OpenAPI document lists it with the stream's parameters.
    #[allow(dead_code)]
    pub ticket: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub workflow_id: Option<String>,
    pub types: Option<HashSet<String>>,
    /// Only events of workflows this user submitted.
    pub owner: Option<String>,
}

/// Parses a resume id (`after`, `since`, `Last-Event-ID`).
pub fn parse_after(id: Option<&str>) -> Result<Option<Cursor>, GzError> {
    match id {
        None => Ok(None),
        Some(id) if id.trim().is_empty() => Ok(None),
        Some(id) => Cursor::parse(id).map(Some).ok_or_else(|| {
            GzError::new(
                ErrorCode::InvalidArgument,
                format!("`{id}` is not an event id (a whole number, or SEQ.INDEX for a token)"),
            )
        }),
    }
}

/// An event as WebSocket and Socket.IO clients get it: its JSON plus `id`,
/// the value to resume from.
pub fn with_id(event: &Event) -> serde_json::Value {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("id".into(), serde_json::Value::String(event.id()));
    }
    value
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
            && self.types.as_ref().is_none_or(|t| t.contains(event.kind()))
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
    after: Option<Cursor>,
) -> impl Stream<Item = Result<Event, GzError>> + Send {
    async_stream::try_stream! {
        // Subscribe before reading history so nothing falls between the two.
        let mut live = state.runtime.subscribe();
        let store = state.runtime.store().clone();
        let mut last = match after {
            Some(cursor) => cursor,
            None => Cursor::after_seq(store.latest_event_seq().await?),
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
                // everything up to `head` is then known to be seen. A chunk
                // read part-way is read again from its start and its seen
                // tokens skipped.
                let head = store.latest_event_seq().await?;
                let workflow = filter.workflow_id.as_deref();
                let page_size = state.runtime.limits().max_events_page.max(1);
                loop {
                    // A stream limited to its caller's workflows reads only
                    // theirs, never everyone's history.
                    let page = match (workflow, filter.owner.as_deref()) {
                        (None, Some(owner)) => {
                            let page = store.events_submitted_by(owner, last.done, page_size).await?;
                            // Theirs by construction: no record read to ask.
                            for event in &page {
                                owners.insert(event.workflow_id.clone(), true);
                            }
                            page
                        }
                        _ => store.events(workflow, last.done, page_size).await?,
                    };
                    let full = page.len() == page_size;
                    for event in events::expand_all(page) {
                        if !last.is_before(&event) {
                            continue;
                        }
                        last = event.cursor();
                        if filter.matches(&event) && visible(&filter, &mut owners, store.as_ref(), &event).await? {
                            yield event;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                if head > last.done {
                    last = Cursor::after_seq(head);
                }
                catch_up = false;
            }
            let received = tokio::select! {
                _ = state.stopping.cancelled() => break,
                received = live.recv() => Some(received),
                _ = poll.tick() => None,
            };
            let Some(received) = received else {
                let head = store.latest_event_seq().await?;
                catch_up = head > last.done;
                continue;
            };
            match received {
                Ok(event) if !last.is_before(&event) => {}
                Ok(event) if last.is_next(&event) => {
                    last = event.cursor();
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

/// How often an open stream checks that its key still works, besides the
/// nudge it gets when this server's auth API revokes or disables something
/// (the local CLI may change the database directly, and other servers may
/// share it).
const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolves when the stream's principal stops holding — its key revoked or
/// expired, its user disabled — with the error to close the stream with.
/// Never resolves for a principal without a key (no-auth mode).
pub async fn lapsed(state: AppState, principal: Principal) -> ApiError {
    if principal.key_hash.is_none() {
        return std::future::pending().await;
    }
    let mut changed = state.auth_changed.subscribe();
    let mut tick = tokio::time::interval(RECHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The key's expiry is a deadline of its own, so an expiring key ends
        // its streams on time even between ticks. Capped, so that keys that
        // expire in years do not overflow the timer.
        let until_expiry = principal.expires_ms.map(|at| {
            let ms = (at - gleitzeit_store::now_ms()).clamp(0, 86_400_000);
            std::time::Duration::from_millis(ms as u64)
        });
        let expiry = async {
            match until_expiry {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            _ = expiry => {}
            changed = changed.changed() => {
                if changed.is_err() {
                    // The server is going away; its streams end with it.
                    return std::future::pending().await;
                }
            }
        }
        match crate::auth::recheck(state.runtime.store().as_ref(), &principal).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return error,
            // A store that cannot answer now says nothing about the key: the
            // stream stays and asks again.
            Err(error) => tracing::warn!("cannot re-check a stream's key: {error}"),
        }
    }
}

/// `events`, ended by [`lapsed`]: the last item is then the error that says
/// why, which every transport turns into its way of closing (an SSE `error`
/// event, a WebSocket close frame, a Socket.IO `error` and disconnect).
pub fn guarded(
    state: AppState,
    principal: Principal,
    events: impl Stream<Item = Result<Event, GzError>> + Send,
) -> impl Stream<Item = Result<Event, GzError>> + Send {
    async_stream::stream! {
        let lapse = lapsed(state, principal);
        let mut lapse = std::pin::pin!(lapse);
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                error = &mut lapse => {
                    yield Err(error.error);
                    break;
                }
                item = events.next() => match item {
                    Some(item) => yield item,
                    None => break,
                },
            }
        }
    }
}

/// Whether an error ends a stream because its credentials stopped holding.
pub fn is_lapse(error: &GzError) -> bool {
    matches!(
        error.code,
        ErrorCode::InvalidApiKey | ErrorCode::TokenExpired
    )
}
