//! Authentication and authorization for the API, in one place:
//!
//! - `authenticate` (middleware) turns the request's key into a [`Principal`]
//!   or a 401/429, and checks the route's permission against the role
//!   (`permission_for` is the route table; `Role::reach` the matrix);
//! - `verify` is the one path every transport (HTTP, SSE, WebSocket,
//!   Socket.IO) authenticates through: limiter and audit log included;
//! - `recheck` tells open streams whether their principal still holds;
//! - the user and key operations that both the API and the local CLI
//!   perform, and the audit log, are `gleitzeit_auth::admin`'s.
//!
//! Every failure says the same thing whether or not the user or key exists.

use crate::{ApiError, AppState};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub(crate) use gleitzeit_auth::admin::{self, audit};
use gleitzeit_auth::roles::{key_reach, Reach};
use gleitzeit_auth::{ApiKey, Permission, Role};
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_store::{now_ms, Store};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts one address, or one key id, may see per window before
/// further failures are answered with 429.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many tracked addresses or key ids, stale windows are dropped,
/// so a flood of made-up keys cannot grow the limiter without bound.
const MAX_TRACKED: usize = 4096;
/// How long a stream ticket may wait before it is used.
pub(crate) const TICKET_TTL: Duration = Duration::from_secs(30);
/// Unused tickets one key may hold at once (a page opens a few streams).
const MAX_TICKETS_PER_KEY: usize = 16;

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub user: String,
    /// The key's own role when it was made with one, else its user's.
    pub role: Role,
    /// The user's role: a key never reaches further (see [`key_reach`]).
    pub user_role: Role,
    pub key_role: Option<Role>,
    /// The key's public id; `None` when the server runs without auth.
    pub key_id: Option<String>,
    /// The stored hash of the key, so open streams can check it again.
    pub(crate) key_hash: Option<String>,
    pub expires_ms: Option<i64>,
    /// No key was presented (routes that need none: health, the dashboard's
    /// files). Such a caller is told nothing beyond the bare answer.
    pub anonymous: bool,
}

impl Principal {
    /// Everyone, when the server runs with `--no-auth`.
    pub fn unauthenticated() -> Principal {
        Principal {
            user: "local".into(),
            role: Role::Admin,
            user_role: Role::Admin,
            key_role: None,
            key_id: None,
            key_hash: None,
            expires_ms: None,
            anonymous: false,
        }
    }

    fn anonymous() -> Principal {
        Principal {
            user: String::new(),
            role: Role::Service,
            user_role: Role::Service,
            key_role: None,
            key_id: None,
            key_hash: None,
            expires_ms: None,
            anonymous: true,
        }
    }

    /// Who a workflow submitted now belongs to (nobody in no-auth mode, like
    /// workflows run from the CLI).
    pub fn submitter(&self) -> Option<String> {
        self.key_id.as_ref().map(|_| self.user.clone())
    }

    pub fn reach(&self, permission: Permission) -> Reach {
        if self.anonymous {
            return Reach::None;
        }
        key_reach(self.user_role, self.key_role, permission)
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
        // A hook authenticates its callers itself: a key, or the hook's
        // secret (see `schedules::call_hook`).
        ("POST", ["", "api", "v1", "hooks", _]) => return None,
        ("GET", ["", "api", "v1", "schedules", ..]) => ReadWorkflows,
        (_, ["", "api", "v1", "schedules", ..]) => SubmitWorkflow,
        ("POST", ["", "api", "v1", "workflows"]) => SubmitWorkflow,
        ("POST", ["", "api", "v1", "workflows", _, "cancel" | "resume"]) => CancelWorkflows,
        (_, ["", "api", "v1", "workflows", _, "events"]) => ReadEvents,
        (_, ["", "api", "v1", "workflows", ..]) => ReadWorkflows,
        (_, ["", "api", "v1", "events", ..] | ["", "api", "v1", "ws"]) => ReadEvents,
        (_, ["", "api", "v1", "stream-tickets"]) => ReadEvents,
        (_, ["", "api", "v1", "providers", ..]) => ReadProviders,
        (_, ["", "api", "v1", "nodes", ..]) => ReadNodes,
        (_, ["", "api", "v1", "stats" | "functions" | "errors", ..]) => ReadSystem,
        (_, ["", "metrics"]) => ReadMetrics,
        (_, ["", "api", "v1", "auth", "users", ..]) => ManageUsers,
        (_, ["", "api", "v1", "auth", "keys", ..]) => ManageKeys,
        (_, ["", "api", "v1", "auth", "audit"]) => ReadAudit,
        // Unknown routes fall through to the 404 handler for the
        // authenticated; everyone else is asked for a key first.
        _ => ReadSystem,
    })
}

