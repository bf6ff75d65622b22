//! REST handlers under `/api/v1`. Each handler's `#[utoipa::path]` is the
//! source of `/api/v1/openapi.json`; the router is built from the same list,
//! so an API route without documentation cannot exist. The routes outside it
//! are `/health` (an alias of `/api/v1/health`), the document itself, and the
//! web dashboard's files (`/` and `/dashboard/…`, which are not an API).

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::shared::{bad_query, body_bytes, visible_workflow};
use crate::stream::{self, EventQuery, Filter};
use crate::{health, AppState};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use gleitzeit_api::health::{HealthAnswer, HealthSummary};
use gleitzeit_api::stats::{Stats, StatsQuery};
use gleitzeit_api::system::{ErrorList, FunctionList, NodeList, NodeView, ProviderList};
use gleitzeit_api::views::WorkflowView;
use gleitzeit_api::workflows::{
    EventHead, EventPage, HeadQuery, HistoryQuery, ListQuery, StateResponse, StreamTicket,
    SubmitResponse, TaskDetail, TaskFromFile, WorkflowList,
};
use gleitzeit_auth::Permission;
use gleitzeit_core::{parse, ErrorCode, GzError, WorkflowState};
use gleitzeit_store::ListFilter;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gleitzeit API",
        description = "Submit and follow LLM workflows. Errors are `{code, message, hint}` with a stable GZ code."
    ),
    tags(
        (name = "workflows", description = "Submit, list, inspect, cancel and resume workflows"),
        (name = "schedules", description = "Schedules (cron, intervals) and webhooks that start workflows by themselves"),
        (name = "events", description = "Live events: SSE, WebSocket (and Socket.IO at /socket.io/)"),
        (name = "system", description = "Health, metrics, providers, functions and the error registry"),
        (name = "auth", description = "The caller, users, API keys and the audit log")
    )
)]
struct ApiDoc;

/// Every documented route; the router serves them and the document lists them.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(submit_workflow, list_workflows))
        .routes(routes!(get_workflow))
        .routes(routes!(cancel_workflow))
        .routes(routes!(resume_workflow))
        .routes(routes!(get_task))
        .routes(routes!(workflow_events))
        .routes(routes!(events_sse))
        .routes(routes!(events_head))
        .routes(routes!(events_ws))
        .routes(routes!(create_stream_ticket))
        .routes(routes!(
            crate::schedules::add_schedule,
            crate::schedules::list_schedules
        ))
        .routes(routes!(
            crate::schedules::get_schedule,
            crate::schedules::remove_schedule
        ))
        .routes(routes!(crate::schedules::pause_schedule))
        .routes(routes!(crate::schedules::resume_schedule))
        .routes(routes!(crate::schedules::run_now))
        .routes(routes!(crate::schedules::backfill))
        .routes(routes!(crate::schedules::call_hook))
        .routes(routes!(stats))
        .routes(routes!(list_providers))
        .routes(routes!(list_nodes))
        .routes(routes!(list_functions))
        .routes(routes!(show_function))
        .routes(routes!(list_errors))
        .routes(routes!(show_error))
        .routes(routes!(health_check))
        .routes(routes!(metrics))
        .routes(routes!(crate::auth_api::whoami))
        .routes(routes!(
            crate::auth_api::list_users,
            crate::auth_api::create_user
        ))
        .routes(routes!(crate::auth_api::disable_user))
        .routes(routes!(
            crate::auth_api::list_keys,
            crate::auth_api::create_key
        ))
        .routes(routes!(crate::auth_api::revoke_key))
        .routes(routes!(crate::auth_api::audit_log))
}

/// The OpenAPI document `/api/v1/openapi.json` serves (and `docs/openapi.json`
/// holds).
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes().split_for_parts().1
}

