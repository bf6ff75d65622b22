//! Socket.IO for clients written against the earlier, Socket.IO-based
//! Gleitzeit (`socket.on('task_completed', …)`). Each event is emitted under
//! its type with the event as payload, its fields flat beside the envelope as
//! the earlier clients read them. A client chooses what it gets in the
//! connect `auth` payload or later with a `subscribe` message:
//! `{workflow_id?, types? ("a,b" or ["a","b"]), after?}`; without either it
//! receives every event from the moment it connected.

use crate::auth::Principal;
use crate::stream::{self, EventQuery, Filter};
use crate::AppState;
use futures_util::StreamExt;
use gleitzeit_auth::roles::Reach;
use gleitzeit_auth::Permission;
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
            async move {
                let auth = auth.unwrap_or(Value::Null);
                match principal(&state, &socket, &auth).await {
                    Ok(principal) => connected(state, socket, auth, principal),
                    Err(error) => {
                        // Told why, then let go.
                        let _ = socket.emit("error", &error.body());
                        let _ = socket.disconnect();
                    }
                }
            }
        },
    );
    layer
}

/// The connecting client: from `auth: {api_key}` or the handshake's headers,
/// through the same path (limiter, audit log) as every HTTP request.
async fn principal(
    state: &AppState,
    socket: &SocketRef,
    auth: &Value,
) -> Result<Principal, crate::ApiError> {
    if !state.config.auth_required {
        return Ok(Principal::unauthenticated());
    }
    let parts = socket.req_parts();
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let client =
        crate::auth::client_address(peer, &parts.headers, state.config.trusted_proxy.as_ref());
    let key = auth
        .get("api_key")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| crate::auth::presented_key(&parts.headers));
    let Some(key) = key else {
        let mut error = crate::ApiError::new(
            gleitzeit_core::ErrorCode::AuthRequired,
            "this server needs an API key (auth: {api_key: \"gzt_…\"})",
        );
        error.status = axum::http::StatusCode::UNAUTHORIZED;
        return Err(error);
    };
    let principal = crate::auth::verify(
        state,
        crate::auth::Credential::Key(key),
        client,
        "/socket.io/",
    )
    .await?;
    if principal.reach(Permission::ReadEvents) == Reach::None {
        return Err(crate::ApiError::new(
            gleitzeit_core::ErrorCode::PermissionDenied,
            "this key may not follow events",
        ));
    }
    Ok(principal)
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
        after: match value.get("after").or_else(|| value.get("since")) {
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        },
        ticket: None,
    }
}

fn connected(state: AppState, socket: SocketRef, auth: Value, principal: Principal) {
    let current: Arc<Mutex<Option<CancellationToken>>> = Arc::default();
    let owner = principal.owner_filter(Permission::ReadEvents);
    // The connection lives only as long as its key does: revoked, expired or
    // its user disabled, the client is told the code and let go.
    let watch = CancellationToken::new();
    {
        let state = state.clone();
        let socket = socket.clone();
        let watch = watch.clone();
        let current = current.clone();
        tokio::spawn(async move {
            let error = tokio::select! {
                _ = watch.cancelled() => return,
                error = crate::stream::lapsed(state, principal) => error,
            };
            if let Some(stop) = current.lock().unwrap_or_else(|p| p.into_inner()).take() {
                stop.cancel();
            }
            let _ = socket.emit("error", &error.body());
            let _ = socket.disconnect();
        });
    }
    subscribe(&state, &socket, &current, &auth, &owner);
    {
        let state = state.clone();
        let current = current.clone();
        socket.on(
            "subscribe",
            move |socket: SocketRef, TryData(data): TryData<Value>| {
                let state = state.clone();
                let current = current.clone();
                let owner = owner.clone();
                async move {
                    subscribe(
                        &state,
                        &socket,
                        &current,
                        &data.unwrap_or(Value::Null),
                        &owner,
                    );
                }
            },
        );
    }
    socket.on_disconnect(move || {
        let current = current.clone();
        let watch = watch.clone();
        async move {
            watch.cancel();
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
    owner: &Option<String>,
) {
    let query = query_from(request);
    let mut filter = match Filter::from_query(&query) {
        Ok(filter) => filter,
        Err(error) => {
            let _ = socket.emit("error", &crate::ApiError::from(error).body());
            return;
        }
    };
    filter.owner = owner.clone();
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
    let after = match stream::parse_after(query.after.as_deref()) {
        Ok(after) => after,
        Err(error) => {
            let _ = socket.emit("error", &json!(crate::ApiError::from(error).body()));
            return;
        }
    };
    tokio::spawn(pump(state.clone(), socket.clone(), filter, after, stop));
}

/// Seed 000's handlers read an event's fields at the top
/// (`event['task_name']`, `event['task_results']`): the payload's fields go
/// beside the envelope (`seq`, `type`, `workflow_id`, `at_ms`, `id`), which
/// wins a clash. `data` stays too, for clients that read it there.
fn flat(mut event: Value) -> Value {
    if let Value::Object(map) = &mut event {
        if let Some(Value::Object(data)) = map.get("data").cloned() {
            for (key, value) in data {
                map.entry(key).or_insert(value);
            }
        }
    }
    event
}

async fn pump(
    state: AppState,
    socket: SocketRef,
    filter: Filter,
    after: Option<gleitzeit_core::events::Cursor>,
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
            Ok(event) => (event.type_name().to_string(), flat(stream::with_id(&event))),
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

#[cfg(test)]
mod tests {
    use super::flat;
    use serde_json::json;

    #[test]
    fn payload_fields_sit_beside_the_envelope_which_wins_a_clash() {
        let event = json!({"seq": 4, "type": "task_completed", "workflow_id": "wf_1",
            "data": {"task_name": "A", "result": 2, "seq": 99}});
        let flat = flat(event);
        assert_eq!(flat["task_name"], "A");
        assert_eq!(flat["result"], 2);
        assert_eq!(flat["seq"], 4);
        assert_eq!(flat["data"]["task_name"], "A");
    }
}
