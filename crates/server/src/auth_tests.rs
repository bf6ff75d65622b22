//! Authentication and authorization, through the real router: every role
//! against every endpoint, isolation between users, bad keys, rate limiting,
//! the audit log, and keys never echoed.

use crate::auth::admin;
use crate::{Server, ServerConfig};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use gleitzeit_auth::Role;
use gleitzeit_providers::function::FunctionProvider;
use gleitzeit_providers::Registry;
use gleitzeit_runtime::{Runtime, RuntimeConfig};
use gleitzeit_store::{MemoryStore, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const WORKFLOW: &str = "name: t\ntasks:\n  - id: a\n    method: function/call\n    parameters: {name: sum, args: {numbers: [1, 2]}}\n";

struct Fixture {
    router: Router,
    store: Arc<dyn Store>,
    keys: std::collections::HashMap<Role, String>,
}

async fn fixture() -> Fixture {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut registry = Registry::new();
    registry.register(Arc::new(FunctionProvider));
    let runtime = Runtime::new(store.clone(), registry, RuntimeConfig::default());
    let router = Server::new(
        runtime,
        ServerConfig {
            auth_required: true,
            ..ServerConfig::default()
        },
    )
    .router();
    let mut keys = std::collections::HashMap::new();
    for role in Role::ALL {
        let name = role.as_str().to_lowercase();
        admin::create_user(store.as_ref(), &name, None, role)
            .await
            .unwrap();
        let (key, _) = admin::create_key(store.as_ref(), &name, "test", None, None)
            .await
            .unwrap();
        keys.insert(role, key.reveal().to_string());
    }
    Fixture {
        router,
        store,
        keys,
    }
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    key: Option<&str>,
    body: &str,
    client: Option<SocketAddr>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if body.starts_with('{') {
        request = request.header("content-type", "application/json");
    }
    let mut request = request.body(Body::from(body.to_string())).unwrap();
    if let Some(addr) = client {
        request.extensions_mut().insert(ConnectInfo(addr));
    }
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value, headers)
}

impl Fixture {
    async fn as_role(
        &self,
        role: Role,
        method: Method,
        uri: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let (status, value, _) = call(
            &self.router,
            method,
            uri,
            Some(&self.keys[&role]),
            body,
            None,
        )
        .await;
        (status, value)
    }

    async fn submit(&self, role: Role) -> String {
        let (status, value) = self
            .as_role(role, Method::POST, "/api/v1/workflows", WORKFLOW)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        value["workflow_id"].as_str().unwrap().to_string()
    }

    async fn wait_done(&self, id: &str) {
        for _ in 0..500 {
            let record = self.store.workflow(id).await.unwrap().unwrap();
            if record.state.is_terminal() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} did not finish");
    }
}