pub(crate) fn router(state: AppState) -> Router {
    let (router, openapi) = documented_routes().split_for_parts();
    let openapi = Arc::new(openapi);
    let socketio = crate::socketio::layer(state.clone());
    router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .route("/health", get(health_check))
        .route("/", get(crate::dashboard::index))
        .route("/dashboard/{file}", get(crate::dashboard::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        .layer(axum::middleware::map_response(json_rejections))
        .layer(socketio)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
}

/// axum answers extractor rejections (a path segment that is not UTF-8, a
/// WebSocket request without an upgrade, …) with plain text; clients get the
/// same JSON error shape as from every handler.
async fn json_rejections(response: Response) -> Response {
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !response.status().is_client_error() || !plain {
        return response;
    }
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut error = ApiError::new(ErrorCode::MalformedRequest, text);
    error.status = status;
    error.into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, "no such API endpoint")
}

async fn method_not_allowed() -> ApiError {
    let mut error = ApiError::new(
        ErrorCode::MalformedRequest,
        "this endpoint does not accept that HTTP method",
    );
    error.status = StatusCode::METHOD_NOT_ALLOWED;
    error
}

// ---------------------------------------------------------------- workflows

/// Submit a workflow.
///
/// The body is the workflow file itself, YAML or JSON (never a path: the
/// server reads no files for clients). Inputs are overridden with repeated
/// `input=key=value` query parameters, as `--input` does on the command line.
#[utoipa::path(
    post,
    path = "/api/v1/workflows",
    tag = "workflows",
    request_body(content = String, description = "Workflow file (YAML or JSON)", content_type = "application/yaml"),
    params(("input" = Option<Vec<String>>, Query, description = "Input override `key=value`; repeatable")),
    responses(
        (status = 201, description = "Stored and started", body = SubmitResponse),
        (status = 400, description = "Malformed request or input", body = ErrorBody),
        (status = 403, description = "A task's method is outside the caller's role (GZ4003)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Workflow invalid; `diagnostics` lists every problem", body = ErrorBody),
        (status = 503, description = "Server is shutting down", body = ErrorBody)
    )
)]
async fn submit_workflow(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let body = body_bytes(body, state.config.max_body_bytes)?;
    if state.runtime.is_draining() {
        return Err(ApiError::new(
            ErrorCode::ServerShuttingDown,
            "the server is shutting down",
        ));
    }
    let mut overrides = Map::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "input" => {
                let (k, v) = parse::parse_input_override(&value)?;
                overrides.insert(k, v);
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!("unknown query parameter `{other}`"),
                )
                .with_hint("Submit takes only `input=key=value` (repeatable)."))
            }
        }
    }
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            ErrorCode::MalformedRequest,
            "request body is not UTF-8 text",
        )
        .with_hint("Send the workflow file's text (YAML or JSON) as the body.")
    })?;
    // Parsing and validating a big workflow takes CPU time proportional to
    // it; done on the blocking pool, it never holds up other requests.
    let text = text.to_string();
    let parser = state.clone();
    let mut workflow = tokio::task::spawn_blocking(move || {
        parse::load_with(
            &text,
            "request",
            parser.runtime.registry(),
            &overrides,
            &parse::NoIncludes,
            parser.runtime.limits(),
        )
    })
    .await
    .map_err(|e| {
        ApiError::new(
            ErrorCode::InternalError,
            format!("validating the workflow stopped: {e}"),
        )
    })?
    .map_err(ApiError::invalid_workflow)?;
    state.config.policy.admit(principal.role, &mut workflow)?;
    let name = workflow.name.clone();
    let total_tasks = workflow.tasks.len();
    let id = state
        .runtime
        .submit_as(workflow, None, principal.submitter())
        .await?;
    state.runs.start(&id)?;
    let links = BTreeMap::from([
        ("workflow".to_string(), format!("/api/v1/workflows/{id}")),
        (
            "events".to_string(),
            format!("/api/v1/events?workflow_id={id}&after=0"),
        ),
    ]);
    Ok((
        StatusCode::CREATED,
        Json(SubmitResponse {
            workflow_id: id,
            name,
            state: WorkflowState::Pending.as_str().to_string(),
            total_tasks,
            links,
        }),
    ))
}

