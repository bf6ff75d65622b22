//! Authentication and authorization for the API, in one place:
//!
//! - `authenticate` (middleware) turns the request's key into a [`Principal`]
//!   or a 401/429, and checks the route's permission against the role
//!   (`permission_for` is the route table; `Role::reach` the matrix);
//! - `Principal::may` decides, per workflow, whether "own" reach covers it;
//! - `admin` holds the user and key operations that both the API and the
//!   local CLI (`gleitzeit auth …` without a server) perform.
//!
//! Every failure says the same thing whether or not the user or key exists.

use crate::{ApiError, AppState};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gleitzeit_auth::roles::Reach;
use gleitzeit_auth::{ApiKey, Permission, Role};
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_store::{now_ms, AuditEntry, Store, WorkflowRecord};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts one client may make per window before it gets 429s.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// The key's public id; `None` when the server runs without auth.
    pub key_id: Option<String>,
}

impl Principal {
    /// Everyone, when the server runs with `--no-auth`.
    pub fn unauthenticated() -> Principal {
        Principal {
            user: "local".into(),
            role: Role::Admin,
            key_id: None,
        }
    }

    /// Who a workflow submitted now belongs to (nobody in no-auth mode, like
    /// workflows run from the CLI).
    pub fn submitter(&self) -> Option<String> {
        self.key_id.as_ref().map(|_| self.user.clone())
    }

    pub fn reach(&self, permission: Permission) -> Reach {
        self.role.reach(permission)
    }

    /// Whether this principal may act on this workflow. A workflow outside
    /// the caller's reach is reported as not found, so ids cannot be probed.
    pub fn may(&self, permission: Permission, record: &WorkflowRecord) -> Result<(), ApiError> {
        let allowed = match self.reach(permission) {
            Reach::All => true,
            Reach::Own => record.submitted_by.as_deref() == Some(self.user.as_str()),
            Reach::None => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::WorkflowNotFound,
                format!("no workflow with id `{}`", record.id),
            ))
        }
    }

    /// Only workflows of this user, when their reach is their own.
    pub fn owner_filter(&self, permission: Permission) -> Option<String> {
        (self.reach(permission) != Reach::All).then(|| self.user.clone())
    }
}

/// The permission each route needs. Routes not listed need none (health,
/// the OpenAPI document).
pub fn permission_for(method: &Method, path: &str) -> Option<Permission> {
    let p = path.trim_end_matches('/');
    let segments: Vec<&str> = p.split('/').collect();
    use Permission::*;
    Some(match (method.as_str(), segments.as_slice()) {
        (_, ["", "health"]) | (_, ["", "api", "v1", "health"]) => return None,
        (_, ["", "api", "v1", "openapi.json"]) => return None,
        // The dashboard's files hold no data; what they show is fetched with
        // the visitor's key.
        (_, [""] | ["", "dashboard", _]) => return None,
        (_, ["", "api", "v1", "auth", "whoami"]) => ReadSystem,
        ("POST", ["", "api", "v1", "workflows"]) => SubmitWorkflow,
        ("POST", ["", "api", "v1", "workflows", _, "cancel" | "resume"]) => CancelWorkflows,
        (_, ["", "api", "v1", "workflows", _, "events"]) => ReadEvents,
        (_, ["", "api", "v1", "workflows", ..]) => ReadWorkflows,
        (_, ["", "api", "v1", "events", ..] | ["", "api", "v1", "ws"]) => ReadEvents,
        (_, ["", "api", "v1", "providers", ..]) => ReadProviders,
        (_, ["", "api", "v1", "stats" | "functions" | "errors" | "nodes", ..]) => ReadSystem,
        (_, ["", "metrics"]) => ReadMetrics,
        (_, ["", "api", "v1", "auth", "users", ..]) => ManageUsers,
        (_, ["", "api", "v1", "auth", "keys", ..]) => ManageKeys,
        (_, ["", "api", "v1", "auth", "audit"]) => ReadAudit,
        // Unknown routes fall through to the 404 handler for the
        // authenticated; everyone else is asked for a key first.
        _ => ReadSystem,
    })
}

/// Counts failed attempts per client address.
#[derive(Default)]
pub(crate) struct FailureLimiter {
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    fn blocked(&self, ip: IpAddr) -> bool {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .get(&ip)
            .is_some_and(|(since, n)| since.elapsed() < FAILURE_WINDOW && *n >= MAX_FAILURES)
    }

