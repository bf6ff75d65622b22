//! `/api/v1/auth/…`: who am I, users, keys and the audit log. The route
//! table in `auth.rs` already checked the role; these handlers only act.

use crate::auth::{self, admin, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use gleitzeit_auth::requests::{parse_body, NewKey, NewUser};
use gleitzeit_core::ErrorCode;
use gleitzeit_store::{AuditEntry, KeyRecord, UserRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

fn bad_body(rejection: BytesRejection) -> ApiError {
    ApiError::new(
        ErrorCode::MalformedRequest,
        format!("cannot read the body: {}", rejection.body_text()),
    )
}

/// A key as lists show it: never its text or hash.
fn key_view(key: &KeyRecord) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "user": key.user,
        "role": key.role,
        "created_ms": key.created_ms,
        "expires_ms": key.expires_ms,
        "revoked_ms": key.revoked_ms,
    })
}

/// The caller: user, role, key id, and whether the server requires keys.
#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth",
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<Value> {
    Json(json!({
        "user": principal.user,
        "role": principal.role.as_str(),
        "key_id": principal.key_id,
        "auth_required": state.config.auth_required,
    }))
}

/// Users (ADMIN).
#[utoipa::path(get, path = "/api/v1/auth/users", tag = "auth",
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_users(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let users: Vec<UserRecord> = state.runtime.store().users().await?;
    Ok(Json(json!({ "users": users })))
}

/// Create a user (ADMIN).
#[utoipa::path(post, path = "/api/v1/auth/users", tag = "auth", request_body = NewUser,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<UserRecord>), ApiError> {
    let body: NewUser = parse_body(&body.map_err(bad_body)?)?;
    let role = body.validate()?;
    let store = state.runtime.store().as_ref();
    let user = admin::create_user(store, &body.name, body.email, role).await?;
    auth::audit(
        store,
        Some(&principal.user),
        "user.create",
        Some(&user.name),
        role.as_str(),
        None,
    )
    .await;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Disable a user: their keys stop working at once (ADMIN).
#[utoipa::path(post, path = "/api/v1/auth/users/{name}/disable", tag = "auth",
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<UserRecord>, ApiError> {
    let store = state.runtime.store().as_ref();
    let user = admin::disable_user(store, &name).await?;
    // Open streams of the user's keys close now, not at their next check.
    state.auth_changed.send_modify(|n| *n += 1);
    auth::audit(
        store,
        Some(&principal.user),
        "user.disable",
        Some(&name),
        "ok",
        None,
    )
    .await;
    Ok(Json(user))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyQuery {
    /// Only this user's keys.
    user: Option<String>,
}

/// API keys: ids, owners, expiry and revocation — never the keys (ADMIN).
#[utoipa::path(get, path = "/api/v1/auth/keys", tag = "auth", params(KeyQuery),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(crate::api::bad_query)?;
    let keys: Vec<Value> = state
        .runtime
        .store()
        .keys()
        .await?
        .iter()
        .filter(|k| query.user.as_ref().is_none_or(|u| *u == k.user))
        .map(key_view)
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedKey {
    /// The key itself: shown this once, stored only as a hash.
    key: String,
    #[schema(value_type = Object)]
    record: Value,
}

/// Create a key for a user; the answer holds the key, once (ADMIN).
#[utoipa::path(post, path = "/api/v1/auth/keys", tag = "auth", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let body: NewKey = parse_body(&body.map_err(bad_body)?)?;
    let role = body.validate()?;
    let store = state.runtime.store().as_ref();
    let name = body.name.unwrap_or_else(|| "key".to_string());
    let (key, record) =
        admin::create_key(store, &body.user, &name, role, body.expires_days).await?;
    auth::audit(
        store,
        Some(&principal.user),
        "key.create",
        Some(&record.id),
        &body.user,
        None,
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: key.reveal().to_string(),
            record: key_view(&record),
        }),
    ))
}

/// Revoke a key; it stops working at once (ADMIN).
#[utoipa::path(post, path = "/api/v1/auth/keys/{id}/revoke", tag = "auth",
    params(("id" = String, Path, description = "Key id (gzt_ and 6 characters)")),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.runtime.store().as_ref();
    let key = admin::revoke_key(store, &id).await?;
    state.auth_changed.send_modify(|n| *n += 1);
    auth::audit(
        store,
        Some(&principal.user),
        "key.revoke",
        Some(&key.id),
        "ok",
        None,
    )
    .await;
    Ok(Json(key_view(&key)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// The audit log: authentication failures, user and key changes,
/// cancellations (ADMIN).
#[utoipa::path(get, path = "/api/v1/auth/audit", tag = "auth", params(AuditQuery),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(crate::api::bad_query)?;
    let entries: Vec<AuditEntry> = state
        .runtime
        .store()
        .audit_log(
            query.after.unwrap_or(0),
            query.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .await?;
    Ok(Json(json!({ "entries": entries })))
}