/// List workflows, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/workflows",
    tag = "workflows",
    params(ListQuery),
    responses(
        (status = 200, body = WorkflowList),
        (status = 400, body = ErrorBody)
    )
)]
async fn list_workflows(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<WorkflowList>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let filter_state = match query.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            WorkflowState::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidArgument, format!("unknown state `{s}`"))
                    .with_hint("States: pending, running, completed, failed, cancelled.")
            })?,
        ),
    };
    // A schedule id or prefix, among the schedules the caller reaches; the
    // full id of a removed schedule still lists its runs (the owner filter
    // below keeps them to the caller's).
    let schedule = match query.schedule.as_deref().filter(|s| !s.is_empty()) {
        Some(id) => Some(
            match crate::schedules::visible_schedule(
                &state,
                &principal,
                id,
                Permission::ReadWorkflows,
            )
            .await
            {
                Ok(found) => found.id,
                Err(e) if e.error.code == ErrorCode::ScheduleNotFound => id.to_string(),
                Err(e) => return Err(e),
            },
        ),
        None => None,
    };
    let limit = query.limit.unwrap_or(20).clamp(1, 1000);
    let offset = query.offset.unwrap_or(0);
    let workflows = state
        .runtime
        .store()
        .list_workflows(&ListFilter {
            state: filter_state,
            submitted_by: principal.owner_filter(Permission::ReadWorkflows),
            limit,
            offset,
            schedule,
        })
        .await
        .map_err(GzError::from)?;
    Ok(Json(WorkflowList {
        workflows: workflows.into_iter().map(Into::into).collect(),
        limit,
        offset,
    }))
}

/// One workflow with its tasks, states, results, timings and token usage.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}",
    tag = "workflows",
    params(("id" = String, Path, description = "Workflow id or a unique prefix")),
    responses((status = 200, body = WorkflowView), (status = 404, body = ErrorBody))
)]
async fn get_workflow(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let store = state.runtime.store();
    let record = visible_workflow(&state, &principal, &id, Permission::ReadWorkflows).await?;
    let tasks = store.tasks(&record.id).await?;
    Ok(Json(WorkflowView::new(&record, &tasks)))
}

/// Cancel a workflow. Tasks in flight are stopped; the answer shows the state
/// after the run recorded the cancellation (or `cancel_requested` when another
/// process runs it), and `was_terminal` when it had finished before.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/cancel",
    tag = "workflows",
    params(("id" = String, Path, description = "Workflow id or a unique prefix")),
    responses((status = 200, body = StateResponse), (status = 404, body = ErrorBody))
)]
async fn cancel_workflow(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<StateResponse>, ApiError> {
    let found = visible_workflow(&state, &principal, &id, Permission::CancelWorkflows).await?;
    let was_terminal = found.state.is_terminal();
    let record = state.runs.cancel(&found.id).await?;
    crate::auth::audit(
        state.runtime.store().as_ref(),
        Some(&principal.user),
        "workflow.cancel",
        Some(&record.id),
        record.state.as_str(),
        None,
    )
    .await;
    Ok(Json(StateResponse {
        workflow_id: record.id,
        state: record.state.as_str().to_string(),
        cancel_requested: record.cancel_requested,
        was_terminal,
    }))
}

/// Resume an interrupted workflow; completed tasks are kept.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/resume",
    tag = "workflows",
    params(("id" = String, Path, description = "Workflow id or a unique prefix")),
    responses(
        (status = 202, body = StateResponse),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Finished, or running already", body = ErrorBody)
    )
)]
async fn resume_workflow(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<StateResponse>), ApiError> {
    let found = visible_workflow(&state, &principal, &id, Permission::CancelWorkflows).await?;
    let record = state.runs.resume(&found.id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StateResponse {
            workflow_id: record.id,
            state: WorkflowState::Running.as_str().to_string(),
            cancel_requested: false,
            was_terminal: false,
        }),
    ))
}

/// One task: state, attempts, timings, its full result record and error, and
/// from the workflow file its `parameters` (references unresolved),
/// `dependencies`, `retry` policy and `timeout`.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}/tasks/{task_id}",
    tag = "workflows",
    params(
        ("id" = String, Path, description = "Workflow id or a unique prefix"),
        ("task_id" = String, Path, description = "Task id as in the workflow file")
    ),
    responses((status = 200, body = TaskDetail), (status = 404, body = ErrorBody))
)]
async fn get_task(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, task_id)): Path<(String, String)>,
) -> Result<Json<TaskDetail>, ApiError> {
    let store = state.runtime.store();
    let record = visible_workflow(&state, &principal, &id, Permission::ReadWorkflows).await?;
    let tasks = store.tasks(&record.id).await?;
    let task = tasks.iter().find(|t| t.task_id == task_id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::TaskNotFound,
            format!("workflow {} has no task `{task_id}`", record.id),
        )
    })?;
    let mut view = gleitzeit_api::views::TaskView::new(task);
    // What the file asked for, so a task can be understood without its YAML:
    // parameters as written (references unresolved) and the retry policy
    // the attempt count is measured against.
    let spec = record.spec.tasks.iter().find(|s| s.id == task.task_id);
    if let Some(spec) = spec {
        view.dependencies = spec.dependencies.clone();
    }
    Ok(Json(TaskDetail {
        task: view,
        workflow_id: record.id.clone(),
        spec: spec.map(TaskFromFile::new),
    }))
}