    fn failed(&self, ip: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let entry = clients.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The key a request carries: `Authorization: Bearer`, `X-API-Key`, or (for
/// browsers' EventSource and WebSocket, which cannot set headers) `api_key=`
/// in the query of the event routes.
pub fn presented_key(headers: &HeaderMap, path: &str, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            return Some(token.trim().to_string());
        }
    }
    if let Some(value) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(value.trim().to_string());
    }
    if path.ends_with("/events") || path.ends_with("/ws") {
        return form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "api_key")
            .map(|(_, v)| v.into_owned());
    }
    None
}

fn unauthorized(code: ErrorCode, message: &str) -> ApiError {
    let mut error = ApiError::new(code, message);
    error.status = StatusCode::UNAUTHORIZED;
    error
}

/// Resolves a key to a principal. Errors carry no hint of whether the key or
/// its user exists.
pub async fn resolve_key(store: &dyn Store, text: &str) -> Result<Principal, ApiError> {
    let invalid = || unauthorized(ErrorCode::InvalidApiKey, "the API key is not valid");
    let key = ApiKey::parse(text).map_err(|e| ApiError::from(GzError::from(e)))?;
    let record = store.key_by_hash(&key.hash()).await?.ok_or_else(invalid)?;
    if record.revoked_ms.is_some() {
        return Err(invalid());
    }
    if record.expires_ms.is_some_and(|at| at <= now_ms()) {
        return Err(unauthorized(
            ErrorCode::TokenExpired,
            "the API key has expired",
        ));
    }
    let user = store
        .users()
        .await?
        .into_iter()
        .find(|u| u.name == record.user && !u.disabled)
        .ok_or_else(invalid)?;
    let role = record
        .role
        .as_deref()
        .and_then(Role::parse)
        .or_else(|| Role::parse(&user.role))
        .ok_or_else(invalid)?;
    Ok(Principal {
        user: user.name,
        role,
        key_id: Some(record.id),
    })
}

pub async fn audit(
    store: &dyn Store,
    actor: Option<&str>,
    action: &str,
    target: Option<&str>,
    outcome: &str,
    client: Option<IpAddr>,
) {
    let entry = AuditEntry {
        seq: 0,
        at_ms: now_ms(),
        actor: actor.map(String::from),
        action: action.into(),
        target: target.map(String::from),
        outcome: outcome.into(),
        client: client.map(|c| c.to_string()),
    };
    if let Err(error) = store.audit(&entry).await {
        tracing::warn!("could not write the audit log: {error}");
    }
}

/// The middleware: every request gets a [`Principal`] extension, or an error.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let permission = permission_for(request.method(), request.uri().path());
    if !state.config.auth_required {
        request
            .extensions_mut()
            .insert(Principal::unauthenticated());
        return next.run(request).await;
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let presented = presented_key(
        request.headers(),
        request.uri().path(),
        request.uri().query(),
    );
    let principal = match presented {
        None if permission.is_none() => None,
        None => {
            return unauthorized(
                ErrorCode::AuthRequired,
                "this server needs an API key (Authorization: Bearer gzt_…, or X-API-Key)",
            )
            .into_response()
        }
        Some(text) => {
            if client.is_some_and(|ip| state.auth_failures.blocked(ip)) {
                let mut error = ApiError::new(
                    ErrorCode::TooManyAuthFailures,
                    "too many failed attempts from this address",
                );
                error.status = StatusCode::TOO_MANY_REQUESTS;
                let mut response = error.into_response();
                response
                    .headers_mut()
                    .insert("retry-after", FAILURE_WINDOW.as_secs().into());
                return response;
            }
            match resolve_key(state.runtime.store().as_ref(), &text).await {
                Ok(principal) => Some(principal),
                Err(error) => {
                    if let Some(ip) = client {
                        state.auth_failures.failed(ip);
                    }
                    audit(
                        state.runtime.store().as_ref(),
                        None,
                        "auth.failure",
                        Some(request.uri().path()),
                        &error.error.code.to_string(),
                        client,
                    )
                    .await;
                    return error.into_response();
                }
            }
        }
    };
    if let (Some(permission), Some(principal)) = (permission, &principal) {
        if principal.reach(permission) == Reach::None {
            return ApiError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "role {} may not {}",
                    principal.role.as_str(),
                    permission.describe()
                ),
            )
            .into_response();
        }
    }
    request
        .extensions_mut()
        .insert(principal.unwrap_or_else(|| Principal {
            user: String::new(),
            role: Role::Service,
            key_id: None,
        }));
    next.run(request).await
}

