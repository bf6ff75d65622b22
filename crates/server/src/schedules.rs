//! Schedules and webhooks: registering a workflow's triggers, listing,
//! pausing, removing, run-now and backfill under `/api/v1/schedules`, and
//! `POST /api/v1/hooks/{name}`. The ticker that fires them runs in `serve`
//! (`lib.rs`); this server's way of starting a run is [`ServerStarter`].

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::runs::RunManager;
use crate::shared::body_bytes;
use crate::AppState;
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gleitzeit_api::schedules::{
    BackfillRequest, BackfillResponse, HookSecret, RunStarted, ScheduleAddResponse, ScheduleList,
    ScheduleView,
};
use gleitzeit_auth::roles::{Reach, Role};
use gleitzeit_auth::Permission;
use gleitzeit_core::triggers::{parse_time, trigger_from_flags, Timing, TriggerKind};
use gleitzeit_core::{parse, ErrorCode, GzError, Workflow};
use gleitzeit_runtime::schedules::{hash_secret, hook_name, register, RunStarter};
use gleitzeit_runtime::Runtime;
use gleitzeit_store::{find_schedule, now_ms, ScheduleRecord};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Largest webhook body; a hook's body is a handful of inputs.
pub(crate) const HOOK_MAX_BODY: usize = 256 * 1024;
/// Calls one hook accepts per window.
pub(crate) const HOOK_CALLS_PER_MINUTE: u32 = 60;
const HOOK_WINDOW: Duration = Duration::from_secs(60);
pub(crate) const HOOK_SECRET_HEADER: &str = "x-gleitzeit-hook-secret";

/// Starts a tick's run the way `POST /api/v1/workflows` does: stored, then
/// run in the background by this server.
pub(crate) struct ServerStarter {
    pub runtime: Runtime,
    pub runs: RunManager,
}

#[async_trait]
impl RunStarter for ServerStarter {
    async fn start(
        &self,
        workflow: Workflow,
        source: Option<String>,
        submitted_by: Option<String>,
    ) -> Result<String, GzError> {
        if self.runtime.is_draining() {
            return Err(GzError::new(
                ErrorCode::ServerShuttingDown,
                "the server is shutting down and starts no new work",
            ));
        }
        let id = self
            .runtime
            .submit_as(workflow, source, submitted_by)
            .await?;
        self.runs.start(&id)?;
        Ok(id)
    }

    async fn cancel(&self, workflow_id: &str) -> Result<(), GzError> {
        self.runs.cancel(workflow_id).await.map(drop)
    }
}