#[tokio::test]
async fn every_role_against_every_endpoint() {
    let f = fixture().await;
    // A workflow of each role's own, so "own" endpoints have something to act on.
    let mut own = std::collections::HashMap::new();
    for role in Role::ALL {
        let id = f.submit(role).await;
        f.wait_done(&id).await;
        own.insert(role, id);
    }
    // (method, path, body, ADMIN, OPERATOR, USER, SERVICE): true = allowed.
    // `{own}` is the caller's own workflow.
    let table: &[(&str, &str, &str, [bool; 4])] = &[
        (
            "POST",
            "/api/v1/workflows",
            WORKFLOW,
            [true, true, true, true],
        ),
        ("GET", "/api/v1/workflows", "", [true, true, true, true]),
        (
            "GET",
            "/api/v1/workflows/{own}",
            "",
            [true, true, true, true],
        ),
        (
            "GET",
            "/api/v1/workflows/{own}/tasks/a",
            "",
            [true, true, true, true],
        ),
        (
            "GET",
            "/api/v1/workflows/{own}/events",
            "",
            [true, true, true, true],
        ),
        (
            "POST",
            "/api/v1/workflows/{own}/cancel",
            "",
            [true, true, true, false],
        ),
        (
            "POST",
            "/api/v1/workflows/{own}/resume",
            "",
            [true, true, true, false],
        ),
        ("GET", "/api/v1/stats", "", [true, true, true, true]),
        ("GET", "/api/v1/nodes", "", [true, true, false, false]),
        ("GET", "/api/v1/providers", "", [true, true, true, true]),
        ("GET", "/api/v1/functions", "", [true, true, true, true]),
        ("GET", "/api/v1/functions/sum", "", [true, true, true, true]),
        ("GET", "/api/v1/errors", "", [true, true, true, true]),
        ("GET", "/api/v1/errors/GZ4003", "", [true, true, true, true]),
        ("GET", "/api/v1/auth/whoami", "", [true, true, true, true]),
        ("GET", "/metrics", "", [true, true, false, true]),
        ("GET", "/api/v1/auth/users", "", [true, false, false, false]),
        (
            "POST",
            "/api/v1/auth/users",
            r#"{"name":"n{role}","role":"USER"}"#,
            [true, false, false, false],
        ),
        (
            "POST",
            "/api/v1/auth/users/nobody/disable",
            "",
            [true, false, false, false],
        ),
        ("GET", "/api/v1/auth/keys", "", [true, false, false, false]),
        (
            "POST",
            "/api/v1/auth/keys",
            r#"{"user":"user","name":"x"}"#,
            [true, false, false, false],
        ),
        (
            "POST",
            "/api/v1/auth/keys/gzt_nokey0/revoke",
            "",
            [true, false, false, false],
        ),
        ("GET", "/api/v1/auth/audit", "", [true, false, false, false]),
    ];
    for (method, path, body, allowed) in table {
        for (i, role) in Role::ALL.into_iter().enumerate() {
            let uri = path.replace("{own}", &own[&role]);
            let body = body.replace("{role}", &role.as_str().to_lowercase());
            let (status, value) = f
                .as_role(
                    role,
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &uri,
                    &body,
                )
                .await;
            if allowed[i] {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{} {method} {uri}: {status} {value}",
                    role.as_str()
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{} {method} {uri}: {value}",
                    role.as_str()
                );
                assert_eq!(value["code"], "GZ4003", "{value}");
            }
        }
    }
    // Health and the API description need no key at all.
    for uri in ["/health", "/api/v1/health", "/api/v1/openapi.json"] {
        let (status, _, _) = call(&f.router, Method::GET, uri, None, "", None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn one_user_cannot_see_cancel_or_stream_anothers_workflow() {
    let f = fixture().await;
    let theirs = f.submit(Role::User).await;
    f.wait_done(&theirs).await;
    // A second USER.
    admin::create_user(f.store.as_ref(), "other", None, Role::User)
        .await
        .unwrap();
    let (other, _) = admin::create_key(f.store.as_ref(), "other", "k", None, None)
        .await
        .unwrap();
    let other = other.reveal().to_string();
    let (status, made, _) = call(
        &f.router,
        Method::POST,
        "/api/v1/workflows",
        Some(&other),
        WORKFLOW,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let mine = made["workflow_id"].as_str().unwrap().to_string();
    f.wait_done(&mine).await;

    for (method, path) in [
        (Method::GET, format!("/api/v1/workflows/{theirs}")),
        (Method::GET, format!("/api/v1/workflows/{}", &theirs[..8])),
        (Method::GET, format!("/api/v1/workflows/{theirs}/tasks/a")),
        (Method::GET, format!("/api/v1/workflows/{theirs}/events")),
        (Method::POST, format!("/api/v1/workflows/{theirs}/cancel")),
    ] {
        let (status, value, _) =
            call(&f.router, method.clone(), &path, Some(&other), "", None).await;
        // Indistinguishable from an id that does not exist.
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {value}");
        assert_eq!(value["code"], "GZ3021");
    }
    let (_, list, _) = call(
        &f.router,
        Method::GET,
        "/api/v1/workflows",
        Some(&other),
        "",
        None,
    )
    .await;
    let ids: Vec<&str> = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()]);
    // An operator sees both.
    let (_, list) = f
        .as_role(Role::Operator, Method::GET, "/api/v1/workflows", "")
        .await;
    assert_eq!(list["workflows"].as_array().unwrap().len(), 2);

    // The event stream from the beginning carries only the caller's events.
    let request = Request::builder()
        .uri("/api/v1/events?after=0")
        .header("authorization", format!("Bearer {other}"))
        .body(Body::empty())
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = String::new();
    while !text.contains("workflow_completed") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("stream stalled")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.contains(&mine));
    assert!(
        !text.contains(&theirs),
        "another user's events leaked: {text}"
    );
}