/// The routes that are long-lived streams: the ones a browser opens without
/// headers, so the only ones that take a `?ticket=`.
fn is_stream_route(path: &str) -> bool {
    matches!(path.trim_end_matches('/'), "/api/v1/events" | "/api/v1/ws")
}

/// Failures in the current window for one address or key id.
#[derive(Clone, Copy)]
struct Window {
    since: Instant,
    failures: u32,
}

fn count_failure<K: std::hash::Hash + Eq + Clone>(map: &Mutex<HashMap<K, Window>>, key: &K) -> u32 {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= MAX_TRACKED && !map.contains_key(key) {
        map.retain(|_, w| w.since.elapsed() < FAILURE_WINDOW);
    }
    let entry = map.entry(key.clone()).or_insert(Window {
        since: Instant::now(),
        failures: 0,
    });
    if entry.since.elapsed() >= FAILURE_WINDOW {
        *entry = Window {
            since: Instant::now(),
            failures: 0,
        };
    }
    entry.failures = entry.failures.saturating_add(1);
    entry.failures
}

/// Counts failed attempts per client address and per presented key id.
///
/// Only failures are ever refused: a valid key is accepted whatever others
/// did from the same address (a shared NAT, a reverse proxy) or with the same
/// key id (which lists and audit entries show). What the limit does is make
/// guessing loud and cheap to answer: past it, every wrong guess gets 429.
#[derive(Default)]
pub(crate) struct FailureLimiter {
    addresses: Mutex<HashMap<IpAddr, Window>>,
    key_ids: Mutex<HashMap<String, Window>>,
}

impl FailureLimiter {
    /// Records one failure; returns the higher of the two counts it raised.
    fn failed(&self, ip: Option<IpAddr>, key_id: Option<&str>) -> u32 {
        let by_address = ip.map_or(0, |ip| count_failure(&self.addresses, &ip));
        let by_key = key_id.map_or(0, |id| count_failure(&self.key_ids, &id.to_string()));
        by_address.max(by_key)
    }
}

/// One-time tickets for streams: a browser's EventSource and WebSocket cannot
/// send headers, and a key in a URL ends up in proxies' logs. A ticket is
/// worth one stream, for [`TICKET_TTL`], and is useless afterwards.
#[derive(Default)]
pub(crate) struct TicketBook {
    tickets: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl TicketBook {
    pub(crate) fn issue(&self, principal: &Principal) -> Result<String, GzError> {
        // A key's random part is as good a one-time secret as any, and has
        // no checksum a guesser could use: take the whole key's hash.
        let ticket = format!("gzs_{}", ApiKey::generate()?.hash());
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.retain(|_, (_, at)| at.elapsed() < TICKET_TTL);
        // One key's unused tickets are capped (its oldest lapse first), so a
        // key asking in a loop cannot grow the book without bound.
        let mut mine: Vec<(String, Instant)> = tickets
            .iter()
            .filter(|(_, (p, _))| p.key_id == principal.key_id)
            .map(|(t, (_, at))| (t.clone(), *at))
            .collect();
        if mine.len() >= MAX_TICKETS_PER_KEY {
            mine.sort_by_key(|(_, at)| *at);
            for (old, _) in &mine[..=mine.len() - MAX_TICKETS_PER_KEY] {
                tickets.remove(old);
            }
        }
        tickets.insert(ticket.clone(), (principal.clone(), Instant::now()));
        Ok(ticket)
    }

    fn redeem(&self, ticket: &str) -> Option<Principal> {
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets
            .remove(ticket)
            .filter(|(_, at)| at.elapsed() < TICKET_TTL)
            .map(|(principal, _)| principal)
    }
}

/// The client's address, for the limiter and the audit log: the peer, or —
/// when the peer is a configured trusted proxy — the address that proxy put
/// in its header (the right-most one that is not itself a trusted proxy).
pub(crate) fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    proxy: Option<&crate::TrustedProxy>,
) -> Option<IpAddr> {
    let (Some(peer), Some(proxy)) = (peer, proxy) else {
        return peer;
    };
    if !proxy.addresses.contains(&peer) {
        return peer.into();
    }
    let forwarded = headers
        .get_all(&proxy.header)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for entry in forwarded.iter().rev() {
        let parsed = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()));
        match parsed {
            Some(ip) if proxy.addresses.contains(&ip) => continue,
            Some(ip) => return Some(ip),
            // Garbage in the header: the proxy is the only address known.
            None => return Some(peer),
        }
    }
    Some(peer)
}