/// Calls per hook in the current window.
#[derive(Default)]
pub(crate) struct HookLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl HookLimiter {
    /// `Err(seconds to wait)` when the hook used up its window.
    fn admit(&self, hook: &str, limit: u32) -> Result<(), u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (since, _)| since.elapsed() < HOOK_WINDOW);
        }
        let entry = windows
            .entry(hook.to_string())
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= HOOK_WINDOW {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= limit {
            let left = HOOK_WINDOW.saturating_sub(entry.0.elapsed());
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// The schedule `id` names if the caller reaches it with `permission`;
/// another user's schedule answers exactly like a missing one.
pub(crate) async fn visible_schedule(
    state: &AppState,
    principal: &Principal,
    id: &str,
    permission: Permission,
) -> Result<ScheduleRecord, ApiError> {
    let store = state.runtime.store();
    let not_found = || ApiError::new(ErrorCode::ScheduleNotFound, format!("no schedule `{id}`"));
    match principal.reach(permission) {
        Reach::All => Ok(find_schedule(store.as_ref(), id).await?),
        Reach::Own => {
            let mine: Vec<ScheduleRecord> = store
                .schedules()
                .await?
                .into_iter()
                .filter(|s| s.submitted_by == principal.submitter())
                .filter(|s| s.id == id || (!id.is_empty() && s.id.starts_with(id)))
                .collect();
            match mine.len() {
                1 => Ok(mine.into_iter().next().ok_or_else(not_found)?),
                0 => Err(not_found()),
                _ => Err(ApiError::new(
                    ErrorCode::ScheduleNotFound,
                    format!("schedule id prefix `{id}` matches several schedules"),
                )
                .with_hint("Give more characters of the id.")),
            }
        }
        Reach::None => Err(not_found()),
    }
}

/// Changes a schedule by compare-and-set, re-reading it when a scheduler
/// advanced it meanwhile.
async fn update_schedule(
    state: &AppState,
    id: &str,
    change: impl Fn(&mut ScheduleRecord),
) -> Result<ScheduleRecord, ApiError> {
    let store = state.runtime.store();
    for _ in 0..16 {
        let Some(mut schedule) = store.schedule(id).await? else {
            return Err(ApiError::new(
                ErrorCode::ScheduleNotFound,
                format!("no schedule `{id}`"),
            ));
        };
        let version = schedule.version;
        change(&mut schedule);
        if store.put_schedule(&schedule, Some(version)).await? {
            schedule.version = version + 1;
            return Ok(schedule);
        }
    }
    Err(ApiError::new(
        ErrorCode::DatabaseLocked,
        format!("schedule {id} keeps changing; try again"),
    ))
}

/// Register the triggers of a workflow file.
///
/// The body is the workflow file (YAML or JSON). Without query parameters
/// its `triggers:` are registered, one schedule each; with `cron` (and
/// `tz`), `every` or `webhook` (plus `overlap`, `catchup`) only that one
/// trigger is. Each webhook's secret is in the answer, this once.
#[utoipa::path(
    post,
    path = "/api/v1/schedules",
    tag = "schedules",
    request_body(content = String, description = "Workflow file (YAML or JSON)", content_type = "application/yaml"),
    params(
        ("cron" = Option<String>, Query, description = "A cron expression instead of the file's triggers"),
        ("tz" = Option<String>, Query, description = "IANA time zone of `cron`"),
        ("every" = Option<String>, Query, description = "An interval such as 30s"),
        ("webhook" = Option<String>, Query, description = "A webhook name"),
        ("overlap" = Option<String>, Query, description = "skip, buffer_one, cancel_other or allow_all"),
        ("catchup" = Option<String>, Query, description = "Catch-up window after downtime, e.g. 1h")
    ),
    responses(
        (status = 201, body = ScheduleAddResponse),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, description = "Workflow or trigger invalid", body = ErrorBody)
    )
)]
pub(crate) async fn add_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ScheduleAddResponse>), ApiError> {
    let body = body_bytes(body, state.config.max_body_bytes)?;
    let mut flags: HashMap<String, String> = HashMap::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "cron" | "tz" | "every" | "webhook" | "overlap" | "catchup" => {
                flags.insert(key.into_owned(), value.into_owned());
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!("unknown query parameter `{other}`"),
                )
                .with_hint("Accepted: cron, tz, every, webhook, overlap, catchup."))
            }
        }
    }
    let flag = |k: &str| flags.get(k).map(String::as_str);
    let flagged = trigger_from_flags(
        flag("cron"),
        flag("tz"),
        flag("every"),
        flag("webhook"),
        flag("overlap"),
        flag("catchup"),
    )?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| {
            ApiError::new(
                ErrorCode::MalformedRequest,
                "request body is not UTF-8 text",
            )
        })?
        .to_string();
    let parser = state.clone();
    let mut workflow = tokio::task::spawn_blocking(move || {
        parse::load_with(
            &text,
            "request",
            parser.runtime.registry(),
            &Map::new(),
            &parse::NoIncludes,
            parser.runtime.limits(),
        )
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::InternalError, format!("validating stopped: {e}")))?
    .map_err(ApiError::invalid_workflow)?;
    state.config.policy.admit(principal.role, &mut workflow)?;
    let triggers = match flagged {
        Some(trigger) => vec![trigger],
        None => workflow.triggers.clone(),
    };
    if triggers
        .iter()
        .any(|t| matches!(t.kind, TriggerKind::Folder { .. }))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidTrigger,
            "folder triggers are not served by the server",
        )
        .with_hint("Watch a folder on the machine that has it: `gleitzeit watch-folder FILE`."));
    }
    let registered = register(
        state.runtime.store().as_ref(),
        &workflow,
        &triggers,
        None,
        principal.submitter(),
        now_ms(),
    )
    .await?;
    crate::auth::audit(
        state.runtime.store().as_ref(),
        Some(&principal.user),
        "schedule.add",
        Some(
            &registered
                .schedules
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        "ok",
        None,
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(ScheduleAddResponse {
            schedules: registered.schedules.iter().map(Into::into).collect(),
            hook_secrets: registered
                .hook_secrets
                .into_iter()
                .map(|(hook, secret)| HookSecret { hook, secret })
                .collect(),
        }),
    ))
}

/// List the schedules the caller reaches, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/schedules",
    tag = "schedules",
    responses((status = 200, body = ScheduleList))
)]
pub(crate) async fn list_schedules(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<ScheduleList>, ApiError> {
    let owner = principal.owner_filter(Permission::ReadWorkflows);
    let schedules = state
        .runtime
        .store()
        .schedules()
        .await?
        .iter()
        .filter(|s| owner.is_none() || s.submitted_by == owner)
        .map(Into::into)
        .collect();
    Ok(Json(ScheduleList { schedules }))
}

/// One schedule with its next and last fire and its counts.
#[utoipa::path(
    get,
    path = "/api/v1/schedules/{id}",
    tag = "schedules",
    params(("id" = String, Path, description = "Schedule id or a unique prefix")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody))
)]
pub(crate) async fn get_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let schedule = visible_schedule(&state, &principal, &id, Permission::ReadWorkflows).await?;
    Ok(Json((&schedule).into()))
}