/// A workflow's stored events (its log), oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}/events",
    tag = "events",
    params(("id" = String, Path, description = "Workflow id or a unique prefix"), HistoryQuery),
    responses((status = 200, body = EventPage), (status = 404, body = ErrorBody))
)]
async fn workflow_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let store = state.runtime.store();
    let record = visible_workflow(&state, &principal, &id, Permission::ReadEvents).await?;
    let filter = Filter::from_query(&EventQuery {
        workflow_id: Some(record.id.clone()),
        types: query.types,
        after: None,
        ticket: None,
    })?;
    let after = query.after.unwrap_or(0);
    let most = state.runtime.limits().max_events_page.max(1);
    let limit = query.limit.unwrap_or(most).clamp(1, most);
    let page = store.events(Some(&record.id), after, limit).await?;
    let next_after = page.last().map_or(after, |e| e.seq);
    Ok(Json(EventPage {
        events: gleitzeit_core::events::expand_all(page)
            .into_iter()
            .filter(|e| filter.matches(e))
            .collect(),
        next_after,
    }))
}

// ------------------------------------------------------------------- events

fn resume_point(
    query: &EventQuery,
    headers: &HeaderMap,
) -> Result<Option<gleitzeit_core::events::Cursor>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(stream::parse_after(query.after.as_deref())?),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(gleitzeit_core::events::Cursor::parse)
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MalformedRequest,
                    "Last-Event-ID must be an event id (a whole number, or SEQ.INDEX for a token)",
                )
            }),
    }
}

fn event_stream(
    state: AppState,
    principal: &Principal,
    query: EventQuery,
    headers: &HeaderMap,
) -> Result<impl Stream<Item = Result<gleitzeit_core::events::Event, GzError>>, ApiError> {
    let mut filter = Filter::from_query(&query)?;
    filter.owner = principal.owner_filter(Permission::ReadEvents);
    let after = resume_point(&query, headers)?;
    let events = stream::events(state.clone(), filter, after);
    Ok(stream::guarded(state, principal.clone(), events))
}

/// Live events as Server-Sent Events.
///
/// Each message has `id` (the event's sequence number; `SEQ.INDEX` for a
/// streamed token inside a stored chunk), `event` (its type) and `data` (the
/// event as JSON). Reconnecting with `Last-Event-ID` (or `after`) resumes
/// exactly after that event: nothing is lost or repeated. When the key is
/// revoked, expires or its user is disabled, the stream ends with an `error`
/// event carrying the code (GZ4004, GZ4002).
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(EventQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "text/event-stream of events", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody)
    )
)]
async fn events_sse(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let events = event_stream(state, &principal, query, &headers)?;
    let sse = events.map(|item| match item {
        Ok(event) => Ok::<_, std::convert::Infallible>(
            SseEvent::default()
                .id(event.id())
                .event(event.type_name())
                .json_data(&event)
                .unwrap_or_default(),
        ),
        Err(error) => Ok(SseEvent::default()
            .event("error")
            .json_data(ApiError::from(error).body())
            .unwrap_or_default()),
    });
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The newest event id the caller may see — of one workflow, or of all the
/// caller reaches: where a stream that wants "from now on" starts, or how
/// far a client is behind. A caller who sees only their own workflows learns
/// nothing about anyone else's activity from it.
#[utoipa::path(
    get,
    path = "/api/v1/events/head",
    tag = "events",
    params(HeadQuery),
    responses((status = 200, body = EventHead), (status = 404, body = ErrorBody))
)]
async fn events_head(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<HeadQuery>, QueryRejection>,
) -> Result<Json<EventHead>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let store = state.runtime.store();
    let seq = match (
        query.workflow_id.filter(|w| !w.is_empty()),
        principal.owner_filter(Permission::ReadEvents),
    ) {
        (Some(id), _) => {
            let record = visible_workflow(&state, &principal, &id, Permission::ReadEvents).await?;
            store.latest_event_seq_of(&record.id).await?
        }
        (None, None) => store.latest_event_seq().await?,
        (None, Some(user)) => {
            let mine = store
                .list_workflows(&ListFilter {
                    state: None,
                    submitted_by: Some(user),
                    limit: 0,
                    offset: 0,
                    schedule: None,
                })
                .await?;
            let mut newest = 0;
            for workflow in mine {
                newest = newest.max(store.latest_event_seq_of(&workflow.id).await?);
            }
            newest
        }
    };
    Ok(Json(EventHead {
        latest_event_seq: seq,
    }))
}