/// The key a request carries: `Authorization: Bearer` or `X-API-Key`.
/// Keys in URLs are refused (see [`authenticate`]).
pub fn presented_key(headers: &HeaderMap) -> Option<String> {
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
    None
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn unauthorized(code: ErrorCode, message: &str) -> ApiError {
    let mut error = ApiError::new(code, message);
    error.status = StatusCode::UNAUTHORIZED;
    error
}

fn invalid_key() -> ApiError {
    unauthorized(ErrorCode::InvalidApiKey, "the API key is not valid")
}

fn expired_key() -> ApiError {
    unauthorized(ErrorCode::TokenExpired, "the API key has expired")
}

/// Resolves a key to a principal. Errors carry no hint of whether the key or
/// its user exists.
pub async fn resolve_key(store: &dyn Store, text: &str) -> Result<Principal, ApiError> {
    let key = ApiKey::parse(text).map_err(|e| ApiError::from(GzError::from(e)))?;
    principal_for_hash(store, &key.hash()).await
}

async fn principal_for_hash(store: &dyn Store, hash: &str) -> Result<Principal, ApiError> {
    let record = store.key_by_hash(hash).await?.ok_or_else(invalid_key)?;
    if record.revoked_ms.is_some() {
        return Err(invalid_key());
    }
    if record.expires_ms.is_some_and(|at| at <= now_ms()) {
        return Err(expired_key());
    }
    let user = store
        .users()
        .await?
        .into_iter()
        .find(|u| u.name == record.user && !u.disabled)
        .ok_or_else(invalid_key)?;
    let user_role = Role::parse(&user.role).ok_or_else(invalid_key)?;
    let key_role = match record.role.as_deref() {
        Some(text) => Some(Role::parse(text).ok_or_else(invalid_key)?),
        None => None,
    };
    Ok(Principal {
        user: user.name,
        role: key_role.unwrap_or(user_role),
        user_role,
        key_role,
        key_id: Some(record.id),
        key_hash: Some(record.hash),
        expires_ms: record.expires_ms,
        anonymous: false,
    })
}

/// Whether a principal still holds: its key not revoked or expired, its user
/// not disabled. Streams ask this while they stay open; a principal without a
/// key (no-auth mode) always holds. `Ok(Err(..))` is the GZ answer to close
/// with; `Err` means the store could not say.
pub(crate) async fn recheck(
    store: &dyn Store,
    principal: &Principal,
) -> Result<Result<(), ApiError>, GzError> {
    let Some(hash) = &principal.key_hash else {
        return Ok(Ok(()));
    };
    match principal_for_hash(store, hash).await {
        Ok(now) if now.user == principal.user => Ok(Ok(())),
        Ok(_) => Ok(Err(invalid_key())),
        Err(error) if is_auth_failure(&error) => Ok(Err(error)),
        Err(error) => Err(error.error),
    }
}

fn is_auth_failure(error: &ApiError) -> bool {
    matches!(
        error.error.code,
        ErrorCode::InvalidApiKey | ErrorCode::TokenExpired | ErrorCode::StreamTicketInvalid
    )
}

/// What a request (or a Socket.IO connection) presents.
pub(crate) enum Credential {
    Key(String),
    Ticket(String),
}

/// The one authentication path of every transport (HTTP, SSE, WebSocket,
/// Socket.IO): a key or ticket becomes a principal, and every failure is
/// counted by the limiter and written to the audit log.
pub(crate) async fn verify(
    state: &AppState,
    credential: Credential,
    client: Option<IpAddr>,
    target: &str,
) -> Result<Principal, ApiError> {
    let store = state.runtime.store().as_ref();
    let (outcome, key_id) = match &credential {
        Credential::Key(text) => (resolve_key(store, text).await, presented_key_id(text)),
        Credential::Ticket(ticket) => {
            let outcome = match state.tickets.redeem(ticket) {
                // The key may have been revoked since the ticket was made.
                Some(principal) => match recheck(store, &principal).await {
                    Ok(Ok(())) => Ok(principal),
                    Ok(Err(error)) => Err(error),
                    Err(error) => Err(error.into()),
                },
                None => Err(unauthorized(
                    ErrorCode::StreamTicketInvalid,
                    "the stream ticket is unknown, used or expired",
                )),
            };
            (outcome, None)
        }
    };
    let error = match outcome {
        Ok(principal) => return Ok(principal),
        Err(error) if !is_auth_failure(&error) => return Err(error),
        Err(error) => error,
    };
    let failures = state.auth_failures.failed(client, key_id.as_deref());
    // Past the limit only the moment of blocking is logged: a flood of
    // guesses must not flood the audit log too.
    if failures <= MAX_FAILURES + 1 {
        audit(
            store,
            None,
            "auth.failure",
            Some(target),
            &error.error.code.to_string(),
            client,
        )
        .await;
    }
    if failures > MAX_FAILURES {
        return Err(too_many_failures());
    }
    Err(error)
}

/// The id part of whatever was presented as a key (`gzt_` and 6 more
/// characters), well-formed or not: guesses at one key's id are counted
/// together even when the rest is garbage.
fn presented_key_id(text: &str) -> Option<String> {
    let text = text.trim();
    let id_len = gleitzeit_auth::keys::PREFIX.len() + 6;
    let id = text.get(..id_len)?;
    (id.starts_with(gleitzeit_auth::keys::PREFIX)
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then(|| id.to_string())
}

fn too_many_failures() -> ApiError {
    let mut error = ApiError::new(
        ErrorCode::TooManyAuthFailures,
        "too many failed attempts from this address or with this key id",
    );
    error.status = StatusCode::TOO_MANY_REQUESTS;
    error
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
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = client_address(peer, request.headers(), state.config.trusted_proxy.as_ref());
    let path = request.uri().path().to_string();
    let query = request.uri().query();
    if query_value(query, "api_key").is_some() {
        // Refused even when right: a key in a URL is in some proxy's log now.
        return unauthorized(
            ErrorCode::KeyInUrl,
            "API keys are not accepted in URLs (proxies and browsers log them)",
        )
        .with_hint("Send it as `Authorization: Bearer gzt_…`; for EventSource or WebSocket get a one-time ticket: POST /api/v1/stream-tickets, then ?ticket=… . Consider revoking a key that was sent in a URL.")
        .into_response();
    }
    let credential = match presented_key(request.headers()) {
        Some(key) => Some(Credential::Key(key)),
        None if is_stream_route(&path) => query_value(query, "ticket").map(Credential::Ticket),
        None => None,
    };
    let principal = match credential {
        None if permission.is_none() => Principal::anonymous(),
        None => {
            return unauthorized(
                ErrorCode::AuthRequired,
                "this server needs an API key (Authorization: Bearer gzt_…, or X-API-Key)",
            )
            .into_response()
        }
        Some(credential) => match verify(&state, credential, client, &path).await {
            Ok(principal) => principal,
            Err(error) => {
                let limited = error.error.code == ErrorCode::TooManyAuthFailures;
                let mut response = error.into_response();
                if limited {
                    response
                        .headers_mut()
                        .insert("retry-after", FAILURE_WINDOW.as_secs().into());
                }
                return response;
            }
        },
    };
    if let Some(permission) = permission {
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
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// A header name for the trusted-proxy setting, or a config error naming it.
pub fn proxy_header(name: &str) -> Result<HeaderName, GzError> {
    HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        GzError::new(
            ErrorCode::ConfigInvalid,
            format!("`{name}` is not an HTTP header name"),
        )
        .at("server.trusted_proxy_header")
        .with_hint("Name the header your reverse proxy sets, e.g. X-Forwarded-For or X-Real-IP.")
    })
}