/// Remove a schedule. Runs it started are kept.
#[utoipa::path(
    delete,
    path = "/api/v1/schedules/{id}",
    tag = "schedules",
    params(("id" = String, Path, description = "Schedule id or a unique prefix")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody))
)]
pub(crate) async fn remove_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let schedule = visible_schedule(&state, &principal, &id, Permission::SubmitWorkflow).await?;
    state.runtime.store().delete_schedule(&schedule.id).await?;
    Ok(Json((&schedule).into()))
}

/// Pause a schedule: no tick fires until it is resumed.
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{id}/pause",
    tag = "schedules",
    params(("id" = String, Path, description = "Schedule id or a unique prefix")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody))
)]
pub(crate) async fn pause_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let schedule = visible_schedule(&state, &principal, &id, Permission::SubmitWorkflow).await?;
    let updated = update_schedule(&state, &schedule.id, |s| s.paused = true).await?;
    Ok(Json((&updated).into()))
}

/// Resume a paused schedule. Ticks that passed while it was paused do not
/// fire; the next one does.
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{id}/resume",
    tag = "schedules",
    params(("id" = String, Path, description = "Schedule id or a unique prefix")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody))
)]
pub(crate) async fn resume_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let schedule = visible_schedule(&state, &principal, &id, Permission::SubmitWorkflow).await?;
    let now = now_ms();
    let timing = Timing::of(&schedule.trigger.kind, schedule.created_ms)?;
    let updated = update_schedule(&state, &schedule.id, |s| {
        if s.paused {
            s.paused = false;
            s.next_fire_ms = timing.as_ref().and_then(|t| t.next_after(now));
        }
    })
    .await?;
    Ok(Json((&updated).into()))
}

/// Start one run of the schedule now, whatever its overlap policy.
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{id}/run-now",
    tag = "schedules",
    params(("id" = String, Path, description = "Schedule id or a unique prefix")),
    responses((status = 202, body = RunStarted), (status = 404, body = ErrorBody))
)]
pub(crate) async fn run_now(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunStarted>), ApiError> {
    let schedule = visible_schedule(&state, &principal, &id, Permission::SubmitWorkflow).await?;
    let workflow_id = state
        .ticker
        .fire_with(&schedule, "run_now", Map::new())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunStarted {
            schedule_id: schedule.id,
            workflow_id,
        }),
    ))
}

/// One run per tick of the schedule in a past range, through its overlap
/// policy (at most 1000 ticks).
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{id}/backfill",
    tag = "schedules",
    params(("id" = String, Path, description = "Schedule id or a unique prefix")),
    request_body = BackfillRequest,
    responses(
        (status = 202, body = BackfillResponse),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A webhook or folder trigger has no ticks", body = ErrorBody)
    )
)]
pub(crate) async fn backfill(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BackfillResponse>), ApiError> {
    let body = body_bytes(body, state.config.max_body_bytes)?;
    let request: BackfillRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedRequest,
            format!("bad backfill body: {e}"),
        )
        .with_hint("Send {\"from\": \"2026-01-01T00:00:00Z\", \"to\": \"2026-01-02T00:00:00Z\"}.")
    })?;
    let schedule = visible_schedule(&state, &principal, &id, Permission::SubmitWorkflow).await?;
    let time = |text: &str, which: &str| {
        parse_time(text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidBackfillRange,
                format!("`{which}` {text} is not a time"),
            )
            .with_hint(ErrorCode::InvalidBackfillRange.def().hint)
        })
    };
    let from = time(&request.from, "from")?;
    let to = time(&request.to, "to")?;
    let report = state.ticker.backfill(&schedule.id, from, to).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BackfillResponse {
            schedule_id: schedule.id,
            ticks: report.ticks,
            started: report.started,
            skipped: report.skipped,
            buffered: report.buffered,
            failed: report.failed.iter().map(GzError::to_string).collect(),
        }),
    ))
}

