//! Socket.IO for clients written against the earlier, Socket.IO-based
//! Gleitzeit (`socket.on('task_completed', …)`). Each event is emitted under
//! its type with the event as payload. A client chooses what it gets in the
//! connect `auth` payload or later with a `subscribe` message:
//! `{workflow_id?, types? ("a,b" or ["a","b"]), after?}`; without either it
//! receives every event from the moment it connected.

use crate::stream::{self, EventQuery, Filter};
use crate::AppState;
use futures_util::StreamExt;
use serde_json::{json, Value};
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SendError, SocketIo};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) fn layer(state: AppState) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder().max_buffer_size(1024).build_layer();
    io.ns(
        "/",
        move |socket: SocketRef, TryData(auth): TryData<Value>| {
            let state = state.clone();
            async move { connected(state, socket, auth.unwrap_or(Value::Null)) }
        },
    );
    layer
}

/// Accepts `types` as a comma-separated string or a list.
fn query_from(value: &Value) -> EventQuery {
    let types = match value.get("types") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    };
    EventQuery {
        workflow_id: value
            .get("workflow_id")
            .and_then(Value::as_str)
            .map(String::from),
        types,
        after: value.get("after").and_then(Value::as_u64),
    }
}

fn connected(state: AppState, socket: SocketRef, auth: Value) {
    let current: Arc<Mutex<Option<CancellationToken>>> = Arc::default();
    subscribe(&state, &socket, &current, &auth);
    {
        let state = state.clone();
        let current = current.clone();
        socket.on(
            "subscribe",
            move |socket: SocketRef, TryData(data): TryData<Value>| {
                let state = state.clone();
                let current = current.clone();
                async move {
                    subscribe(&state, &socket, &current, &data.unwrap_or(Value::Null));
                }
            },
        );
    }
    socket.on_disconnect(move || {
        let current = current.clone();
        async move {
            if let Some(stop) = current.lock().unwrap_or_else(|p| p.into_inner()).take() {
                stop.cancel();
            }
        }
    });
}

/// Replaces the socket's subscription.
fn subscribe(
    state: &AppState,
    socket: &SocketRef,
    current: &Arc<Mutex<Option<CancellationToken>>>,
    request: &Value,
) {
    let query = query_from(request);
    let filter = match Filter::from_query(&query) {
        Ok(filter) => filter,
        Err(error) => {
            let _ = socket.emit("error", &crate::ApiError::from(error).body());
            return;
        }
    };
    let stop = CancellationToken::new();
    if let Some(previous) = current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(stop.clone())
    {
        previous.cancel();
    }
    let _ = socket.emit(
        "subscribed",
        &json!({"workflow_id": filter.workflow_id, "types": query.types, "after": query.after}),
    );
    tokio::spawn(pump(
        state.clone(),
        socket.clone(),
        filter,
        query.after,
        stop,
    ));
}

async fn pump(
    state: AppState,
    socket: SocketRef,
    filter: Filter,
    after: Option<u64>,
    stop: CancellationToken,
) {
    let events = stream::events(state, filter, after);
    let mut events = std::pin::pin!(events);
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return,
            item = events.next() => item,
        };
        let Some(item) = item else { return };
        let (name, payload) = match item {
            Ok(event) => (event.kind.clone(), json!(event)),
            Err(error) => (
                "error".to_string(),
                json!(crate::ApiError::from(error).body()),
            ),
        };
        // A full socket buffer means the client reads slowly: wait for it
        // here, where only this subscription waits (the stream reads the
        // store meanwhile, never the runtime).
        loop {
            match socket.emit(&name, &payload) {
                Ok(()) => break,
                Err(SendError::Socket(socketioxide::SocketError::InternalChannelFull)) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
                Err(_) => return,
            }
        }
    }
}