/// A one-time ticket to open one event stream (SSE or WebSocket) as the
/// caller, for clients that cannot send an Authorization header (browsers'
/// EventSource and WebSocket). Keys in URLs are refused (GZ4007) because
/// proxies log URLs; a ticket is worthless once used or after 30 seconds.
#[utoipa::path(
    post,
    path = "/api/v1/stream-tickets",
    tag = "events",
    responses(
        (status = 201, body = StreamTicket),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)
    )
)]
async fn create_stream_ticket(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<(StatusCode, Json<StreamTicket>), ApiError> {
    let ticket = state.tickets.issue(&principal)?;
    Ok((
        StatusCode::CREATED,
        Json(StreamTicket {
            ticket,
            expires_in: crate::auth::TICKET_TTL.as_secs(),
        }),
    ))
}

/// Live events over a WebSocket: one JSON text frame per event, with its `id`.
/// Same query parameters as the SSE stream; reconnect with `after` (or
/// `since`) set to the last `id` to resume.
#[utoipa::path(
    get,
    path = "/api/v1/ws",
    tag = "events",
    params(EventQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = ErrorBody)
    )
)]
async fn events_ws(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    query: Result<Query<EventQuery>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let events = event_stream(state, &principal, query, &headers)?;
    Ok(upgrade.on_upgrade(move |socket| forward_to_socket(socket, events)))
}

/// A WebSocket close frame for an error: application close codes are
/// 4000–4999, so a GZ4xxx code is its own close code (GZ4004 → 4004).
fn close_frame(error: &GzError) -> axum::extract::ws::CloseFrame {
    let number = error.code as u16;
    axum::extract::ws::CloseFrame {
        code: if (4000..5000).contains(&number) {
            number
        } else {
            1011
        },
        // The reason must stay under 123 bytes: the code and a short text.
        reason: format!("{}: {}", error.code, error.message)
            .chars()
            .take(100)
            .collect::<String>()
            .into(),
    }
}

async fn forward_to_socket(
    mut socket: WebSocket,
    events: impl Stream<Item = Result<gleitzeit_core::events::Event, GzError>>,
) {
    let mut events = std::pin::pin!(events);
    loop {
        tokio::select! {
            item = events.next() => {
                let (text, close) = match item {
                    Some(Ok(event)) => (stream::with_id(&event).to_string(), None),
                    Some(Err(error)) => {
                        let close = stream::is_lapse(&error).then(|| close_frame(&error));
                        (json!({"type": "error", "error": ApiError::from(error).body()}).to_string(), close)
                    }
                    None => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
                if let Some(frame) = close {
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // Clients only listen; a close or a broken connection ends it.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

// ------------------------------------------------------------------- system

/// Counts by state, queue depth, and for the window: tasks finished, failure
/// rate, durations (p50/p95/max) per method, throughput and LLM tokens.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "system",
    params(StatsQuery),
    responses((status = 200, body = Stats), (status = 400, body = ErrorBody))
)]
async fn stats(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let range = query.range_minutes.unwrap_or(60).max(1);
    let store = state.runtime.store().as_ref();
    // Counts, rates and usage cover what the caller may read: everything, or
    // only their own workflows.
    Ok(Json(
        match principal.owner_filter(Permission::ReadWorkflows) {
            None => gleitzeit_api::stats::stats(store, range, state.runs.active_count()).await?,
            Some(user) => gleitzeit_api::stats::stats_of(store, &user, range).await?,
        },
    ))
}

/// Worker nodes (scale-out on the Redis backend): labels, capabilities, load
/// and last heartbeat. Empty when this server runs tasks in-process.
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    tag = "system",
    responses((status = 200, body = NodeList), (status = 503, body = ErrorBody))
)]
async fn list_nodes(State(state): State<AppState>) -> Result<Json<NodeList>, ApiError> {
    let nodes = match &state.config.cluster {
        Some(cluster) => cluster.nodes().await.map_err(GzError::from)?,
        None => Vec::new(),
    };
    Ok(Json(NodeList {
        scale_out: state.config.cluster.is_some(),
        nodes: nodes.into_iter().map(NodeView::from).collect(),
    }))
}

/// Providers and their methods; with `check=true` also each provider's health
/// (LLM endpoints are contacted).
#[utoipa::path(
    get,
    path = "/api/v1/providers",
    tag = "system",
    params(("check" = Option<bool>, Query, description = "Check health now")),
    responses((status = 200, body = ProviderList))
)]
async fn list_providers(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<ProviderList>, ApiError> {
    let check = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "check" && (v == "true" || v == "1"));
    Ok(Json(
        gleitzeit_runtime::health::providers(state.runtime.registry(), check).await,
    ))
}