/// Call a webhook: its body (a JSON object or a form) becomes the run's
/// inputs. Authorized by a SERVICE (or ADMIN) key, or by the hook's secret
/// in `X-Gleitzeit-Hook-Secret`; without a key, an unknown hook and a wrong
/// secret get the same 401.
#[utoipa::path(
    post,
    path = "/api/v1/hooks/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "The webhook's name")),
    request_body(content = Object, description = "Inputs: a JSON object, or a form (application/x-www-form-urlencoded)"),
    responses(
        (status = 202, description = "Run started", body = RunStarted),
        (status = 400, description = "Body not a JSON object or form, or an input the workflow does not declare", body = ErrorBody),
        (status = 401, description = "No key and no (right) secret", body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "No such hook (callers with a key only)", body = ErrorBody),
        (status = 409, description = "The hook's schedule is paused", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, description = "Too many calls; see Retry-After", body = ErrorBody)
    )
)]
pub(crate) async fn call_hook(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let hooks = state.runtime.store().schedules().await?;
    let found = hooks
        .into_iter()
        .find(|s| hook_name(s).map(String::as_str) == Some(name.as_str()));
    let unauthorized = || {
        ApiError::new(ErrorCode::HookUnauthorized, "webhook call not authorized")
            .with_hint(ErrorCode::HookUnauthorized.def().hint)
    };
    let schedule = if principal.anonymous {
        let given = headers
            .get(HOOK_SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(hash_secret);
        // The comparison runs whether or not the hook exists, so timing
        // tells nothing about which hooks there are.
        let stored = found
            .as_ref()
            .and_then(|s| s.hook_secret_sha256.clone())
            .unwrap_or_else(|| "0".repeat(64));
        let matches: bool = given
            .as_deref()
            .unwrap_or("")
            .as_bytes()
            .ct_eq(stored.as_bytes())
            .into();
        match found {
            Some(schedule) if matches && given.is_some() => schedule,
            _ => return Err(unauthorized()),
        }
    } else {
        if !matches!(principal.role, Role::Service | Role::Admin) {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!("role {} may not call webhooks", principal.role.as_str()),
            )
            .with_hint("Use a SERVICE key, or the hook's secret in X-Gleitzeit-Hook-Secret."));
        }
        found.ok_or_else(|| {
            ApiError::new(ErrorCode::HookNotFound, format!("no webhook `{name}`"))
                .with_hint(ErrorCode::HookNotFound.def().hint)
        })?
    };
    if schedule.paused {
        return Err(ApiError::new(
            ErrorCode::ScheduleNotRunnable,
            format!("webhook `{name}` is paused (schedule {})", schedule.id),
        )
        .with_hint(format!("`gleitzeit schedule resume {}`", schedule.id)));
    }
    if let Err(wait) = state
        .hook_limiter
        .admit(&name, state.config.hook_calls_per_minute)
    {
        let mut response = ApiError::new(
            ErrorCode::HookRateLimited,
            format!(
                "webhook `{name}` accepts {} calls a minute",
                state.config.hook_calls_per_minute
            ),
        )
        .with_hint(format!("Retry in {wait} s."))
        .into_response();
        response.headers_mut().insert("retry-after", wait.into());
        return Ok(response);
    }
    let limit = HOOK_MAX_BODY.min(state.config.max_body_bytes);
    let body = body_bytes(body, state.config.max_body_bytes)?;
    if body.len() > limit {
        return Err(ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("a webhook body may be {limit} bytes at most"),
        ));
    }
    let inputs = hook_inputs(&headers, &body)?;
    check_inputs(&schedule, &inputs, state.runtime.limits())?;
    let workflow_id = state.ticker.fire_with(&schedule, "webhook", inputs).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunStarted {
            schedule_id: schedule.id,
            workflow_id,
        }),
    )
        .into_response())
}

fn body_error(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::HookBodyInvalid, message)
        .with_hint(ErrorCode::HookBodyInvalid.def().hint)
}

/// The inputs a hook's body carries: a JSON object, or form fields (text).
fn hook_inputs(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match content_type.as_deref() {
        Some("application/x-www-form-urlencoded") => Ok(form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()),
        Some("application/json") | None => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(body_error(format!(
                "the body is a JSON {}, not an object of inputs",
                json_kind(&other)
            ))),
            Err(e) => Err(body_error(format!("the body is not JSON: {e}"))),
        },
        Some(other) => Err(body_error(format!(
            "content type `{other}` is not accepted"
        ))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key must be an input the workflow declares, and every value within
/// the limits a workflow's inputs are held to.
fn check_inputs(
    schedule: &ScheduleRecord,
    inputs: &Map<String, Value>,
    limits: &gleitzeit_core::Limits,
) -> Result<(), ApiError> {
    let declared = &schedule.spec.inputs;
    let unknown: Vec<&str> = inputs
        .keys()
        .filter(|k| !declared.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let accepted = if declared.is_empty() {
            "the workflow declares no inputs".to_string()
        } else {
            format!(
                "accepted: {}",
                declared
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(body_error(format!(
            "{} not an input of workflow `{}` ({accepted})",
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
                + if unknown.len() == 1 { " is" } else { " are" },
            schedule.name
        )));
    }
    for (key, value) in inputs {
        limits
            .check_value(value, &format!("input `{key}`"))
            .map_err(ApiError::from)?;
    }
    Ok(())
}
