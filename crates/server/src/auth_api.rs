//! `/api/v1/auth/…`: who am I, users, keys and the audit log. The route
//! table in `auth.rs` already checked the role; these handlers only act.

use crate::auth::{self, admin, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::shared::bad_query;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use gleitzeit_api::auth::{
    AuditLog, AuditQuery, CreatedKey, KeyList, KeyQuery, KeyView, UserList, UserView, WhoAmI,
};
use gleitzeit_auth::requests::{parse_body, NewKey, NewUser};
use gleitzeit_core::ErrorCode;
use gleitzeit_store::{AuditEntry, UserRecord};

fn bad_body(rejection: BytesRejection) -> ApiError {
    ApiError::new(
        ErrorCode::MalformedRequest,
        format!("cannot read the body: {}", rejection.body_text()),
    )
}

/// The caller: user, role, key id, and whether the server requires keys.
#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: principal.user,
        role: principal.role.as_str().to_string(),
        key_id: principal.key_id,
        auth_required: state.config.auth_required,
    })
}

/// Users (ADMIN).
#[utoipa::path(get, path = "/api/v1/auth/users", tag = "auth",
    responses((status = 200, body = UserList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_users(State(state): State<AppState>) -> Result<Json<UserList>, ApiError> {
    let users: Vec<UserRecord> = state.runtime.store().users().await?;
    Ok(Json(UserList {
        users: users.iter().map(UserView::from).collect(),
    }))
}

/// Create a user (ADMIN).
#[utoipa::path(post, path = "/api/v1/auth/users", tag = "auth", request_body = NewUser,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// Disable a user: their keys stop working at once (ADMIN).
#[utoipa::path(post, path = "/api/v1/auth/users/{name}/disable", tag = "auth",
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
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
    Ok(Json(UserView::from(&user)))
}

/// API keys: ids, owners, expiry and revocation — never the keys (ADMIN).
#[utoipa::path(get, path = "/api/v1/auth/keys", tag = "auth", params(KeyQuery),
    responses((status = 200, body = KeyList), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<Json<KeyList>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let keys: Vec<KeyView> = state
        .runtime
        .store()
        .keys()
        .await?
        .iter()
        .filter(|k| query.user.as_ref().is_none_or(|u| *u == k.user))
        .map(KeyView::from)
        .collect();
    Ok(Json(KeyList { keys }))
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
            record: KeyView::from(&record),
        }),
    ))
}

/// Revoke a key; it stops working at once (ADMIN).
#[utoipa::path(post, path = "/api/v1/auth/keys/{id}/revoke", tag = "auth",
    params(("id" = String, Path, description = "Key id (gzt_ and 6 characters)")),
    responses((status = 200, body = KeyView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
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
    Ok(Json(KeyView::from(&key)))
}

/// The audit log: authentication failures, user and key changes,
/// cancellations (ADMIN).
#[utoipa::path(get, path = "/api/v1/auth/audit", tag = "auth", params(AuditQuery),
    responses((status = 200, body = AuditLog), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditLog>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let entries: Vec<AuditEntry> = state
        .runtime
        .store()
        .audit_log(
            query.after.unwrap_or(0),
            query.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .await?;
    Ok(Json(AuditLog {
        entries: entries.iter().map(Into::into).collect(),
    }))
}