/// User and key operations, shared by the API and the local CLI.
pub mod admin {
    use super::*;
    use gleitzeit_store::{KeyRecord, UserRecord};

    async fn find_user(store: &dyn Store, name: &str) -> Result<Option<UserRecord>, GzError> {
        Ok(store.users().await?.into_iter().find(|u| u.name == name))
    }

    pub use gleitzeit_auth::requests::{parse_role, valid_name};

    pub async fn create_user(
        store: &dyn Store,
        name: &str,
        email: Option<String>,
        role: Role,
    ) -> Result<UserRecord, GzError> {
        valid_name(name)?;
        if find_user(store, name).await?.is_some() {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                format!("user `{name}` exists already"),
            ));
        }
        let user = UserRecord {
            name: name.to_string(),
            email,
            role: role.as_str().to_string(),
            disabled: false,
            created_ms: now_ms(),
        };
        store.put_user(&user).await?;
        Ok(user)
    }

    pub async fn disable_user(store: &dyn Store, name: &str) -> Result<UserRecord, GzError> {
        let mut user = find_user(store, name)
            .await?
            .ok_or_else(|| GzError::new(ErrorCode::InvalidArgument, format!("no user `{name}`")))?;
        user.disabled = true;
        store.put_user(&user).await?;
        Ok(user)
    }

    /// Makes a key for a user; the text is returned once and never stored.
    pub async fn create_key(
        store: &dyn Store,
        user: &str,
        name: &str,
        role: Option<Role>,
        expires_days: Option<u32>,
    ) -> Result<(ApiKey, KeyRecord), GzError> {
        let owner = find_user(store, user)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| {
                GzError::new(
                    ErrorCode::InvalidArgument,
                    format!("no active user `{user}`"),
                )
                .with_hint("Create it first: gleitzeit auth users create NAME --role ROLE")
            })?;
        if let (Some(role), Some(user_role)) = (role, Role::parse(&owner.role)) {
            // A key can narrow its user's role, never widen it.
            let rank = |r: Role| match r {
                Role::Admin => 3,
                Role::Operator => 2,
                Role::User | Role::Service => 1,
            };
            if rank(role) > rank(user_role) {
                return Err(GzError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "a key of {user} ({}) cannot have role {}",
                        user_role.as_str(),
                        role.as_str()
                    ),
                ));
            }
        }
        let key = ApiKey::generate()?;
        let now = now_ms();
        let record = KeyRecord {
            id: key.public_id(),
            name: name.to_string(),
            user: user.to_string(),
            role: role.map(|r| r.as_str().to_string()),
            hash: key.hash(),
            created_ms: now,
            expires_ms: expires_days.map(|d| now + i64::from(d) * 86_400_000),
            revoked_ms: None,
        };
        store.put_key(&record).await?;
        Ok((key, record))
    }

    pub async fn revoke_key(store: &dyn Store, id: &str) -> Result<KeyRecord, GzError> {
        let mut key = store
            .keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| GzError::new(ErrorCode::InvalidArgument, format!("no key `{id}`")))?;
        if key.revoked_ms.is_none() {
            key.revoked_ms = Some(now_ms());
            store.put_key(&key).await?;
        }
        Ok(key)
    }

    /// `auth init`: the first ADMIN and their key, only while no user exists.
    pub async fn init(store: &dyn Store, name: &str) -> Result<(ApiKey, KeyRecord), GzError> {
        if !store.users().await?.is_empty() {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                "authentication is already set up (users exist)",
            )
            .with_hint("An ADMIN makes more keys: gleitzeit auth keys create --user NAME"));
        }
        create_user(store, name, None, Role::Admin).await?;
        let made = create_key(store, name, "initial admin key", None, None).await?;
        audit(store, Some(name), "auth.init", Some(&made.1.id), "ok", None).await;
        Ok(made)
    }
}