#[tokio::test]
async fn missing_bad_expired_revoked_and_disabled_keys_are_401() {
    let f = fixture().await;
    let store = f.store.as_ref();
    let uri = "/api/v1/workflows";
    let (status, value, _) = call(&f.router, Method::GET, uri, None, "", None).await;
    assert_eq!(
        (status, value["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("GZ4001"))
    );

    let (status, value, _) =
        call(&f.router, Method::GET, uri, Some("gzt_nonsense"), "", None).await;
    assert_eq!(
        (status, value["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("GZ4004"))
    );

    // Unknown, revoked and disabled-user keys all read the same.
    let unknown = gleitzeit_auth::ApiKey::generate().unwrap();
    let (_, unknown_body, _) = call(
        &f.router,
        Method::GET,
        uri,
        Some(unknown.reveal()),
        "",
        None,
    )
    .await;
    let (revoked, record) = admin::create_key(store, "user", "r", None, None)
        .await
        .unwrap();
    admin::revoke_key(store, &record.id).await.unwrap();
    let (status, revoked_body, _) = call(
        &f.router,
        Method::GET,
        uri,
        Some(revoked.reveal()),
        "",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    admin::create_user(store, "leaver", None, Role::User)
        .await
        .unwrap();
    let (leaver, _) = admin::create_key(store, "leaver", "l", None, None)
        .await
        .unwrap();
    let (status, _, _) = call(&f.router, Method::GET, uri, Some(leaver.reveal()), "", None).await;
    assert_eq!(status, StatusCode::OK, "works before the user is disabled");
    admin::disable_user(store, "leaver").await.unwrap();
    let (status, disabled_body, _) =
        call(&f.router, Method::GET, uri, Some(leaver.reveal()), "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_body, revoked_body);
    assert_eq!(unknown_body, disabled_body);
    assert_eq!(unknown_body["code"], "GZ4004");

    // Expired: its own code, GZ4002, at once.
    let (expiring, mut record) = admin::create_key(store, "user", "e", None, Some(1))
        .await
        .unwrap();
    let (status, _, _) = call(
        &f.router,
        Method::GET,
        uri,
        Some(expiring.reveal()),
        "",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    record.expires_ms = Some(gleitzeit_store::now_ms() - 1);
    store.put_key(&record).await.unwrap();
    let (status, value, _) = call(
        &f.router,
        Method::GET,
        uri,
        Some(expiring.reveal()),
        "",
        None,
    )
    .await;
    assert_eq!(
        (status, value["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("GZ4002"))
    );

    // No answer repeats the key it was given.
    for body in [&unknown_body, &revoked_body, &disabled_body, &value] {
        let text = body.to_string();
        for key in [
            unknown.reveal(),
            revoked.reveal(),
            leaver.reveal(),
            expiring.reveal(),
        ] {
            assert!(!text.contains(&key[4..]), "{text}");
        }
    }
}

#[tokio::test]
async fn repeated_failures_from_one_client_are_rate_limited() {
    let f = fixture().await;
    let attacker: SocketAddr = "10.1.2.3:5555".parse().unwrap();
    let bystander: SocketAddr = "10.9.9.9:5555".parse().unwrap();
    let wrong = gleitzeit_auth::ApiKey::generate().unwrap();
    for _ in 0..10 {
        let (status, _, _) = call(
            &f.router,
            Method::GET,
            "/api/v1/workflows",
            Some(wrong.reveal()),
            "",
            Some(attacker),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, value, headers) = call(
        &f.router,
        Method::GET,
        "/api/v1/workflows",
        Some(wrong.reveal()),
        "",
        Some(attacker),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(value["code"], "GZ4005");
    assert_eq!(headers["retry-after"], "60");
    // A right key is never refused for failures, even from that address;
    // others are unaffected.
    let (status, _, _) = call(
        &f.router,
        Method::GET,
        "/api/v1/workflows",
        Some(&f.keys[&Role::Admin]),
        "",
        Some(attacker),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        &f.router,
        Method::GET,
        "/api/v1/workflows",
        Some(&f.keys[&Role::Admin]),
        "",
        Some(bystander),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_audit_log_records_failures_keys_and_cancellations_without_secrets() {
    let f = fixture().await;
    let wrong = gleitzeit_auth::ApiKey::generate().unwrap();
    call(
        &f.router,
        Method::GET,
        "/api/v1/workflows",
        Some(wrong.reveal()),
        "",
        None,
    )
    .await;
    let (status, made) = f
        .as_role(
            Role::Admin,
            Method::POST,
            "/api/v1/auth/keys",
            r#"{"user":"user","name":"ci","expires_days":30}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let new_key = made["key"].as_str().unwrap().to_string();
    assert!(gleitzeit_auth::ApiKey::parse(&new_key).is_ok());
    let key_id = made["record"]["id"].as_str().unwrap().to_string();
    let (status, _) = f
        .as_role(
            Role::Admin,
            Method::POST,
            &format!("/api/v1/auth/keys/{key_id}/revoke"),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = f.submit(Role::User).await;
    let (status, _) = f
        .as_role(
            Role::User,
            Method::POST,
            &format!("/api/v1/workflows/{id}/cancel"),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, log) = f
        .as_role(Role::Admin, Method::GET, "/api/v1/auth/audit", "")
        .await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<(&str, &str)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert!(actions.contains(&("auth.failure", "-")), "{actions:?}");
    assert!(actions.contains(&("key.create", "admin")), "{actions:?}");
    assert!(actions.contains(&("key.revoke", "admin")), "{actions:?}");
    assert!(
        actions.contains(&("workflow.cancel", "user")),
        "{actions:?}"
    );
    let text = log.to_string();
    assert!(
        !text.contains(&new_key[4..]) && !text.contains(&wrong.reveal()[4..]),
        "{text}"
    );

    // Key lists show ids, never keys or hashes.
    let (_, keys) = f
        .as_role(Role::Admin, Method::GET, "/api/v1/auth/keys", "")
        .await;
    let text = keys.to_string();
    assert!(
        !text.contains(&new_key[4..]) && !text.contains("hash"),
        "{text}"
    );
    assert!(text.contains(&key_id));
    // And the revoked key no longer works.
    let (status, _, _) = call(
        &f.router,
        Method::GET,
        "/api/v1/workflows",
        Some(&new_key),
        "",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_dashboard_pages_load_without_a_key_but_their_data_does_not() {
    let f = fixture().await;
    for uri in ["/", "/dashboard/app.js", "/dashboard/style.css"] {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = f.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
    }
    let request = Request::builder()
        .uri("/api/v1/workflows")
        .body(Body::empty())
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn auth_bodies_with_typos_or_bad_fields_are_refused_with_codes() {
    let f = fixture().await;
    for (path, body, status, code, words) in [
        (
            "/api/v1/auth/keys",
            r#"{"user":"user","expire_days":30}"#,
            StatusCode::BAD_REQUEST,
            "GZ6006",
            "unknown field `expire_days`",
        ),
        (
            "/api/v1/auth/keys",
            r#"{"user":"user","expires_days":0}"#,
            StatusCode::BAD_REQUEST,
            "GZ9001",
            "never works",
        ),
        (
            "/api/v1/auth/users",
            r#"{"name":"eve","role":"ADMIN","email":"not-an-address"}"#,
            StatusCode::BAD_REQUEST,
            "GZ9001",
            "not an email address",
        ),
        (
            "/api/v1/auth/users",
            "not json",
            StatusCode::BAD_REQUEST,
            "GZ6006",
            "bad JSON body",
        ),
    ] {
        let (got, error) = f.as_role(Role::Admin, Method::POST, path, body).await;
        assert_eq!(got, status, "{body}: {error}");
        assert_eq!(error["code"], code, "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(words),
            "{body}: {error}"
        );
    }
    // Nothing was created by any of them.
    let (_, users) = f
        .as_role(Role::Admin, Method::GET, "/api/v1/auth/users", "")
        .await;
    assert!(!users.to_string().contains("eve"), "{users}");
}