/// Built-in functions (`function/NAME`) with their arguments.
#[utoipa::path(
    get,
    path = "/api/v1/functions",
    tag = "system",
    responses((status = 200, body = FunctionList))
)]
async fn list_functions() -> Json<FunctionList> {
    Json(FunctionList {
        functions: json!(gleitzeit_functions::all()),
    })
}

/// One built-in function.
#[utoipa::path(
    get,
    path = "/api/v1/functions/{name}",
    tag = "system",
    params(("name" = String, Path, description = "Function name")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody))
)]
async fn show_function(Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let function = gleitzeit_functions::find(&name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::FunctionNotFound,
            format!("no built-in function `{name}`"),
        )
    })?;
    Ok(Json(json!(function)))
}

/// The error code registry.
#[utoipa::path(
    get,
    path = "/api/v1/errors",
    tag = "system",
    responses((status = 200, body = ErrorList))
)]
async fn list_errors() -> Json<ErrorList> {
    Json(ErrorList {
        errors: json!(gleitzeit_core::errors::REGISTRY),
    })
}

/// One error code: meaning, severity, whether retryable, and what to do.
#[utoipa::path(
    get,
    path = "/api/v1/errors/{code}",
    tag = "system",
    params(("code" = String, Path, description = "Error code, e.g. GZ2011")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody))
)]
async fn show_error(Path(code): Path<String>) -> Result<Json<Value>, ApiError> {
    let found = ErrorCode::parse(&code).ok_or_else(|| {
        let mut error = ApiError::new(
            ErrorCode::InvalidArgument,
            format!("no error code `{code}` in the registry"),
        )
        .with_hint("GET /api/v1/errors lists every code.");
        error.status = StatusCode::NOT_FOUND;
        error
    })?;
    Ok(Json(json!(found.def())))
}

/// Health: `healthy`, `degraded` (a provider cannot work) or `unhealthy`
/// (store unreadable, shutting down; HTTP 503). Without a key the answer is
/// only `{"status": …}`; with a valid key it has reasons, counts, providers
/// and nodes. Provider checks (which contact LLM endpoints) run at most once
/// every 10 seconds, whoever asks how often.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "system",
    params(("quick" = Option<bool>, Query, description = "Skip the provider checks (store and server state only)")),
    responses(
        (status = 200, description = "healthy or degraded: a HealthReport, or without a key only `status` (a HealthSummary)", body = HealthAnswer),
        (status = 503, description = "unhealthy", body = HealthAnswer)
    )
)]
async fn health_check(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Response {
    let quick = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "quick" && (v == "true" || v == "1"));
    let report = health::report(&state, quick).await;
    let status = if report.status == health::HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let answer = if principal.anonymous {
        HealthAnswer::Summary(HealthSummary {
            status: report.status,
        })
    } else {
        HealthAnswer::from(report)
    };
    (status, Json(answer)).into_response()
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stats = state.runtime.store().stats().await.map_err(GzError::from)?;
    let text = state.metrics.render(
        &stats,
        state.runs.active_count(),
        state.ticker.counters().snapshot(),
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
